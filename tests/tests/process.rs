//! Child processes from `start_process`: exit codes (return, `exit(n)`, panic, `Err`, signals),
//! `join`/`join_timeout`/`exit_status`/`is_alive`, the transfer rule (closed in the parent, the
//! only handles in the child, `Closed` for the others), the child's signal state (mask,
//! dispositions, the stack-overflow reporter), grandchildren, the parent's coroutines never
//! unwound in a child, the end of `run` (non-daemons waited for, daemons terminated, whether
//! their `Process` was dropped or not), and no zombies or fd leaks.
//!
//! Every test forks, so every test holds `process_lock` (or calls `assert_no_fd_leak`, which
//! takes it): fd and zombie counts are process-wide, and the harness runs tests on threads.

use std::cell::Cell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::{sleep, spawn, yield_now};
use greenhub_ipc::{Error, ProcessBuilder, pipe, raw_pipe, start_process};
use greenhub_tests::{assert_no_fd_leak, process_lock, zombie_children};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `std::process::exit` typed `()`: a closure ending in `exit` would have type `!`, which is not
/// a `ChildResult`.
fn exit_with(code: i32) {
    std::process::exit(code)
}

/// A panic typed `()`, for the same reason.
fn boom() {
    panic!("boom from the child")
}

/// Long enough for anything that should happen, short enough that a bug fails the test instead
/// of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Sends everything the calling process writes to fd 2 from now on into `pipe` (in a child,
/// where the test harness's capture does not reach the parent; the pipe must be transferred to
/// the child, which holds no other fd of its parent's).
fn redirect_stderr_to(pipe: &std::io::PipeWriter) {
    // SAFETY: dup2 onto fd 2 of two valid fds; it only changes this (child) process's fd table.
    unsafe { libc::dup2(pipe.as_raw_fd(), 2) };
}

/// What a child wrote to stderr through `redirect_stderr_to`, once every writer is gone.
fn read_all(mut pipe: std::io::PipeReader) -> String {
    let mut text = String::new();
    pipe.read_to_string(&mut text).unwrap();
    text
}

/// Polls `done` (sleeping in the hub between polls) until it holds, or panics after PATIENCE.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        sleep(ms(2));
    }
}

#[test]
fn a_child_that_returns_exits_with_zero() {
    let _serial = process_lock();
    greenhub::run(|| {
        let child = start_process((), |()| ()).unwrap();
        let status = child.join().unwrap();
        assert!(status.success());
        assert_eq!(status.code(), Some(0));
    });
}

#[test]
fn std_process_exit_sets_the_code() {
    let _serial = process_lock();
    greenhub::run(|| {
        let child = start_process((), |()| exit_with(42)).unwrap();
        assert_eq!(child.join().unwrap().code(), Some(42));
    });
}

#[test]
fn a_panic_exits_with_101_and_the_message_reaches_stderr() {
    let _serial = process_lock();
    let (stderr_reader, stderr_writer) = std::io::pipe().unwrap();
    greenhub::run(|| {
        let child = ProcessBuilder::new()
            .name("panicker")
            .start(stderr_writer, |stderr_writer| {
                redirect_stderr_to(&stderr_writer);
                boom()
            })
            .unwrap();
        assert_eq!(child.join().unwrap().code(), Some(101));
    });
    let text = read_all(stderr_reader);
    assert!(text.contains("child process panicker"), "{text}");
    assert!(text.contains("panicked: boom from the child"), "{text}");
}

#[test]
fn an_err_exits_with_1_and_is_printed_with_debug() {
    let _serial = process_lock();
    let (stderr_reader, stderr_writer) = std::io::pipe().unwrap();
    greenhub::run(|| {
        let child = start_process(stderr_writer, |stderr_writer| {
            redirect_stderr_to(&stderr_writer);
            Err::<(), _>(vec!["went", "wrong"])
        })
        .unwrap();
        assert_eq!(child.join().unwrap().code(), Some(1));
    });
    let text = read_all(stderr_reader);
    assert!(text.contains(r#"Error: ["went", "wrong"]"#), "{text}");
}

#[test]
fn kill_ends_the_child_with_sigkill() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, _writer) = pipe::<u8>().unwrap();
        let child = start_process(reader, |reader| reader.get().map(drop)).unwrap();
        assert!(child.is_alive());
        child.kill().unwrap();
        let status = child.join().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(status.code(), None);
        assert!(!child.is_alive());
    });
}

#[test]
fn terminate_ends_the_child_with_sigterm() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, _writer) = pipe::<u8>().unwrap();
        let child = start_process(reader, |reader| reader.get().map(drop)).unwrap();
        child.terminate().unwrap();
        assert_eq!(child.join().unwrap().signal(), Some(libc::SIGTERM));
    });
}

#[test]
fn signals_after_the_child_was_reaped_do_nothing() {
    let _serial = process_lock();
    greenhub::run(|| {
        let child = start_process((), |()| ()).unwrap();
        assert!(child.join().unwrap().success());
        // Its pid may belong to another process by now: nothing may be sent to it.
        child.terminate().unwrap();
        child.kill().unwrap();
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn join_timeout_expires_while_the_child_runs_and_returns_once_it_ends() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let child = start_process(reader, |reader| reader.get().map(drop)).unwrap();
        let started = Instant::now();
        assert!(child.join_timeout(ms(50)).unwrap().is_none());
        assert!(started.elapsed() >= ms(50), "join_timeout returned early");
        assert!(child.is_alive());
        writer.put(&1).unwrap();
        let status = child.join_timeout(PATIENCE).unwrap().expect("the child ended");
        assert!(status.success());
        assert_eq!(child.join_timeout(Duration::ZERO).unwrap(), Some(status));
    });
}

#[test]
fn the_hub_fills_in_the_exit_status_without_a_join() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let child = start_process(writer, |writer| {
            writer.put(&7)?;
            exit_with(3);
            Ok::<(), Error>(())
        })
        .unwrap();
        // Another coroutine waits on something else entirely: the pipe.
        let other = spawn(move || (reader.get(), reader.get()));
        let (first, second) = other.join().unwrap();
        assert_eq!(first.unwrap(), 7);
        assert!(matches!(second, Err(Error::Eof)));
        // Debug shows what the reaper recorded, without a system call of its own.
        eventually("the reaper records the status", || !format!("{child:?}").contains("running"));
        assert!(format!("{child:?}").contains("exited with code 3"), "{child:?}");
        assert_eq!(child.exit_status().unwrap().code(), Some(3));
        assert!(!zombie_children().contains(&child.pid()));
    });
}

#[test]
fn is_alive_until_the_child_ends() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let child = start_process(reader, |reader| reader.get().map(drop)).unwrap();
        assert!(child.is_alive());
        assert!(child.exit_status().is_none());
        writer.put(&0).unwrap();
        child.join().unwrap();
        assert!(!child.is_alive());
        assert!(child.exit_status().unwrap().success());
    });
}

#[test]
fn names_pids_and_debug() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let named = ProcessBuilder::new().name("worker").start(reader, |r| r.get().map(drop));
        let named = named.unwrap();
        let unnamed = start_process((), |()| ()).unwrap();
        assert_eq!(named.name(), "worker");
        assert!(unnamed.name().starts_with("Process-"), "{}", unnamed.name());
        assert_ne!(named.pid(), unnamed.pid());
        assert_ne!(named.pid(), std::process::id());
        let running = format!("{named:?}");
        assert_eq!(
            running,
            format!("Process {{ name: \"worker\", pid: {}, state: running }}", named.pid())
        );
        named.kill().unwrap();
        named.join().unwrap();
        assert!(format!("{named:?}").contains("state: killed by signal 9"), "{named:?}");
        unnamed.join().unwrap();
        drop(writer);
    });
}

#[test]
fn many_coroutines_start_processes_at_once() {
    let _serial = process_lock();
    greenhub::run(|| {
        let starters: Vec<_> = (0..8u32)
            .map(|i| {
                spawn(move || {
                    let (reader, writer) = pipe::<u32>().unwrap();
                    let child = start_process(writer, move |w| w.put(&(i * 10))).unwrap();
                    let got = reader.get().unwrap();
                    assert!(child.join().unwrap().success());
                    got
                })
            })
            .collect();
        let results: Vec<u32> = starters.into_iter().map(|s| s.join().unwrap()).collect();
        assert_eq!(results, (0..8).map(|i| i * 10).collect::<Vec<_>>());
    });
}

#[test]
fn grandchildren_pass_a_message_up_the_chain() {
    let _serial = process_lock();
    /// Starts a child with `writer` that starts its own child, `depth` levels down; each level
    /// prefixes the message coming up with its own mark.
    fn relay(writer: greenhub_ipc::Writer<String>, depth: u32) -> Result<(), Error> {
        if depth == 0 {
            return writer.put(&format!("bottom (pid {})", std::process::id()));
        }
        let (reader, below) = pipe::<String>()?;
        let child = start_process(below, move |w| relay(w, depth - 1))?;
        let message = reader.get()?;
        assert!(child.join()?.success(), "level {depth} saw its child fail");
        writer.put(&format!("level {depth} <- {message}"))
    }
    greenhub::run(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        let child = start_process(writer, |w| relay(w, 2)).unwrap();
        let message = reader.get().unwrap();
        assert!(message.starts_with("level 2 <- level 1 <- bottom (pid "), "{message}");
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn a_handle_that_was_not_transferred_is_closed_in_the_child() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (other_reader, other_writer) = pipe::<u8>().unwrap();
        let (_third_reader, third_writer) = pipe::<u8>().unwrap();
        let (reader, writer) = pipe::<[bool; 3]>().unwrap();
        // The closure borrows the other pipe's ends and moves the third writer in: the child has
        // them all, but owns none of them.
        let (borrowed_writer, borrowed_reader) = (&other_writer, &other_reader);
        let child = start_process(writer, move |report| {
            let put = matches!(borrowed_writer.put(&1), Err(Error::Closed));
            let get = matches!(borrowed_reader.get(), Err(Error::Closed));
            // Not owned here, so it cannot be given to a grandchild either.
            let onward = matches!(start_process(third_writer, |_| ()), Err(Error::Closed));
            report.put(&[put, get, onward])
        })
        .unwrap();
        assert_eq!(reader.get().unwrap(), [true, true, true]);
        assert!(child.join().unwrap().success());
        // The parent still owns them.
        other_writer.put(&5).unwrap();
        assert_eq!(other_reader.get().unwrap(), 5);
    });
}

/// What a child sees of a `Process` it inherited through fork: every call of the contract, as
/// one line each (`Closed` is the contract's answer for join, join_timeout, terminate and kill).
fn inherited_view(process: &greenhub_ipc::Process) -> Vec<String> {
    vec![
        format!("join: {:?}", process.join().map_err(|e| matches!(e, Error::Closed))),
        format!(
            "join_timeout: {:?}",
            process.join_timeout(ms(1)).map_err(|e| matches!(e, Error::Closed))
        ),
        format!("terminate: {:?}", process.terminate().map_err(|e| matches!(e, Error::Closed))),
        format!("kill: {:?}", process.kill().map_err(|e| matches!(e, Error::Closed))),
        format!("exit_status: {:?}", process.exit_status()),
        format!("is_alive: {:?}", process.is_alive()),
        format!("debug says inherited: {}", format!("{process:?}").contains("inherited")),
    ]
}

/// Regression (F3): an inherited `Process` whose child the parent had already reaped answered
/// `Ok` (the outcome copied by fork) from join, join_timeout, terminate and kill; a running one
/// answered `Closed`. Both must say `Closed`, and neither has a status in the child.
#[test]
fn an_inherited_process_is_not_the_childs_to_join_or_signal_reaped_or_not() {
    let _serial = process_lock();
    greenhub::run(|| {
        let reaped = start_process((), |()| ()).unwrap();
        assert!(reaped.join().unwrap().success());
        let (released, release) = pipe::<u8>().unwrap();
        let running = start_process(released, |r| r.get().map(drop)).unwrap();
        let (reader, writer) = pipe::<Vec<Vec<String>>>().unwrap();
        let (reaped_ref, running_ref) = (&reaped, &running);
        let child = start_process(writer, move |report| {
            report.put(&vec![inherited_view(reaped_ref), inherited_view(running_ref)])
        })
        .unwrap();
        let expected = [
            "join: Err(true)",
            "join_timeout: Err(true)",
            "terminate: Err(true)",
            "kill: Err(true)",
            "exit_status: None",
            "is_alive: false",
            "debug says inherited: true",
        ];
        let views = reader.get().unwrap();
        assert_eq!(views[0], expected, "an inherited, already reaped Process");
        assert_eq!(views[1], expected, "an inherited, still running Process");
        assert!(child.join().unwrap().success());
        // The parent still owns both: the running one was neither signalled nor reaped there.
        assert!(running.is_alive());
        release.put(&1).unwrap();
        assert!(running.join().unwrap().success());
        assert!(reaped.join().unwrap().success());
    });
}

/// What an `Error` from starting a process says, for a test that ran `attempt` elsewhere: its
/// errno, its `io::ErrorKind` (if an `Error::Io`) and its text.
type Refusal = (Option<i32>, Option<String>, String);

/// A way to start a process, run where forks are refused.
type Attempt = fn() -> Option<Refusal>;

fn refusal<T>(attempt: Result<T, Error>) -> Option<Refusal> {
    let err = attempt.err()?;
    let kind = match &err {
        Error::Io(e) => Some(format!("{:?}", e.kind())),
        _ => None,
    };
    Some((err.raw_os_error(), kind, err.to_string()))
}

/// Runs `attempt` in a child that has become uid 65534 with RLIMIT_NPROC at 1, so that every
/// fork it tries is refused with EAGAIN (as root the limit is not enforced); gives what it
/// reports, or `None` (with a note) where this test cannot drop to another uid.
fn with_nproc_exhausted(attempt: Attempt) -> Option<Option<Refusal>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root, cannot drop to uid 65534 under RLIMIT_NPROC; skipping");
        return None;
    }
    greenhub::run(|| {
        let (reader, writer) = pipe::<Option<Refusal>>().unwrap();
        let helper = start_process(writer, move |report| {
            let limit = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
            // SAFETY: plain system calls on this (child) process's credentials and limits.
            let dropped = unsafe {
                libc::setgid(65534) == 0
                    && libc::setuid(65534) == 0
                    && libc::setrlimit(libc::RLIMIT_NPROC, &limit) == 0
            };
            assert!(dropped, "could not drop to uid 65534: {}", std::io::Error::last_os_error());
            report.put(&attempt())
        })
        .unwrap();
        let reported = reader.get().unwrap();
        assert!(helper.join().unwrap().success());
        Some(reported)
    })
}

/// Regression (F4): a fork refused under RLIMIT_NPROC gave "start_process could not fork:
/// Resource temporarily unavailable", of kind `WouldBlock` (a caller would retry), and
/// `Command::spawn` the same. Both must name the limits that may have run out and not be
/// `WouldBlock`; the errno stays EAGAIN.
#[test]
fn a_fork_refused_for_too_many_processes_names_the_limits_and_is_not_would_block() {
    let _serial = process_lock();
    let starts: [(&str, Attempt); 2] = [
        ("start_process could not fork", || refusal(start_process((), |()| ()))),
        ("Command::spawn could not start \"true\"", || {
            refusal(greenhub_ipc::Command::new("true").spawn())
        }),
    ];
    for (op, attempt) in starts {
        let Some(refused) = with_nproc_exhausted(attempt) else { return };
        let (errno, kind, text) = refused.expect("a process started past RLIMIT_NPROC = 1");
        assert_eq!(errno, Some(libc::EAGAIN), "{text}");
        assert_ne!(kind.as_deref(), Some("WouldBlock"), "{text}");
        assert!(text.starts_with(op), "{text}");
        for limit in ["RLIMIT_NPROC", "ulimit -u", "pid_max", "threads-max", "pids.max"] {
            assert!(text.contains(limit), "{limit:?} not named in: {text}");
        }
    }
}

#[test]
fn the_child_owns_exactly_the_handles_transferred_to_it() {
    let _serial = process_lock();
    greenhub::run(|| {
        let _unrelated = (pipe::<u8>().unwrap(), raw_pipe().unwrap());
        let (reader, writer) = pipe::<usize>().unwrap();
        let (_spare_reader, spare_writer) = pipe::<u8>().unwrap();
        assert!(greenhub_ipc::__private::owned_handle_count() >= 8);
        let child = start_process((writer, spare_writer), |(writer, _spare)| {
            writer.put(&greenhub_ipc::__private::owned_handle_count())
        })
        .unwrap();
        assert_eq!(reader.get().unwrap(), 2);
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn transferred_handles_are_closed_in_the_parent() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let link = format!("/proc/self/fd/{}", writer.as_raw_fd());
        let pipe = std::fs::read_link(&link).unwrap();
        let child =
            start_process(writer, |writer| writer.put(&b"from the child".to_vec())).unwrap();
        // The writer's fd is gone here: its number is closed, or names something else now. (Not
        // a count of open fds: the reaper closes the child's pidfd at its next turn, which may
        // come after `join` returns.)
        assert_ne!(std::fs::read_link(&link).ok(), Some(pipe), "the writer is open in the parent");
        assert!(child.join().unwrap().success());
        assert_eq!(reader.get().unwrap(), b"from the child");
        // The only writer was the child's, and it has exited: end of stream.
        assert!(matches!(reader.get(), Err(Error::Eof)));
    });
}

#[test]
fn the_child_starts_with_default_signals_and_an_empty_mask() {
    let _serial = process_lock();
    // Block SIGUSR2 on this thread: the child, forked from it, must not inherit that.
    // SAFETY: sigset manipulation on a local set; pthread_sigmask changes only this thread.
    let previous = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
        previous
    };
    let report = greenhub::run(|| {
        let (reader, writer) = pipe::<(bool, bool)>().unwrap();
        let child = start_process(writer, |writer| {
            // SAFETY: queries only: a null new mask changes nothing.
            let usr2_blocked = unsafe {
                let mut now: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
                libc::sigismember(&now, libc::SIGUSR2) == 1
            };
            // SIGPIPE is ignored: a write without a reader is an error, not a death.
            let (dead_reader, dead_writer) = pipe::<u8>()?;
            drop(dead_reader);
            let broken = matches!(dead_writer.put(&1),
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe);
            writer.put(&(usr2_blocked, broken))
        })
        .unwrap();
        let report = reader.get().unwrap();
        assert!(child.join().unwrap().success());
        report
    });
    // SAFETY: restores this thread's mask from a value pthread_sigmask gave us.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    assert_eq!(report, (false, true), "(SIGUSR2 blocked in the child, BrokenPipe)");
}

/// A signal handler that does nothing, for a parent to install before it starts a child.
extern "C" fn do_nothing(_: libc::c_int) {}

/// The handler field (`sa_sigaction`: `SIG_DFL`, `SIG_IGN` or a function) of `signal`'s
/// disposition in this process.
fn disposition(signal: libc::c_int) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid out-parameter; a null new action changes nothing.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut current), 0);
        current.sa_sigaction
    }
}

/// Dispositions set by a test, put back as they were when it drops (even if the test fails).
struct SetDispositions(Vec<(libc::c_int, libc::sigaction)>);

impl SetDispositions {
    /// Sets each `(signal, handler)` in this process (a handler is `SIG_IGN`, `SIG_DFL` or a
    /// function that only returns), remembering the old dispositions.
    fn new(wanted: &[(libc::c_int, libc::sighandler_t)]) -> SetDispositions {
        let old = wanted
            .iter()
            .map(|&(signal, handler)| {
                // SAFETY: valid sigaction pointers for the call; the handler installed is
                // SIG_IGN, SIG_DFL or `do_nothing`, which touches nothing.
                unsafe {
                    let mut new: libc::sigaction = std::mem::zeroed();
                    let mut old: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction = handler;
                    libc::sigemptyset(&mut new.sa_mask);
                    assert_eq!(libc::sigaction(signal, &new, &mut old), 0);
                    (signal, old)
                }
            })
            .collect();
        SetDispositions(old)
    }
}

impl Drop for SetDispositions {
    fn drop(&mut self) {
        for (signal, old) in &self.0 {
            // SAFETY: puts back a disposition that sigaction itself reported.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

#[test]
fn in_a_child_every_signal_is_default_but_sigpipe_ignored_and_the_overflow_reporter_kept() {
    let _serial = process_lock();
    let handler = do_nothing as *const () as libc::sighandler_t;
    // A handler for SIGPIPE too (Rust programs start with it ignored): the child's SIG_IGN must
    // come from the reset, not from inheritance.
    let _restore = SetDispositions::new(&[
        (libc::SIGPIPE, handler),
        (libc::SIGUSR1, handler),
        (libc::SIGUSR2, libc::SIG_IGN),
    ]);
    let signals = [libc::SIGPIPE, libc::SIGUSR1, libc::SIGUSR2, libc::SIGSEGV, libc::SIGBUS];
    let (parents, childs) = greenhub::run(|| {
        // The running hub has installed greenhub's overflow reporter for SIGSEGV and SIGBUS.
        let parents = signals.map(disposition);
        let (reader, writer) = pipe::<[libc::sighandler_t; 5]>().unwrap();
        let child = start_process(writer, move |w| w.put(&signals.map(disposition))).unwrap();
        let childs = reader.get().unwrap();
        assert!(child.join().unwrap().success());
        (parents, childs)
    });
    assert_eq!(parents[..3], [handler, handler, libc::SIG_IGN], "the parent's own, as set");
    let (segv, bus) = (parents[3], parents[4]);
    assert!(segv != libc::SIG_DFL && bus != libc::SIG_DFL, "no overflow reporter in the parent");
    assert_eq!(childs[0], libc::SIG_IGN, "SIGPIPE is ignored in the child");
    assert_eq!(childs[1], libc::SIG_DFL, "SIGUSR1 (a handler in the parent) is the default");
    assert_eq!(childs[2], libc::SIG_DFL, "SIGUSR2 (ignored in the parent) is the default");
    assert_eq!(childs[3..], [segv, bus], "the overflow reporter stays for SIGSEGV and SIGBUS");
}

/// Recurses until the stack runs out (the frame holds a buffer the optimiser cannot drop).
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(std::hint::black_box(frame)[7])
}

#[test]
fn a_coroutine_overflowing_its_stack_in_a_child_is_reported_on_the_childs_stderr() {
    let _serial = process_lock();
    let (stderr_reader, stderr_writer) = std::io::pipe().unwrap();
    let status = greenhub::run(|| {
        let child = start_process(stderr_writer, |stderr_writer| {
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: setrlimit reads a live rlimit (no core file for the expected abort).
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            redirect_stderr_to(&stderr_writer);
            let _ = spawn(|| recurse(0)).join();
        })
        .unwrap();
        child.join().unwrap()
    });
    let text = read_all(stderr_reader);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "not aborted: {status:?}\n{text}");
    assert!(text.contains("overflowed its stack"), "no overflow report:\n{text}");
}

/// Regression (F2): a child started from a coroutine with a small stack ran its whole life
/// (its start, its fresh hub, the hub's loop) on what was left of that stack, and died of a bare
/// SIGSEGV before `f` ran. The child now switches to a stack of its own first.
#[test]
fn a_child_started_from_a_coroutine_with_a_small_stack_runs_f() {
    let _serial = process_lock();
    greenhub::run(|| {
        for kib in [12, 16, 20] {
            let (reader, writer) = pipe::<String>().unwrap();
            let starter = greenhub::coroutine::Builder::new().stack_size(kib * 1024).spawn(|| {
                let child =
                    start_process(writer, |writer| writer.put(&"f runs".to_string())).unwrap();
                child.join().unwrap()
            });
            let got = reader.get_timeout(PATIENCE);
            let status = starter.join().unwrap();
            assert!(status.success(), "from a {kib} KiB stack: {status:?}, f said {got:?}");
            assert_eq!(got.unwrap(), "f runs", "from a {kib} KiB stack");
        }
    });
}

/// The stack a child runs on is mapped in the parent before the fork, so the OS refusing it is
/// `start_process`'s error, naming what ran out (here the address-space limit, in a helper
/// child that lowers its own RLIMIT_AS to 2 MiB above what it maps).
#[test]
fn a_child_stack_the_os_refuses_is_an_error_naming_it() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<Option<Refusal>>().unwrap();
        let helper = start_process(writer, |report| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let mapped_kib: u64 = status
                .lines()
                .find_map(|line| line.strip_prefix("VmSize:"))
                .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
                .expect("VmSize in /proc/self/status");
            let room = (mapped_kib + 2048) * 1024;
            let limit = libc::rlimit { rlim_cur: room, rlim_max: libc::RLIM_INFINITY };
            // SAFETY: setrlimit reads a live rlimit; it lowers this (child) process's soft limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
            report.put(&refusal(start_process((), |()| ())))
        })
        .unwrap();
        let (errno, _, text) = reader.get().unwrap().expect("a child started past RLIMIT_AS");
        assert!(helper.join().unwrap().success());
        assert_eq!(errno, Some(libc::ENOMEM), "{text}");
        assert!(text.starts_with("start_process could not map the child's stack"), "{text}");
        assert!(text.contains("RLIMIT_AS"), "{text}");
    });
}

#[test]
fn a_non_daemon_child_is_waited_for_at_the_end_of_run() {
    let _serial = process_lock();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let started = Instant::now();
    let child = greenhub::run(|| {
        start_process(theirs, |theirs| {
            sleep(ms(200));
            std::io::Write::write_all(&mut &theirs, b"done").unwrap();
            exit_with(7)
        })
        .unwrap()
    });
    assert!(started.elapsed() >= ms(200), "run returned before the child ended");
    // The end of `run` recorded the status: Debug makes no system call.
    assert!(format!("{child:?}").contains("exited with code 7"), "{child:?}");
    ours.set_nonblocking(true).unwrap();
    let mut buf = [0; 4];
    ours.read_exact(&mut buf).expect("the child wrote before run returned");
    assert_eq!(&buf, b"done");
    // A Process outlives its hub: join outside any hub returns what was recorded.
    assert_eq!(child.join().unwrap().code(), Some(7));
    assert!(zombie_children().is_empty());
}

#[test]
fn a_daemon_child_is_terminated_at_the_end_of_run() {
    let _serial = process_lock();
    let (daemon, _writer) = greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let (ready_reader, ready_writer) = pipe::<()>().unwrap();
        let daemon = ProcessBuilder::new()
            .daemon(true)
            .start((reader, ready_writer), |(reader, ready)| {
                ready.put(&())?;
                reader.get().map(drop) // a message that never comes
            })
            .unwrap();
        ready_reader.get().unwrap();
        (daemon, writer)
    });
    assert_eq!(daemon.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    assert!(zombie_children().is_empty());
}

#[test]
fn a_daemon_dies_with_a_parent_that_exits_abruptly() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let (pid_reader, pid_writer) = pipe::<u32>().unwrap();
        let middle = start_process((writer, pid_writer), |(writer, pid_writer)| {
            let (ready_reader, ready_writer) = pipe::<()>().unwrap();
            let daemon = ProcessBuilder::new()
                .daemon(true)
                .start((writer, ready_writer), |(_writer, ready)| {
                    let (never, _never_writer) = pipe::<u8>()?;
                    ready.put(&())?;
                    never.get().map(drop) // waits forever; holds `_writer` open
                })
                .unwrap();
            ready_reader.get().unwrap();
            pid_writer.put(&daemon.pid()).unwrap();
            exit_with(0) // no end of `run`: the daemon is not terminated by it
        })
        .unwrap();
        let _reaper = KillOnFailure(pid_reader.get().unwrap());
        assert!(middle.join().unwrap().success());
        // The daemon held the only other copy of the writer: EOF means it died.
        assert!(matches!(reader.get_timeout(PATIENCE), Err(Error::Eof)));
    });
}

/// Kills an orphaned grandchild if the test fails (it would otherwise outlive the test binary
/// and keep its output pipe open).
struct KillOnFailure(u32);

impl Drop for KillOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Whether process `pid` exists at all (running, or a zombie nobody reaped).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_dropped_child_is_still_waited_for_and_reaped_at_the_end_of_run() {
    let _serial = process_lock();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let pid = greenhub::run(|| {
        let (gate, gate_writer) = pipe::<()>().unwrap();
        let child = start_process((theirs, gate), |(theirs, gate)| {
            gate.get()?; // the parent has dropped its Process by now
            sleep(ms(100)); // still running when the parent's root returns
            std::io::Write::write_all(&mut &theirs, b"done").map_err(Error::Io)
        })
        .unwrap();
        let pid = child.pid();
        drop(child);
        gate_writer.put(&()).unwrap();
        pid
    });
    ours.set_nonblocking(true).unwrap();
    let mut buf = [0; 4];
    ours.read_exact(&mut buf).expect("the child wrote before run returned");
    assert_eq!(&buf, b"done");
    assert!(!exists(pid), "the dropped child was not reaped by the end of run");
    assert!(zombie_children().is_empty());
}

#[test]
fn a_dropped_daemon_child_is_still_terminated_at_the_end_of_run() {
    let _serial = process_lock();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let pid = greenhub::run(|| {
        let (ready, ready_writer) = pipe::<()>().unwrap();
        let daemon = ProcessBuilder::new()
            .daemon(true)
            .start((theirs, ready_writer), |(theirs, ready)| {
                // Only a SIGTERM ends it (the SIGKILL after the grace period says nothing).
                let sigterm =
                    greenhub::signal::Signals::new(&[libc::SIGTERM]).map_err(Error::Io)?;
                ready.put(&())?;
                sigterm.recv().map_err(Error::Io)?;
                std::io::Write::write_all(&mut &theirs, b"SIGTERM").map_err(Error::Io)
            })
            .unwrap();
        ready.get().unwrap();
        let pid = daemon.pid();
        drop(daemon);
        pid
    });
    let _reaper = KillOnFailure(pid);
    ours.set_nonblocking(true).unwrap();
    let mut heard = Vec::new();
    let read = ours.read_to_end(&mut heard);
    assert!(read.is_ok(), "the daemon still holds its end: {read:?}");
    assert_eq!(heard, b"SIGTERM", "the daemon was not sent SIGTERM");
    assert!(!exists(pid), "the dropped daemon was not reaped by the end of run");
    assert!(zombie_children().is_empty());
}

/// Appends the pid of the process that drops it to the file at `path`: a coroutine holding
/// one shows by the file where (and how often) it was unwound, whatever fds that process has.
struct ReportDrop {
    path: std::path::PathBuf,
}

impl Drop for ReportDrop {
    fn drop(&mut self) {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path).unwrap();
        std::io::Write::write_all(&mut file, &std::process::id().to_le_bytes()).unwrap();
    }
}

#[test]
fn a_child_never_unwinds_a_suspended_coroutine_of_its_parent() {
    let _serial = process_lock();
    let path = std::env::temp_dir().join(format!("greenhub-drops-{}", std::process::id()));
    std::fs::write(&path, b"").unwrap();
    let report = ReportDrop { path: path.clone() };
    let status = greenhub::run(move || {
        let never = Rc::new(greenhub::sync::Event::new());
        let _suspended = spawn({
            let never = never.clone();
            move || {
                let _report = report;
                never.wait(); // never set: unwound when the parent's root returns
            }
        });
        yield_now(); // it is suspended now, holding the report
        let child = start_process((), |()| ()).unwrap();
        child.join().unwrap()
    });
    let drops = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let parent = std::process::id().to_le_bytes();
    assert_eq!(drops, parent, "dropped exactly once, in the parent (pids as bytes)");
    assert!(status.success(), "{status:?}");
}

#[test]
fn children_dropped_without_join_are_reaped_by_the_hub() {
    let _serial = process_lock();
    greenhub::run(|| {
        let mut pids = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..50 {
            let (reader, writer) = pipe::<u8>().unwrap();
            let child = start_process(writer, drop).unwrap();
            pids.push(child.pid());
            readers.push(reader);
            drop(child);
        }
        // Every child closed its writer: each one is exiting or has exited.
        for reader in readers {
            assert!(matches!(reader.get(), Err(Error::Eof)));
        }
        eventually("the hub reaps every child", || {
            pids.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        });
        assert!(zombie_children().is_empty());
    });
    assert!(zombie_children().is_empty());
}

#[test]
fn no_zombies_after_50_start_join_cycles() {
    let _serial = process_lock();
    for _ in 0..50 {
        greenhub::run(|| {
            let child = start_process((), |()| ()).unwrap();
            assert!(child.join().unwrap().success());
        });
    }
    assert!(zombie_children().is_empty(), "{:?}", zombie_children());
}

#[test]
fn no_fd_leak_over_50_process_cycles() {
    assert_no_fd_leak(50, || {
        greenhub::run(|| {
            let (reader, writer) = pipe::<u32>().unwrap();
            let child = start_process(writer, |w| w.put(&1)).unwrap();
            assert_eq!(reader.get().unwrap(), 1);
            assert!(child.join().unwrap().success());
            drop(start_process((), |()| ()).unwrap()); // detached: reaped at the end of run
        });
    });
    let _serial = process_lock();
    assert!(zombie_children().is_empty());
}

#[test]
fn joins_suspend_only_the_caller() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        let child = Rc::new(start_process(reader, |r| r.get().map(drop)).unwrap());
        let joiners: Vec<_> = (0..3)
            .map(|_| {
                let child = child.clone();
                spawn(move || child.join().unwrap().code())
            })
            .collect();
        let ticks = Rc::new(Cell::new(0));
        for _ in 0..5 {
            yield_now();
            ticks.set(ticks.get() + 1);
        }
        assert!(joiners.iter().all(|j| !j.is_finished()));
        writer.put(&1).unwrap();
        for joiner in joiners {
            assert_eq!(joiner.join().unwrap(), Some(0));
        }
        assert_eq!(ticks.get(), 5);
    });
}

#[test]
fn buffered_stdout_is_flushed_before_fork_so_nothing_prints_twice() {
    const CHILD: &str = "GREENHUB_TEST_PRINT_ONCE";
    if std::env::var_os(CHILD).is_some() {
        // Rerun with --nocapture: this line waits in stdout's buffer (no newline yet) when the
        // fork happens; the child flushes its stdout before it exits.
        print!("printed once;");
        greenhub::run(|| {
            let child = start_process((), |()| print!("from the child;")).unwrap();
            assert!(child.join().unwrap().success());
        });
        println!();
        return;
    }
    let _serial = process_lock();
    let test = "buffered_stdout_is_flushed_before_fork_so_nothing_prints_twice";
    let output = greenhub_tests::rerun_test_in_child(test, CHILD, "1");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(text.matches("printed once;").count(), 1, "{text}");
    assert_eq!(text.matches("from the child;").count(), 1, "{text}");
}

/// Forwards every number from `from` to `to`, plus one, until `from` ends.
fn forward_plus_one(
    from: greenhub_ipc::Duplex<u64, u64>,
    to: greenhub_ipc::Duplex<u64, u64>,
) -> Result<(), Error> {
    loop {
        match from.get() {
            Ok(n) => to.put(&(n + 1))?,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn circular_forwarding_through_three_duplex_pipes_and_two_children() {
    // gipc's ring: parent -> child A -> child B -> parent, one duplex pipe per hop.
    let _serial = process_lock();
    greenhub::run(|| {
        let (parent_to_a, a_from_parent) = greenhub_ipc::duplex::<u64, u64>().unwrap();
        let (a_to_b, b_from_a) = greenhub_ipc::duplex::<u64, u64>().unwrap();
        let (b_to_parent, parent_from_b) = greenhub_ipc::duplex::<u64, u64>().unwrap();
        let a = start_process((a_from_parent, a_to_b), |(from, to)| forward_plus_one(from, to));
        let b = start_process((b_from_a, b_to_parent), |(from, to)| forward_plus_one(from, to));
        let (a, b) = (a.unwrap(), b.unwrap());
        for i in 0..100 {
            parent_to_a.put(&(i * 10)).unwrap();
            assert_eq!(parent_from_b.get().unwrap(), i * 10 + 2, "each child adds one");
        }
        drop(parent_to_a); // A sees Eof and ends, closing its ends; then B does the same
        assert!(a.join().unwrap().success());
        assert!(b.join().unwrap().success());
        assert!(matches!(parent_from_b.get(), Err(Error::Eof)));
    });
}

#[test]
fn siblings_talk_over_a_pipe_the_parent_gave_them() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        let (report, report_writer) = pipe::<String>().unwrap();
        let talker = start_process(writer, |w| w.put(&"hello, sibling".to_string())).unwrap();
        let listener = start_process((reader, report_writer), |(r, report)| {
            let heard = r.get()?;
            report.put(&format!("heard {heard:?}"))
        })
        .unwrap();
        assert_eq!(report.get().unwrap(), "heard \"hello, sibling\"");
        assert!(talker.join().unwrap().success());
        assert!(listener.join().unwrap().success());
    });
}

#[test]
fn a_writer_child_that_exits_early_leaves_the_reader_eof_after_its_messages() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u32>().unwrap();
        let child = start_process(writer, |w| (1..=3).try_for_each(|i| w.put(&i))).unwrap();
        let got: Vec<u32> = (0..3).map(|_| reader.get().unwrap()).collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(matches!(reader.get(), Err(Error::Eof)), "the writer is gone, at a boundary");
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn a_reader_child_that_exits_early_leaves_the_writer_a_broken_pipe() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<u32>().unwrap();
        let child = start_process(reader, |r| r.get().map(drop)).unwrap();
        writer.put(&1).unwrap();
        assert!(child.join().unwrap().success());
        match writer.put(&2) {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => panic!("expected BrokenPipe once the only reader exited, got {other:?}"),
        }
    });
}

#[test]
fn two_and_ten_megabyte_messages_cross_from_a_child_intact() {
    let _serial = process_lock();
    let pattern = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    greenhub::run(|| {
        for len in [2 << 20, 10 << 20] {
            let (raw_reader, raw_writer) = raw_pipe().unwrap();
            let (ser_reader, ser_writer) = pipe::<(u64, Vec<u8>)>().unwrap();
            let child = start_process((raw_writer, ser_writer), move |(raw, ser)| {
                raw.put(&pattern(len))?;
                ser.put(&(len as u64, pattern(len)))
            })
            .unwrap();
            assert!(raw_reader.get().unwrap() == pattern(len), "raw {len} bytes intact");
            let (announced, body) = ser_reader.get().unwrap();
            assert_eq!(announced, len as u64);
            assert!(body == pattern(len), "postcard {len} bytes intact");
            assert!(child.join().unwrap().success());
        }
    });
}

#[test]
fn default_names_stay_distinct_across_a_tree_of_processes() {
    // Parent and child both count on from the counter they share through fork, so a child's
    // children are named after the child ("Process-N:1"), as multiprocessing does.
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        let child = start_process(writer, |w| {
            let grandchild = start_process((), |()| ())?;
            w.put(&grandchild.name().to_string())?;
            grandchild.join().map(drop)
        })
        .unwrap();
        let grandchild = reader.get().unwrap();
        assert_eq!(grandchild, format!("{}:1", child.name()));
        assert!(child.join().unwrap().success());
    });
}

/// Set in the copy of this test binary that
/// [`a_child_whose_pidfd_cannot_be_opened_never_runs_its_closure`] starts.
const PIDFD_CHILD: &str = "GREENHUB_PROCESS_PIDFD_CHILD";

/// The file the child's closure creates if it runs.
static MARKER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Runs in the parent right after `fork`, before `start_process` opens the pidfd: gives the
/// child every chance to run its closure first (it creates the marker at once if it can), for
/// up to half a second.
extern "C" fn let_the_child_run_first() {
    let Some(marker) = MARKER.get() else { return };
    let deadline = Instant::now() + ms(500);
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(ms(1));
    }
}

/// `pidfd_open` fails after `fork` (no fd left: the handshake pipe took the last two), so the
/// child is killed: it must not have run any of its closure by then.
#[test]
fn a_child_whose_pidfd_cannot_be_opened_never_runs_its_closure() {
    if std::env::var_os(PIDFD_CHILD).is_some() {
        let marker = std::env::temp_dir().join(format!("greenhub-pidfd-{}", std::process::id()));
        MARKER.set(marker.clone()).unwrap();
        // SAFETY: registers a plain function as the parent's fork hook; it stays valid forever.
        unsafe { libc::pthread_atfork(None, Some(let_the_child_run_first), None) };
        let err = greenhub::run(|| {
            // Every free fd number below the lowered limit taken but the last two (this
            // process ends after the test).
            std::mem::forget(greenhub_tests::fill_free_fds(3, 2));
            let target = marker.clone();
            start_process((), move |()| std::fs::write(&target, b"ran")).unwrap_err()
        });
        let ran = marker.exists();
        let _ = std::fs::remove_file(&marker);
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        assert!(err.to_string().contains("could not open a pidfd for the new child"), "{err}");
        assert!(matches!(&err, Error::Io(_)), "{err:?}");
        assert!(!ran, "the child ran its closure although start_process failed");
        assert_eq!(zombie_children(), Vec::<u32>::new());
        println!("never ran: {err}");
        return;
    }
    let _serial = process_lock();
    let test = "a_child_whose_pidfd_cannot_be_opened_never_runs_its_closure";
    let out = greenhub_tests::rerun_test_in_child(test, PIDFD_CHILD, "1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("never ran"),
        "child ended with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Set in the copy of this test binary that
/// [`join_completes_when_the_reaper_cannot_get_a_stack`] starts.
const NO_STACK_CHILD: &str = "GREENHUB_PROCESS_NO_STACK_CHILD";

/// The reaper coroutine is queued by `start_process` but gets its stack only when it first
/// runs; by then the address space is full (RLIMIT_AS), so it never runs. `join` must still
/// see the child end (it used to wait for the reaper forever, or report a false deadlock).
#[test]
fn join_completes_when_the_reaper_cannot_get_a_stack() {
    if std::env::var_os(NO_STACK_CHILD).is_some() {
        // Stacks of 512 MiB: a reservation holds one, so the reaper's stack needs a new
        // reservation, which the limit below refuses.
        let status = greenhub::Builder::new().stack_size(512 << 20).run(|| {
            let (parent, hub_thread) = (std::process::id(), unsafe_gettid());
            // The child ends once the parent's hub sleeps in epoll: inside `join`, after the
            // reaper was refused its stack.
            let child = start_process((), move |()| {
                greenhub_tests::wait_until_thread_sleeps_in(parent, hub_thread, "epoll");
            })
            .unwrap();
            let old = greenhub_tests::limit_address_space(512 << 10);
            let status = child.join();
            greenhub_tests::restore_address_space(old);
            (status.map_err(|e| e.to_string()), child.exit_status())
        });
        let (joined, recorded) = status;
        assert!(joined.as_ref().is_ok_and(|s| s.success()), "{joined:?}");
        assert_eq!(joined.ok(), recorded);
        println!("joined without a reaper");
        return;
    }
    let _serial = process_lock();
    let test = "join_completes_when_the_reaper_cannot_get_a_stack";
    let out = greenhub_tests::rerun_test_in_child(test, NO_STACK_CHILD, "1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("joined without a reaper"),
        "child ended with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
    );
    assert!(stderr.contains("refused a coroutine stack"), "the reaper was not refused:\n{stderr}");
}

fn unsafe_gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[test]
fn join_timeout_of_duration_max_outside_a_hub_waits_instead_of_panicking() {
    let _serial = process_lock();
    let (stdin_reader, stdin_writer) = std::io::pipe().unwrap();
    // A program outlives its hub (std's rule); `cat` runs until its stdin is closed.
    let program = greenhub::run(|| {
        greenhub_ipc::Command::new("cat")
            .stdin(stdin_reader)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    });
    let (pid, tid) = (std::process::id(), unsafe_gettid());
    let closer = std::thread::spawn(move || {
        greenhub_tests::wait_until_thread_sleeps_in(pid, tid, "poll");
        drop(stdin_writer);
    });
    let status = program.join_timeout(Duration::MAX).unwrap();
    closer.join().unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Set in the copy of this test binary that
/// [`a_daemon_that_ignores_sigterm_is_killed_after_its_grace_period_and_run_returns`] starts.
const STUBBORN_CHILD: &str = "GREENHUB_PROCESS_STUBBORN_CHILD";

/// Never returns, typed `()` (a closure ending in `loop {}` would have type `!`).
fn run_forever() {
    loop {
        std::thread::park();
    }
}

/// The end of `run` used to wait forever for a daemon that ignores SIGTERM.
#[test]
fn a_daemon_that_ignores_sigterm_is_killed_after_its_grace_period_and_run_returns() {
    if std::env::var_os(STUBBORN_CHILD).is_some() {
        let stubborn = greenhub::run(|| {
            let (ready, ready_writer) = pipe::<()>().unwrap();
            let child = ProcessBuilder::new()
                .name("stubborn")
                .daemon(true)
                .terminate_grace(ms(20))
                .start(ready_writer, |ready| {
                    // SAFETY: ignoring a signal installs no handler.
                    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
                    ready.put(&()).unwrap();
                    run_forever()
                })
                .unwrap();
            ready.get().unwrap(); // SIGTERM is ignored from now on
            child
        });
        let status = stubborn.exit_status().expect("run returned before the daemon ended");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        println!("run returned");
        return;
    }
    let _serial = process_lock();
    let test = "a_daemon_that_ignores_sigterm_is_killed_after_its_grace_period_and_run_returns";
    let out = greenhub_tests::rerun_test_in_child(test, STUBBORN_CHILD, "1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("run returned"),
        "child ended with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
    );
    assert!(
        stderr.contains("daemon child stubborn (pid ")
            && stderr.contains("was still running 20ms after the SIGTERM at the end of run")
            && stderr.contains("SIGKILL"),
        "no line on stderr says so:\n{stderr}"
    );
}
