//! Monkey patching: libc's blocking calls, made cooperative inside a hub (cargo feature
//! `patch`, gevent's `patch_all`).
//!
//! With the feature enabled, greenhub defines `read`, `recv`, `connect`, `poll`, `nanosleep`,
//! `waitpid`, `getaddrinfo` and the other calls listed in [`install`] as exported C symbols. The
//! linker resolves every call to them in the executable, std's and any sync crate's included,
//! to greenhub's definitions instead of glibc's, and each definition reaches glibc's own function
//! through `dlsym(RTLD_NEXT)`. Until [`install`] runs, and afterwards on any thread or in any
//! code that is not inside a coroutine, every hook is exactly the libc call. Inside a coroutine
//! of a hub, after `install`, a call that would block suspends only that coroutine.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! greenhub::patch::install();
//! greenhub::run(|| {
//!     // Plain std types: each blocking call suspends only its coroutine.
//!     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = greenhub::spawn(move || {
//!         let (mut conn, _) = listener.accept().unwrap();
//!         std::thread::sleep(std::time::Duration::from_millis(10)); // a greenhub sleep now
//!         conn.write_all(b"pong").unwrap();
//!     });
//!     let mut client = std::net::TcpStream::connect(addr).unwrap();
//!     let mut reply = [0u8; 4];
//!     client.read_exact(&mut reply).unwrap();
//!     assert_eq!(&reply, b"pong");
//!     server.join().unwrap();
//! });
//! ```
//!
//! Guarantee: what the caller sees does not change (a blocking fd behaves as blocking, an fd the
//! program made non-blocking gives `EAGAIN`, `F_GETFL` shows the program's flags, socket
//! timeouts are honoured, regular files pass straight through, another program given an fd
//! gets it without the patch's O_NONBLOCK); a `timeout` or cancel that fires inside a patched
//! call makes the call fail with `ETIMEDOUT`/`ECANCELED` and unwinds the coroutine at its next
//! greenhub suspension point. Not guaranteed: that every blocking call is caught (glibc's
//! internal calls, futexes, raw syscalls are not), that a large write on a blocking socket is
//! complete (it may be short, as a non-blocking one), and the gaps listed in
//! `docs/patching.md`.

mod blocking_call;
mod children;
mod connect;
mod exec;
mod fd_calls;
mod fdtable;
mod hooks;
mod poll;
mod real;
mod resolve;
mod sleep;
mod two_fds;

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use fdtable::{Entry, Kind, Mode};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// The process whose open fds were last recorded as shared ([`record_shared_fds`]): a process
/// forked from it records the fds it inherited on its first patched call.
static RECORDED_FOR: AtomicI32 = AtomicI32::new(0);

/// Turns the patch on for every hub of this process, from now on (idempotent).
///
/// From then on, inside a coroutine, these calls suspend only the calling coroutine when they
/// would block: `read`, `readv`, `write`, `writev`, `recv`, `recvfrom`, `recvmsg`, `send`,
/// `sendto`, `sendmsg`, `connect`, `accept`, `accept4`, `poll`, `nanosleep`,
/// `clock_nanosleep`, `waitpid`, `wait4`, `waitid` (a child's exit is awaited through its
/// pidfd), `getaddrinfo` (run on a helper thread), and `splice` and `sendfile` (which std's
/// `io::copy` uses between pipes and sockets). `close`, `dup`, `dup2`, `dup3`, `fcntl`,
/// `ioctl` and `setsockopt` are interposed too, to keep the per-fd table right, to hide the
/// O_NONBLOCK flag the patch sets and to know which sockets have timeouts; the calls that make
/// fds (`socket`, `socketpair`, `pipe`, `pipe2`, the `open`s, `creat`, `eventfd`,
/// `timerfd_create`, `signalfd`, `inotify_init`, `epoll_create`, `memfd_create`), so that a
/// number closed behind the patch's back (by `fclose`) is not taken for its old fd; and the exec family
/// and `posix_spawn`, to take that flag off every fd another program is given.
///
/// Call it early (at the top of `main`): fds already open then (other than sockets and pipes the
/// program opens later) are treated as shared with other processes, waited on with `poll` and
/// never switched to non-blocking. Children started with greenhub-ipc inherit the patch.
///
/// ```
/// greenhub::patch::install();
/// greenhub::patch::install(); // a second call changes nothing
/// assert!(greenhub::patch::is_installed());
/// ```
pub fn install() {
    INSTALL.call_once(|| {
        // Referencing every hook keeps the object that defines them in the link, even where a
        // linker would drop an archive member nothing else refers to.
        std::hint::black_box(hooks::every_hook());
        real::resolve_all(); // no dlsym from now on: the exec hooks run in forked children
        record_shared_fds();
        INSTALLED.store(true, Ordering::Release);
    });
}

/// Whether [`install`] has run in this process (or in the parent it was forked from).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Whether a hook should act cooperatively now: installed, inside a coroutine.
fn active() -> bool {
    INSTALLED.load(Ordering::Relaxed) && crate::coroutine::in_coroutine()
}

/// Records every pollable fd open now that has no entry as [`Mode::Polled`]: these descriptions
/// may be shared with other processes (inherited from the parent, or open before `install`).
/// One the program made non-blocking stays so (straight through); one whose O_NONBLOCK the
/// patch set through a twin it inherited is managed, like the twin.
fn record_shared_fds() {
    // SAFETY: getpid has no preconditions.
    RECORDED_FOR.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> =
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    // The directory's own fd is closed by now, so `identify` skips it.
    for fd in fds {
        if fdtable::get(fd).is_some() {
            continue;
        }
        if let Some((kind, inode)) = fdtable::identify(fd)
            && kind != Kind::Other
        {
            // SAFETY: F_GETFL takes no argument and has no memory preconditions.
            let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
            let nonblocking = flags >= 0 && flags & libc::O_NONBLOCK != 0;
            let twin = nonblocking && blocking_call::managed_twin(fd, kind, inode, flags).is_some();
            let mode = match twin {
                true => Mode::Managed { user_nonblocking: false },
                false => Mode::Polled { user_nonblocking: nonblocking },
            };
            // Their timeouts are unknown: a wait asks.
            let timeouts = kind == Kind::Socket;
            fdtable::set(fd, Entry { mode, kind, inode, timeouts });
        }
    }
}

/// In a process forked after `install`: the fds inherited from the parent share their
/// descriptions with it; record them once, on the first patched call that needs the table.
fn record_inherited_fds() {
    // SAFETY: getpid has no preconditions.
    if RECORDED_FOR.load(Ordering::Relaxed) != unsafe { libc::getpid() } {
        record_shared_fds();
    }
}
