//! Names resolved off the hub: [`lookup_host`] and greenhub's [`ToSocketAddrs`].
//!
//! Guarantee: inside a hub, a host name is resolved by the system resolver (`getaddrinfo`) on a
//! helper thread of [`spawn_blocking`](crate::spawn_blocking)'s pool (gevent's
//! `resolver_thread`), while the hub runs the other coroutines; an address literal is parsed
//! without any thread. Outside a hub there is nothing to keep free: the calling thread resolves.
//! Not guaranteed: how long the resolver takes (it follows `/etc/nsswitch.conf` and
//! `/etc/resolv.conf`), or that a resolution in flight stops when its caller is cancelled.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::{iter, option, slice, vec};

use crate::blocking::{refused_helper, try_spawn_blocking};
use crate::hub::try_hub;

/// Resolves `"host:port"` to socket addresses on a helper thread (gevent's `resolver_thread`):
/// the hub never blocks on DNS.
///
/// `host` may be a name (`"localhost:8080"`), an IPv4 address or a bracketed IPv6 address
/// (`"[::1]:53"`); literals are parsed without a thread. Outside a hub it resolves on the
/// calling thread.
///
/// ```
/// greenhub::run(|| {
///     let addrs = greenhub::net::lookup_host("localhost:80").unwrap();
///     assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
///     let literal = greenhub::net::lookup_host("127.0.0.1:5").unwrap();
///     assert_eq!(literal, vec!["127.0.0.1:5".parse().unwrap()]);
/// });
/// ```
///
/// # Errors
/// `InvalidInput` for a string without a port or with an invalid one; the resolver's error for
/// an unknown name; an error (kind `Other`) naming the OS's refusal if no helper thread can be
/// started.
#[track_caller]
pub fn lookup_host(host_port: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) =
        host_port.rsplit_once(':').ok_or_else(|| invalid("invalid socket address"))?;
    let port = port.parse::<u16>().map_err(|_| invalid("invalid port value"))?;
    resolve(host, port)
}

/// `host` and `port` to addresses: a literal at once, a name on a helper thread.
#[track_caller]
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_owned();
    let system = move || {
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port)).map(Vec::from_iter)
    };
    match try_hub() {
        Some(_) => try_spawn_blocking(system).map_err(|refused| {
            refused_helper(&format!("resolving {host:?} takes a blocking getaddrinfo"), &refused)
        })?,
        None => system(),
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// What greenhub's sockets accept as an address: std's [`std::net::ToSocketAddrs`] shapes, with
/// names resolved off the hub.
///
/// std's trait resolves a host name with `getaddrinfo` on the calling thread, and a generic
/// `impl std::net::ToSocketAddrs` cannot be told apart from an address literal before it runs:
/// so greenhub's `bind`, `connect` and `send_to` take this trait instead. It is implemented for
/// the same types as std's (`SocketAddr`, `SocketAddrV4`/`V6`, `(IpAddr, u16)` and the v4/v6
/// tuples, `(&str, u16)`, `(String, u16)`, `str`, `String`, `&[SocketAddr]`, and references),
/// so calls written for std compile unchanged. Names go through [`lookup_host`].
///
/// ```
/// use greenhub::net::ToSocketAddrs;
/// let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
/// assert_eq!(addr.to_socket_addrs().unwrap().collect::<Vec<_>>(), vec![addr]);
/// ```
pub trait ToSocketAddrs {
    /// The addresses, in the resolver's order.
    type Iter: Iterator<Item = SocketAddr>;

    /// The addresses this value names, resolving a host name on a helper thread.
    fn to_socket_addrs(&self) -> io::Result<Self::Iter>;
}

macro_rules! one_address {
    ($($ty:ty),*) => {$(
        impl ToSocketAddrs for $ty {
            type Iter = option::IntoIter<SocketAddr>;

            fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
                Ok(Some(SocketAddr::from(*self)).into_iter())
            }
        }
    )*};
}

one_address!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl ToSocketAddrs for (&str, u16) {
    type Iter = vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        resolve(self.0, self.1).map(Vec::into_iter)
    }
}

impl ToSocketAddrs for (String, u16) {
    type Iter = vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        resolve(&self.0, self.1).map(Vec::into_iter)
    }
}

impl ToSocketAddrs for str {
    type Iter = vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        lookup_host(self).map(Vec::into_iter)
    }
}

impl ToSocketAddrs for String {
    type Iter = vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        lookup_host(self).map(Vec::into_iter)
    }
}

impl<'a> ToSocketAddrs for &'a [SocketAddr] {
    type Iter = iter::Cloned<slice::Iter<'a, SocketAddr>>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        Ok(self.iter().cloned())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    type Iter = T::Iter;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (**self).to_socket_addrs()
    }
}

/// Tries `op` on each of `addr`'s addresses in turn; the first success, or the last error.
pub(super) fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut op: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match op(a) {
            Ok(done) => return Ok(done),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| invalid("could not resolve to any addresses")))
}
