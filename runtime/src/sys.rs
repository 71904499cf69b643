//! Linux-specific pieces of the hub: the stack-overflow reporter, stack memory (reservations,
//! guard pages), the eventfd that wakes the loop from other threads, and the timerfd that wakes
//! it at a timer's deadline. Every `unsafe` block of the crate is here, except the coroutine
//! plumbing (`coroutine.rs`, `hub.rs`, `stack.rs`) and the call of the unsafe fork hook in
//! `ext.rs`; the unsafe ledger in docs/ lists them all. (mio
//! itself hides epoll; a kqueue port replaces this file.)
//!
//! Guarantee: a coroutine that runs off its stack into the guard page is reported on stderr as
//! "greenhub: coroutine #N overflowed its stack (size S bytes)" and the process aborts. Any other
//! SIGSEGV/SIGBUS goes to the handler that was installed before (Rust's own, or the default).

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

/// A fault this far below a stack's guard page still counts as an overflow of that stack (a
/// frame larger than one page can jump over the guard page).
const GUARD_SLACK: usize = 64 * 1024;

/// Size of the alternate signal stack greenhub installs on a thread that has none.
const ALT_STACK_SIZE: usize = 64 * 1024;

thread_local! {
    /// The running coroutine's stack, for the fault handler: [guard page address, id, size].
    /// Const-initialised and without destructor, so reading it in a signal handler is plain
    /// thread-local memory access.
    static WATCHED: Cell<[usize; 3]> = const { Cell::new([0; 3]) };
    static ALT_STACK_READY: Cell<bool> = const { Cell::new(false) };
}

/// The handlers that were installed before ours, for SIGSEGV and SIGBUS.
static PREVIOUS: OnceLock<[libc::sigaction; 2]> = OnceLock::new();
static PAGE_SIZE: OnceLock<usize> = OnceLock::new();

/// Records the stack of the coroutine about to run.
pub(crate) fn watch_stack(limit: usize, id: u64, size: usize) {
    WATCHED.with(|w| w.set([limit, id as usize, size]));
}

/// No coroutine is running on this thread.
pub(crate) fn unwatch_stack() {
    WATCHED.with(|w| w.set([0; 3]));
}

/// Installs the overflow reporter once per process, and an alternate signal stack on this
/// thread if it has none (the handler cannot run on the stack that overflowed).
pub(crate) fn install_overflow_reporter() {
    PREVIOUS.get_or_init(|| {
        PAGE_SIZE.get_or_init(page_size);
        [install_handler(libc::SIGSEGV), install_handler(libc::SIGBUS)]
    });
    if !ALT_STACK_READY.with(Cell::get) {
        ensure_alt_stack();
        ALT_STACK_READY.with(|r| r.set(true));
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

fn install_handler(signal: libc::c_int) -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid "no handler, empty mask" value.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = on_fault as *const () as usize;
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    let mut previous = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid for the call; `on_fault` has the SA_SIGINFO signature and
    // only does async-signal-safe work (thread-local reads, write(2), abort, sigaction).
    let rc = unsafe {
        libc::sigemptyset(&mut ours.sa_mask);
        libc::sigaction(signal, &ours, previous.as_mut_ptr())
    };
    assert_eq!(rc, 0, "greenhub: sigaction failed: {}", io::Error::last_os_error());
    // SAFETY: sigaction succeeded, so it wrote the previous action.
    unsafe { previous.assume_init() }
}

fn ensure_alt_stack() {
    let mut current = MaybeUninit::<libc::stack_t>::zeroed();
    // SAFETY: querying the alternate stack with a null new stack changes nothing.
    let rc = unsafe { libc::sigaltstack(std::ptr::null(), current.as_mut_ptr()) };
    // SAFETY: sigaltstack succeeded (rc == 0) and filled `current`.
    if rc != 0 || unsafe { current.assume_init() }.ss_flags & libc::SS_DISABLE == 0 {
        return; // the thread has one already (Rust installs one on the threads it starts)
    }
    // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return; // without it an overflow is a plain SIGSEGV, as without greenhub
    }
    let alt = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALT_STACK_SIZE };
    // SAFETY: `alt` describes a live mapping that is never unmapped (one per thread, leaked).
    unsafe { libc::sigaltstack(&alt, std::ptr::null_mut()) };
}

/// The SIGSEGV/SIGBUS handler: report an overflow of the running coroutine's stack, or chain.
extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let [limit, id, size] = WATCHED.with(Cell::get);
    let page = PAGE_SIZE.get().copied().unwrap_or(4096);
    if limit != 0 && addr >= limit.saturating_sub(GUARD_SLACK) && addr < limit + page {
        report_overflow(id, size);
        // SAFETY: abort is async-signal-safe and never returns.
        unsafe { libc::abort() };
    }
    chain(signal, info, ctx);
}

/// Writes the report with write(2) from a stack buffer: no allocation, no locks.
fn report_overflow(id: usize, size: usize) {
    let mut out = FaultText::new();
    out.text("greenhub: ");
    if !crate::coroutine::write_running_identity(&mut out) {
        out.text("coroutine #");
        out.number(id as u64);
    }
    out.text(" overflowed its stack (size ");
    out.number(size as u64);
    out.text(" bytes); raise Builder::stack_size or use less stack. Aborting.\n");
    out.write_to_stderr();
}

/// Text built without allocating, for a signal handler: whatever does not fit is cut off.
pub(crate) struct FaultText {
    buf: [u8; 512],
    len: usize,
}

impl FaultText {
    fn new() -> Self {
        FaultText { buf: [0; 512], len: 0 }
    }

    pub(crate) fn text(&mut self, s: &str) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }

    pub(crate) fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.text(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    }

    fn write_to_stderr(&self) {
        // SAFETY: `buf[..len]` is initialised; fd 2 may be closed, in which case write fails
        // harmlessly.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

/// Passes a fault that is not ours to the handler that was there before.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(previous) = PREVIOUS.get() else { return };
    let previous = previous[usize::from(signal == libc::SIGBUS)];
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again and the
        // kernel delivers the default action (terminate with a core dump).
        // SAFETY: an all-zero sigaction with SIG_DFL is valid; sigaction is async-signal-safe.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

/// An eventfd for waking the loop from other threads (non-blocking, close-on-exec).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes a poller). A full counter already means "wake".
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an fd we own.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter (or a timerfd's expiry count: both read as one u64).
pub(crate) fn eventfd_drain(fd: RawFd) {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
}

/// A non-blocking, close-on-exec timerfd on the monotonic clock (the clock of `Instant`).
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create has no memory preconditions; the result is checked.
    let fd = unsafe {
        libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms a timerfd to expire once, `after` from now, as an absolute monotonic time.
pub(crate) fn timerfd_arm(fd: &OwnedFd, after: Duration) -> io::Result<()> {
    let mut now = MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: `now` is a valid out-pointer for clock_gettime.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: clock_gettime succeeded and filled `now`.
    let now = unsafe { now.assume_init() };
    let nanos = now.tv_nsec as u64 + u64::from(after.subsec_nanos());
    let at = libc::timespec {
        tv_sec: now.tv_sec
            + after.as_secs() as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    let spec =
        libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: at };
    // SAFETY: valid pointers to a live itimerspec; no old value is requested.
    let rc = unsafe {
        libc::timerfd_settime(fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Closes an fd number without any other bookkeeping (after fork, for inherited hub fds).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the fd belongs to an `OwnedFd` inside the inherited hub, which is leaked and never
    // dropped (see `forget_inherited`), so nothing else closes or uses this number here.
    unsafe { libc::close(fd) };
}

/// Whether `fd` is ready now, for reading (`read`) or writing: a poll(2) that does not wait.
/// Hang-up, error and an invalid fd count as ready: the next syscall on the fd reports them.
pub(crate) fn ready_now(fd: RawFd, read: bool) -> io::Result<bool> {
    let wanted = if read { libc::POLLIN } else { libc::POLLOUT };
    let mut pollfd = libc::pollfd { fd, events: wanted, revents: 0 };
    loop {
        // SAFETY: `pollfd` is one live pollfd; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if n >= 0 {
            let ready = wanted | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
            return Ok(pollfd.revents & ready != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Puts an fd in non-blocking mode (`on`) or back in blocking mode.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory preconditions; errors are checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    if wanted == flags {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a listening socket's backlog: `listen(2)` again on a socket that already listens only
/// changes the length of its queue of connections not yet accepted (Linux).
pub(crate) fn listen(fd: RawFd, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: listen on an fd number has no memory preconditions; errors are checked.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's cap on a listen backlog (`net.core.somaxconn`), or `SOMAXCONN` if unreadable.
pub(crate) fn max_listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(libc::SOMAXCONN as u32)
}

/// The kernel's cap on memory mappings per process, if readable.
pub(crate) fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Stack memory: reservations, guard pages, giving pages back

/// `madvise` advice that installs a lightweight guard region (Linux 6.13+): the range faults on
/// access like `PROT_NONE`, but lives in the page tables and splits no mapping. The libc crate
/// does not define it yet.
pub(crate) const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The system page size.
pub(crate) fn page() -> usize {
    *PAGE_SIZE.get_or_init(page_size)
}

/// Reserves `len` bytes of read-write address space, without committing memory
/// (`MAP_NORESERVE`): pages are backed only once touched.
pub(crate) fn reserve(len: usize) -> io::Result<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice has no
    // preconditions and cannot overlap any existing mapping; the result is checked.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr as usize)
}

/// Unmaps a reservation made by [`reserve`].
///
/// # Safety
/// `[addr, addr + len)` is a whole reservation returned by [`reserve`], and nothing uses any
/// byte of it any more (no coroutine runs or is suspended on a stack carved from it).
pub(crate) unsafe fn unreserve(addr: usize, len: usize) {
    // SAFETY: the caller guarantees the range is ours and unused.
    let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    debug_assert_eq!(rc, 0, "munmap of a stack reservation: {}", io::Error::last_os_error());
}

/// How a guard page is made inaccessible.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GuardKind {
    /// `madvise(MADV_GUARD_INSTALL)`: no mapping of its own.
    Lightweight,
    /// `mprotect(PROT_NONE)`: the guard is a mapping of its own, and so is the stack above it.
    Mprotect,
}

/// Makes the page at `addr` a guard page.
///
/// # Safety
/// `addr` is page-aligned, inside a reservation of ours, and nothing lives in that page (a
/// lightweight guard discards what the page held).
pub(crate) unsafe fn install_guard(addr: usize, kind: GuardKind) -> io::Result<()> {
    let ptr = addr as *mut libc::c_void;
    // SAFETY: the caller guarantees the page is ours and holds nothing; both calls only change
    // how the page may be accessed.
    let rc = unsafe {
        match kind {
            GuardKind::Lightweight => libc::madvise(ptr, page(), MADV_GUARD_INSTALL),
            GuardKind::Mprotect => libc::mprotect(ptr, page(), libc::PROT_NONE),
        }
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Gives the pages of `[addr, addr + len)` back to the OS; they read as zeros when touched
/// again. Guard pages in the range, of either kind, stay guards.
///
/// # Safety
/// The range is inside reservations of ours and nothing lives in it (free stacks only).
pub(crate) unsafe fn discard(addr: usize, len: usize) {
    // SAFETY: the caller guarantees the range is ours and unused; MADV_DONTNEED keeps the
    // mapping (and lightweight guards, which live in the page tables) and drops the pages.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// Which guard pages this kernel offers: one probe per process (a guard installed in a page of
/// a scratch mapping). `GREENHUB_STACK_GUARDS=mprotect` forces the fallback (for tests, and for
/// tools that do not know the advice).
pub(crate) fn guard_kind() -> GuardKind {
    static KIND: OnceLock<GuardKind> = OnceLock::new();
    *KIND.get_or_init(|| {
        if std::env::var_os("GREENHUB_STACK_GUARDS").is_some_and(|v| v == "mprotect") {
            return GuardKind::Mprotect;
        }
        let Ok(scratch) = reserve(page()) else { return GuardKind::Mprotect };
        // SAFETY: `scratch` is one page we just mapped and nothing uses.
        let probe = unsafe { install_guard(scratch, GuardKind::Lightweight) };
        // SAFETY: the whole scratch mapping, unused.
        unsafe { unreserve(scratch, page()) };
        // EINVAL: a kernel before 6.13. Any other refusal: do not rely on it either.
        if probe.is_ok() { GuardKind::Lightweight } else { GuardKind::Mprotect }
    })
}

/// The address-space limit (RLIMIT_AS) in bytes, if there is one.
pub(crate) fn address_space_limit() -> Option<u64> {
    let mut limit = MaybeUninit::<libc::rlimit>::zeroed();
    // SAFETY: `limit` is a valid out-pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, limit.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrlimit succeeded and filled `limit`.
    let limit = unsafe { limit.assume_init() };
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// How many memory mappings this process has (the lines of /proc/self/maps), if readable.
pub(crate) fn map_count() -> Option<u64> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// This process's mapped address space (VmSize) in bytes, if readable.
pub(crate) fn mapped_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 =
        line.trim_start_matches("VmSize:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
