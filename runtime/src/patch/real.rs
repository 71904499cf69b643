//! libc's own functions, reached past our interposers with `dlsym(RTLD_NEXT, name)`.
//!
//! Guarantee: each function is looked up once (by [`resolve_all`], which `install` calls, or on
//! its first call before that) and cached; a call here is one atomic load and an indirect call,
//! never a call into our hooks (no recursion), and after `install` never a `dlsym` (which takes
//! a lock: not safe in a child forked from a threaded process, where the exec hooks run). If a
//! symbol cannot be found (a libc without it), the call fails with `ENOSYS`, as a missing
//! syscall would.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    addrinfo, id_t, idtype_t, iovec, loff_t, msghdr, nfds_t, off_t, pid_t, pollfd,
    posix_spawn_file_actions_t, posix_spawnattr_t, rusage, siginfo_t, size_t, sockaddr, socklen_t,
    ssize_t, timespec,
};

/// A cached symbol: 0 until looked up, 1 when the lookup failed, else the address.
fn resolve(cache: &AtomicUsize, name: &'static [u8]) -> Option<usize> {
    let known = cache.load(Ordering::Relaxed);
    if known > 1 {
        return Some(known);
    }
    if known == 1 {
        return None;
    }
    // SAFETY: `name` is a NUL-terminated literal; dlsym has no other precondition.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    cache.store(found.max(1), Ordering::Relaxed);
    (found != 0).then_some(found)
}

/// Sets errno to `ENOSYS` and returns the failure value.
fn missing<R: From<i8>>() -> R {
    set_errno(libc::ENOSYS);
    R::from(-1)
}

/// The calling thread's errno.
pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// Declares `real::name(args) -> ret`, calling libc's `name` through a cached `dlsym` lookup,
/// and [`resolve_all`], which looks every one of them up now.
macro_rules! real {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        /// One cache per symbol (0 until looked up, 1 when missing, else the address).
        struct Caches { $( $name: AtomicUsize, )* }

        static CACHES: Caches = Caches { $( $name: AtomicUsize::new(0), )* };

        /// Looks every symbol up now, so that no later call runs `dlsym`.
        pub(crate) fn resolve_all() {
            $( resolve(&CACHES.$name, concat!(stringify!($name), "\0").as_bytes()); )*
            resolve(&FCNTL, b"fcntl\0");
            resolve(&IOCTL, b"ioctl\0");
            for (cache, name) in OPENS {
                resolve(cache, name);
            }
        }

        $(
            #[doc = concat!("libc's own `", stringify!($name), "`.")]
            ///
            /// # Safety
            /// The same contract as the libc function.
            pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
                let name = concat!(stringify!($name), "\0").as_bytes();
                let Some(address) = resolve(&CACHES.$name, name) else { return missing() };
                type Real = unsafe extern "C" fn($($ty),*) -> $ret;
                // SAFETY: `address` is libc's definition of this very symbol, whose C signature
                // is the one declared here (the libc crate's declarations, copied).
                let f: Real = unsafe { std::mem::transmute(address) };
                // SAFETY: the caller upholds the libc function's contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real! {
    read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t;
    writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr,
        addrlen: *mut socklen_t) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr,
        addrlen: socklen_t) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int;
    nanosleep(req: *const timespec, rem: *mut timespec) -> c_int;
    clock_nanosleep(clock: libc::clockid_t, flags: c_int, req: *const timespec,
        rem: *mut timespec) -> c_int;
    waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t;
    waitid(idtype: idtype_t, id: id_t, info: *mut siginfo_t, options: c_int) -> c_int;
    getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo,
        res: *mut *mut addrinfo) -> c_int;
    close(fd: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void,
        len: *mut socklen_t) -> c_int;
    setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void,
        len: socklen_t) -> c_int;
    fstat(fd: c_int, buf: *mut libc::stat) -> c_int;
    sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut libc::off64_t, count: size_t)
        -> ssize_t;
    splice(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t,
        flags: libc::c_uint) -> ssize_t;
    execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    execv(path: *const c_char, argv: *const *const c_char) -> c_int;
    execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char)
        -> c_int;
    fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    posix_spawn(pid: *mut pid_t, path: *const c_char,
        actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    posix_spawnp(pid: *mut pid_t, file: *const c_char,
        actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    posix_spawn_file_actions_adddup2(actions: *mut posix_spawn_file_actions_t, fd: c_int,
        newfd: c_int) -> c_int;
    socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int;
    pipe(fds: *mut c_int) -> c_int;
    pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    creat(path: *const c_char, mode: libc::mode_t) -> c_int;
    creat64(path: *const c_char, mode: libc::mode_t) -> c_int;
    eventfd(initval: libc::c_uint, flags: c_int) -> c_int;
    timerfd_create(clock: libc::clockid_t, flags: c_int) -> c_int;
    signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int;
    inotify_init() -> c_int;
    inotify_init1(flags: c_int) -> c_int;
    epoll_create(size: c_int) -> c_int;
    epoll_create1(flags: c_int) -> c_int;
    memfd_create(name: *const c_char, flags: libc::c_uint) -> c_int;
}

static FCNTL: AtomicUsize = AtomicUsize::new(0);
static IOCTL: AtomicUsize = AtomicUsize::new(0);

/// libc's own `fcntl` (variadic in C: the third argument is an int or a pointer, passed as one
/// machine word).
///
/// # Safety
/// The same contract as the libc function.
pub(crate) unsafe fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let Some(address) = resolve(&FCNTL, b"fcntl\0") else { return missing() };
    // SAFETY: libc's `fcntl` has this variadic signature.
    let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int =
        unsafe { std::mem::transmute(address) };
    // SAFETY: the caller upholds fcntl's contract for `cmd` and `arg`.
    unsafe { f(fd, cmd, arg) }
}

/// libc's own `ioctl` (variadic in C: the third argument is passed as one machine word).
///
/// # Safety
/// The same contract as the libc function.
pub(crate) unsafe fn ioctl(fd: c_int, request: libc::c_ulong, arg: usize) -> c_int {
    let Some(address) = resolve(&IOCTL, b"ioctl\0") else { return missing() };
    // SAFETY: glibc's `ioctl` has this variadic signature.
    let f: unsafe extern "C" fn(c_int, libc::c_ulong, ...) -> c_int =
        unsafe { std::mem::transmute(address) };
    // SAFETY: the caller upholds ioctl's contract for `request` and `arg`.
    unsafe { f(fd, request, arg) }
}

static OPEN: AtomicUsize = AtomicUsize::new(0);
static OPEN64: AtomicUsize = AtomicUsize::new(0);
static OPENAT: AtomicUsize = AtomicUsize::new(0);
static OPENAT64: AtomicUsize = AtomicUsize::new(0);

/// The caches of the variadic opens, for [`resolve_all`].
static OPENS: [(&AtomicUsize, &[u8]); 4] = [
    (&OPEN, b"open\0"),
    (&OPEN64, b"open64\0"),
    (&OPENAT, b"openat\0"),
    (&OPENAT64, b"openat64\0"),
];

/// libc's own `open` (`large` false) or `open64`, relative to `dir` for `openat`/`openat64`
/// (`Some(dir)`). Variadic in C: the mode, read only with `O_CREAT` or `O_TMPFILE`, is passed
/// as one int.
///
/// # Safety
/// The same contract as the libc function.
pub(crate) unsafe fn open(
    dir: Option<c_int>,
    large: bool,
    path: *const c_char,
    flags: c_int,
    mode: libc::c_uint,
) -> c_int {
    let (cache, name) = OPENS[usize::from(dir.is_some()) * 2 + usize::from(large)];
    let Some(address) = resolve(cache, name) else { return missing() };
    match dir {
        None => {
            // SAFETY: libc's `open` and `open64` have this variadic signature.
            let f: unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int =
                unsafe { std::mem::transmute(address) };
            // SAFETY: the caller upholds open's contract for `path`, `flags` and `mode`.
            unsafe { f(path, flags, mode) }
        }
        Some(dir) => {
            // SAFETY: libc's `openat` and `openat64` have this variadic signature.
            let f: unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int =
                unsafe { std::mem::transmute(address) };
            // SAFETY: the caller upholds openat's contract for its arguments.
            unsafe { f(dir, path, flags, mode) }
        }
    }
}
