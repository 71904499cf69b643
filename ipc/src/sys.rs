//! The Linux calls greenhub-ipc makes: the only module of the crate with `unsafe`.
//!
//! Each function is a thin, checked wrapper; every `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

/// Turns a `-1` return into the `errno` error.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The pipe capacity asked for: with a pipe this large, a writer of big messages and its reader
/// sleep in epoll far less often than with the default 64 KiB (Linux's default `pipe-max-size`
/// for unprivileged processes is 1 MiB; a refusal keeps the default size).
const PIPE_CAPACITY: libc::c_int = 1024 * 1024;

/// A pipe: (read end, write end), both close-on-exec, grown to [`PIPE_CAPACITY`] if allowed.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = small_pipe()?;
    // SAFETY: fcntl on a valid fd; failure (EPERM past the user's pipe quota) is harmless.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY) };
    Ok((read_end, write_end))
}

/// A pipe of the default size, both ends close-on-exec and blocking.
pub(crate) fn small_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Closes `fd`, reporting what `close(2)` says (dropping an `OwnedFd` ignores it).
pub(crate) fn close(fd: OwnedFd) -> Result<(), Error> {
    let raw = fd.into_raw_fd();
    // SAFETY: we own `raw` (taken out of the OwnedFd) and never use it again.
    check(unsafe { libc::close(raw) })
        .map(drop)
        .map_err(|e| Error::io("could not close the fd (close)", e))
}

/// Registers `hook` to run in every child right after `fork`.
pub(crate) fn at_fork_in_child(hook: extern "C" fn()) {
    // SAFETY: `hook` is a plain function that stays valid for the life of the process.
    unsafe { libc::pthread_atfork(None, None, Some(hook)) };
}

/// Makes sure a write to a pipe without readers fails with `EPIPE` instead of killing the
/// process: SIGPIPE is ignored if its disposition is still the default. (Rust programs already
/// ignore it; a handler a program installed itself is left alone.)
pub(crate) fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: querying and setting a signal disposition with valid sigaction pointers.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
    });
}

/// Blocks SIGPIPE in this thread's signal mask; whether it was blocked already.
pub(crate) fn block_sigpipe() -> bool {
    sigpipe_mask(libc::SIG_BLOCK)
}

/// Unblocks SIGPIPE in this thread's signal mask.
pub(crate) fn unblock_sigpipe() {
    sigpipe_mask(libc::SIG_UNBLOCK);
}

/// Applies `how` (SIG_BLOCK or SIG_UNBLOCK) for SIGPIPE alone; whether SIGPIPE was blocked.
fn sigpipe_mask(how: libc::c_int) -> bool {
    // SAFETY: sigset_t values are plain data, initialised by sigemptyset before use; the pointers
    // are valid for the calls; pthread_sigmask cannot fail with a valid `how`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(how, &set, &mut old);
        libc::sigismember(&old, libc::SIGPIPE) == 1
    }
}

/// Consumes a pending SIGPIPE (one a write to a pipe without readers queued while SIGPIPE was
/// blocked), if any, without waiting.
pub(crate) fn take_pending_sigpipe() {
    // SAFETY: as in `sigpipe_mask`; a zero timeout makes sigtimedwait return at once (EAGAIN
    // when nothing is pending); the siginfo pointer may be null.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &now);
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: fork, the child's start, pidfds, waiting and signalling.

/// Proof that the code holding it runs in a process just created by [`fork`], on its one thread
/// (the one that forked). Only `fork` makes one, so the child-only calls below cannot be made in
/// the parent by mistake; `!Send`, so it cannot leave the thread that forked either.
#[derive(Debug)]
pub(crate) struct InChild(PhantomData<*const ()>);

/// Which side of a [`fork`] or [`Clone3::clone_with_pidfd`] we are on.
pub(crate) enum Forked {
    /// The new process, and its pid if it was made by [`Clone3::clone_with_pidfd`] (no atfork
    /// handler ran there, so the caller refreshes what greenhub-ipc's handler would have).
    Child(InChild, Option<u32>),
    /// The calling process: the child's pid, and its pidfd if the kernel made one with the
    /// child ([`Clone3::clone_with_pidfd`]).
    Parent(u32, Option<OwnedFd>),
}

/// `fork(2)` through glibc, with everything glibc's fork does around the system call: the
/// `pthread_atfork` handlers (greenhub-ipc's pid refresh among them), and in a multithreaded
/// process the allocator's and stdio's locks, held across the call and reset in the child.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory preconditions: the child gets a copy of this address space with
    // only this thread running. What the child may then touch is `start_process`'s concern: it
    // holds every lock the child's start uses (stdout, stderr, the handle registry, the names)
    // across the call, the child never touches the inherited hub (see `in_child`), and glibc's
    // malloc is fork-safe through its own atfork handlers.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child(InChild(PhantomData), None)),
        pid => Ok(Forked::Parent(pid as u32, None)),
    }
}

/// `CLONE_PIDFD` (Linux 5.2), missing from the libc crate.
const CLONE_PIDFD: u64 = 0x1000;

/// False once `clone3` said `ENOSYS` (Linux before 5.3) or `EPERM` (a seccomp filter).
static CLONE3_WORKS: AtomicBool = AtomicBool::new(true);

/// The kernel's `struct clone_args` (linux/sched.h), version 2 (88 bytes, Linux 5.7; a 5.3
/// kernel takes the first 64 bytes only if the rest is zero, which it is here).
#[repr(C)]
#[allow(non_camel_case_types)]
struct clone_args {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A fork by `clone3` that may be made from this thread ([`Clone3::clone_with_pidfd`]), with
/// what glibc's fork would fix in the child that a raw `clone3` does not: where this thread's
/// tid lives in glibc's descriptor, and this thread's robust-mutex list head.
pub(crate) struct Clone3 {
    tid: *mut libc::pid_t,
    robust_head: *mut *mut libc::c_void,
    robust_len: usize,
}

impl Clone3 {
    /// The clone for the calling thread, or `None` if `clone3` must not be used here (the
    /// caller forks with [`fork`]).
    pub(crate) fn here() -> Option<Clone3> {
        if !CLONE3_WORKS.load(Ordering::Relaxed) || !single_threaded() {
            return None;
        }
        let offset = glibc_tid_offset()?;
        // SAFETY: pthread_self has no preconditions; it points at this thread's descriptor,
        // which holds the tid at `offset` (glibc's own description of its layout).
        let tid = unsafe { (libc::pthread_self() as *mut u8).add(offset) }.cast();
        let mut head: *mut libc::c_void = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: get_robust_list(0, ...) reads the calling thread's registration into two live
        // out-values.
        let rc =
            unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &raw mut head, &raw mut len) };
        if rc != 0 || head.is_null() {
            return None;
        }
        Some(Clone3 { tid, robust_head: head.cast(), robust_len: len })
    }

    /// `clone3(CLONE_PIDFD)`: a fork whose pidfd the kernel makes in the same system call, so
    /// the child exists only together with the parent's handle on it. Where it cannot be used,
    /// the caller forks with [`fork`] instead: [`Clone3::here`] is `None` when glibc does not
    /// describe its thread descriptor or **the process has more than one thread**, and
    /// `Ok(None)` comes back when `clone3` is missing or forbidden.
    ///
    /// The system call bypasses glibc's `fork`, so it does here, for the child, what glibc's
    /// fork does that this process needs (the unsafe ledger has the whole argument):
    /// - only in a single-threaded process (`__libc_single_threaded`): then no other thread can
    ///   hold the allocator's or stdio's locks, which is why glibc's own fork takes them only in
    ///   a multithreaded process; nor greenhub-ipc's four (the caller holds them across `fork`,
    ///   not here: it only flushes stdout and stderr first);
    /// - the kernel writes the child's thread id into glibc's thread descriptor
    ///   (`CLONE_CHILD_SETTID`, at the offset glibc publishes for debuggers,
    ///   `_thread_db_pthread_tid`), as glibc's fork does, so mutexes that record their owner's
    ///   id and `pthread_*` calls on the own thread are right in the child;
    /// - the child registers its robust-mutex list with the kernel (a new process has none),
    ///   emptied as glibc's fork empties it.
    ///
    /// What it does not do: run the `pthread_atfork` handlers. greenhub-ipc's own (the pid
    /// refresh) is run by the caller; a C library that relies on its own atfork handlers in a
    /// forked child does not get them. `GREENHUB_IPC_FORK=fork` in the environment (read once)
    /// makes every start use [`fork`].
    pub(crate) fn clone_with_pidfd(self) -> io::Result<Option<Forked>> {
        let mut pidfd: libc::c_int = -1;
        let mut args = clone_args {
            flags: CLONE_PIDFD
                | libc::CLONE_CHILD_SETTID as u64
                | libc::CLONE_CHILD_CLEARTID as u64,
            pidfd: (&raw mut pidfd) as u64,
            child_tid: self.tid as u64,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: 0,
        };
        // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this address
        // space, running on a copy of this stack, and returns from the call like `fork`'s child.
        // `args` is a valid, fully initialised clone_args of the size passed; `pidfd` is a live
        // out-int; `child_tid` points at this thread's tid field in glibc's descriptor, which the
        // kernel writes in the child's copy. Why bypassing glibc's fork is sound here:
        // `Clone3::here` returned only because the process is single-threaded, and the child
        // applies the fixups below before returning.
        let rc = unsafe {
            libc::syscall(libc::SYS_clone3, &raw mut args, std::mem::size_of::<clone_args>())
        };
        match rc {
            -1 => {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOSYS | libc::EPERM) => {
                        CLONE3_WORKS.store(false, Ordering::Relaxed);
                        Ok(None)
                    }
                    _ => Err(err),
                }
            }
            0 => {
                let pid = self.apply_in_child();
                Ok(Some(Forked::Child(InChild(PhantomData), Some(pid))))
            }
            pid => {
                // SAFETY: the kernel made this fd for us together with the child; nobody else
                // owns it.
                let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
                Ok(Some(Forked::Parent(pid as u32, Some(pidfd))))
            }
        }
    }

    /// In the new child, before anything else: an empty robust list, registered. Returns the
    /// child's pid: the tid the kernel has just written, since the one thread of a
    /// single-threaded process is its main thread, whose tid is the pid (no `getpid` needed).
    fn apply_in_child(&self) -> u32 {
        // SAFETY: `robust_head` is this thread's `struct robust_list_head` (the kernel's ABI: its
        // first field is the list's first link), in the child's private copy of memory; pointing
        // it at itself empties the list, as glibc's fork does: the child owns none of the robust
        // mutexes the parent's thread held. set_robust_list only records the pointer.
        unsafe {
            *self.robust_head = self.robust_head.cast();
            libc::syscall(libc::SYS_set_robust_list, self.robust_head, self.robust_len);
        }
        // SAFETY: `tid` points into this thread's descriptor, written by the kernel
        // (CLONE_CHILD_SETTID) before the child ran any instruction.
        unsafe { self.tid.read() as u32 }
    }
}

/// Whether this process has only ever had one thread: glibc's `__libc_single_threaded`
/// (glibc 2.32+; false where it is missing). Conservative: it stays false once a thread has
/// been created, even after that thread ended.
fn single_threaded() -> bool {
    static FLAG: OnceLock<usize> = OnceLock::new();
    let flag = *FLAG.get_or_init(|| glibc_symbol(c"__libc_single_threaded"));
    // SAFETY: a non-zero address is glibc's `char __libc_single_threaded`, valid for the life of
    // the process; only this thread could change it (by creating a thread), so a plain read is
    // not racing with anyone while it is true.
    flag != 0 && unsafe { std::ptr::read_volatile(flag as *const libc::c_char) } != 0
}

/// The offset of `tid` in glibc's `struct pthread`, from the descriptor glibc exports for
/// thread debuggers (`_thread_db_pthread_tid`: size in bits, count, offset). `None` where it
/// is missing, or `GREENHUB_IPC_FORK=fork` asks for glibc's fork.
fn glibc_tid_offset() -> Option<usize> {
    static OFFSET: OnceLock<Option<usize>> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        if std::env::var_os("GREENHUB_IPC_FORK").is_some_and(|v| v == "fork") {
            return None;
        }
        let desc = glibc_symbol(c"_thread_db_pthread_tid");
        if desc == 0 {
            return None;
        }
        // SAFETY: glibc's `const uint32_t _thread_db_pthread_tid[3]`, valid for the process's life.
        let [bits, count, offset] = unsafe { std::ptr::read(desc as *const [u32; 3]) };
        (bits == 32 && count == 1).then_some(offset as usize)
    })
}

/// The address of a symbol of the C library (0 if it has none of that name).
fn glibc_symbol(name: &std::ffi::CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the name up.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// Runs the child side of `start_process` on `stack` and ends the process with its exit code:
/// `body`'s value, or 101 if it panics. Never returns, so nothing ever resumes or unwinds into
/// the coroutine that forked (its hub belongs to the parent), and the child's life (its start,
/// its hub, the hub's loop) never runs on what is left of that coroutine's stack, which may be
/// a few KiB: it runs on `stack`, mapped for it before the fork.
pub(crate) fn in_child(
    token: InChild,
    stack: greenhub::ext::FreshStack,
    body: impl FnOnce(&InChild) -> i32,
) -> ! {
    // SAFETY: `token` proves this is a process just created by `fork`, on the thread that forked
    // (the only one). This function never returns and catches every unwind below, so the
    // coroutine we were called from is never resumed or unwound: the contract of
    // `forget_inherited_hub`.
    unsafe { greenhub::ext::forget_inherited_hub() };
    greenhub::ext::on_stack(stack, move || {
        let run = panic::catch_unwind(AssertUnwindSafe(|| body(&token)));
        let code = run.unwrap_or_else(|payload| {
            std::mem::forget(payload); // dropping it could panic again; we are leaving anyway
            101
        });
        exit_now(code) // on `stack`: `on_stack` never returns to the forking coroutine's stack
    })
}

/// Ends this process at once with `code`: no atexit handlers, no destructors, no flushing.
///
/// The `exit_group` system call through `syscall`, which is what glibc's `_exit` makes: a child
/// has already run `syscall`'s code (its `clone3` returned there), while `_exit` lives on another
/// 64 KiB stretch of libc, which the child would fault in (about 2.5 us) just to leave.
pub(crate) fn exit_now(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and never returns; the loop only satisfies `!`.
        unsafe { libc::syscall(libc::SYS_exit_group, code) };
    }
}

/// What a child's signal reset needs from libc, asked in the parent before the fork: the
/// real-time signals glibc keeps for itself (from 32 up to `SIGRTMIN`) and the last signal. (In
/// the child, the call would fault in a stretch of libc's code just for two numbers.)
#[derive(Debug)]
pub(crate) struct SignalRange {
    rtmin: libc::c_int,
    rtmax: libc::c_int,
}

impl SignalRange {
    pub(crate) fn here() -> SignalRange {
        SignalRange { rtmin: libc::SIGRTMIN(), rtmax: libc::SIGRTMAX() }
    }
}

/// The kernel's `struct sigaction` as `rt_sigaction` takes it: the handler first (every
/// architecture below), then flags, restorer and mask, which a reset leaves zero.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    rest: [u64; 3],
}

/// In a new child: every signal's disposition back to the default, except SIGPIPE (ignored, so
/// a write to a closed pipe is an error, not a death) and SIGSEGV/SIGBUS (greenhub's stack
/// overflow reporter, which chains to the previous handler); and an empty signal mask. The
/// signals glibc reserves (32 up to `SIGRTMIN`: thread cancellation, `setxid`) keep glibc's
/// handlers, as glibc's `sigaction` refuses to touch them.
///
/// The system calls are made through `syscall`, not glibc's `sigaction` and `pthread_sigmask`:
/// the same calls (glibc's wrappers translate the struct and, for the mask, leave its two
/// reserved signals unblocked, which an empty mask does anyway), but the child has run
/// `syscall`'s code already, so the reset touches none of libc's signal code (a fault in of
/// 64 KiB of it, about 2.5 us, for each stretch it would touch).
pub(crate) fn reset_signals(_: &InChild, range: &SignalRange) {
    // SAFETY: `InChild` proves a fresh fork child, whose inherited Signals (in the forgotten hub)
    // are never used again.
    unsafe { greenhub::ext::forget_inherited_signals() };
    let reserved = 32..range.rtmin;
    for signal in 1..=range.rtmax {
        let keep = [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS];
        if keep.contains(&signal) || reserved.contains(&signal) {
            continue;
        }
        let action = if signal == libc::SIGPIPE { libc::SIG_IGN } else { libc::SIG_DFL };
        set_disposition(signal, action);
    }
    let none: u64 = 0;
    // SAFETY: rt_sigprocmask reads one 8-byte mask (the kernel's sigset_t) from a live local;
    // the old-mask pointer may be null.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const none,
            std::ptr::null_mut::<u64>(),
            8,
        )
    };
}

/// Sets `signal`'s disposition to `action` (`SIG_DFL` or `SIG_IGN`), with no flags and an
/// empty mask.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
fn set_disposition(signal: libc::c_int, action: libc::sighandler_t) {
    let sa = KernelSigaction { handler: action, rest: [0; 3] };
    // SAFETY: rt_sigaction reads the kernel's struct sigaction (handler, flags, restorer or
    // none, an 8-byte mask: at most 32 bytes on these architectures, all of `sa`) from a live
    // local; SIG_DFL/SIG_IGN install no code, so no restorer is needed; the old-action pointer
    // may be null. EINVAL (SIGKILL, SIGSTOP) cannot come: they are skipped.
    unsafe {
        libc::syscall(libc::SYS_rt_sigaction, signal, &raw const sa, std::ptr::null_mut::<u8>(), 8)
    };
}

/// Sets `signal`'s disposition to `action` through glibc, where the kernel's struct is laid out
/// otherwise.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
fn set_disposition(signal: libc::c_int, action: libc::sighandler_t) {
    // SAFETY: an all-zero sigaction with an empty mask and SIG_DFL/SIG_IGN installs no code;
    // the pointers are valid for the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = action;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signal, &sa, std::ptr::null_mut());
    }
}

/// In a new child: closes every fd except stdio (0, 1, 2) and those in `keep`, with
/// `close_range(2)` over the gaps (Linux 5.9+; older kernels: each fd listed in
/// `/proc/self/fd`). What it closes belongs to the parent's other work: other threads' pipes
/// and hubs (epoll, eventfd, timerfd), pidfds of other children, files. Nothing in the child
/// uses them: the parent's hub is forgotten, and inherited handles are never used here.
pub(crate) fn close_fds_except(_: &InChild, keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&fd| u32::try_from(fd).ok()).collect();
    keep.extend([0, 1, 2]);
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0u32;
    for &fd in &keep {
        if fd > first && close_range(first, fd - 1).is_err() {
            return close_listed_fds_except(&keep);
        }
        first = fd + 1;
    }
    if close_range(first, u32::MAX).is_err() {
        close_listed_fds_except(&keep);
    }
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes three integers and touches no memory; every fd it closes is one
    // the child inherited and never uses (see `close_fds_except`).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `close_fds_except` where `close_range` is missing: the fds listed in `/proc/self/fd`.
fn close_listed_fds_except(keep: &[u32]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let open: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| keep.binary_search(fd).is_err())
        .collect(); // the listing's own fd is among them, closed already once `entries` dropped
    for fd in open {
        // SAFETY: as in `close_range`: an inherited fd the child never uses.
        unsafe { libc::close(fd as RawFd) };
    }
}

/// In a new child: waits for the parent's go-ahead on the handshake pipe's read end (the parent
/// sends it once it holds the child's pidfd). False if the parent closed the pipe without it.
pub(crate) fn wait_for_go_ahead(_: &InChild, read_end: OwnedFd) -> bool {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a live local, from an fd we own (blocking mode).
        let n = unsafe { libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1) };
        if n >= 0 {
            return n == 1;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// In the parent: lets a child blocked in [`wait_for_go_ahead`] start, and closes the pipe.
pub(crate) fn send_go_ahead(write_end: OwnedFd) {
    let byte = 1u8;
    let _ = crate::sigpipe::write(|| {
        loop {
            // SAFETY: writes one byte from a live local to an fd we own; a pipe's first byte always
            // fits.
            let n = unsafe { libc::write(write_end.as_raw_fd(), (&raw const byte).cast(), 1) };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err); // EPIPE: the child has died already; the reaper will see it
            }
        }
    });
}

/// In a new child: asks the kernel for SIGTERM when the parent (precisely: the parent's thread
/// that forked) dies. False if the parent `parent` is already gone (the child was reparented
/// before the request took effect), in which case the child should exit; an error if the kernel
/// refused the request.
pub(crate) fn die_with_parent(_: &InChild, parent: u32) -> io::Result<bool> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) })?;
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    Ok(ppid as u32 == parent)
}

/// `pidfd_open(2)`: an fd that refers to the process `pid` itself (not to a pid number that may
/// be reused), close-on-exec; readable once the process has exited.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this fd for us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: sends `signal` to the process behind `pidfd`. A process that has
/// been reaped gives `ESRCH`, never a signal to another process that got its pid.
pub(crate) fn pidfd_send_signal(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills in a kill()-like one); no memory is
    // written.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd, signal, std::ptr::null::<u8>(), 0)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reaps the child behind `pidfd` if it has ended (`waitid(P_PIDFD, WEXITED | WNOHANG)`):
/// `Some(wait status)` (the raw `waitpid` encoding), `None` while it runs. `ECHILD` means
/// someone else reaped it (another `waitpid(-1)` user, or SIGCHLD set to SIG_IGN).
pub(crate) fn try_wait_pidfd(pidfd: RawFd) -> io::Result<Option<i32>> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-value (si_pid stays 0 when no child
        // changed state, as waitid(2) recommends checking).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG;
        // SAFETY: `info` is a valid out-pointer for the call.
        let rc = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, flags) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid filled `info` for a SIGCHLD-style report (or left it zeroed).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => (status & 0x7f) | 0x80,
            _ => status & 0x7f, // CLD_KILLED
        }));
    }
}

/// Blocks the thread until the child behind `pidfd` has ended and reaps it, or until `timeout`
/// passes (`Ok(None)`). For the places where no coroutine can wait: the end of `run`, and a
/// `Process` used outside any hub.
pub(crate) fn wait_pidfd_blocking(
    pidfd: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Option<i32>> {
    // A timeout too long to have a deadline (`Duration::MAX`) is no timeout.
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    loop {
        if let Some(status) = try_wait_pidfd(pidfd)? {
            return Ok(Some(status));
        }
        let ms = match deadline {
            None => -1,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.as_millis().clamp(1, i32::MAX as u128) as i32,
                _ => return Ok(None),
            },
        };
        let mut fds = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; EINTR just loops.
        if unsafe { libc::poll(&mut fds, 1, ms) } < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Kills and reaps our child `pid` (when it has no pidfd to do it properly: `pidfd_open` failed
/// right after `fork`, so no one else can have reaped it and the pid still names it).
pub(crate) fn kill_and_reap(pid: u32) {
    let pid = pid as libc::pid_t;
    // SAFETY: kill and waitpid take plain integers and a valid out-pointer; `pid` is our
    // unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd number has no memory preconditions.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: the duplicate is new and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Makes `cmd`'s children keep the fds listed in `fds` (at spawn time) open across `exec`, in
/// blocking mode: the program gets plain blocking fds, as any program expects.
pub(crate) fn keep_open_on_exec(cmd: &mut std::process::Command, fds: Arc<Mutex<Vec<RawFd>>>) {
    let hook = move || {
        // Never blocks: the list is locked only by the `Command` that owns it, on the thread
        // that is inside `spawn` right now, and not while forking.
        let Ok(fds) = fds.try_lock() else {
            return Err(io::Error::from_raw_os_error(libc::EDEADLK));
        };
        for &fd in fds.iter() {
            // SAFETY: fcntl is async-signal-safe and touches no memory; `fd` is open here
            // (inherited from the parent, which keeps it open until spawn returns).
            unsafe {
                let fd_flags = check(libc::fcntl(fd, libc::F_GETFD))?;
                check(libc::fcntl(fd, libc::F_SETFD, fd_flags & !libc::FD_CLOEXEC))?;
                let fl_flags = check(libc::fcntl(fd, libc::F_GETFL))?;
                check(libc::fcntl(fd, libc::F_SETFL, fl_flags & !libc::O_NONBLOCK))?;
            }
        }
        Ok(())
    };
    // SAFETY: `pre_exec` runs the hook in the forked child before exec, where only
    // async-signal-safe work is allowed: the hook does not allocate, takes no lock that can be
    // held (try_lock), and calls only fcntl.
    unsafe { cmd.pre_exec(hook) };
}

/// Asks the kernel to fault in, writable, the pages under `region` in one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14+), where writing it would fault once per page. Advice only:
/// the contents do not change, and where the kernel does not know the advice (or the range is
/// not page-aligned enough to hold a whole page) nothing happens.
pub(crate) fn populate_for_writing<T>(region: &mut [std::mem::MaybeUninit<T>]) {
    const MADV_POPULATE_WRITE: libc::c_int = 23; // <linux/mman.h>; not in the libc crate yet
    // SAFETY: sysconf has no memory preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = region.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(region);
    let (first, last) = (start.next_multiple_of(page), end / page * page);
    if last <= first {
        return;
    }
    // SAFETY: `[first, last)` lies inside `region`, memory the caller holds a unique borrow of;
    // MADV_POPULATE_WRITE only faults its pages in (as a write would, without writing), so no
    // byte of it changes and no other memory is touched. An error (EINVAL on kernels before
    // 5.14) leaves everything as it was.
    unsafe { libc::madvise(first as *mut libc::c_void, last - first, MADV_POPULATE_WRITE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populating_a_region_changes_none_of_its_bytes() {
        let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
        v.extend(0..=255);
        populate_for_writing(v.spare_capacity_mut());
        assert!(v.iter().copied().eq(0..=255));
        // And the rest can be written as usual; so can a region smaller than a page.
        v.resize(1 << 20, 7);
        assert!(v[256..].iter().all(|&b| b == 7));
        let mut small: Vec<u64> = Vec::with_capacity(3);
        populate_for_writing(small.spare_capacity_mut());
        small.extend([1, 2, 3]);
        assert_eq!(small, [1, 2, 3]);
    }
}
