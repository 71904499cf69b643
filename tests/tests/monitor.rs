//! The blocking monitor: `Builder::monitor(max_blocking)` and `GREENHUB_MONITOR` name the
//! coroutine that runs too long without suspending, once per episode, with a total when it
//! suspends; a bad variable is one warning; the watchdog thread ends with its hub; a forked
//! child's hub has its own monitor.
//!
//! Each scenario reruns its test in a child process (with an environment variable saying which
//! scenario), whose stderr the test reads. In
//! the child, stderr goes through a pipe that a thread copies and watches, so a CPU hog can spin
//! exactly until the report it expects has been printed: no timing decides the outcome.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use greenhub_tests::process_lock;

/// Set in the child process: which scenario to run.
const CHILD: &str = "GREENHUB_TEST_MONITOR_CHILD";

const MAX_BLOCKING: Duration = Duration::from_millis(20);

/// Counts of the monitor's reports seen on this process's stderr so far.
struct Seen {
    reports: AtomicUsize,
}

/// Fd 2 routed through a pipe: a thread copies every line to the old fd 2 and counts the
/// monitor's reports.
struct StderrWatch {
    seen: Arc<Seen>,
    copier: std::thread::JoinHandle<()>,
    /// The old fd 2, put back by `finish`.
    original: OwnedFd,
}

impl StderrWatch {
    /// Puts the old fd 2 back, which closes the pipe's last write end, and waits for the thread
    /// to copy every line written so far: once the process exits, a line still in the pipe
    /// would be lost (the test that reads this stderr would miss it).
    fn finish(self) {
        // SAFETY: dup2 takes two fd numbers this process owns.
        assert_eq!(unsafe { libc::dup2(self.original.as_raw_fd(), 2) }, 2);
        self.copier.join().unwrap();
    }
}

fn watch_stderr() -> StderrWatch {
    let seen = Arc::new(Seen { reports: AtomicUsize::new(0) });
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array; dup and dup2 take fd numbers we own.
    let (reader, original) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let original = libc::dup(2);
        assert!(original >= 0);
        assert_eq!(libc::dup2(fds[1], 2), 2);
        libc::close(fds[1]);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(original))
    };
    let out = original.try_clone().unwrap();
    let counts = seen.clone();
    let copier = std::thread::spawn(move || {
        let mut out = std::fs::File::from(out);
        for line in BufReader::new(std::fs::File::from(reader)).lines() {
            let Ok(line) = line else { return };
            let _ = writeln!(out, "{line}");
            if line.contains("without suspending (max_blocking") {
                counts.reports.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    StderrWatch { seen, copier, original }
}

/// Burns CPU without suspending until `until` holds.
fn hog_until(until: impl Fn() -> bool) {
    while !until() {
        std::hint::spin_loop();
    }
}

/// Burns CPU without suspending for `d`.
fn hog_for(d: Duration) {
    let start = Instant::now();
    hog_until(|| start.elapsed() >= d);
}

/// Runs `scenario` in a child test process and returns its stderr.
fn run_child(test: &str, scenario: &str, env: &[(&str, &str)]) -> String {
    let _serial = process_lock();
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "child {scenario} failed: {}\n{stderr}", output.status);
    stderr
}

fn lines<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// The threshold of the scenario where nothing may be reported: long enough that an OS
/// scheduler's stall of the test process on a loaded machine does not look like a hog.
const GENEROUS_MAX_BLOCKING: Duration = Duration::from_millis(300);

#[test]
fn a_coroutine_that_suspends_often_is_never_reported_however_long_it_runs() {
    if std::env::var(CHILD).as_deref() == Ok("yielder") {
        greenhub::Builder::new().monitor(GENEROUS_MAX_BLOCKING).run(|| {
            let start = Instant::now();
            while start.elapsed() < GENEROUS_MAX_BLOCKING * 3 {
                greenhub::yield_now();
            }
        });
        return;
    }
    let stderr = run_child(
        "a_coroutine_that_suspends_often_is_never_reported_however_long_it_runs",
        "yielder",
        &[],
    );
    assert!(!stderr.contains("greenhub monitor:"), "{stderr}");
}

#[test]
fn a_hog_is_named_once_per_episode_with_a_total_when_it_suspends() {
    if std::env::var(CHILD).as_deref() == Ok("episodes") {
        let watch = watch_stderr();
        let seen = &watch.seen;
        greenhub::Builder::new().monitor(MAX_BLOCKING).run(|| {
            let first = greenhub::spawn({
                let seen = seen.clone();
                move || {
                    hog_until(|| seen.reports.load(Ordering::SeqCst) == 1);
                    hog_for(MAX_BLOCKING * 5); // many more checks: still one report
                }
            });
            let second = greenhub::spawn({
                let seen = seen.clone();
                move || hog_until(|| seen.reports.load(Ordering::SeqCst) == 2)
            });
            first.join().unwrap();
            second.join().unwrap();
        });
        watch.finish();
        return;
    }
    let stderr =
        run_child("a_hog_is_named_once_per_episode_with_a_total_when_it_suspends", "episodes", &[]);
    let reports = lines(&stderr, "without suspending (max_blocking 20ms)");
    assert_eq!(reports.len(), 2, "one report per episode:\n{stderr}");
    // Named as every report names a coroutine: id, spawn site (the `greenhub::spawn` calls above).
    let named = |n| format!("greenhub monitor: coroutine #{n} (spawned at tests/tests/monitor.rs:");
    assert!(reports[0].starts_with(&named(2)), "{stderr}");
    assert!(reports[1].starts_with(&named(3)), "{stderr}");
    assert!(reports.iter().all(|r| r.contains(") has run for ")), "{stderr}");
    let totals = lines(&stderr, "suspended after running about");
    assert_eq!(totals.len(), 2, "one total per episode:\n{stderr}");
    assert!(totals[0].starts_with(&named(2)), "{stderr}");
    assert!(totals[1].starts_with(&named(3)), "{stderr}");
    assert!(totals.iter().all(|r| r.contains(") suspended after running about")), "{stderr}");
}

#[test]
fn the_root_is_tagged_as_in_the_deadlock_report() {
    if std::env::var(CHILD).as_deref() == Ok("root") {
        let watch = watch_stderr();
        greenhub::Builder::new()
            .monitor(MAX_BLOCKING)
            .run(|| hog_until(|| watch.seen.reports.load(Ordering::SeqCst) == 1));
        watch.finish(); // the total is printed as the root ends: it must reach the test
        return;
    }
    let stderr = run_child("the_root_is_tagged_as_in_the_deadlock_report", "root", &[]);
    let reports = lines(&stderr, "without suspending (max_blocking");
    assert_eq!(reports.len(), 1, "{stderr}");
    assert!(reports[0].contains("coroutine #1 (spawned at tests/tests/monitor.rs:"), "{stderr}");
    assert!(reports[0].contains(") [root] has run for"), "{stderr}");
    // The episode ended with the root: the total comes before the hub (and its watchdog) ends.
    assert_eq!(lines(&stderr, ") [root] suspended after running about").len(), 1);
}

#[test]
fn greenhub_monitor_turns_it_on_without_a_code_change_and_reaches_forked_children() {
    if std::env::var(CHILD).as_deref() == Ok("env") {
        let watch = watch_stderr();
        greenhub::run(|| {
            hog_until(|| watch.seen.reports.load(Ordering::SeqCst) == 1);
            // The child's fresh hub gets its own watchdog (the parent's does not exist there).
            let child = greenhub_ipc::start_process((), |()| {
                // Not finished: the report it waits for was copied before it was counted (the
                // only line the test needs from here), and a join inside the hub could itself
                // run long enough to be reported as a hog.
                let watch = watch_stderr();
                hog_until(|| watch.seen.reports.load(Ordering::SeqCst) == 1);
            })
            .unwrap();
            assert_eq!(child.join().unwrap().code(), Some(0));
        });
        watch.finish();
        return;
    }
    let stderr = run_child(
        "greenhub_monitor_turns_it_on_without_a_code_change_and_reaches_forked_children",
        "env",
        &[("GREENHUB_MONITOR", "20ms")],
    );
    let reports = lines(&stderr, "without suspending (max_blocking 20ms)");
    assert_eq!(reports.len(), 2, "the parent's and the child's:\n{stderr}");
    assert!(reports.iter().all(|l| l.contains(" [root] has run for")), "{stderr}");
}

#[test]
fn a_bad_greenhub_monitor_is_one_warning_and_the_monitor_stays_off() {
    if std::env::var(CHILD).as_deref() == Ok("bad") {
        for _ in 0..3 {
            greenhub::run(|| hog_for(MAX_BLOCKING * 3)); // three hubs, one warning
        }
        return;
    }
    let stderr = run_child(
        "a_bad_greenhub_monitor_is_one_warning_and_the_monitor_stays_off",
        "bad",
        &[("GREENHUB_MONITOR", "fast")],
    );
    let warnings = lines(&stderr, "ignoring GREENHUB_MONITOR=\"fast\"");
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("the blocking monitor is off"), "{stderr}");
    assert!(lines(&stderr, "greenhub monitor:").is_empty(), "{stderr}");
}

/// Watchdog threads of this process now (other tests start and end threads of their own). The
/// kernel keeps 15 bytes of a thread's name: "greenhub-monitor" reads "greenhub-monito".
fn watchdogs() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let comm = |t: std::fs::DirEntry| std::fs::read_to_string(t.path().join("comm")).ok();
    tasks.filter_map(Result::ok).filter_map(comm).filter(|c| c.trim() == "greenhub-monito").count()
}

/// [`watchdogs`] once every joined watchdog has left `/proc/self/task`. `pthread_join` returns
/// when the kernel clears the thread's id, a moment before the thread's last exit step takes
/// its entry out, so a count made straight after a join can still see it: look again until it
/// is gone (a thread that really outlived its hub is still there after the five seconds).
fn watchdogs_once_exited() -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = watchdogs();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::yield_now();
    }
}

#[test]
fn the_watchdog_thread_ends_with_its_hub() {
    let _serial = process_lock();
    assert_eq!(watchdogs(), 0);
    for _ in 0..3 {
        greenhub::Builder::new().monitor(Duration::from_secs(60)).run(|| {
            while watchdogs() == 0 {
                std::thread::yield_now(); // the new thread names itself when it starts
            }
            assert_eq!(watchdogs(), 1, "one watchdog thread per hub");
            greenhub::sleep(Duration::from_millis(1));
        });
        assert_eq!(watchdogs_once_exited(), 0, "a watchdog thread outlived its hub");
    }
    greenhub::run(|| assert_eq!(watchdogs(), 0, "a watchdog without the monitor"));
}
