//! `getaddrinfo` inside a coroutine runs on a helper thread and gives what libc gives.

use std::cell::Cell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;

fn resolve(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = (name, 80).to_socket_addrs()?.collect();
    addrs.sort();
    Ok(addrs)
}

#[test]
fn lookups_in_coroutines_give_what_libc_gives() {
    greenhub::patch::install();
    let expected = std::thread::spawn(|| resolve("localhost").unwrap()).join().unwrap();
    assert!(!expected.is_empty());
    greenhub::run(|| {
        let lookups: Vec<_> =
            (0..20).map(|_| greenhub::spawn(|| resolve("localhost").unwrap())).collect();
        for lookup in lookups {
            assert_eq!(lookup.join().unwrap(), expected);
        }
    });
}

#[test]
fn a_name_that_does_not_resolve_fails_as_with_libc() {
    greenhub::patch::install();
    let bad = "no-such-host.invalid";
    let outside = std::thread::spawn(move || resolve(bad).unwrap_err().to_string()).join().unwrap();
    let inside = greenhub::run(|| resolve(bad).unwrap_err().to_string());
    assert_eq!(inside, outside);
}

#[test]
fn a_lookup_suspends_only_its_coroutine_while_a_helper_thread_runs_it() {
    greenhub::patch::install();
    // One helper thread, held by a job that waits until a coroutine releases it: the lookup
    // queued behind it can end only if its caller suspends and lets that coroutine run. A lookup
    // made on the hub's own thread (no hook) returns first, with the releaser never run.
    greenhub::Builder::new().blocking_threads(1).run(|| {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let holder = greenhub::spawn(move || greenhub::spawn_blocking(move || gate.recv()));
        greenhub::yield_now(); // the holder's job takes the one helper thread
        let released = Rc::new(Cell::new(false));
        let r = released.clone();
        let releaser = greenhub::spawn(move || {
            release.send(()).unwrap();
            r.set(true);
        });
        assert!(!resolve("localhost").unwrap().is_empty());
        assert!(released.get(), "the lookup blocked the hub's thread instead of suspending");
        releaser.join().unwrap();
        holder.join().unwrap().unwrap();
    });
}
