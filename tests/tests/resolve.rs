//! Name resolution off the hub: `lookup_host`, and `bind`/`connect`/`send_to` given host names,
//! resolve on a helper thread while the hub runs the other coroutines; literals never reach the
//! resolver; bad input is `InvalidInput`.
//!
//! This test binary defines its own `getaddrinfo` (a symbol in the executable takes precedence
//! over glibc's for std's calls), which forwards to glibc's but stops a lookup of
//! [`GATED`] until a coroutine of the hub opens the gate, and records the thread it ran on. A
//! resolution on the hub's thread would keep that coroutine from ever running: the hook gives up
//! after a safety net and the test fails. Every test holds `process_lock`, since the gate and
//! the counters are process-wide.

use std::ffi::{CStr, c_char, c_int};
use std::io;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Duration;

use greenhub::net::{TcpListener, TcpStream, UdpSocket, lookup_host};
use greenhub::spawn;
use greenhub_tests::process_lock;

/// A name whose lookup waits at the gate, then resolves to 127.0.0.1.
const GATED: &str = "gated.greenhub.test";

/// A name the hook says does not exist (no query leaves the machine).
const UNKNOWN: &str = "unknown.greenhub.test";

/// Long enough to never matter when the code under test is right.
const SAFETY_NET: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Gate {
    /// How many times a coroutine opened it (each lets one gated lookup through).
    opened: u32,
    /// Gated lookups so far, and the threads they ran on.
    gated: Vec<ThreadId>,
    /// Whether a gated lookup gave up waiting (the gate was never opened: the hub was blocked).
    gave_up: bool,
    /// Every lookup that reached `getaddrinfo`.
    calls: u32,
}

static GATE: Mutex<Gate> =
    Mutex::new(Gate { opened: 0, gated: Vec::new(), gave_up: false, calls: 0 });
static OPENED: Condvar = Condvar::new();

type GetAddrInfo = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const libc::addrinfo,
    *mut *mut libc::addrinfo,
) -> c_int;

/// glibc's `getaddrinfo`, the next definition after this binary's.
fn system_getaddrinfo() -> GetAddrInfo {
    static REAL: OnceLock<usize> = OnceLock::new();
    let addr = *REAL.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other preconditions.
        let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, c"getaddrinfo".as_ptr()) };
        assert!(!sym.is_null(), "glibc's getaddrinfo not found");
        sym as usize
    });
    // SAFETY: the symbol is glibc's getaddrinfo, which has exactly this signature.
    unsafe { std::mem::transmute::<usize, GetAddrInfo>(addr) }
}

/// The hook (see the file's doc).
///
/// # Safety
/// getaddrinfo(3)'s contract: `node` and `service` are null or NUL-terminated, `res` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> c_int {
    // SAFETY: a non-null `node` is NUL-terminated (the caller's contract).
    let name = (!node.is_null()).then(|| unsafe { CStr::from_ptr(node) }.to_bytes());
    let mut node = node;
    {
        let mut gate = GATE.lock().unwrap();
        gate.calls += 1;
        if name == Some(UNKNOWN.as_bytes()) {
            return libc::EAI_NONAME;
        }
        if name == Some(GATED.as_bytes()) {
            let ticket = gate.gated.len() as u32;
            gate.gated.push(thread::current().id());
            let (mut gate, waited) =
                OPENED.wait_timeout_while(gate, SAFETY_NET, |g| g.opened <= ticket).unwrap();
            gate.gave_up |= waited.timed_out();
            node = c"127.0.0.1".as_ptr();
        }
    }
    // SAFETY: forwards the caller's arguments (valid by its contract) to glibc.
    unsafe { system_getaddrinfo()(node, service, hints, res) }
}

/// From a coroutine: lets one gated lookup through.
fn open_gate() {
    GATE.lock().unwrap().opened += 1;
    OPENED.notify_all();
}

/// Runs `resolve` while a second coroutine opens the gate, and checks that the gated lookup
/// ran on another thread than the hub's without waiting out the safety net.
fn resolved_off_the_hub<T>(resolve: impl FnOnce() -> T) -> T {
    let hub_thread = thread::current().id();
    let before = GATE.lock().unwrap().gated.len();
    let opener = spawn(open_gate); // runs only while the hub is free
    let value = resolve();
    opener.join().unwrap();
    let gate = GATE.lock().unwrap();
    assert_eq!(gate.gated.len(), before + 1, "the name did not reach the resolver once");
    assert!(!gate.gave_up, "the gate was never opened: the hub was blocked during the lookup");
    assert_ne!(gate.gated[before], hub_thread, "the name was resolved on the hub's thread");
    value
}

#[test]
fn lookup_host_resolves_a_name_on_a_helper_thread_while_the_hub_runs_others() {
    let _serial = process_lock();
    greenhub::run(|| {
        let addrs = resolved_off_the_hub(|| lookup_host(&format!("{GATED}:80")).unwrap());
        assert_eq!(addrs, vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]);
    });
}

#[test]
fn bind_connect_and_send_to_resolve_names_off_the_hub() {
    let _serial = process_lock();
    greenhub::run(|| {
        let listener = resolved_off_the_hub(|| TcpListener::bind((GATED, 0)).unwrap());
        let port = listener.local_addr().unwrap().port();
        let server = spawn(move || listener.accept().unwrap().1);
        let client =
            resolved_off_the_hub(|| TcpStream::connect(format!("{GATED}:{port}")).unwrap());
        assert_eq!(server.join().unwrap(), client.local_addr().unwrap());

        let udp = resolved_off_the_hub(|| UdpSocket::bind(format!("{GATED}:0")).unwrap());
        let port = udp.local_addr().unwrap().port();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        resolved_off_the_hub(|| sender.send_to(b"by name", (GATED, port)).unwrap());
        resolved_off_the_hub(|| sender.connect((GATED.to_string(), port)).unwrap());
        let mut buf = [0u8; 8];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"by name");
    });
}

#[test]
fn address_literals_never_reach_the_resolver() {
    let _serial = process_lock();
    greenhub::run(|| {
        let before = GATE.lock().unwrap().calls;
        assert_eq!(lookup_host("127.0.0.1:1").unwrap(), vec!["127.0.0.1:1".parse().unwrap()]);
        assert_eq!(lookup_host("[::1]:2").unwrap(), vec!["[::1]:2".parse().unwrap()]);
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        drop(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        assert_eq!(GATE.lock().unwrap().calls, before, "a literal went through getaddrinfo");
    });
}

#[test]
fn an_unknown_name_is_an_error_and_the_hub_goes_on() {
    let _serial = process_lock();
    greenhub::run(|| {
        let err = lookup_host(&format!("{UNKNOWN}:80")).unwrap_err();
        assert!(err.to_string().contains("lookup"), "{err}");
        assert!(TcpStream::connect((UNKNOWN, 80)).is_err());
        assert_eq!(spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn malformed_host_port_strings_are_invalid_input() {
    let _serial = process_lock();
    greenhub::run(|| {
        for bad in ["no-port", "localhost:99999", "localhost:http", ""] {
            let err = lookup_host(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
        }
    });
}

#[test]
fn outside_a_hub_the_calling_thread_resolves() {
    let _serial = process_lock();
    open_gate(); // nobody else can open it: there is no hub
    let before = GATE.lock().unwrap().gated.len();
    let addrs = lookup_host(&format!("{GATED}:7")).unwrap();
    assert_eq!(addrs, vec!["127.0.0.1:7".parse::<SocketAddr>().unwrap()]);
    let gate = GATE.lock().unwrap();
    assert_eq!(gate.gated[before], thread::current().id());
    assert!(!gate.gave_up);
}

/// Set in the child process that reruns the helper-thread refusal test.
const REFUSAL_CHILD: &str = "GREENHUB_TEST_RESOLVE_REFUSAL_CHILD";

/// When the OS refuses the helper thread that would resolve a name, the error names that, and
/// its kind is not the `WouldBlock` that `EAGAIN` maps to (which tells callers to retry).
#[test]
fn a_name_lookup_without_a_helper_thread_is_an_error_naming_it_not_would_block() {
    let name = "a_name_lookup_without_a_helper_thread_is_an_error_naming_it_not_would_block";
    if !greenhub_tests::run_in_child(name, REFUSAL_CHILD) {
        return;
    }
    // SAFETY: alarm has no preconditions (a hang in the child fails the test).
    unsafe { libc::alarm(30) };
    greenhub::run(|| {
        let refused = greenhub_tests::with_no_room_for_a_thread(|| lookup_host("localhost:80"));
        let err = refused.expect_err("resolved although no helper thread could start");
        assert_ne!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let message = err.to_string();
        assert!(message.contains("refused the helper thread"), "{message}");
        assert!(message.contains("os error"), "the OS error is not named: {message}");
    });
}
