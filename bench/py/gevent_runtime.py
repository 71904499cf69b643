"""gevent's side of the runtime benchmarks (bench/README.md).

    bench/.venv/bin/python bench/py/gevent_runtime.py BENCHMARK key=value ...

Runs ONE measurement and prints ONE JSON line of figures on stdout, so the Rust harness can
interleave A B A B rounds with the other implementations. Times are taken inside this process
(interpreter start-up and imports are not counted). Benchmarks and their parameters:

    switch   n=       two greenlets each yield n times with gevent.sleep(0)   -> ns_per_switch
    switch_monitor n= the same with gevent's monitor thread on                -> ns_per_switch
    spawn    n= batch= spawn + joinall of n no-op greenlets, batch at a time    -> ns_per_spawn
    channel  n=       ping-pong over two gevent.queue.UnboundQueue  -> ns_per_round_trip
    sleepers n= start_ms= spread_ms=  n sleepers, deadlines spread over
                      [start, start + spread)            -> wall_s, p50_ms, p99_ms, max_ms, rss_mb
    tcp      clients= n= size=  echo server + clients in this process      -> round_trips_per_s
    select   n=       gevent.wait on two events (each with its own deque), then an ack -> ns_per_select
    pool_map n= size= gevent.pool.Pool(size).map of n no-op items            -> ns_per_item
"""

import json
import resource
import sys
from time import perf_counter

import collections

import gevent
import gevent.event
import gevent.pool
import gevent.queue
from gevent import socket


def switch(n):
    # gevent.sleep(0) is gevent's idiomatic cooperative yield: the greenlet switches to the hub,
    # which runs the other one's callback and switches to it (raw greenlet.switch() between two
    # greenlets would be faster but bypasses the hub, which no gevent program does to yield).
    def yielder():
        for _ in range(n):
            gevent.sleep(0)

    t0 = perf_counter()
    gevent.joinall([gevent.spawn(yielder), gevent.spawn(yielder)])
    dt = perf_counter() - t0
    return {"ns_per_switch": dt * 1e9 / (2 * n)}


def spawn(n, batch):
    def noop():
        pass

    t0 = perf_counter()
    for _ in range(n // batch):
        gevent.joinall([gevent.spawn(noop) for _ in range(batch)])
    dt = perf_counter() - t0
    return {"ns_per_spawn": dt * 1e9 / n}


def channel(n):
    # gevent.queue.UnboundQueue: unbounded like greenhub's channel(), and the fastest of gevent's
    # queues for this ping-pong here (Queue and SimpleQueue ~10% slower; Channel, the rendezvous
    # one, ~40% slower).
    ping, pong = gevent.queue.UnboundQueue(), gevent.queue.UnboundQueue()

    def ponger():
        for _ in range(n):
            pong.put(ping.get())

    t0 = perf_counter()
    g = gevent.spawn(ponger)
    for i in range(n):
        ping.put(i)
        pong.get()
    dt = perf_counter() - t0
    g.join()
    return {"ns_per_round_trip": dt * 1e9 / n}


def sleepers(n, start_ms, spread_ms):
    lateness = []

    def sleeper(deadline):
        gevent.sleep(max(0.0, deadline - perf_counter()))
        lateness.append(perf_counter() - deadline)

    t0 = perf_counter()
    # The same scrambled order of deadlines as the Rust workers (7919 is prime, coprime with n).
    gs = [
        gevent.spawn(sleeper, t0 + (start_ms + spread_ms * ((i * 7919) % n) / n) / 1e3)
        for i in range(n)
    ]
    gevent.joinall(gs)
    wall = perf_counter() - t0
    lateness.sort()

    def pct(p):
        return lateness[round((len(lateness) - 1) * p)] * 1e3

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    return {"wall_s": wall, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "rss_mb": rss_mb}


def tcp(clients, n, size):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    addr = server.getsockname()

    def echo(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def acceptor():
        while True:
            conn, _ = server.accept()
            gevent.spawn(echo, conn)

    def client():
        msg = b"x" * size
        with socket.create_connection(addr) as conn:
            for _ in range(n):
                conn.sendall(msg)
                got = 0
                while got < size:
                    chunk = conn.recv(size - got)
                    if not chunk:
                        raise EOFError("server closed")
                    got += len(chunk)

    accept_g = gevent.spawn(acceptor)
    t0 = perf_counter()
    gs = [gevent.spawn(client) for _ in range(clients)]
    gevent.joinall(gs, raise_error=True)
    dt = perf_counter() - t0
    accept_g.kill()
    return {"round_trips_per_s": clients * n / dt}


def mem_mb():
    """VmRSS + VmPTE of this process, in MB (10^6 bytes)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    kib = lambda k: int(fields.get(k, "0 kB").split()[0])
    return (kib("VmRSS") + kib("VmPTE")) * 1024 / 1e6


def parked(n, stack, slack, min_sleep_ms):
    """n greenlets asleep until one deadline; `stack` is ignored (greenlets copy the part of the
    C stack they use to the heap when switched out). Each yields once when it starts, so the root
    runs again once all have started and sets the deadline from how long that took (as the Rust
    workers do: bench/src/worker.rs, parked_deadline); then each reads it and sleeps."""
    before = mem_mb()
    t0 = perf_counter()
    deadline = [None]
    late = [0]

    def sleeper():
        gevent.sleep(0)  # back in the queue behind the root
        left = deadline[0] - perf_counter()
        if left <= 0:
            late[0] += 1
        gevent.sleep(max(0.0, left))

    gs = [gevent.spawn(sleeper) for _ in range(n)]
    spawned = perf_counter()
    gevent.sleep(0)  # every greenlet starts (its start callback runs first) and yields
    started = perf_counter()
    deadline[0] = started + slack * (started - spawned) + min_sleep_ms / 1e3
    gevent.sleep(0)  # every greenlet reads the deadline and goes to sleep
    asleep = perf_counter() - t0
    mem = mem_mb()
    gevent.joinall(gs)
    end = perf_counter()
    if late[0]:
        sys.exit(f"{late[0]} greenlets went to sleep after the deadline: raise slack")
    return {
        "asleep_s": asleep,
        "wake_s": end - deadline[0],
        "mem_mb": mem,
        "kb_per_coroutine": (mem - before) * 1e6 / 1024 / n,
    }


def select(n):
    # gevent has no select over queues; its "whichever happens first" is gevent.wait(objects,
    # count=1) on objects with rawlink, here two Events, each guarding a deque (a channel).
    ev_a, ev_b = gevent.event.Event(), gevent.event.Event()
    q_a, q_b = collections.deque(), collections.deque()
    ack = gevent.queue.UnboundQueue()

    def consumer():
        for _ in range(n):
            ready = gevent.wait([ev_a, ev_b], count=1)[0]
            q = q_a if ready is ev_a else q_b
            v = q.popleft()
            if not q:
                ready.clear()
            ack.put(v)

    t0 = perf_counter()
    g = gevent.spawn(consumer)
    for i in range(n):
        if i % 2 == 0:
            q_a.append(i)
            ev_a.set()
        else:
            q_b.append(i)
            ev_b.set()
        ack.get()
    dt = perf_counter() - t0
    g.join()
    return {"ns_per_select": dt * 1e9 / n}


def pool_map(n, size):
    def noop(i):
        return i

    pool = gevent.pool.Pool(size)
    t0 = perf_counter()
    out = pool.map(noop, range(n))
    dt = perf_counter() - t0
    assert len(out) == n
    return {"ns_per_item": dt * 1e9 / n}


def switch_monitor(n):
    # gevent's monitor thread (the blocking detector) on, as GEVENT_MONITOR_THREAD_ENABLE does:
    # it installs a greenlet trace function that runs on every switch.
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = 0.1
    gevent.get_hub().start_periodic_monitoring_thread()
    return switch(n)


BENCHMARKS = {
    "switch": switch,
    "switch_monitor": switch_monitor,
    "spawn": spawn,
    "channel": channel,
    "select": select,
    "pool_map": pool_map,
    "sleepers": sleepers,
    "tcp": tcp,
    "parked": parked,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in BENCHMARKS:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(BENCHMARKS)}}} key=value ...")
    params = {k: int(v) for k, v in (a.split("=", 1) for a in argv[2:])}
    print(json.dumps(BENCHMARKS[argv[1]](**params)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
