//! Linux-specific pieces of the hub: the stack-overflow reporter, stack memory (reservations,
//! guard pages), the eventfd that wakes the loop from other threads, the timerfd that wakes
//! it at a timer's deadline, and the process-wide signal handler behind `signal::Signals`. Every `unsafe` block of the crate is here, except the coroutine
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
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// What the hub registers every fd for with epoll: both directions and, on Linux, urgent data
/// (`EPOLLPRI`), which a TCP socket reports when its peer sends out-of-band bytes (see
/// `io::Source::read_stream_until`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const INTEREST: mio::Interest =
    mio::Interest::READABLE.add(mio::Interest::WRITABLE).add(mio::Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const INTEREST: mio::Interest = mio::Interest::READABLE.add(mio::Interest::WRITABLE);

/// The most buffers one vectored read takes: std passes at most `UIO_MAXIOV` (1024) of them to
/// `readv`, and ignores the rest.
pub(crate) const MAX_READ_BUFFERS: usize = 1024;

/// A fault this far below a stack's guard page still counts as an overflow of that stack (a
/// frame larger than one page can jump over the guard page).
const GUARD_SLACK: usize = 64 * 1024;

/// Size of the alternate signal stack greenhub installs on a thread that has none.
const ALT_STACK_SIZE: usize = 64 * 1024;

thread_local! {
    /// The running coroutine's stack, for the fault handler: [guard page address, id, usable
    /// size, `Trap` as a number]; the handler ignores the record while its first word is 0.
    /// Const-initialised and without destructor, so reading it in a signal handler is plain
    /// thread-local memory access (as for every thread-local below).
    static WATCHED: Cell<[usize; 4]> = const { Cell::new([0; 4]) };
    static ALT_STACK_READY: Cell<bool> = const { Cell::new(false) };
    /// How deep this thread is in greenhub's own bookkeeping ([`HubSection`]): an overflow
    /// while it is not zero is never recovered.
    static HUB_SECTION: Cell<u32> = const { Cell::new(0) };
    /// Set by the fault handler when it made the running coroutine return (an overflow).
    static OVERFLOWED: Cell<bool> = const { Cell::new(false) };
}

/// The executable segments of the program itself (not of shared libraries), found once when
/// the reporter is installed: an overflow is recovered only when it hits code in them.
static PROGRAM_TEXT: OnceLock<[(usize, usize); 8]> = OnceLock::new();

/// The handlers that were installed before ours, for SIGSEGV and SIGBUS.
static PREVIOUS: OnceLock<[libc::sigaction; 2]> = OnceLock::new();
static PAGE_SIZE: OnceLock<usize> = OnceLock::new();

/// Whether an overflow may end the running coroutine alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Trap {
    /// `recover_stack_overflow` is off.
    Off = 0,
    /// On, and the coroutine's trap handle is armed (`coroutine::arm_trap`).
    Armed = 1,
    /// On, but this is the root.
    Root = 2,
}

/// Records the stack of the coroutine about to run.
#[inline]
pub(crate) fn watch_stack(limit: usize, id: u64, size: usize, trap: Trap) {
    WATCHED.with(|w| w.set([limit, id as usize, size, trap as usize]));
}

/// No coroutine is running on this thread. Also closes any [`HubSection`] a panic left open
/// (none spans a switch, so at this point none is legitimately open).
#[inline]
pub(crate) fn unwatch_stack() {
    // Only the first word: zeroing all four cost two more instructions per switch (callgrind).
    WATCHED.with(|w| {
        let words: &Cell<[usize]> = w;
        words.as_slice_of_cells()[0].set(0);
    });
    HUB_SECTION.with(|d| d.set(0));
}

/// Whether the coroutine that just returned was made to by the fault handler (an overflow);
/// clears the flag.
#[inline]
pub(crate) fn take_overflowed() -> bool {
    OVERFLOWED.with(|o| o.replace(false))
}

/// Marks greenhub's own bookkeeping on a coroutine stack for as long as it lives: an overflow
/// inside aborts, because the state it was updating may be half-written. Never held across a
/// switch (every suspension point is outside any section).
pub(crate) struct HubSection(());

impl HubSection {
    #[inline]
    pub(crate) fn enter() -> HubSection {
        HUB_SECTION.with(|d| d.set(d.get() + 1));
        HubSection(())
    }

    /// The same without a guard, for the hot paths (a guard's unwind cleanup costs them their
    /// inlining). A panic between this and [`leave`](Self::leave) leaves the depth up until the
    /// coroutine next switches out (`unwatch_stack` resets it): recovery is refused meanwhile,
    /// which errs on the safe side.
    #[inline(always)]
    pub(crate) fn enter_raw() {
        HUB_SECTION.with(|d| d.set(d.get() + 1));
    }

    #[inline(always)]
    pub(crate) fn leave() {
        HUB_SECTION.with(|d| d.set(d.get() - 1));
    }

    /// Whether this thread is in one now (checked before a switch).
    pub(crate) fn active() -> bool {
        HUB_SECTION.with(Cell::get) != 0
    }
}

impl Drop for HubSection {
    #[inline]
    fn drop(&mut self) {
        HUB_SECTION.with(|d| d.set(d.get() - 1));
    }
}

/// The registers to set in the interrupted context so that, when the handler returns, the
/// overflowing coroutine runs corosensei's trap trampoline and returns to the loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrapRegs {
    pub(crate) pc: usize,
    pub(crate) sp: usize,
    pub(crate) frame: usize,
    pub(crate) args: [usize; 2],
}

/// Installs the overflow reporter once per process, and an alternate signal stack on this
/// thread if it has none (the handler cannot run on the stack that overflowed).
pub(crate) fn install_overflow_reporter() {
    PREVIOUS.get_or_init(|| {
        PAGE_SIZE.get_or_init(page_size);
        PROGRAM_TEXT.get_or_init(program_text);
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

/// Why an overflow cannot end only the coroutine that overflowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fatal {
    /// `recover_stack_overflow` is off (the default).
    NotAsked,
    /// The root coroutine: its end is the end of `run`.
    Root,
    /// greenhub's own state was mid-update.
    InHub,
    /// The coroutine was already unwinding (a cancel, a timeout, a panic): abandoning its
    /// stack would leave the thread's panic count up for good.
    Unwinding,
    /// The fault hit code outside the program itself (a shared library such as libc, whose
    /// internal state, malloc's locks included, greenhub cannot know).
    InLibrary,
    /// No way to redirect the coroutine on this platform, or its stack pointer was off its
    /// stack (a frame larger than the guard page jumped over it).
    Unrecoverable,
}

/// The SIGSEGV/SIGBUS handler: an overflow of the running coroutine's stack is reported, then
/// either ends that coroutine (returning from the handler into corosensei's trap trampoline)
/// or aborts; any other fault goes to the previous handler.
extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let [limit, id, size, trap] = WATCHED.with(Cell::get);
    let page = PAGE_SIZE.get().copied().unwrap_or(4096);
    // A guard hit is SEGV_MAPERR for a lightweight guard, SEGV_ACCERR for an mprotect'ed one:
    // classify by address, not by code.
    if limit == 0 || addr < limit.saturating_sub(GUARD_SLACK) || addr >= limit + page {
        return chain(signal, info, ctx);
    }
    // SAFETY: for an SA_SIGINFO handler `ctx` is the interrupted thread's ucontext_t, ours to
    // read and change until we return.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    match recover(uc, limit, trap) {
        Ok(()) => report_overflow(id, size, None),
        Err(why) => {
            report_overflow(id, size, Some(why));
            // SAFETY: abort is async-signal-safe and never returns.
            unsafe { libc::abort() };
        }
    }
}

/// Redirects the overflowing coroutine to return to the loop, if that is allowed and possible.
fn recover(uc: &mut libc::ucontext_t, limit: usize, trap: usize) -> Result<(), Fatal> {
    match trap {
        t if t == Trap::Armed as usize => {}
        t if t == Trap::Root as usize => return Err(Fatal::Root),
        _ => return Err(Fatal::NotAsked),
    }
    if HUB_SECTION.with(Cell::get) != 0 {
        return Err(Fatal::InHub);
    }
    // Decided here, not after the trampoline returned (`Hub::bury` can only abort then, after
    // this handler has already reported a recovery). `panicking` reads an atomic and a
    // const-initialised thread-local without destructor: plain memory reads, as above.
    if std::thread::panicking() {
        return Err(Fatal::Unwinding);
    }
    let (pc, sp) = interrupted_pc_sp(uc).ok_or(Fatal::Unrecoverable)?;
    let in_program =
        PROGRAM_TEXT.get().is_some_and(|t| t.iter().any(|&(a, b)| (a..b).contains(&pc)));
    if !in_program {
        return Err(Fatal::InLibrary);
    }
    if sp < limit {
        return Err(Fatal::Unrecoverable);
    }
    let regs = crate::coroutine::trap_running(sp).ok_or(Fatal::Unrecoverable)?;
    set_interrupted_regs(uc, regs);
    OVERFLOWED.with(|o| o.set(true));
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn interrupted_pc_sp(uc: &libc::ucontext_t) -> Option<(usize, usize)> {
    let gregs = &uc.uc_mcontext.gregs;
    Some((gregs[libc::REG_RIP as usize] as usize, gregs[libc::REG_RSP as usize] as usize))
}

#[cfg(target_arch = "x86_64")]
fn set_interrupted_regs(uc: &mut libc::ucontext_t, regs: TrapRegs) {
    let gregs = &mut uc.uc_mcontext.gregs;
    gregs[libc::REG_RIP as usize] = regs.pc as i64;
    gregs[libc::REG_RSP as usize] = regs.sp as i64;
    gregs[libc::REG_RBP as usize] = regs.frame as i64;
    gregs[libc::REG_RDI as usize] = regs.args[0] as i64;
    gregs[libc::REG_RSI as usize] = regs.args[1] as i64;
}

#[cfg(not(target_arch = "x86_64"))]
fn interrupted_pc_sp(_: &libc::ucontext_t) -> Option<(usize, usize)> {
    None // recovery is implemented for x86_64 only; elsewhere an overflow aborts
}

#[cfg(not(target_arch = "x86_64"))]
fn set_interrupted_regs(_: &mut libc::ucontext_t, _: TrapRegs) {}

/// The executable PT_LOAD segments of the main program (the first object dl_iterate_phdr
/// lists), at most eight.
fn program_text() -> [(usize, usize); 8] {
    let mut ranges = [(0usize, 0usize); 8];
    extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid dl_phdr_info, whose dlpi_phdr points to
        // dlpi_phnum program headers; `data` is the `ranges` array passed below.
        unsafe {
            let info = &*info;
            let ranges = &mut *data.cast::<[(usize, usize); 8]>();
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let text =
                headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0);
            for (slot, h) in ranges.iter_mut().zip(text) {
                let start = info.dlpi_addr as usize + h.p_vaddr as usize;
                *slot = (start, start + h.p_memsz as usize);
            }
        }
        1 // the first object is the program itself: stop there
    }
    // SAFETY: the callback has the required signature and only writes into `ranges`, which
    // outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&mut ranges as *mut [(usize, usize); 8]).cast())
    };
    ranges
}

/// Writes the report with write(2) from a stack buffer: no allocation, no locks.
fn report_overflow(id: usize, size: usize, fatal: Option<Fatal>) {
    let mut out = FaultText::new();
    out.text("greenhub: ");
    if !crate::coroutine::write_running_identity(&mut out) {
        out.text("coroutine #");
        out.number(id as u64);
    }
    out.text(" overflowed its stack (size ");
    out.number(size as u64);
    out.text(" bytes)");
    out.text(match fatal {
        None => {
            "; it ends with a JoinError (is_stack_overflow), its stack is quarantined and \
             what was on it is leaked; the hub goes on.\n"
        }
        Some(Fatal::NotAsked) => "; raise Builder::stack_size or use less stack. Aborting.\n",
        Some(Fatal::Root) => {
            " in the root coroutine, whose end is the end of run: cannot end only that \
             coroutine; raise Builder::stack_size or use less stack. Aborting.\n"
        }
        Some(Fatal::InHub) => {
            " inside greenhub's own bookkeeping, which it may have left half-updated: \
             cannot end only that coroutine. Aborting.\n"
        }
        Some(Fatal::Unwinding) => {
            " while it was unwinding (cancelled, timed out or panicking), whose panic state \
             could never be repaired: cannot end only that coroutine. Aborting.\n"
        }
        Some(Fatal::InLibrary) => {
            " inside a shared library (libc or another), whose own state (malloc's locks) may \
             be left half-updated: cannot end only that coroutine. Aborting.\n"
        }
        Some(Fatal::Unrecoverable) => {
            "; its stack pointer left its stack (a frame larger than the guard page), or this \
             platform cannot redirect it: cannot end only that coroutine. Aborting.\n"
        }
    });
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
///
/// Through `syscall`, not glibc's `close`: the same system call, but a forked child has run
/// `syscall`'s code already (greenhub-ipc's `clone3` returns there), and `close` lives on
/// another 64 KiB stretch of libc that the child would fault in (about 2.5 us) for these three
/// calls.
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the fd belongs to an `OwnedFd` inside the inherited hub, which is leaked and never
    // dropped (see `forget_inherited`), so nothing else closes or uses this number here. close
    // takes an integer and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Whether `fd` is ready now, for reading (`read`) or writing: a poll(2) that does not wait.
/// Hang-up, error and an invalid fd count as ready: the next syscall on the fd reports them.
pub(crate) fn ready_now(fd: RawFd, read: bool) -> io::Result<bool> {
    let wanted = if read { libc::POLLIN } else { libc::POLLOUT };
    let ready = wanted | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    Ok(poll_now(fd, wanted)? & ready != 0)
}

/// Whether a write to `fd` would fail now: its reader is gone (a pipe's or a socket's), the
/// terminal hung up, or it is not open.
pub(crate) fn write_would_fail(fd: RawFd) -> bool {
    poll_now(fd, libc::POLLOUT)
        .is_ok_and(|revents| revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
}

/// `poll(2)` of one fd for `events`, without waiting: what it reports.
fn poll_now(fd: RawFd, events: libc::c_short) -> io::Result<libc::c_short> {
    let mut pollfd = libc::pollfd { fd, events, revents: 0 };
    loop {
        // SAFETY: `pollfd` is one live pollfd; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if n >= 0 {
            return Ok(pollfd.revents);
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

/// A blocking connect of a new Unix stream socket to the socket at `path`, given up after about
/// `within` while the listener's backlog stays full: `Ok(None)` then, or when a signal cut the
/// wait short (a Unix connect waits for room for at most the socket's `SO_SNDTIMEO`, then fails
/// with EAGAIN). The connected socket is close-on-exec and blocking, with no send timeout left
/// on it. The address is built as std builds it (a path starting with a NUL byte is abstract).
pub(crate) fn unix_connect_within(
    path: &std::path::Path,
    within: Duration,
) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is a valid value of this plain C struct.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path must be shorter than SUN_LEN",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    let terminator = usize::from(bytes.first().is_some_and(|&b| b != 0));
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + terminator;
    // SAFETY: socket has no memory preconditions; the result is checked and owned at once.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by socket, and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    set_send_timeout(&socket, within)?;
    // SAFETY: `addr` is a valid sockaddr_un whose first `len` bytes hold the family and the
    // path, live for the call.
    let rc = unsafe {
        libc::connect(socket.as_raw_fd(), (&raw const addr).cast(), len as libc::socklen_t)
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(None),
            _ => Err(err),
        };
    }
    set_send_timeout(&socket, Duration::ZERO)?;
    Ok(Some(socket))
}

/// Sets a socket's `SO_SNDTIMEO` (zero: none).
fn set_send_timeout(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    let size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` is a valid timeval of `size` bytes, live for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            size,
        )
    };
    if rc < 0 {
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
        match std::env::var_os("GREENHUB_STACK_GUARDS") {
            Some(v) if v == "mprotect" => return GuardKind::Mprotect,
            // A typo must not pass for the setting: say what is accepted.
            Some(v) => crate::stderr::line(format_args!(
                "greenhub: GREENHUB_STACK_GUARDS={v:?} is not understood (the one value is \
                 \"mprotect\", which forces mprotect'ed guard pages); using the kernel's \
                 lightweight guards if it offers them"
            )),
            None => {}
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

// Signals delivered to coroutines (`signal::Signals`)
//
// One process-wide handler, installed per watched signal. It counts the delivery in
// `DELIVERED[signal]` and writes to the eventfd of every watcher of that signal, which wakes
// whichever hub that watcher's coroutine waits in. Everything it touches is a static atomic, and
// its only calls are getpid, write, sigaction and raise: all async-signal-safe (signal-safety(7)).

/// The highest signal number on Linux (`SIGRTMAX()` is 64 with glibc and musl).
pub(crate) const MAX_SIGNAL: usize = 64;

/// How many `Signals` values may be alive at once in a process (the handler scans this table).
pub(crate) const MAX_WATCHERS: usize = 256;

/// Deliveries of each signal since the process started (index = signal number).
static DELIVERED: [AtomicU64; MAX_SIGNAL + 1] = [const { AtomicU64::new(0) }; MAX_SIGNAL + 1];

/// For each signal, the pid of the process that installed our handler for it (0: none). The
/// handler acts only in that process: in a child forked before it forgot the parent's watchers,
/// a signal gets its default action instead (the child must inherit none of them).
static HANDLER_PID: [AtomicI32; MAX_SIGNAL + 1] = [const { AtomicI32::new(0) }; MAX_SIGNAL + 1];

/// One watcher: the eventfd to write to (-1: free) and the signals it wants (bit `n - 1`).
struct Watcher {
    fd: AtomicI32,
    mask: AtomicU64,
}

static WATCHERS: [Watcher; MAX_WATCHERS] =
    [const { Watcher { fd: AtomicI32::new(-1), mask: AtomicU64::new(0) } }; MAX_WATCHERS];

/// How many handler invocations are between reading a watcher's fd and writing to it. A
/// watcher's fd is closed only after it left the table and this count was seen at zero.
static HANDLERS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// A signal's disposition before greenhub's handler replaced it, to put back later.
#[derive(Clone, Copy)]
pub(crate) struct Disposition(libc::sigaction);

/// Deliveries of `signal` so far in this process (`signal` in 1..=MAX_SIGNAL).
pub(crate) fn signal_deliveries(signal: i32) -> u64 {
    DELIVERED[signal as usize].load(Ordering::SeqCst)
}

/// Installs the handler for `signal` and returns the disposition it replaced.
pub(crate) fn install_signal_handler(signal: i32) -> io::Result<Disposition> {
    // SAFETY: an all-zero sigaction is a valid "no handler, empty mask" value.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = on_signal as *const () as usize;
    // SA_RESTART: other threads' blocking calls are not cut short with EINTR by a signal that is
    // only being recorded. (epoll_wait is never restarted, which is what wakes a polling hub.)
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    let mut previous = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: the pid is this process's; every later delivery is handled by `on_signal`.
    HANDLER_PID[signal as usize].store(unsafe { libc::getpid() }, Ordering::SeqCst);
    // SAFETY: valid pointers for the call; `on_signal` has the SA_SIGINFO signature and does
    // only async-signal-safe work (see its comment and the unsafe ledger).
    let rc = unsafe {
        libc::sigemptyset(&mut ours.sa_mask);
        libc::sigaction(signal, &ours, previous.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it wrote the previous action.
    Ok(Disposition(unsafe { previous.assume_init() }))
}

/// Puts back the disposition `install_signal_handler` replaced.
pub(crate) fn restore_signal_disposition(signal: i32, previous: &Disposition) {
    // SAFETY: `previous` is a disposition the kernel gave us for this very signal.
    unsafe { libc::sigaction(signal, &previous.0, std::ptr::null_mut()) };
}

/// Makes watcher `slot` (a free slot the caller owns) receive `mask`'s signals on `fd`.
pub(crate) fn publish_watcher(slot: usize, fd: RawFd, mask: u64) {
    WATCHERS[slot].mask.store(mask, Ordering::SeqCst);
    WATCHERS[slot].fd.store(fd, Ordering::SeqCst);
}

/// Takes watcher `slot` out of the table, and returns once no handler can still write to its fd
/// (so the caller may close it: the number could otherwise be reused by an unrelated file).
pub(crate) fn retract_watcher(slot: usize) {
    WATCHERS[slot].fd.store(-1, Ordering::SeqCst);
    WATCHERS[slot].mask.store(0, Ordering::SeqCst);
    // A handler that loaded the old fd incremented the count before loading it (both SeqCst),
    // so it is seen here; one that did not will load -1. Handlers never wait, so this ends.
    while HANDLERS_RUNNING.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
}

/// After fork, in the child: forget the parent's watchers. Their eventfds (owned by `Signals`
/// values of the leaked, inherited hub) are closed, the handler stops acting here, and what the
/// handler was installed for gets its previous disposition back from the caller.
///
/// # Safety
/// Only in a process just created by `fork`, whose inherited `Signals` values are never used or
/// dropped (they belong to the leaked, inherited hub): their eventfds are closed here.
pub(crate) unsafe fn forget_signal_watchers_after_fork() {
    // Only entries the parent set are written: a store to a page of these tables makes the child
    // copy it (copy-on-write), 5 or 6 page faults per child when nothing needs resetting.
    for watcher in &WATCHERS {
        if watcher.fd.load(Ordering::SeqCst) < 0 && watcher.mask.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let fd = watcher.fd.swap(-1, Ordering::SeqCst);
        watcher.mask.store(0, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: the fd belongs to an inherited `Signals` that, by the caller's contract,
            // nothing uses or drops again; it left the handler's table above.
            unsafe { libc::close(fd) };
        }
    }
    for pid in HANDLER_PID.iter().filter(|pid| pid.load(Ordering::SeqCst) != 0) {
        pid.store(0, Ordering::SeqCst);
    }
    // The fork copied only the forking thread: no handler runs on any other thread here.
    if HANDLERS_RUNNING.load(Ordering::SeqCst) != 0 {
        HANDLERS_RUNNING.store(0, Ordering::SeqCst);
    }
}

/// The handler of every watched signal.
///
/// Async-signal-safe: it reads and writes static atomics only (lock-free on every platform Rust
/// supports with 64-bit atomics), and calls getpid, write, sigaction and raise, which
/// signal-safety(7) lists; it saves and restores `errno`. It never allocates, locks or waits.
extern "C" fn on_signal(signal: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    let errno = unsafe { *libc::__errno_location() };
    let Some(index) = usize::try_from(signal).ok().filter(|&s| (1..=MAX_SIGNAL).contains(&s))
    else {
        return;
    };
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    if HANDLER_PID[index].load(Ordering::SeqCst) != unsafe { libc::getpid() } {
        default_action(signal);
    } else {
        DELIVERED[index].fetch_add(1, Ordering::SeqCst);
        HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
        let bit = 1u64 << (index - 1);
        for watcher in &WATCHERS {
            if watcher.mask.load(Ordering::SeqCst) & bit == 0 {
                continue;
            }
            let fd = watcher.fd.load(Ordering::SeqCst);
            if fd >= 0 {
                let one: u64 = 1;
                // SAFETY: `fd` is a live eventfd: `retract_watcher` waits for this handler
                // (counted in HANDLERS_RUNNING) before the fd may be closed. Writes 8 bytes
                // from a live u64; a full counter (EAGAIN) already means "wake".
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            }
        }
        HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// In a process that did not install the handler (a forked child): give `signal` its default
/// action, as if the handler had never been inherited.
fn default_action(signal: libc::c_int) {
    // SAFETY: an all-zero sigaction with SIG_DFL is valid; sigaction and raise are
    // async-signal-safe. The raised signal is blocked while this handler runs and is delivered,
    // with its default action, when the handler returns.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &default, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// Reads and resets an eventfd's counter; `WouldBlock` when it is zero.
pub(crate) fn eventfd_take(fd: RawFd) -> io::Result<u64> {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    let n = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(count) }
}
