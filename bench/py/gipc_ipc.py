"""gipc's side of the IPC benchmarks (bench/README.md).

    bench/.venv/bin/python bench/py/gipc_ipc.py BENCHMARK key=value ...

Runs ONE measurement and prints ONE JSON line of figures on stdout, so the Rust harness can
interleave A B A B rounds with the other implementations. Benchmarks and their parameters:

    stream1   n=          n 1-byte messages, child -> parent, raw pipe (encoder=None)
                                                          -> msgs_per_s, gb_per_s
    stream64k n= size=    n messages of size bytes, raw pipe       -> msgs_per_s, gb_per_s
    big_raw   size=       one message of size bytes, raw pipe (encoder=None)          -> ms
    big_ser   size=       one bytes object of size bytes, default pipe (pickle)       -> ms
    pingpong  n= pinned=  n round trips over a duplex pipe (default pickle codec);
                          pinned=1: parent and child on CPU 0      -> round_trips_per_s
    process   n=          start_process + join of a no-op child, n times -> us_per_process
    pool, pool_chunked  n= workers= chunksize=
                          multiprocessing.Pool(workers).map of n tiny items (x + 1), after a
                          warm-up map; fork context, like gipc; chunksize=0: the best of
                          n/100 ... n/2 (CHUNK_FRACTIONS)           -> items_per_s

Stream rates run from the first message received to the last; the big message is timed from just
before the child puts it (time.monotonic(), CLOCK_MONOTONIC like the Rust workers, sent ahead in a
small message) until the parent's get() returns.
"""

import json
import os
import struct
import sys
from time import monotonic, perf_counter

import gipc


def _stream_writer(w, n, size):
    msg = b"x" * size
    for _ in range(n):
        w.put(msg)


def stream(n, size):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        p = gipc.start_process(_stream_writer, args=(w, n, size))
        assert len(r.get()) == size
        t0 = perf_counter()
        for _ in range(n - 1):
            r.get()
        dt = perf_counter() - t0
        p.join()
    rate = (n - 1) / dt
    return {"msgs_per_s": rate, "gb_per_s": rate * size / 1e9}


def stream1(n):
    return stream(n, 1)


def stream64k(n, size):
    return stream(n, size)


def _big_writer(w, size, raw):
    msg = b"x" * size
    t0 = monotonic()
    w.put(struct.pack("<d", t0) if raw else t0)
    w.put(msg)


def big(size, raw):
    codec = {"encoder": None, "decoder": None} if raw else {}
    with gipc.pipe(**codec) as (r, w):
        p = gipc.start_process(_big_writer, args=(w, size, raw))
        stamp = r.get()
        msg = r.get()
        t1 = monotonic()
        p.join()
    t0 = struct.unpack("<d", stamp)[0] if raw else stamp
    assert len(msg) == size
    return {"ms": (t1 - t0) * 1e3}


def big_raw(size):
    return big(size, True)


def big_ser(size):
    return big(size, False)


def _echo(end, n, pinned):
    if pinned:
        os.sched_setaffinity(0, {0})
    for _ in range(n + 1):
        end.put(end.get())


def pingpong(n, pinned):
    if pinned:
        os.sched_setaffinity(0, {0})
    with gipc.pipe(duplex=True) as (here, there):
        p = gipc.start_process(_echo, args=(there, n, pinned))
        here.put(0)
        here.get()
        t0 = perf_counter()
        for i in range(n):
            here.put(i)
            here.get()
        dt = perf_counter() - t0
        p.join()
    return {"round_trips_per_s": n / dt}


def _noop():
    pass


def process(n):
    t0 = perf_counter()
    for _ in range(n):
        p = gipc.start_process(_noop)
        p.join()
        assert p.exitcode == 0
    dt = perf_counter() - t0
    return {"us_per_process": dt * 1e6 / n}


def _inc(x):
    return x + 1


# The chunksizes `pool` tries with chunksize=0, as fractions of n: multiprocessing's best one
# moves with the machine and the minute (measured here: 10,000 and 50,000 of 100k items each won
# some runs), so it is searched in every run rather than written down.
CHUNK_FRACTIONS = (100, 40, 20, 10, 4, 2)


def pool(n, workers, chunksize):
    """multiprocessing.Pool(workers).map of n tiny items after a warm-up map. chunksize=0: each of
    n/100, n/40, n/20, n/10, n/4 and n/2 in turn, in the same pool, reporting the best rate."""
    import multiprocessing

    sizes = [chunksize] if chunksize else [max(1, n // f) for f in CHUNK_FRACTIONS]
    best = 0.0
    with multiprocessing.get_context("fork").Pool(workers) as p:
        p.map(_inc, range(1000))
        for size in sizes:
            t0 = perf_counter()
            results = p.map(_inc, range(n), chunksize=size)
            dt = perf_counter() - t0
            assert len(results) == n and results[-1] == n
            best = max(best, n / dt)
    return {"items_per_s": best}


BENCHMARKS = {
    "stream1": stream1,
    "stream64k": stream64k,
    "big_raw": big_raw,
    "big_ser": big_ser,
    "pingpong": pingpong,
    "process": process,
    "pool": pool,
    "pool_chunked": pool,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in BENCHMARKS:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(BENCHMARKS)}}} key=value ...")
    params = {k: int(v) for k, v in (a.split("=", 1) for a in argv[2:])}
    print(json.dumps(BENCHMARKS[argv[1]](**params)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
