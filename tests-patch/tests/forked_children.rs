//! Children started with greenhub-ipc keep the patch on their fresh hub, and an fd inherited
//! through fork (its description shared with the parent) is never switched to non-blocking.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

fn kernel_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions; a raw syscall bypasses the patch.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

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

#[test]
fn an_fd_inherited_through_fork_is_not_switched_to_non_blocking() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    let (mut parent_end, child_end) = UnixStream::pair().unwrap();
    let shared = child_end.as_raw_fd();
    greenhub::run(move || {
        let child = greenhub_ipc::start_process((), move |()| -> Result<(), String> {
            // The description behind `shared` is the parent's too.
            let mut buf = [0u8; 5];
            (&child_end).read_exact(&mut buf).map_err(|e| e.to_string())?;
            if kernel_flags(shared) & libc::O_NONBLOCK != 0 {
                return Err("the child set O_NONBLOCK on a description it shares".into());
            }
            (&child_end).write_all(&buf).map_err(|e| e.to_string())
        })
        .unwrap();
        parent_end.write_all(b"hello").unwrap();
        let mut echo = [0u8; 5];
        parent_end.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"hello");
        assert!(child.join().unwrap().success());
    });
}
