//! What a child process holds: exactly its stdio, the handles it was given, and its own hub's
//! fds, however busy the parent's other threads are with their own pipes, hubs and children at
//! the instant of `fork`.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};

use greenhub_ipc::{Writer, pipe, start_process};
use greenhub_tests::{process_lock, zombie_children};

/// Threads forking at once, each running its own hub.
const THREADS: usize = 4;

/// Children started by each thread.
const CHILDREN_PER_THREAD: usize = 75;

/// The hub's own fds, one of each per hub: epoll, the wake-up eventfd, the timers' timerfd.
const HUB_FDS: [&str; 3] =
    ["anon_inode:[eventpoll]", "anon_inode:[eventfd]", "anon_inode:[timerfd]"];

/// In the child: every fd it holds that is not stdio, `given`, or one of its own hub's three
/// fds, as "fd -> what it is" lines.
fn unexpected_fds(given: RawFd) -> Vec<String> {
    let listing = std::fs::read_dir("/proc/self/fd").expect("cannot list /proc/self/fd");
    let mut hub_fds: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for entry in listing {
        let entry = entry.unwrap();
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else { continue }; // the listing's own
        let target = target.to_string_lossy().into_owned();
        if fd <= 2 || fd == given || target.starts_with("/proc/") {
            continue;
        }
        let count = hub_fds.entry(target.clone()).or_default();
        *count += 1;
        if !HUB_FDS.contains(&target.as_str()) || *count > 1 {
            unexpected.push(format!("{fd} -> {target}"));
        }
    }
    unexpected
}

/// One thread's share: start children while the other threads do the same, each child
/// reporting what it holds; the parent keeps a pipe of its own open across every fork and
/// closes another one while the next child starts.
fn start_children(thread: usize) -> Vec<String> {
    greenhub::run(|| {
        let mut reports = Vec::new();
        let mut previous = Some(pipe::<u8>().unwrap());
        for i in 0..CHILDREN_PER_THREAD {
            let _kept_open = pipe::<u8>().unwrap();
            let closing = previous.take();
            let closer = greenhub::spawn(move || drop(closing));
            let (reader, writer) = pipe::<Vec<String>>().unwrap();
            let child = start_process(writer, |writer: Writer<Vec<String>>| {
                writer.put(&unexpected_fds(writer.as_raw_fd()))
            })
            .unwrap();
            let found = reader.get().unwrap();
            assert!(child.join().unwrap().success());
            closer.join().unwrap();
            reports.extend(found.into_iter().map(|fd| format!("thread {thread} child {i}: {fd}")));
            previous = Some(pipe::<u8>().unwrap());
        }
        reports
    })
}

#[test]
fn children_forked_by_four_threads_at_once_hold_only_their_stdio_handles_and_hub() {
    let _serial = process_lock();
    let threads: Vec<_> =
        (0..THREADS).map(|t| std::thread::spawn(move || start_children(t))).collect();
    let leaks: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        leaks.is_empty(),
        "{} fds leaked into children (first 20):\n{}",
        leaks.len(),
        leaks.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

#[test]
fn a_file_opened_by_the_parent_is_closed_in_the_child_unless_it_is_given() {
    let _serial = process_lock();
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let (given_fd, other_fd) = (file.as_raw_fd(), std::fs::File::open("/dev/null").unwrap());
    greenhub::run(|| {
        let (reader, writer) = pipe::<(bool, bool)>().unwrap();
        let other_raw = other_fd.as_raw_fd();
        let child = start_process((writer, file), move |(writer, file)| {
            // (The number of a closed fd may name the child's own hub now: compare the files.)
            let names = |fd: RawFd, path: &str| {
                std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| t == *path)
            };
            writer.put(&(names(file.as_raw_fd(), "/etc/hostname"), names(other_raw, "/dev/null")))
        })
        .unwrap();
        assert_eq!(reader.get().unwrap(), (true, false));
        assert!(child.join().unwrap().success());
        // The given file was closed here (the transfer), the other one stays open.
        assert!(std::fs::read_link(format!("/proc/self/fd/{given_fd}")).is_err());
        assert!(std::fs::read_link(format!("/proc/self/fd/{other_raw}")).is_ok());
    });
}
