//! Shared helpers for the integration tests: process-wide resource checks (open fds, zombie
//! children), a lock that serialises the tests that count them, and a way to rerun one test of
//! the current test binary in a child process.
//!
//! File descriptors and child processes belong to the whole process, and the test harness runs
//! the tests of one binary on several threads at once. So a test that counts them must hold
//! [`process_lock`] (as must every test of that binary that opens fds or forks), or another
//! test's sockets show up as a leak.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

static PROCESS_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// How many [`ProcessLock`] guards this thread holds (the lock is reentrant per thread).
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Serialises the tests of one binary that open fds, fork, or count either.
///
/// Hold the guard for the whole test, including any setup outside [`assert_no_fd_leak`]. The
/// lock is reentrant: a thread that holds it may take it again (as `assert_no_fd_leak` does). A
/// test that panicked while holding it does not poison it for the others.
pub fn process_lock() -> ProcessLock {
    if HELD.get() > 0 {
        HELD.set(HELD.get() + 1);
        return ProcessLock { _guard: None };
    }
    let guard = PROCESS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.set(1);
    ProcessLock { _guard: Some(guard) }
}

/// The guard of [`process_lock`]; releases the lock when the thread's outermost guard drops.
#[derive(Debug)]
pub struct ProcessLock {
    _guard: Option<MutexGuard<'static, ()>>,
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        HELD.set(HELD.get() - 1);
    }
}

/// How many file descriptors this process has open (the entries of `/proc/self/fd`, not
/// counting the one used to list them).
pub fn open_fds() -> usize {
    let entries = std::fs::read_dir("/proc/self/fd").expect("cannot list /proc/self/fd");
    // The directory stream has an fd of its own while we list it, and it is listed too.
    entries.count() - 1
}

/// The fds open in this process, each with what it points to (`/proc/self/fd/N`'s link), not
/// counting the one used to list them.
fn fd_table() -> BTreeSet<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return BTreeSet::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            // The directory stream's own fd is gone by the time its link is read.
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// Runs `f` once to warm up (lazily opened, process-wide fds are not leaks), then `times` more
/// times, and panics if an fd is open after those runs that was not open before them (the same
/// number pointing to the same thing). An fd that something else closed meanwhile (a helper
/// thread's, left from an earlier test) is not a leak. Takes [`process_lock`] itself; a test that
/// opens fds before calling it must hold the lock already.
///
/// ```
/// greenhub_tests::assert_no_fd_leak(3, || {
///     let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
///     drop((a, b));
/// });
/// ```
pub fn assert_no_fd_leak(times: usize, mut f: impl FnMut()) {
    let _serial = process_lock();
    f();
    let before = fd_table();
    for _ in 0..times {
        f();
    }
    let after = fd_table();
    let leaked: Vec<String> =
        after.difference(&before).map(|(fd, target)| format!("  {fd} -> {target}")).collect();
    assert!(
        leaked.is_empty(),
        "fd leak: {} fds open before {times} runs, {} after; opened and not closed:\n{}",
        before.len(),
        after.len(),
        leaked.join("\n")
    );
}

/// The pids of this process's children that have exited but were not reaped (state `Z` in
/// `/proc/<pid>/stat`, with our pid as their parent).
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut zombies: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_state_and_parent(pid) == Some(('Z', me)))
        .collect();
    zombies.sort_unstable();
    zombies
}

/// The state letter and parent pid from `/proc/<pid>/stat`: `pid (comm) S ppid ...`. The
/// command name may hold spaces and parentheses, so parse after the last `)`.
fn stat_state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Reruns the test named `test` of the running test binary, alone, in a child process with the
/// environment variable `var` set to `value`, and returns its output (stdout and stderr
/// captured). The test checks `var` to know it is the child.
///
/// `test` is the test's path inside its binary: for a test function at the top of an
/// integration-test file, its bare name.
pub fn rerun_test_in_child(test: &str, var: &str, value: impl AsRef<OsStr> + Debug) -> Output {
    let exe = std::env::current_exe().expect("cannot find the test binary");
    Command::new(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(var, value)
        .output()
        .unwrap_or_else(|e| panic!("cannot rerun {} for {test}: {e}", exe.display()))
}

/// For a test that must run alone in a child process (it lowers a process-wide limit, or may
/// hang): in the parent, reruns `test` in a child with `var` set, checks that it passed there,
/// and returns false (the parent's work is done); in the child, returns true. The parent holds
/// [`process_lock`] meanwhile.
///
/// A child that may hang should arm `libc::alarm` first, so that a hang fails the test.
pub fn run_in_child(test: &str, var: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return true;
    }
    let _serial = process_lock(); // the child's pipes are fds of this process
    let out = rerun_test_in_child(test, var, "1");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the child failed: {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
    false
}

/// Lowers RLIMIT_NOFILE to `headroom` above the highest open fd and opens `/dev/null` until no
/// fd number is left, then closes `leave` of those again: the open files, to keep or drop. Only
/// for a test running alone in a child process ([`run_in_child`]): the limit is process-wide.
pub fn fill_free_fds(headroom: u64, leave: usize) -> Vec<std::fs::File> {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit pointers for the calls; lowering the soft limit needs no privilege.
    let rc = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = highest + headroom;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit)
    };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    let mut fillers = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        fillers.push(file);
    }
    fillers.truncate(fillers.len().saturating_sub(leave));
    fillers
}

/// Lowers RLIMIT_AS to what this process maps now plus `room` bytes (so no new coroutine stack
/// or thread stack larger than that fits); returns the limit for [`restore_address_space`].
/// Only for a test running alone in a child process ([`run_in_child`]): the cap is
/// process-wide.
pub fn limit_address_space(room: u64) -> libc::rlimit {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit pointers for the calls; lowering a soft limit needs no privilege.
    let rc = unsafe {
        libc::getrlimit(libc::RLIMIT_AS, &mut old);
        let new = libc::rlimit { rlim_cur: kib * 1024 + room, rlim_max: old.rlim_max };
        libc::setrlimit(libc::RLIMIT_AS, &new)
    };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    old
}

/// Gives back the RLIMIT_AS that [`limit_address_space`] returned.
pub fn restore_address_space(old: libc::rlimit) {
    // SAFETY: a valid rlimit; the soft limit goes back up to what it was, within the hard one.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Runs `f` with this process's address space capped at what it maps now plus 1 MiB, so the
/// OS refuses any new thread (its stack alone is 2 MiB), then lifts the cap. Panic output is
/// silenced meanwhile (printing a backtrace needs memory too). Only for a test running alone in
/// a child process ([`run_in_child`]): the cap is process-wide.
pub fn with_no_room_for_a_thread<T>(f: impl FnOnce() -> T) -> T {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `old` is a valid out-pointer for getrlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let capped = libc::rlimit { rlim_cur: pages * page + (1 << 20), rlim_max: old.rlim_max };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // SAFETY: `capped` is a valid rlimit; lowering the soft limit only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &capped) }, 0);
    let value = f();
    // SAFETY: restores the soft limit read above (never above the hard limit).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    std::panic::set_hook(hook);
    value
}

/// Whether `fd` is in non-blocking mode (`O_NONBLOCK`).
pub fn is_nonblocking(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFL on an fd number has no memory preconditions.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl: {}", std::io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

/// The kernel function thread `tid` of process `pid` sleeps in (`/proc/PID/task/TID/wchan`,
/// e.g. `do_epoll_wait`), or `0` while it runs.
pub fn wchan(pid: u32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default()
}

/// Watches (polling every millisecond) until thread `tid` of process `pid` sleeps in a kernel
/// function whose name contains `what` (`"epoll"`, `"poll"`): the way a test learns that another
/// thread or process has got to its blocking call. Panics after 30 seconds.
pub fn wait_until_thread_sleeps_in(pid: u32, tid: i32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !wchan(pid, tid).contains(what) {
        assert!(
            std::time::Instant::now() < deadline,
            "thread {tid} of process {pid} never slept in {what} (wchan: {})",
            wchan(pid, tid)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic payload>".to_string())
}

/// Sets a flag when dropped: checks that a destructor ran (for example, of a coroutine that was
/// cancelled or unwound).
#[derive(Debug)]
pub struct DropFlag(pub std::rc::Rc<std::cell::Cell<bool>>);

impl DropFlag {
    /// A guard and the flag it sets when dropped.
    pub fn new() -> (DropFlag, std::rc::Rc<std::cell::Cell<bool>>) {
        let flag = std::rc::Rc::new(std::cell::Cell::new(false));
        (DropFlag(flag.clone()), flag)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// `len` bytes that differ with `seed` and with the position: a lost, doubled or misplaced byte
/// shows up in a comparison.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Yields to the other coroutines (no sleep) until `done()`; panics if it never happens.
pub fn yield_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        greenhub::yield_now();
    }
    panic!("gave up waiting for {what}");
}

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
