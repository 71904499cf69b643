//! `getaddrinfo` inside a coroutine runs on a helper thread and gives what libc gives.

use std::net::{SocketAddr, ToSocketAddrs};

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
