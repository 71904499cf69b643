//! `Transfer` for containers: a `Vec`, an `Option` (`Some` and `None`), an array and a tuple of
//! eight, handed to `start_process`. Each handle inside arrives in the child, owned there and
//! working, and is closed in the parent once the child exists (so the parent sees the end of a
//! pipe once the child has gone, and the fds are no longer open here).
//!
//! Every test forks and counts fds, so every test holds `process_lock`.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use greenhub_ipc::__private::owned_handle_count;
use greenhub_ipc::{Error, Writer, duplex, pipe, raw_pipe, start_process};
use greenhub_tests::{process_lock, zombie_children};

/// Runs `body` in a fresh hub, holding `process_lock`, and checks that no child is left a
/// zombie afterwards.
fn hub_test(body: impl FnOnce()) {
    let _serial = process_lock();
    greenhub::run(body);
    assert_eq!(zombie_children(), Vec::<u32>::new(), "zombies left behind");
}

/// The fds open in this process, each with what it points to (`/proc/self/fd/N`'s link),
/// leaving out the directory stream that lists them.
fn fd_table() -> BTreeSet<(RawFd, String)> {
    let entries = std::fs::read_dir("/proc/self/fd").unwrap().filter_map(Result::ok);
    entries
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?.display().to_string();
            (!target.starts_with("/proc/")).then_some((fd, target))
        })
        .collect()
}

/// Checks that exactly `n` of the fds in `before` are closed now, all of them pipe ends (a
/// pidfd that the reaper has not closed yet may be open besides: only closings count).
fn assert_closed_since(before: &BTreeSet<(RawFd, String)>, n: usize) {
    let now = fd_table();
    let closed: Vec<_> = before.difference(&now).collect();
    assert_eq!(closed.len(), n, "expected {n} fds closed in the parent, closed: {closed:?}");
    assert!(closed.iter().all(|(_, target)| target.starts_with("pipe:")), "{closed:?}");
}

/// Checks that `got`, a read from a pipe, is the end of the stream: every writer is closed, in
/// the parent too.
fn assert_eof<T: std::fmt::Debug>(got: Result<T, Error>) {
    assert!(matches!(got, Err(Error::Eof)), "expected Eof (no writer left), got {got:?}");
}

#[test]
fn every_writer_of_a_vec_arrives_in_the_child_and_is_closed_in_the_parent() {
    hub_test(|| {
        let (readers, writers): (Vec<_>, Vec<Writer<(usize, usize)>>) =
            (0..3).map(|_| pipe().unwrap()).unzip();
        let before = fd_table();
        let child = start_process(writers, |writers| {
            let owned = owned_handle_count();
            writers.iter().enumerate().try_for_each(|(i, w)| w.put(&(i, owned)))
        })
        .unwrap();
        assert!(child.join().unwrap().success());
        assert_closed_since(&before, 3);
        for (i, reader) in readers.iter().enumerate() {
            assert_eq!(reader.get().unwrap(), (i, 3), "writer {i}, and the child owned three");
            assert_eof(reader.get());
        }
    });
}

#[test]
fn an_option_transfers_its_handle_when_some_and_nothing_when_none() {
    hub_test(|| {
        let (reader, writer) = pipe::<usize>().unwrap();
        let before = fd_table();
        let child = start_process(Some(writer), |writer| {
            writer.expect("Some arrives as Some").put(&owned_handle_count())
        })
        .unwrap();
        assert!(child.join().unwrap().success());
        assert_closed_since(&before, 1);
        assert_eq!(reader.get().unwrap(), 1);
        assert_eof(reader.get());

        let (report, report_writer) = pipe::<(bool, usize)>().unwrap();
        let none: Option<Writer<u8>> = None;
        let child = start_process((report_writer, none), |(report, none)| {
            report.put(&(none.is_none(), owned_handle_count()))
        })
        .unwrap();
        assert_eq!(report.get().unwrap(), (true, 1), "(None arrived as None, handles owned)");
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn every_duplex_of_an_array_arrives_in_the_child_and_is_closed_in_the_parent() {
    hub_test(|| {
        let (ours, theirs): (Vec<_>, Vec<_>) =
            (0..2).map(|_| duplex::<u32, u32>().unwrap()).unzip();
        let theirs: [_; 2] = theirs.try_into().unwrap();
        let before = fd_table();
        let child = start_process(theirs, |theirs| {
            let owned = owned_handle_count() as u32;
            theirs.iter().try_for_each(|d| {
                let n = d.get()?;
                d.put(&(n + 1))?;
                d.put(&owned)
            })
        })
        .unwrap();
        for (i, d) in (0u32..).zip(&ours) {
            d.put(&(i * 10)).unwrap();
            assert_eq!(d.get().unwrap(), i * 10 + 1);
            assert_eq!(d.get().unwrap(), 4, "two handles per duplex owned in the child");
        }
        assert!(child.join().unwrap().success());
        assert_closed_since(&before, 4); // two pipe ends per duplex
        for d in &ours {
            assert_eof(d.get());
        }
    });
}

#[test]
fn every_element_of_an_eight_tuple_arrives_in_the_child_and_is_closed_in_the_parent() {
    hub_test(|| {
        let (a_reader, a) = pipe::<usize>().unwrap();
        let (b, b_writer) = pipe::<u8>().unwrap();
        let (c_ours, c) = duplex::<u8, u8>().unwrap();
        let (d_reader, d) = raw_pipe().unwrap();
        let (e_reader, e) = pipe::<u8>().unwrap();
        let (f_readers, f): (Vec<_>, Vec<_>) = (0..2).map(|_| pipe::<u8>().unwrap()).unzip();
        let (g_readers, g): (Vec<_>, Vec<_>) = (0..2).map(|_| pipe::<u8>().unwrap()).unzip();
        let g: [_; 2] = g.try_into().unwrap();
        let (mut h_reader, h) = std::io::pipe().unwrap();
        let before = fd_table();
        let handles = (a, b, c, d, Some(e), f, g, h);
        let child = start_process(handles, |(a, b, c, d, e, f, g, mut h)| {
            a.put(&owned_handle_count())?;
            let from_b = b.get()?;
            c.put(&(c.get()? + from_b))?;
            d.put(&b"raw".to_vec())?;
            e.expect("Some arrives as Some").put(&5)?;
            f.iter().zip([6, 7]).try_for_each(|(w, n)| w.put(&n))?;
            g.iter().zip([8, 9]).try_for_each(|(w, n)| w.put(&n))?;
            h.write_all(b"std").map_err(Error::Io)
        })
        .unwrap();
        assert_eq!(a_reader.get().unwrap(), 10, "the child owns the ten handles it was given");
        b_writer.put(&2).unwrap();
        c_ours.put(&40).unwrap();
        assert_eq!(c_ours.get().unwrap(), 42);
        assert_eq!(d_reader.get().unwrap(), b"raw");
        assert_eq!(e_reader.get().unwrap(), 5);
        let f_got: Vec<u8> = f_readers.iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(f_got, [6, 7]);
        let g_got: Vec<u8> = g_readers.iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(g_got, [8, 9]);
        assert!(child.join().unwrap().success());
        // 11 fds: one per pipe end, two for the duplex, and the std pipe's.
        assert_closed_since(&before, 11);
        let mut text = String::new();
        h_reader.read_to_string(&mut text).unwrap(); // returns at EOF: no writer left
        assert_eq!(text, "std");
        assert_eof(a_reader.get());
        assert_eof(c_ours.get());
        assert_eof(d_reader.get());
        assert_eof(e_reader.get());
        f_readers.iter().chain(&g_readers).for_each(|r| assert_eof(r.get()));
        // The child held the only reader of `b`: it is closed in the parent too.
        match b_writer.put(&3) {
            Err(Error::Io(e)) if e.kind() == ErrorKind::BrokenPipe => {}
            other => panic!("expected BrokenPipe (no reader of b left), got {other:?}"),
        }
    });
}

/// A socket the child inherits without being given it is closed there, and knows it: its reads
/// and writes fail with an error saying so, and dropping it does not close the fd number, which
/// the child's own next socket reuses.
#[test]
fn a_socket_inherited_without_a_transfer_refuses_io_and_leaves_its_number_alone() {
    hub_test(|| {
        let (inherited, _peer) = greenhub::net::UnixStream::pair().unwrap();
        let (report_r, report_w) = pipe::<String>().unwrap();
        let child = start_process(report_w, move |report: Writer<String>| {
            // Sockets of the child's own until one gets the inherited one's (now free) number.
            let number = inherited.as_raw_fd();
            let mut others = Vec::new();
            let (mine, theirs) = loop {
                let (a, b) = greenhub::net::UnixStream::pair().unwrap();
                if a.as_raw_fd() == number || b.as_raw_fd() == number {
                    break (a, b);
                }
                assert!(others.len() < 64, "the inherited number {number} was never reused");
                others.push((a, b));
            };
            let wrote = (&inherited).write(b"through the inherited copy");
            let read = (&inherited).read(&mut [0u8; 8]);
            drop(inherited); // must not close `mine` or `theirs`
            (&mine).write_all(b"ok").unwrap();
            let mut got = [0u8; 2];
            (&theirs).read_exact(&mut got).unwrap();
            report.put(&format!("{wrote:?} | {read:?} | {}", String::from_utf8_lossy(&got)))
        })
        .unwrap();
        let line = report_r.get().unwrap();
        child.join().unwrap();
        let parts: Vec<&str> = line.split(" | ").collect();
        assert!(
            parts[0].starts_with("Err(") && parts[0].contains("inherited through fork"),
            "{line}"
        );
        assert!(
            parts[1].starts_with("Err(") && parts[1].contains("inherited through fork"),
            "{line}"
        );
        assert_eq!(parts[2], "ok", "{line}");
    });
}

/// A socket the child inherits without being given it is not the child's to hand on: giving it
/// to a grandchild or a program, or wrapping it in a `Duplex`, is `Error::Closed`, and never
/// passes on or writes to the file of the child's own that now has its number.
#[test]
fn a_socket_inherited_without_a_transfer_cannot_be_handed_on_or_wrapped_in_a_duplex() {
    hub_test(|| {
        let (inherited, _peer) = greenhub::net::UnixStream::pair().unwrap();
        let (tcp_listener, tcp) = {
            let listener = greenhub::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let tcp = greenhub::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            (listener, tcp)
        };
        let (report_r, report_w) = pipe::<String>().unwrap();
        let child = start_process(report_w, move |report: Writer<String>| {
            // A pipe of the child's own, its write end under the inherited (closed) number
            // (the read end moved off it first, should the pipe have got that number).
            let number = inherited.as_raw_fd();
            let (first_reader, own_writer) = std::io::pipe().unwrap();
            let mut own_reader = first_reader.try_clone().unwrap();
            drop(first_reader);
            let own_writer = std::os::fd::OwnedFd::from(own_writer);
            if own_writer.as_raw_fd() == number {
                std::mem::forget(own_writer); // closed below, under `number`
            } else {
                // SAFETY: `number` is free in this child (closed with every fd it was not
                // given), and `own_writer`'s fd is open: dup2 makes `number` a second fd of
                // the pipe.
                assert_eq!(unsafe { libc::dup2(own_writer.as_raw_fd(), number) }, number);
                drop(own_writer);
            }
            let outcomes = [
                format!("{:?}", greenhub_ipc::Duplex::<u8, u8>::from_unix(inherited).err()),
                format!("{:?}", greenhub_ipc::Duplex::<u8, u8>::from_tcp(tcp).err()),
                format!("{:?}", start_process(tcp_listener, |_| ()).err()),
            ];
            // SAFETY: `number` is this child's own fd now (the dup2 above); nothing else owns it.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(number) });
            let mut leaked = Vec::new();
            own_reader.read_to_end(&mut leaked).unwrap();
            report.put(&format!(
                "{} | {} bytes in the child's pipe",
                outcomes.join(" | "),
                leaked.len()
            ))
        })
        .unwrap();
        let line = report_r.get().unwrap();
        assert!(child.join().unwrap().success(), "{line}");
        assert_eq!(
            line,
            "Some(Closed) | Some(Closed) | Some(Closed) | 0 bytes in the child's pipe"
        );
    });
}
