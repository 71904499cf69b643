//! `start_process` in a single-threaded process: the child is made by `clone3` with
//! `CLONE_PIDFD`, which bypasses glibc's `fork`, so what glibc's fork would fix in the child
//! must be fixed by greenhub-ipc (the unsafe ledger has the argument). These checks run without
//! libtest's harness (`harness = false`): libtest runs every test on a thread of its own, and in
//! a multithreaded process `start_process` takes glibc's fork instead.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use greenhub_ipc::{Error, start_process};
use greenhub_tests::{assert_no_fd_leak, zombie_children};

/// Set by a `pthread_atfork` child handler: in a child, it says whether glibc's `fork` made it.
static ATFORK_CHILD_HANDLER_RAN: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_atfork_child() {
    ATFORK_CHILD_HANDLER_RAN.store(true, Ordering::Relaxed);
}

/// What a child sees of its own making.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Seen {
    /// glibc's fork made it (its atfork child handlers ran).
    by_glibc_fork: bool,
    /// glibc's thread descriptor holds the child's own thread id: a clock of "this thread"
    /// (`pthread_getcpuclockid(pthread_self())`) can be read. With the parent's id left there,
    /// the kernel refuses it (that thread is not in the child's process).
    own_thread_id: bool,
    /// A robust-mutex list is registered with the kernel (a new process has none until glibc's
    /// fork, or greenhub-ipc after a `clone3`, registers it).
    robust_list_registered: bool,
}

fn seen_in_child() -> Seen {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: a valid out-pointer; pthread_self is this thread.
    let own_thread_id =
        unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0 && {
            // SAFETY: an all-zero timespec is a valid out-value.
            let mut now: libc::timespec = unsafe { std::mem::zeroed() };
            // SAFETY: a valid out-pointer.
            unsafe { libc::clock_gettime(clock, &mut now) == 0 }
        };
    let mut head: *mut libc::c_void = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list(0, ...) writes the calling thread's registration into two
    // live out-values.
    let rc = unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &raw mut head, &raw mut len) };
    Seen {
        by_glibc_fork: ATFORK_CHILD_HANDLER_RAN.load(Ordering::Relaxed),
        own_thread_id,
        robust_list_registered: rc == 0 && !head.is_null(),
    }
}

/// Starts a child that reports what it sees.
fn start_and_look() -> Seen {
    greenhub::run(|| {
        let (reader, writer) = greenhub_ipc::pipe::<Seen>().unwrap();
        let child = start_process(writer, |writer| writer.put(&seen_in_child())).unwrap();
        let seen = reader.get().unwrap();
        assert!(child.join().unwrap().success());
        seen
    })
}

fn a_single_threaded_start_is_a_clone3_child_with_its_own_thread_id_and_robust_list() {
    let seen = start_and_look();
    let expected = Seen { by_glibc_fork: false, own_thread_id: true, robust_list_registered: true };
    assert_eq!(seen, expected, "a start in a single-threaded process");
}

fn a_clone3_child_keeps_the_guarantees_of_start_process() {
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let (reader, writer) = greenhub_ipc::pipe::<u32>().unwrap();
            let ok = start_process(writer, |w| w.put(&std::process::id())).unwrap();
            assert_eq!(reader.get().unwrap(), ok.pid()); // the transferred handle is owned there
            assert_eq!(ok.join().unwrap().code(), Some(0));
            let (reader, _writer) = greenhub_ipc::pipe::<u8>().unwrap();
            let untransferred = start_process((), move |()| {
                // An inherited, untransferred handle is closed in the child.
                if !matches!(reader.get(), Err(Error::Closed)) {
                    std::process::exit(3);
                }
            })
            .unwrap();
            assert_eq!(untransferred.join().unwrap().code(), Some(0));
            let grandparent = greenhub_ipc::ProcessBuilder::new()
                .name("gp")
                .start((), |()| {
                    // The child took the default names' lock itself (nothing is held across a
                    // clone3): its own children are named after it.
                    let grandchild = start_process((), |()| ()).unwrap();
                    assert_eq!(grandchild.name(), "gp:1");
                    assert!(grandchild.join().unwrap().success());
                })
                .unwrap();
            assert!(grandparent.join().unwrap().success());
        });
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Run in a process of its own (stdout must be a pipe to be checked): what `print!` left
/// buffered before a `clone3` is printed once, by the parent.
fn print_around_a_clone3_child() {
    print!("parent ");
    greenhub::run(|| {
        let child = start_process((), |()| println!("child")).unwrap();
        assert!(child.join().unwrap().success());
    });
    println!("parent again");
}

fn buffered_stdout_is_flushed_before_a_clone3_so_nothing_prints_twice() {
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new(me).env("CLONE3_CHILD_PRINTS", "1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "parent child\nparent again\n");
}

fn greenhub_ipc_fork_set_to_fork_makes_every_start_a_glibc_fork() {
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new(me).env("GREENHUB_IPC_FORK", "fork").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "forked through glibc\n");
}

fn a_multithreaded_process_forks_through_glibc() {
    let (started, wait) = std::sync::mpsc::channel::<()>();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        started.send(()).unwrap();
        stopped.recv().unwrap();
    });
    wait.recv().unwrap();
    let seen = start_and_look();
    stop.send(()).unwrap();
    thread.join().unwrap();
    let expected = Seen { by_glibc_fork: true, own_thread_id: true, robust_list_registered: true };
    assert_eq!(seen, expected, "a start in a multithreaded process");
}

fn main() {
    // SAFETY: registering a plain function that only stores to an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(mark_atfork_child)) };
    if std::env::var_os("CLONE3_CHILD_PRINTS").is_some() {
        return print_around_a_clone3_child();
    }
    if std::env::var_os("GREENHUB_IPC_FORK").is_some() {
        assert!(start_and_look().by_glibc_fork);
        println!("forked through glibc");
        return;
    }
    let checks: [(&str, fn()); 5] = [
        (
            "a_single_threaded_start_is_a_clone3_child_with_its_own_thread_id_and_robust_list",
            a_single_threaded_start_is_a_clone3_child_with_its_own_thread_id_and_robust_list,
        ),
        (
            "a_clone3_child_keeps_the_guarantees_of_start_process",
            a_clone3_child_keeps_the_guarantees_of_start_process,
        ),
        (
            "buffered_stdout_is_flushed_before_a_clone3_so_nothing_prints_twice",
            buffered_stdout_is_flushed_before_a_clone3_so_nothing_prints_twice,
        ),
        (
            "greenhub_ipc_fork_set_to_fork_makes_every_start_a_glibc_fork",
            greenhub_ipc_fork_set_to_fork_makes_every_start_a_glibc_fork,
        ),
        // Last: once a thread has existed, the process never counts as single-threaded again.
        (
            "a_multithreaded_process_forks_through_glibc",
            a_multithreaded_process_forks_through_glibc,
        ),
    ];
    for (name, check) in checks {
        check();
        let _ = writeln!(std::io::stdout(), "test {name} ... ok");
    }
}
