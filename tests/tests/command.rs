//! Programs from `Command`: `output()`, exit statuses, cooperative stdin/stdout, `pass()` of a
//! pipe end to a program in another language (python3, skipped when absent), std's rule at the
//! end of `run` (not waited for), and no zombies or fd leaks.
//!
//! Every test starts processes, so every test holds `process_lock` (or calls
//! `assert_no_fd_leak`, which takes it).

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::{spawn, yield_now};
use greenhub_ipc::{Command, Error, raw_pipe};
use greenhub_tests::{assert_no_fd_leak, process_lock, zombie_children};

const PATIENCE: Duration = Duration::from_secs(30);

/// Whether `python3` can be run here; the tests that need it print a note and pass without it.
fn python3() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("note: python3 not found; skipping this test");
    }
    found
}

/// Polls `done` with the thread asleep between polls (no hub here) until it holds, or panics.
fn eventually_blocking(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn output_of_echo() {
    let _serial = process_lock();
    greenhub::run(|| {
        let output = Command::new("echo").args(["hello", "world"]).output().unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, b"hello world\n");
        assert!(output.stderr.is_empty());
    });
}

#[test]
fn output_collects_stdout_and_stderr_concurrently() {
    let _serial = process_lock();
    greenhub::run(|| {
        // More than a pipe holds on each stream: reading one after the other would deadlock.
        let script = "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; exit 4";
        let output = Command::new("/bin/sh").args(["-c", script]).output().unwrap();
        assert_eq!(output.status.code(), Some(4));
        assert_eq!(output.stdout.len(), 3_000_000);
        assert_eq!(output.stderr.len(), 3_000_000);
    });
}

/// Set in the copy of this test binary that
/// [`output_whose_reader_gets_no_stack_is_an_error_naming_it`] starts.
const NO_STACK_CHILD: &str = "GREENHUB_COMMAND_NO_STACK_CHILD";

/// Regression: when the OS refused the stack of the coroutine that reads the program's stdout,
/// `output` rethrew the refusal as a panic (it counts as a panicked coroutine) instead of
/// returning an error.
#[test]
fn output_whose_reader_gets_no_stack_is_an_error_naming_it() {
    let test = "output_whose_reader_gets_no_stack_is_an_error_naming_it";
    if !greenhub_tests::run_in_child(test, NO_STACK_CHILD) {
        return;
    }
    // SAFETY: alarm has no preconditions; a hang fails the test instead of stalling it.
    unsafe { libc::alarm(60) };
    // Stacks of 512 MiB, and an address space with room for a fork but not for such a stack.
    let text = greenhub::Builder::new().stack_size(512 << 20).run(|| {
        let old = greenhub_tests::limit_address_space(32 << 20);
        let output = Command::new("echo").arg("hi").output();
        greenhub_tests::restore_address_space(old);
        output.expect_err("output without a reader").to_string()
    });
    assert!(text.starts_with("Command::output could not read the program's output"), "{text}");
    assert!(text.contains("refused a coroutine stack") && text.contains("RLIMIT_AS"), "{text}");
    assert!(zombie_children().is_empty());
}

/// Regression (F1): `output` with `stdin(Stdio::piped())` kept the program's stdin open while it
/// joined, so `cat` waited for end of file forever. Like std, `output` closes a piped stdin first.
#[test]
fn output_with_a_piped_stdin_closes_it_and_returns() {
    let _serial = process_lock();
    greenhub::run(|| {
        let output = greenhub::timeout(PATIENCE, || {
            Command::new("cat").stdin(Stdio::piped()).output().unwrap()
        })
        .expect("output() hung: the piped stdin stayed open while it waited for cat");
        assert!(output.status.success());
        assert!(output.stdout.is_empty());
    });
    assert!(zombie_children().is_empty());
}

#[test]
fn the_exit_status_of_false() {
    let _serial = process_lock();
    greenhub::run(|| {
        let program = Command::new("false").spawn().unwrap();
        assert_eq!(program.name(), "false");
        let status = program.join().unwrap();
        assert!(!status.success());
        assert_eq!(status.code(), Some(1));
    });
}

#[test]
fn a_program_that_does_not_exist_is_an_io_error() {
    let _serial = process_lock();
    greenhub::run(|| {
        let err = Command::new("greenhub-surely-no-such-program").output().unwrap_err();
        assert!(matches!(err, Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound));
    });
}

#[test]
fn cat_echoes_through_cooperative_pipes() {
    let _serial = process_lock();
    greenhub::run(|| {
        let mut cat =
            Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdin = cat.take_stdin().unwrap();
        let stdout = Rc::new(cat.take_stdout().unwrap());
        assert!(cat.take_stdin().is_none());
        let ticks = Rc::new(Cell::new(0u32));
        let ticker = spawn({
            let ticks = ticks.clone();
            move || loop {
                ticks.set(ticks.get() + 1);
                yield_now();
            }
        });
        for line in ["one\n", "two\n", "three\n"] {
            // A coroutine reads before anything was written: it must suspend, not block.
            let reader = spawn({
                let stdout = stdout.clone();
                move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 64];
                    while !got.ends_with(b"\n") {
                        let n = (&*stdout).read(&mut buf).unwrap();
                        assert_ne!(n, 0, "cat closed its stdout early");
                        got.extend_from_slice(&buf[..n]);
                    }
                    got
                }
            });
            let before = ticks.get();
            for _ in 0..3 {
                yield_now();
            }
            assert!(!reader.is_finished(), "the reader got a line nobody wrote");
            assert!(ticks.get() > before, "the hub stopped while a coroutine waited on cat");
            stdin.write_all(line.as_bytes()).unwrap();
            assert_eq!(reader.join().unwrap(), line.as_bytes());
        }
        drop(stdin); // cat sees end of file and exits
        let mut rest = Vec::new();
        (&*stdout).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        ticker.cancel();
        assert!(cat.join().unwrap().success());
    });
}

#[test]
fn a_passed_raw_pipe_writer_carries_frames_from_python() {
    if !python3() {
        return;
    }
    let _serial = process_lock();
    // gipc's framing, by hand: a 4-byte big-endian length, then the payload. The fd is blocking
    // in the program: the 2 MiB message fills the pipe, and os.write waits instead of failing.
    let script = r#"
import os, struct, sys
fd = int(sys.argv[1])
def put(payload):
    frame = struct.pack(">I", len(payload)) + payload
    while frame:
        frame = frame[os.write(fd, frame):]
put(b"hello from python")
put(b"")
put(bytes(range(256)) * 8192)
"#;
    greenhub::run(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let mut cmd = Command::new("python3");
        let fd = cmd.pass(writer);
        let program = cmd.arg("-c").arg(script).arg(fd.to_string()).spawn().unwrap();
        assert_eq!(reader.get().unwrap(), b"hello from python");
        assert_eq!(reader.get().unwrap(), b"");
        let big = reader.get().unwrap();
        assert_eq!(big.len(), 256 * 8192);
        assert!(big.chunks(256).all(|chunk| chunk.iter().copied().eq(0..=255u8)));
        // Our copy of the writer was closed when python started: its exit ends the stream.
        assert!(matches!(reader.get(), Err(Error::Eof)));
        assert!(program.join().unwrap().success());
    });
}

#[test]
fn a_passed_reader_is_a_blocking_fd_in_python() {
    if !python3() {
        return;
    }
    let _serial = process_lock();
    // Reads one frame and prints its payload. Had the fd stayed non-blocking, the first read
    // could fail with EAGAIN (nothing is written until the program runs).
    let script = r#"
import os, struct, sys
fd = int(sys.argv[1])
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
(length,) = struct.unpack(">I", exactly(4))
sys.stdout.write(exactly(length).decode())
"#;
    greenhub::run(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let mut cmd = Command::new("python3");
        let fd = cmd.pass(reader);
        let mut program =
            cmd.arg("-c").arg(script).arg(fd.to_string()).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = program.take_stdout().unwrap();
        let printed = spawn(move || {
            let mut text = String::new();
            (&stdout).read_to_string(&mut text).map(|_| text)
        });
        writer.put(&b"framed by greenhub".to_vec()).unwrap();
        assert_eq!(printed.join().unwrap().unwrap(), "framed by greenhub");
        assert!(program.join().unwrap().success());
    });
}

#[test]
fn a_passed_handle_not_owned_here_is_refused() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (_reader, writer) = raw_pipe().unwrap();
        let (report_reader, report_writer) = greenhub_ipc::pipe::<bool>().unwrap();
        // In a child, `writer` is inherited but not transferred: it cannot be passed on.
        let child = greenhub_ipc::start_process(report_writer, move |report| {
            let mut cmd = Command::new("true");
            cmd.pass(writer);
            report.put(&matches!(cmd.spawn(), Err(Error::Closed)))
        })
        .unwrap();
        assert!(report_reader.get().unwrap());
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn programs_are_not_waited_for_at_the_end_of_run() {
    let _serial = process_lock();
    let started = Instant::now();
    let program = greenhub::run(|| Command::new("sleep").arg("60").spawn().unwrap());
    assert!(started.elapsed() < Duration::from_secs(30), "run waited for the program");
    // The Process outlives its hub: it still works, blocking the thread instead of suspending.
    assert!(program.is_alive());
    assert!(program.join_timeout(Duration::from_millis(10)).unwrap().is_none());
    program.kill().unwrap();
    assert_eq!(program.join().unwrap().signal(), Some(libc::SIGKILL));
    assert!(zombie_children().is_empty());
}

#[test]
fn a_program_dropped_after_its_hub_ended_is_still_reaped() {
    let _serial = process_lock();
    let mut program = greenhub::run(|| {
        Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
    });
    let stdin = program.take_stdin().unwrap();
    let pid = program.pid();
    drop(program); // still running: cat waits for its input
    drop(stdin); // now it exits, with nobody to join it
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    eventually_blocking("the exited program is reaped", gone);
    assert!(zombie_children().is_empty());
}

/// For a test alone in a child process (under a 60 s alarm): a `cat` that is still running when
/// its hub has ended, waiting for the end of the stdin returned with it, and its pid.
fn cat_outliving_its_hub() -> (greenhub_ipc::Process, greenhub_ipc::ChildStdin, u32) {
    // SAFETY: alarm has no preconditions; a hang fails the test instead of stalling it.
    unsafe { libc::alarm(60) };
    let mut program = greenhub::run(|| {
        Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
    });
    let stdin = program.take_stdin().unwrap();
    let pid = program.pid();
    (program, stdin, pid)
}

/// Set in the copy of this test binary that
/// [`a_program_dropped_after_its_hub_ended_is_reaped_with_no_fd_to_spare`] starts.
const NO_FD_CHILD: &str = "GREENHUB_COMMAND_NO_FD_CHILD";

/// Regression: a program still running when its `Process` was dropped after its hub had ended
/// left its reaper thread a `dup` of the pidfd. With every fd number taken (EMFILE) the `dup`
/// failed, no thread waited, and the program stayed a zombie once it exited. The thread now
/// takes the pidfd itself.
#[test]
fn a_program_dropped_after_its_hub_ended_is_reaped_with_no_fd_to_spare() {
    let test = "a_program_dropped_after_its_hub_ended_is_reaped_with_no_fd_to_spare";
    if !greenhub_tests::run_in_child(test, NO_FD_CHILD) {
        return;
    }
    let (program, stdin, pid) = cat_outliving_its_hub();
    let fillers = greenhub_tests::fill_free_fds(8, 0);
    drop(program); // still running: cat waits for its input
    drop(fillers);
    drop(stdin); // now it exits
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    eventually_blocking("the exited program is reaped", gone);
    assert!(zombie_children().is_empty());
}

/// Set in the copy of this test binary that
/// [`a_program_whose_reaper_thread_is_refused_is_reaped_by_a_later_drop`] starts.
const NO_THREAD_CHILD: &str = "GREENHUB_COMMAND_NO_THREAD_CHILD";

/// Regression: when the OS refused the helper thread that reaps a program dropped after its
/// hub had ended, nothing reaped it: it stayed a zombie for the life of the process. Now stderr
/// names the refused thread, and a later drop of a child's `Process` reaps it.
#[test]
fn a_program_whose_reaper_thread_is_refused_is_reaped_by_a_later_drop() {
    let test = "a_program_whose_reaper_thread_is_refused_is_reaped_by_a_later_drop";
    if !greenhub_tests::run_in_child(test, NO_THREAD_CHILD) {
        return;
    }
    let (program, stdin, pid) = cat_outliving_its_hub();
    // No room for a thread's stack: the reaper thread is refused.
    greenhub_tests::with_no_room_for_a_thread(|| drop(program)); // cat waits for its input
    drop(stdin); // now it exits, and nobody has reaped it yet
    // SAFETY: waitid writes only into `info`, a live siginfo_t (WNOWAIT: it stays unreaped).
    let waited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(waited, 0, "{}", std::io::Error::last_os_error());
    assert!(zombie_children().contains(&pid), "the refused reaper reaped it anyway");
    // Any later drop of a child's last owner sweeps it.
    let other = greenhub::run(|| {
        let other = Command::new("true").spawn().unwrap();
        other.join().unwrap();
        other
    });
    drop(other);
    assert!(zombie_children().is_empty(), "the program is still a zombie");
}

/// The documented rule (F5), as std's `Child`: a program still running when its hub ends is
/// reaped only through its `Process`; until that is polled or dropped, an exited one is a zombie.
#[test]
fn a_program_that_outlives_its_hub_is_a_zombie_until_its_process_is_polled() {
    let _serial = process_lock();
    let mut program = greenhub::run(|| {
        Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
    });
    let pid = program.pid();
    drop(program.take_stdin()); // cat exits now, after its hub has ended
    // Wait for its exit without reaping it (WNOWAIT), instead of sleeping.
    // SAFETY: waitid writes only into `info`, a live siginfo_t.
    let waited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(waited, 0, "{}", std::io::Error::last_os_error());
    assert!(zombie_children().contains(&pid), "nobody polled it, yet it was reaped");
    assert!(program.exit_status().unwrap().success());
    assert!(!zombie_children().contains(&pid), "exit_status did not reap it");
}

#[test]
fn a_program_dropped_without_join_is_reaped_by_the_hub() {
    let _serial = process_lock();
    greenhub::run(|| {
        let pid = Command::new("true").spawn().unwrap().pid();
        let deadline = Instant::now() + PATIENCE;
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "the hub did not reap the program");
            greenhub::sleep(Duration::from_millis(2));
        }
    });
    assert!(zombie_children().is_empty());
}

#[test]
#[should_panic(expected = "Command::spawn called outside a hub")]
fn spawn_outside_a_hub_names_the_rule() {
    let _ = Command::new("true").spawn();
}

#[test]
fn no_fd_leak_or_zombie_over_50_programs() {
    assert_no_fd_leak(50, || {
        greenhub::run(|| {
            let output = Command::new("echo").arg("x").output().unwrap();
            assert_eq!(output.stdout, b"x\n");
            let (reader, writer) = raw_pipe().unwrap();
            let mut cmd = Command::new("true");
            cmd.pass(writer);
            assert!(cmd.spawn().unwrap().join().unwrap().success());
            assert!(matches!(reader.get(), Err(Error::Eof)));
        });
    });
    let _serial = process_lock();
    assert!(zombie_children().is_empty());
}

#[test]
fn a_forked_child_does_not_hold_a_program_pipe_open() {
    let _serial = process_lock();
    greenhub::run(|| {
        let mut cat =
            Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stdin = cat.take_stdin().unwrap();
        // A child forked now inherits the fd of cat's stdin, and must close it.
        let (release_reader, release_writer) = greenhub_ipc::pipe::<()>().unwrap();
        let child = greenhub_ipc::start_process(release_reader, |r| r.get()).unwrap();
        drop(stdin);
        let status = cat.join_timeout(PATIENCE).unwrap().expect("cat saw end of file");
        assert!(status.success());
        release_writer.put(&()).unwrap();
        assert!(child.join().unwrap().success());
    });
}

/// Regression: `pass` kept only the fd, so bytes a handle held in this process were lost: a
/// Reader's frames read ahead of the message it returned, a Writer's rest of a frame a `put`
/// cut short (the program's first frame then went out glued to its head, one corrupt
/// message). `spawn` now refuses such a handle before anything starts.
#[test]
fn a_passed_handle_holding_bytes_of_its_stream_is_refused_before_the_program_starts() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (reader, writer) = raw_pipe().unwrap();
        writer.put(&b"first".to_vec()).unwrap();
        writer.put(&b"second".to_vec()).unwrap();
        assert_eq!(reader.get().unwrap(), b"first"); // "second" is read ahead, here
        let mut command = Command::new("true");
        command.pass(reader);
        let refused = command.spawn().unwrap_err();
        let invalid =
            matches!(&refused, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput);
        assert!(invalid, "{refused:?}");
        assert!(refused.to_string().contains("would never see"), "{refused}");

        let (_reader, writer) = raw_pipe().unwrap();
        let cut = greenhub::timeout(Duration::from_millis(20), || writer.put(&vec![7; 4 << 20]));
        assert!(cut.is_err(), "the pipe is full: the put is cut short");
        let mut command = Command::new("true");
        command.pass(writer);
        assert!(command.spawn().unwrap_err().to_string().contains("would never see"));
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}
