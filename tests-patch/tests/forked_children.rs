//! Children started with greenhub-ipc keep the patch on their fresh hub.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

#[test]
fn a_forked_child_runs_patched_std_code_cooperatively() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let child = greenhub_ipc::start_process((), |()| -> Result<(), String> {
            if !greenhub::patch::is_installed() {
                return Err("the patch is not installed in the child".into());
            }
            let inside = Rc::new(Cell::new(0usize));
            let peak = Rc::new(Cell::new(0usize));
            let sleepers: Vec<_> = (0..20)
                .map(|_| {
                    let (inside, peak) = (inside.clone(), peak.clone());
                    greenhub::spawn(move || {
                        inside.set(inside.get() + 1);
                        peak.set(peak.get().max(inside.get()));
                        std::thread::sleep(Duration::from_millis(20));
                        inside.set(inside.get() - 1);
                    })
                })
                .collect();
            sleepers.into_iter().for_each(|s| s.join().unwrap());
            match peak.get() {
                20 => Ok(()),
                n => Err(format!("only {n} of 20 std sleeps overlapped in the child")),
            }
        })
        .unwrap();
        assert!(child.join().unwrap().success());
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

/// A child made by a plain `fork` (not `start_process`) runs on a copy of the parent's hub, over
/// the parent's epoll instance: the patch's `close` there deregistered the registration the
/// parent's hub keeps for a managed socket, and the parent's next wait on it never woke.
#[test]
fn a_plain_fork_child_closing_a_managed_socket_leaves_the_parents_waits_working() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let a = Rc::new(std::cell::RefCell::new(a));
        let read_one = |a: Rc<std::cell::RefCell<UnixStream>>| {
            greenhub::spawn(move || {
                let mut byte = [0u8; 1];
                let read = greenhub::timeout(Duration::from_secs(5), || {
                    a.borrow_mut().read_exact(&mut byte)
                });
                read.map(|r| r.map(|()| byte[0]).map_err(|e| e.to_string()))
            })
        };
        // A wait on `a`: the hub keeps its registration.
        let reader = read_one(a.clone());
        greenhub::yield_now();
        b.write_all(b"x").unwrap();
        assert_eq!(reader.join().unwrap(), Ok(Ok(b'x')));

        // SAFETY: the child only closes an fd and ends with _exit (async-signal-safe calls).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::close(fd);
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);

        let reader = read_one(a);
        greenhub::yield_now();
        b.write_all(b"y").unwrap();
        let read = reader.join().unwrap();
        assert_eq!(read, Ok(Ok(b'y')), "the parent's wait on the socket never woke");
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}
