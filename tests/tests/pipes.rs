//! Pipes: gipc's pipe behaviours on greenhub-ipc, each its own test (single messages of many
//! types, big messages, shared handles, EOF, truncation, broken pipe, timeouts, duplex), and what
//! gipc never promised: partial messages that survive a timeout or a cancellation, bounded
//! allocation for a lying header, typed errors for garbage, custom codecs, no fd leak.
//!
//! Every test holds [`process_lock`] (they all open fds, and one counts them), so the file runs
//! one test at a time; it takes a few seconds. No test sleeps to synchronise: coroutines hand
//! over through joins, and "the reader has taken what was in the pipe" is observed with FIONREAD.
//! The raw peer ([`raw_write`]) writes wire bytes straight into a writer's fd, bypassing its lock
//! and outbox: the way a foreign or broken writer would.
//!
//! Pipe capacity: greenhub-ipc grows pipes to 1 MiB when Linux allows it, but a user past the
//! pipe quota gets the default 64 KiB. Tests that fill a pipe ask its size ([`pipe_capacity`]);
//! the others leave at most 64 KiB in a pipe nobody is reading (only
//! `pipes_are_grown_to_one_mebibyte` checks the growth itself).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::{spawn, yield_now};
use greenhub_ipc::{
    Codec, Error, Postcard, Raw, Reader, Writer, duplex, pipe, pipe_with, raw_pipe,
};
use greenhub_tests::{assert_no_fd_leak, pattern, process_lock, rerun_test_in_child, yield_until};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A timeout that a test lets expire on purpose.
const SHORT: Duration = Duration::from_millis(20);

/// A deadline no passing test comes near: reaching it means the test hung.
const LONG: Duration = Duration::from_secs(30);

/// Runs `body` as the root coroutine of a fresh hub, holding [`process_lock`]. A body still
/// suspended after [`LONG`] is unwound and the test fails: a hang (say, a reader waiting for bytes
/// that were lost) fails the test instead of stalling the whole file behind the lock.
fn hub_test<T>(body: impl FnOnce() -> T) -> T {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, body).expect("the test hung: still suspended after LONG")
    })
}

/// The wire bytes of one frame, built by hand (not with `greenhub_ipc::frame`), so the tests
/// check the format itself: a 4-byte big-endian length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// The postcard payload of `value`, as a greenhub pipe of `T` carries it.
fn postcard_payload<T: Serialize + DeserializeOwned + 'static>(value: &T) -> Vec<u8> {
    let mut payload = Vec::new();
    Postcard.encode(value, &mut payload).unwrap();
    payload
}

/// Writes all of `bytes` into `fd` with write(2), bypassing the handle that owns it. Waits
/// cooperatively while the pipe is full.
fn raw_write(fd: &impl AsRawFd, bytes: &[u8]) {
    let fd = fd.as_raw_fd();
    if let Err(err) = write_all_raw(fd, bytes) {
        panic!("raw write to fd {fd}: {err}");
    }
}

/// Writes all of `bytes` with write(2), suspending on a full pipe; the first other error.
fn write_all_raw(fd: std::os::fd::RawFd, bytes: &[u8]) -> std::io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a live buffer of `rest.len()` bytes; write(2) only reads from it.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(err);
            }
            greenhub::io::wait_writable(fd)?;
            continue;
        }
        rest = &rest[n as usize..];
    }
    Ok(())
}

/// How many bytes sit in the pipe, written and not yet read (FIONREAD).
fn unread_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points at `n`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap()
}

/// The pipe's capacity in bytes (F_GETPIPE_SZ).
fn pipe_capacity(fd: &impl AsRawFd) -> usize {
    // SAFETY: F_GETPIPE_SZ takes no argument and only returns a number.
    let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).unwrap_or_else(|_| panic!("F_GETPIPE_SZ failed"))
}

/// Message `seq` of writer `id`: who sent it, its number, then a pattern of a size that varies.
fn tagged_message(id: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut msg = vec![id];
    msg.extend_from_slice(&seq.to_le_bytes());
    msg.extend_from_slice(&pattern(u64::from(seq) << 8 | u64::from(id), len));
    msg
}

/// The sender and number of a [`tagged_message`].
fn tag_of(msg: &[u8]) -> (u8, u32) {
    (msg[0], u32::from_le_bytes(msg[1..5].try_into().unwrap()))
}

/// (virtual size, resident size) of this process, in bytes (/proc/self/statm).
fn memory_use() -> (u64, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let mut pages = statm.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    // SAFETY: sysconf only returns a number.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    (pages.next().unwrap() * page, pages.next().unwrap() * page)
}

/// True for `Error::Io` of kind `BrokenPipe`: what a put to a pipe without readers gives.
fn is_broken_pipe(err: &Error) -> bool {
    matches!(err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
}

// ---------------------------------------------------------------------------------------------
// Single messages of several types (gipc: test_singlemsg_*)

/// The values through a fresh pipe, from a writer coroutine to the root, then `Eof`.
fn round_trip<T>(values: Vec<T>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    hub_test(|| {
        let (reader, writer) = pipe::<T>().unwrap();
        let values = Rc::new(values);
        let writing = spawn({
            let values = Rc::clone(&values);
            move || {
                for value in values.iter() {
                    writer.put(value).unwrap();
                }
                writer.close().unwrap();
            }
        });
        for value in values.iter() {
            assert_eq!(&reader.get().unwrap(), value);
        }
        assert!(matches!(reader.get(), Err(Error::Eof)));
        writing.join().unwrap();
    });
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
    args: Vec<String>,
    deadline_ms: Option<u32>,
    weights: BTreeMap<String, f64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Reply {
    Done,
    Progress(f32),
    Failed { code: i32, why: String },
    Batch(Vec<Reply>),
}

#[test]
fn single_message_integers() {
    round_trip(vec![0u8, 1, 255]);
    round_trip(vec![i64::MIN, -1, 0, i64::MAX]);
    round_trip(vec![u128::MAX, 0]);
    round_trip(vec![0.5f64, -1e300, f64::INFINITY]);
}

#[test]
fn single_message_strings() {
    round_trip(vec![
        String::new(),
        "x".to_string(),
        "grüße, 世界 🦀".to_string(),
        "é".repeat(70_000),
    ]);
    round_trip(vec!['a', 'ß', '🦀']);
}

#[test]
fn single_message_struct_with_serde_derive() {
    round_trip(vec![
        Job {
            id: 7,
            name: "resize".into(),
            args: vec!["a.png".into(), "-q".into()],
            deadline_ms: Some(250),
            weights: BTreeMap::from([("cpu".into(), 0.75), ("io".into(), 0.25)]),
        },
        Job {
            id: 0,
            name: String::new(),
            args: Vec::new(),
            deadline_ms: None,
            weights: BTreeMap::new(),
        },
    ]);
}

#[test]
fn single_message_enum() {
    round_trip(vec![
        Reply::Done,
        Reply::Progress(0.5),
        Reply::Failed { code: -2, why: "no such file".into() },
        Reply::Batch(vec![Reply::Done, Reply::Batch(vec![Reply::Progress(1.0)])]),
    ]);
}

#[test]
fn single_message_vec_option_tuple_and_unit() {
    round_trip(vec![Vec::new(), vec![1u32, 2, 3], (0..10_000).collect()]);
    round_trip(vec![None, Some(0u16), Some(u16::MAX)]);
    round_trip(vec![Some(None), Some(Some("deep".to_string())), None]);
    round_trip(vec![(1u8, "one".to_string(), true, -1i16), (0, String::new(), false, 0)]);
    // A unit is an empty payload: zero-length frames, back to back.
    round_trip(vec![(), (), ()]);
}

#[test]
fn raw_pipe_carries_empty_and_binary_messages_unchanged() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let messages = [Vec::new(), vec![0], (0..=255).collect(), Vec::new(), vec![0xff; 3]];
        for msg in &messages {
            writer.put(msg).unwrap();
        }
        // The wire is exactly the frames, nothing added: what a gipc peer would read.
        let wire: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
        assert_eq!(unread_bytes(&reader), wire.len());
        for msg in &messages {
            assert_eq!(&reader.get().unwrap(), msg);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Big messages (gipc: test_twomb, test_large_message), a writer and a reader coroutine each

/// Sends one message of `len` bytes from a writer coroutine to a reader coroutine.
fn big_message<C>(reader: Reader<Vec<u8>, C>, writer: Writer<Vec<u8>, C>, len: usize)
where
    C: Codec<Vec<u8>> + 'static,
{
    let msg = Rc::new(pattern(len as u64, len));
    let sent = Rc::clone(&msg);
    let writing = spawn(move || writer.put(&sent));
    let reading = spawn(move || (reader.get(), reader.get()));
    writing.join().unwrap().unwrap();
    let (got, end) = reading.join().unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), len);
    assert!(got == *msg, "the {len}-byte message arrived corrupted");
    assert!(matches!(end, Err(Error::Eof)), "{end:?}");
}

#[test]
fn two_megabyte_message_postcard() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<u8>>().unwrap();
        big_message(reader, writer, 2 << 20);
    });
}

#[test]
fn two_megabyte_message_raw() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        big_message(reader, writer, 2 << 20);
    });
}

#[test]
fn ten_megabyte_message_postcard() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<u8>>().unwrap();
        big_message(reader, writer, 10 << 20);
    });
}

#[test]
fn ten_megabyte_message_raw() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        big_message(reader, writer, 10 << 20);
    });
}

// ---------------------------------------------------------------------------------------------
// Shared handles (gipc: test_onewriter_tworeaders, test_twowriters_onereader)

#[test]
fn one_writer_two_readers_sharing_a_reader_get_every_message_once_and_whole() {
    const MESSAGES: u32 = 300;
    let size = |seq: u32| 1000 + (seq as usize * 7919) % 200_000;
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let reader = Rc::new(reader);
        let writing = spawn(move || {
            for seq in 0..MESSAGES {
                writer.put(&tagged_message(0, seq, size(seq))).unwrap();
            }
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let reader = Rc::clone(&reader);
                spawn(move || {
                    let mut seqs = Vec::new();
                    let end = loop {
                        match reader.get() {
                            Ok(msg) => {
                                let (id, seq) = tag_of(&msg);
                                assert!(msg == tagged_message(id, seq, size(seq)), "message {seq}");
                                seqs.push(seq);
                            }
                            Err(err) => break err,
                        }
                    };
                    (seqs, end)
                })
            })
            .collect();
        drop(reader);
        writing.join().unwrap();
        let mut all = Vec::new();
        for reading in readers {
            let (seqs, end) = reading.join().unwrap();
            assert!(matches!(end, Error::Eof), "{end:?}");
            assert!(seqs.is_sorted(), "one reader got messages out of order: {seqs:?}");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (0..MESSAGES).collect::<Vec<_>>(), "lost or duplicated messages");
    });
}

#[test]
fn two_writers_sharing_a_writer_never_interleave_frames() {
    const PER_WRITER: u32 = 1000;
    let size = |id: u8, seq: u32| 2000 + (seq as usize * 7919 + usize::from(id) * 104_729) % 60_000;
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let writer = Rc::new(writer);
        let writers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let writer = Rc::clone(&writer);
                spawn(move || {
                    for seq in 0..PER_WRITER {
                        writer.put(&tagged_message(id, seq, size(id, seq))).unwrap();
                    }
                })
            })
            .collect();
        drop(writer); // the coroutines hold the last references: Eof once both are done
        let mut next = [0u32; 3];
        let end = loop {
            match reader.get() {
                Ok(msg) => {
                    let (id, seq) = tag_of(&msg);
                    assert!(id == 1 || id == 2, "a frame starts with garbage: interleaved");
                    assert_eq!(seq, next[usize::from(id)], "writer {id} skipped or repeated");
                    assert!(msg == tagged_message(id, seq, size(id, seq)), "{id}/{seq} corrupted");
                    next[usize::from(id)] += 1;
                }
                Err(err) => break err,
            }
        };
        assert!(matches!(end, Error::Eof), "{end:?}");
        assert_eq!(next, [0, PER_WRITER, PER_WRITER]);
        writers.into_iter().for_each(|w| w.join().unwrap());
    });
}

// ---------------------------------------------------------------------------------------------
// End of stream: Eof, Truncated (gipc: test_eof, test_truncated)

#[test]
fn eof_when_the_writer_closes_at_a_message_boundary() {
    hub_test(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        writer.put(&"one".into()).unwrap();
        writer.put(&"two".into()).unwrap();
        writer.close().unwrap();
        assert_eq!(reader.get().unwrap(), "one");
        assert_eq!(reader.get().unwrap(), "two");
        assert!(matches!(reader.get(), Err(Error::Eof)));
        assert!(matches!(reader.get(), Err(Error::Eof)), "Eof is not sticky");
    });
}

#[test]
fn eof_when_the_writer_is_dropped_while_a_reader_waits() {
    hub_test(|| {
        let (reader, writer) = pipe::<u32>().unwrap();
        let reading = spawn(move || reader.get());
        yield_now(); // the reader is suspended in get now
        drop(writer);
        assert!(matches!(reading.join().unwrap(), Err(Error::Eof)));
    });
}

#[test]
fn eof_on_a_pipe_that_never_carried_a_message() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        drop(writer);
        assert!(matches!(reader.get(), Err(Error::Eof)));
    });
}

/// A reader adopted with `Reader::from_raw_fd` over a pipe whose write end is a plain `File`:
/// the peer writes `bytes` then closes; returns what the reader's `get`s gave before an error.
fn read_from_raw_peer(bytes: &[u8]) -> (Vec<String>, Error) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just made both fds; each is handed to exactly one owner here.
    let (reader, mut peer) = unsafe {
        (Reader::<String>::from_raw_fd(fds[0]), File::from(OwnedFd::from_raw_fd(fds[1])))
    };
    // The peer writes from this thread, blocking: the bytes must fit in a fresh pipe (64 KiB).
    assert!(bytes.len() <= 16 * 1024, "read_from_raw_peer takes at most 16 KiB");
    peer.write_all(bytes).unwrap();
    drop(peer);
    let mut got = Vec::new();
    loop {
        match reader.get() {
            Ok(msg) => got.push(msg),
            Err(err) => return (got, err),
        }
    }
}

#[test]
fn truncated_when_the_writer_closes_in_the_middle_of_a_payload() {
    hub_test(|| {
        let whole = frame(&postcard_payload(&"complete".to_string()));
        let cut = frame(&postcard_payload(&"cut in the middle".to_string()));
        let mut wire = whole;
        wire.extend_from_slice(&cut[..cut.len() / 2]);
        let (got, end) = read_from_raw_peer(&wire);
        assert_eq!(got, ["complete"]);
        assert!(matches!(end, Error::Truncated), "{end:?}");
    });
}

#[test]
fn truncated_when_the_writer_closes_after_a_header_and_no_payload() {
    hub_test(|| {
        let (got, end) = read_from_raw_peer(&10u32.to_be_bytes());
        assert!(got.is_empty());
        assert!(matches!(end, Error::Truncated), "{end:?}");
    });
}

#[test]
fn truncated_when_the_writer_closes_in_the_middle_of_a_header() {
    hub_test(|| {
        let (got, end) = read_from_raw_peer(&[0, 0]);
        assert!(got.is_empty());
        assert!(matches!(end, Error::Truncated), "{end:?}");
    });
}

#[test]
fn truncated_when_the_writer_closes_after_the_header_of_a_big_message() {
    hub_test(|| {
        // Big frames (a few MiB) are received into a buffer of their own: the same rules hold.
        for sent in [0, 1, 4000] {
            let mut wire = (3u32 << 20).to_be_bytes().to_vec();
            wire.extend_from_slice(&pattern(4, sent));
            let (got, end) = read_from_raw_peer(&wire);
            assert!(got.is_empty());
            assert!(matches!(end, Error::Truncated), "{sent} payload bytes: {end:?}");
        }
    });
}

#[test]
fn truncated_through_a_greenhub_writer_fd_too() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let wire = frame(&pattern(3, 100_000));
        raw_write(&writer, &wire[..50_000]);
        drop(writer);
        assert!(matches!(reader.get(), Err(Error::Truncated)));
    });
}

// ---------------------------------------------------------------------------------------------
// Broken pipe and SIGPIPE (gipc: test_brokenpipe)

#[test]
fn put_without_a_reader_is_broken_pipe_and_the_process_survives() {
    hub_test(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        drop(reader);
        let err = writer.put(&"anyone?".into()).unwrap_err();
        assert!(is_broken_pipe(&err), "{err:?}");
        // Again, and with a message bigger than the pipe: the same error, no hang.
        let (reader, writer) = raw_pipe().unwrap();
        reader.close().unwrap();
        let err = writer.put(&vec![0; 3 << 20]).unwrap_err();
        assert!(is_broken_pipe(&err), "{err:?}");
        assert!(is_broken_pipe(&writer.put(&Vec::new()).unwrap_err()));
    });
}

#[test]
fn put_fails_with_broken_pipe_when_the_reader_goes_away_mid_frame() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let capacity = pipe_capacity(&writer);
        let writing = spawn(move || writer.put(&vec![7; 3 * capacity]));
        yield_until("the writer to fill the pipe", || unread_bytes(&reader) == capacity);
        drop(reader);
        let err = writing.join().unwrap().unwrap_err();
        assert!(is_broken_pipe(&err), "{err:?}");
    });
}

/// A put cut short by `BrokenPipe` mid-frame, through `writer`: what the writer keeps after.
fn unsent_after_broken_pipe<C: greenhub_ipc::Codec<Vec<u8>> + 'static>(
    reader: Reader<Vec<u8>, C>,
    writer: Writer<Vec<u8>, C>,
) -> String {
    let capacity = pipe_capacity(&writer);
    let writer = Rc::new(writer);
    let writing = spawn({
        let writer = writer.clone();
        move || writer.put(&vec![7; 3 * capacity])
    });
    yield_until("the writer to fill the pipe", || unread_bytes(&reader) >= capacity - 16);
    drop(reader);
    let err = writing.join().unwrap().unwrap_err();
    assert!(is_broken_pipe(&err), "{err:?}");
    assert!(is_broken_pipe(&writer.put(&vec![1]).unwrap_err()));
    format!("{writer:?}")
}

#[test]
fn a_writer_drops_the_unsent_rest_of_a_frame_after_broken_pipe() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<u8>>().unwrap();
        let text = unsent_after_broken_pipe(reader, writer);
        assert!(text.contains("unsent: Some(0)"), "{text}");
        // Raw sends a big payload straight from the caller's Vec: that path too.
        let (reader, writer) = raw_pipe().unwrap();
        let text = unsent_after_broken_pipe(reader, writer);
        assert!(text.contains("unsent: Some(0)"), "{text}");
    });
}

/// Set in the copy of this test binary that [`sigpipe_never_kills_a_writer`] starts.
const SIGPIPE_CHILD: &str = "GREENHUB_PIPES_SIGPIPE_CHILD";

/// The child resets SIGPIPE to its default action (terminate), as a C program or an embedding
/// has it, before the first pipe exists; a put to a pipe without readers must still only fail.
#[test]
fn sigpipe_never_kills_a_writer() {
    if std::env::var_os(SIGPIPE_CHILD).is_some() {
        // SAFETY: setting a signal disposition to the default; no handler is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let err = greenhub::run(|| {
            let (reader, writer) = raw_pipe().unwrap();
            drop(reader);
            writer.put(&b"x".to_vec()).unwrap_err()
        });
        assert!(is_broken_pipe(&err), "{err:?}");
        println!("survived SIGPIPE: {err}");
        return;
    }
    let _serial = process_lock();
    let out = rerun_test_in_child("sigpipe_never_kills_a_writer", SIGPIPE_CHILD, "1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("survived SIGPIPE"),
        "child ended with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Set in the copy of this test binary that
/// [`sigpipe_never_kills_a_writer_outside_a_hub`] starts.
const SIGPIPE_NO_HUB_CHILD: &str = "GREENHUB_PIPES_SIGPIPE_NO_HUB_CHILD";

/// Regression: a put that needs no wait works outside a hub (before `run`, after it, on another
/// thread), and there it was not protected: with SIGPIPE back at its default, a put to a pipe
/// without readers killed the process (exit 141) instead of failing.
#[test]
fn sigpipe_never_kills_a_writer_outside_a_hub() {
    let test = "sigpipe_never_kills_a_writer_outside_a_hub";
    if greenhub_tests::run_in_child(test, SIGPIPE_NO_HUB_CHILD) {
        let (reader, writer) = raw_pipe().unwrap();
        writer.put(&b"room".to_vec()).unwrap();
        drop(reader);
        // SAFETY: setting a signal disposition to the default; no handler is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let err = writer.put(&b"x".to_vec()).unwrap_err();
        assert!(is_broken_pipe(&err), "{err:?}");
        let after_run = greenhub::run(|| raw_pipe().unwrap());
        drop(after_run.0);
        let err = after_run.1.put(&b"x".to_vec()).unwrap_err();
        assert!(is_broken_pipe(&err), "{err:?}");
    }
}

/// Set in the copy of this test binary that
/// [`sigpipe_set_back_to_default_after_the_first_pipe_never_kills_a_writer`] starts.
const SIGPIPE_LATER_CHILD: &str = "GREENHUB_PIPES_SIGPIPE_LATER_CHILD";

/// The first pipe makes greenhub ignore SIGPIPE; the program then sets it back to the default
/// (terminate). A put to a dead reader, and a program's stdin written after it exited, must
/// still only fail, and no SIGPIPE may be left to arrive later.
#[test]
fn sigpipe_set_back_to_default_after_the_first_pipe_never_kills_a_writer() {
    let test = "sigpipe_set_back_to_default_after_the_first_pipe_never_kills_a_writer";
    if greenhub_tests::run_in_child(test, SIGPIPE_LATER_CHILD) {
        let err = greenhub::run(|| {
            let (reader, writer) = raw_pipe().unwrap();
            // SAFETY: setting a signal disposition to the default; no handler is involved.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            drop(reader);
            let small = writer.put(&b"x".to_vec()).unwrap_err();
            let big = writer.put(&vec![0; 1 << 20]).unwrap_err(); // written straight from the Vec
            assert!(is_broken_pipe(&big), "{big:?}");
            let mut program = greenhub_ipc::Command::new("true")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = program.take_stdin().unwrap();
            program.join().unwrap();
            let err = stdin.write(b"late").unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
            small
        });
        assert!(is_broken_pipe(&err), "{err:?}");
        // Nothing pending either: unblocking SIGPIPE now would deliver it and kill us.
        // SAFETY: an emptied sigset_t with SIGPIPE added is a valid mask for pthread_sigmask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        println!("survived SIGPIPE: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts (gipc: test_get_timeout, test_get_timeout_twice) and duplex (gipc: test_duplex_*)

#[test]
fn get_timeout_expires_with_timeout_and_the_reader_stays_usable() {
    hub_test(|| {
        let (reader, writer) = pipe::<u64>().unwrap();
        for _ in 0..2 {
            let start = Instant::now();
            assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
            assert!(start.elapsed() >= SHORT, "timed out early: {:?}", start.elapsed());
        }
        writer.put(&42).unwrap();
        assert_eq!(reader.get().unwrap(), 42);
    });
}

#[test]
fn get_timeout_returns_a_message_already_in_the_pipe() {
    hub_test(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        writer.put(&"ready".into()).unwrap();
        assert_eq!(reader.get_timeout(Duration::ZERO).unwrap(), "ready");
    });
}

#[test]
fn get_timeout_returns_a_message_that_arrives_in_time() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<u8>>().unwrap();
        let msg = pattern(9, 3 << 20);
        let sent = msg.clone();
        let writing = spawn(move || writer.put(&sent));
        let start = Instant::now();
        assert!(reader.get_timeout(LONG).unwrap() == msg);
        assert!(start.elapsed() < LONG);
        writing.join().unwrap().unwrap();
    });
}

#[test]
fn duplex_echo_between_two_coroutines() {
    hub_test(|| {
        let (here, there) = duplex::<String, String>().unwrap();
        let echo = spawn(move || {
            let mut echoed = 0;
            loop {
                match there.get() {
                    Ok(msg) => there.put(&msg).unwrap(),
                    Err(Error::Eof) => return echoed,
                    Err(err) => panic!("echo: {err}"),
                }
                echoed += 1;
            }
        });
        for i in 0..200 {
            let msg = "echo ".repeat(i * 37);
            here.put(&msg).unwrap();
            assert_eq!(here.get().unwrap(), msg);
        }
        here.close().unwrap();
        assert_eq!(echo.join().unwrap(), 200);
    });
}

#[test]
fn duplex_carries_a_different_type_each_way_and_closes_both() {
    hub_test(|| {
        let (client, server) = duplex::<Job, Reply>().unwrap();
        let serving = spawn(move || {
            let job = server.get().unwrap();
            server.put(&Reply::Failed { code: job.id as i32, why: job.name }).unwrap();
            server.close().unwrap();
        });
        let job = Job {
            id: 3,
            name: "x".into(),
            args: vec![],
            deadline_ms: None,
            weights: BTreeMap::new(),
        };
        client.put(&job).unwrap();
        assert_eq!(client.get().unwrap(), Reply::Failed { code: 3, why: "x".into() });
        serving.join().unwrap();
        assert!(matches!(client.get(), Err(Error::Eof)));
        assert!(is_broken_pipe(&client.put(&job).unwrap_err()));
        assert!(matches!(client.get_timeout(SHORT), Err(Error::Eof)));
    });
}

// ---------------------------------------------------------------------------------------------
// Untrusted bytes: lying headers, limits, garbage

#[test]
fn a_lying_2_gib_header_is_too_large_at_once_with_the_default_limit() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let (virt_before, rss_before) = memory_use();
        let start = Instant::now();
        raw_write(&writer, &[0x80, 0, 0, 0, 1, 2, 3]);
        let err = reader.get().unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { len, max } if len == 1 << 31 && max == (1 << 31) - 1),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
        let (virt_after, rss_after) = memory_use();
        assert!(rss_after < rss_before + (16 << 20), "rss {rss_before} -> {rss_after}");
        assert!(virt_after < virt_before + (256 << 20), "virtual {virt_before} -> {virt_after}");
        // The refused frame stays in the way: the same answer again, not a desynchronised stream.
        assert!(matches!(reader.get(), Err(Error::TooLarge { .. })));
    });
}

#[test]
fn a_lying_2_gib_header_under_a_raised_limit_costs_the_liar_not_the_reader() {
    hub_test(|| {
        let (mut reader, writer) = raw_pipe().unwrap();
        reader.set_max_message_size(u32::MAX.into());
        let (virt_before, rss_before) = memory_use();
        raw_write(&writer, &[0x80, 0, 0, 0]);
        raw_write(&writer, &[0xaa; 1000]);
        // The reader waits for 2 GiB that never come, holding only what arrived (plus a chunk).
        assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
        let (virt_after, rss_after) = memory_use();
        assert!(rss_after < rss_before + (16 << 20), "rss {rss_before} -> {rss_after}");
        assert!(virt_after < virt_before + (256 << 20), "virtual {virt_before} -> {virt_after}");
        drop(writer);
        assert!(matches!(reader.get(), Err(Error::Truncated)));
    });
}

#[test]
fn set_max_message_size_refuses_larger_messages_and_raising_it_lets_the_stream_go_on() {
    hub_test(|| {
        let (mut reader, writer) = raw_pipe().unwrap();
        reader.set_max_message_size(1000);
        writer.put(&vec![1; 1000]).unwrap();
        writer.put(&vec![2; 1001]).unwrap();
        writer.put(&vec![3; 10]).unwrap();
        assert_eq!(reader.get().unwrap(), vec![1; 1000], "exactly the maximum is accepted");
        for _ in 0..2 {
            let err = reader.get().unwrap_err();
            assert!(matches!(err, Error::TooLarge { len: 1001, max: 1000 }), "{err:?}");
        }
        reader.set_max_message_size(1001);
        assert_eq!(reader.get().unwrap(), vec![2; 1001]);
        assert_eq!(reader.get().unwrap(), vec![3; 10]);
    });
}

/// Lowers the limit while a `len`-byte message is partly received (after a timed-out get), then
/// lets the rest arrive: what does the next get say?
fn lower_the_limit_mid_message(len: usize) -> Result<Vec<u8>, Error> {
    let (mut reader, writer) = raw_pipe().unwrap();
    let capacity = pipe_capacity(&writer);
    let wire = frame(&pattern(18, len));
    let cut = (wire.len() / 2).min(capacity - 1);
    raw_write(&writer, &wire[..cut]);
    assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
    reader.set_max_message_size(1000);
    let sending = spawn(move || raw_write_until_broken(&writer, &wire[cut..]));
    let got = reader.get();
    drop(reader); // a refused message is never read: the writer sees a broken pipe, not a full one
    sending.join().unwrap();
    got
}

/// [`raw_write`], stopping quietly when the reader is gone (EPIPE).
fn raw_write_until_broken(fd: &impl AsRawFd, bytes: &[u8]) {
    match write_all_raw(fd.as_raw_fd(), bytes) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => panic!("raw write: {err}"),
        _ => {}
    }
}

#[test]
fn a_limit_lowered_mid_message_refuses_that_message() {
    hub_test(|| {
        let got = lower_the_limit_mid_message(100_000);
        assert!(matches!(got, Err(Error::TooLarge { len: 100_000, max: 1000 })), "{got:?}");
    });
}

#[test]
fn a_limit_lowered_mid_message_refuses_a_big_message_too() {
    hub_test(|| {
        let got = lower_the_limit_mid_message(3 << 20);
        assert!(
            matches!(got, Err(Error::TooLarge { len, max: 1000 }) if len == 3 << 20),
            "{:?}",
            got.map(|msg| msg.len())
        );
    });
}

#[test]
fn duplex_set_max_message_size_limits_its_reading_side() {
    hub_test(|| {
        let (mut small, big) = duplex::<String, String>().unwrap();
        small.set_max_message_size(8);
        big.put(&"x".repeat(100)).unwrap();
        assert!(matches!(small.get(), Err(Error::TooLarge { max: 8, .. })));
        small.put(&"x".repeat(100)).unwrap();
        assert_eq!(big.get().unwrap(), "x".repeat(100));
    });
}

#[test]
fn garbage_payload_is_a_codec_error_and_the_next_message_arrives_intact() {
    hub_test(|| {
        let (reader, writer) = pipe::<(u32, String)>().unwrap();
        // An unterminated varint; then a valid value with a byte left over.
        raw_write(&writer, &frame(&[0xff; 6]));
        let mut trailing = postcard_payload(&(1u32, "one".to_string()));
        trailing.push(0);
        raw_write(&writer, &frame(&trailing));
        writer.put(&(2, "two".into())).unwrap();
        for _ in 0..2 {
            let err = reader.get().unwrap_err();
            assert!(matches!(&err, Error::Codec(msg) if msg.contains("u32")), "{err:?}");
        }
        assert_eq!(reader.get().unwrap(), (2, "two".to_string()));
    });
}

// ---------------------------------------------------------------------------------------------
// Hostile payloads: the decode limits (nesting depth, memory budget, sequence lengths)

/// A recursive type: postcard encodes `Node(Node(Leaf))` as the bytes 1, 1, 0.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// The payload of a `Tree` `depth` nodes deep.
fn tree_payload(depth: usize) -> Vec<u8> {
    let mut payload = vec![1u8; depth];
    payload.push(0);
    payload
}

#[test]
fn a_50_kb_recursive_frame_is_a_codec_error_not_a_stack_overflow() {
    hub_test(|| {
        let (reader, writer) = pipe::<Tree>().unwrap();
        raw_write(&writer, &frame(&tree_payload(50_000)));
        writer.put(&Tree::Node(Box::new(Tree::Leaf))).unwrap();
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("deeper than 128")), "{err}");
        assert_eq!(reader.get().unwrap(), Tree::Node(Box::new(Tree::Leaf)));
    });
}

#[test]
fn set_max_depth_limits_one_reader() {
    hub_test(|| {
        let (mut reader, writer) = pipe::<Tree>().unwrap();
        reader.set_max_depth(10);
        raw_write(&writer, &frame(&tree_payload(10)));
        raw_write(&writer, &frame(&tree_payload(9)));
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("deeper than 10")), "{err}");
        assert!(reader.get().is_ok());
    });
}

#[test]
fn a_13_byte_frame_of_2_pow_63_units_is_a_codec_error_not_a_frozen_hub() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<()>>().unwrap();
        let payload = postcard_payload(&((1u64 << 63) - 1)); // a Vec<()>'s length: 9 bytes
        assert_eq!(frame(&payload).len(), 13);
        raw_write(&writer, &frame(&payload));
        writer.put(&vec![(); 3]).unwrap();
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("budget")), "{err}");
        assert_eq!(reader.get().unwrap().len(), 3);
    });
}

#[test]
fn a_frame_of_empty_vecs_is_refused_before_it_decodes_to_24_times_its_size() {
    hub_test(|| {
        // 1 MiB of empty Vec<u64>s: 24 MiB decoded, over the default 16 per byte + 1 MiB.
        let (mut reader, writer) = pipe::<Vec<Vec<u64>>>().unwrap();
        let mut payload = postcard_payload(&(1u32 << 20));
        payload.resize(payload.len() + (1 << 20), 0);
        let wire = frame(&payload);
        let sender = spawn(move || {
            raw_write(&writer, &wire);
            raw_write(&writer, &wire);
        });
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("set_max_expansion")), "{err}");
        reader.set_max_expansion(24);
        assert_eq!(reader.get().unwrap().len(), 1 << 20);
        sender.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// The default codec's fast path for bytes: Vec<u8>, Box<[u8]>, String as the whole message

/// A postcard reader on the read end of `raw` (a duplicate of its fd): a greenhub peer reading
/// what a plain-postcard peer writes through `raw`'s pipe.
fn postcard_reader<T>(raw: &Reader<Vec<u8>, Raw>) -> Reader<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    // SAFETY: dup returns a new fd this process owns; the reader adopts it.
    unsafe { Reader::from_raw_fd(libc::dup(raw.as_raw_fd())) }
}

/// A postcard writer on the write end of `raw` (a duplicate of its fd).
fn postcard_writer<T>(raw: &Writer<Vec<u8>, Raw>) -> Writer<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    // SAFETY: dup returns a new fd this process owns; the writer adopts it.
    unsafe { Writer::from_raw_fd(libc::dup(raw.as_raw_fd())) }
}

/// Byte messages of every size class: empty, a one-byte prefix, a two-byte one, past the direct
/// write threshold, and past the decoder's detach threshold (split off its prefix on arrival).
fn byte_sizes() -> [usize; 6] {
    [0, 1, 127, 300, 70_000, 3 << 20]
}

/// `value` from a peer using plain postcard (`postcard::to_allocvec`, then gipc framing) to a
/// `pipe::<T>()` reader, and from a `pipe::<T>()` writer to a plain-postcard peer, which sees
/// exactly postcard's bytes.
fn interoperates_with_plain_postcard<T>(value: T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
{
    let plain = postcard::to_allocvec(&value).unwrap();
    // Plain postcard in, greenhub out.
    let (raw_reader, raw_writer) = raw_pipe().unwrap();
    let reader = postcard_reader::<T>(&raw_reader);
    drop(raw_reader);
    let sending = spawn({
        let plain = plain.clone();
        move || raw_writer.put(&plain).unwrap()
    });
    assert!(reader.get().unwrap() == value, "a plain-postcard message decoded differently");
    sending.join().unwrap();
    // Greenhub in, plain postcard out.
    let (raw_reader, raw_writer) = raw_pipe().unwrap();
    let writer = postcard_writer::<T>(&raw_writer);
    drop(raw_writer);
    let sending = spawn({
        let value = value.clone();
        move || writer.put(&value).unwrap()
    });
    let payload = raw_reader.get().unwrap();
    assert!(payload == plain, "the fast path's payload is not postcard's bytes");
    assert!(postcard::from_bytes::<T>(&payload).unwrap() == value);
    sending.join().unwrap();
}

#[test]
fn byte_messages_interoperate_with_plain_postcard_both_ways() {
    hub_test(|| {
        for len in byte_sizes() {
            let bytes = pattern(len as u64, len);
            interoperates_with_plain_postcard(bytes.clone());
            interoperates_with_plain_postcard(bytes.into_boxed_slice());
            let text: String = "grüße ".chars().cycle().take(len).collect();
            interoperates_with_plain_postcard(text);
        }
    });
}

/// A struct whose bytes serde sees as a byte string, and its twin seen as a sequence of `u8`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marked {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unmarked {
    data: Vec<u8>,
}

#[test]
fn a_serde_bytes_field_is_the_same_wire_as_a_plain_vec_u8_field() {
    hub_test(|| {
        let data = pattern(21, 200_000);
        interoperates_with_plain_postcard(Marked { data: data.clone() });
        // Postcard writes a byte string and a sequence of u8 alike: either type reads the other.
        let (reader, writer) = raw_pipe().unwrap();
        let marked = postcard_writer::<Marked>(&writer);
        let unmarked = postcard_reader::<Unmarked>(&reader);
        let sending = spawn({
            let data = data.clone();
            move || marked.put(&Marked { data }).unwrap()
        });
        assert!(unmarked.get().unwrap().data == data);
        sending.join().unwrap();
    });
}

#[test]
fn a_byte_length_claiming_more_than_the_frame_holds_is_a_codec_error_and_the_stream_goes_on() {
    hub_test(|| {
        let (reader, writer) = pipe::<Vec<u8>>().unwrap();
        let (virt_before, _) = memory_use();
        // A 13-byte frame announcing 2^40 bytes, then a big frame (split on arrival) announcing
        // twice what it holds, then one announcing less than it holds.
        let mut lying = postcard::to_allocvec(&(1u64 << 40)).unwrap();
        lying.extend_from_slice(b"only this");
        let mut big_liar = postcard::to_allocvec(&(6u64 << 20)).unwrap();
        big_liar.resize(big_liar.len() + (3 << 20), 7);
        let mut short = postcard::to_allocvec(&2u64).unwrap();
        short.extend_from_slice(b"abc");
        let wire = [frame(&lying), frame(&big_liar), frame(&short)].concat();
        let sending = spawn(move || {
            raw_write(&writer, &wire);
            writer.put(&b"after".to_vec()).unwrap();
        });
        for expected in ["end of buffer", "end of buffer", "1 bytes were left over"] {
            let err = reader.get().unwrap_err();
            assert!(matches!(&err, Error::Codec(m) if m.contains(expected)), "{err}");
            assert!(err.to_string().contains("Vec<u8>"), "{err}");
        }
        assert_eq!(reader.get().unwrap(), b"after");
        sending.join().unwrap();
        let (virt_after, _) = memory_use();
        assert!(virt_after < virt_before + (256 << 20), "virtual {virt_before} -> {virt_after}");
    });
}

#[test]
fn a_big_byte_message_cut_short_is_truncated_and_garbage_is_a_codec_error() {
    hub_test(|| {
        let (reader, writer) = pipe::<String>().unwrap();
        let text = "x".repeat(3 << 20);
        let wire = frame(&postcard::to_allocvec(&text).unwrap());
        let not_utf8 = frame(&[3, b'a', 0xff, b'c']);
        let sending = spawn(move || {
            raw_write(&writer, &not_utf8);
            raw_write(&writer, &wire[..wire.len() / 2]);
        });
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("utf-8")), "{err}");
        // The writer ends (and closes) half-way through the big frame.
        assert!(matches!(reader.get(), Err(Error::Truncated)));
        sending.join().unwrap();
    });
}

#[test]
fn the_readers_depth_and_budget_limits_hold_for_byte_messages() {
    hub_test(|| {
        let (mut reader, writer) = pipe::<Vec<u8>>().unwrap();
        reader.set_max_depth(0);
        writer.put(&vec![1, 2, 3]).unwrap();
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("deeper than 0")), "{err}");
        // No expansion: a payload's budget is the 1 MiB floor, which a 2 MiB Vec<u8> exceeds on
        // the generic path (one byte per element), and so on the fast path.
        reader.set_max_depth(1);
        reader.set_max_expansion(0);
        let big = pattern(22, 2 << 20);
        let sending = spawn(move || {
            writer.put(&big).unwrap();
            writer.put(&vec![9; 1000]).unwrap();
        });
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(m) if m.contains("budget")), "{err}");
        assert_eq!(reader.get().unwrap(), vec![9; 1000]);
        sending.join().unwrap();
    });
}

#[test]
fn a_byte_put_cut_short_mid_frame_is_delivered_whole_before_the_next() {
    // Written straight from the vector (header, length prefix, then the bytes): the rest kept
    // after the cut holds the prefix too.
    hub_test(|| put_cut_short_mid_frame_is_delivered_whole(pipe::<Vec<u8>>().unwrap(), 23));
}

// ---------------------------------------------------------------------------------------------
// Custom codecs through pipe_with

/// A run-length codec: the payload is (count, byte) pairs.
#[derive(Debug, Clone, Copy, Default)]
struct RunLength;

impl Codec<Vec<u8>> for RunLength {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), Error> {
        for run in value.chunk_by(|a, b| a == b) {
            for piece in run.chunks(255) {
                out.extend_from_slice(&[piece.len() as u8, piece[0]]);
            }
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        if !bytes.len().is_multiple_of(2) {
            return Err(Error::Codec(format!("run-length payload of odd length {}", bytes.len())));
        }
        let mut out = Vec::new();
        for pair in bytes.chunks_exact(2) {
            if pair[0] == 0 {
                return Err(Error::Codec("run-length payload with a run of 0".into()));
            }
            out.resize(out.len() + usize::from(pair[0]), pair[1]);
        }
        Ok(out)
    }
}

/// A JSON-like text codec for lists of integers: `[1,-2,3]`.
#[derive(Debug, Clone, Copy, Default)]
struct JsonInts;

impl Codec<Vec<i64>> for JsonInts {
    fn encode(&self, value: &Vec<i64>, out: &mut Vec<u8>) -> Result<(), Error> {
        let items: Vec<String> = value.iter().map(i64::to_string).collect();
        write!(out, "[{}]", items.join(",")).map_err(|err| Error::Codec(err.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<i64>, Error> {
        let text = std::str::from_utf8(bytes)
            .map_err(|err| Error::Codec(format!("payload is not UTF-8: {err}")))?;
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or_else(|| Error::Codec(format!("not a JSON list: {text:?}")))?;
        if inner.is_empty() {
            return Ok(Vec::new());
        }
        let parse = |item: &str| {
            item.trim()
                .parse()
                .map_err(|err| Error::Codec(format!("{item:?} is not an integer: {err}")))
        };
        inner.split(',').map(parse).collect()
    }
}

#[test]
fn custom_run_length_codec_round_trips_and_compresses_on_the_wire() {
    hub_test(|| {
        let (reader, writer) = pipe_with(RunLength).unwrap();
        let mut sparse = vec![0u8; 1 << 20];
        sparse[1000..1300].fill(9);
        writer.put(&sparse).unwrap();
        let mut encoded = Vec::new();
        RunLength.encode(&sparse, &mut encoded).unwrap();
        assert_eq!(unread_bytes(&reader), 4 + encoded.len(), "the wire carries the codec's bytes");
        assert!(encoded.len() < 10_000);
        assert!(reader.get().unwrap() == sparse);
        let noisy = pattern(5, 20_000); // 40,000 bytes encoded: fits in any pipe
        writer.put(&noisy).unwrap();
        writer.put(&Vec::new()).unwrap();
        assert!(reader.get().unwrap() == noisy);
        assert!(reader.get().unwrap().is_empty());
        // The codec's own errors come out as Codec, and the stream goes on.
        raw_write(&writer, &frame(&[3]));
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(msg) if msg.contains("odd length")), "{err:?}");
        writer.put(&vec![1, 1, 2]).unwrap();
        assert_eq!(reader.get().unwrap(), [1, 1, 2]);
    });
}

#[test]
fn custom_text_codec_round_trips_and_reports_its_own_errors() {
    hub_test(|| {
        let (reader, writer) = pipe_with(JsonInts).unwrap();
        let lists = [vec![], vec![1, -2, 3], vec![i64::MIN, i64::MAX], (0..5000).collect()];
        for list in &lists {
            writer.put(list).unwrap();
        }
        let text_len = |list: &Vec<i64>| {
            let mut text = Vec::new();
            JsonInts.encode(list, &mut text).unwrap();
            4 + text.len()
        };
        assert_eq!(text_len(&vec![1, -2, 3]), 4 + "[1,-2,3]".len());
        assert_eq!(unread_bytes(&reader), lists.iter().map(text_len).sum::<usize>());
        for list in &lists {
            assert_eq!(&reader.get().unwrap(), list);
        }
        raw_write(&writer, &frame(b"[1,x]"));
        let err = reader.get().unwrap_err();
        assert!(matches!(&err, Error::Codec(msg) if msg.contains("\"x\"")), "{err:?}");
        writer.put(&vec![7]).unwrap();
        assert_eq!(reader.get().unwrap(), [7]);
    });
}

// ---------------------------------------------------------------------------------------------
// Partial messages: timeouts and cancellation in the middle of a frame lose nothing

#[test]
fn get_timeout_mid_message_keeps_the_partial_message_for_the_next_get() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let msg = pattern(11, 50_000);
        let wire = frame(&msg);
        // Half a header, then the rest of it and part of the payload, then the rest.
        for piece in [&wire[..2], &wire[2..25_000]] {
            raw_write(&writer, piece);
            assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
            assert_eq!(unread_bytes(&reader), 0, "the reader took the bytes into its buffer");
        }
        raw_write(&writer, &wire[25_000..]);
        raw_write(&writer, &frame(b"next"));
        assert!(reader.get().unwrap() == msg, "the message came out corrupted");
        assert_eq!(reader.get().unwrap(), b"next");
    });
}

#[test]
fn get_timeout_mid_message_keeps_a_big_partial_message_too() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let capacity = pipe_capacity(&writer);
        let msg = pattern(17, 3 * capacity + 99);
        let wire = frame(&msg);
        // Pieces that each fit in the pipe, the first ending inside the header; a get times
        // out after each, having taken the piece into its buffer.
        let cuts = [3, capacity / 2, capacity + 5, 2 * capacity, 3 * capacity];
        let mut from = 0;
        for to in cuts {
            raw_write(&writer, &wire[from..to]);
            from = to;
            assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
            assert_eq!(unread_bytes(&reader), 0);
        }
        raw_write(&writer, &wire[from..]);
        raw_write(&writer, &frame(b"next"));
        assert!(reader.get().unwrap() == msg, "the big message came out corrupted");
        assert_eq!(reader.get().unwrap(), b"next");
    });
}

/// Cancels a coroutine blocked in `get` once part of a `len`-byte message has arrived, then
/// sends the rest (from a coroutine: it may not fit in the pipe) and reads it with a fresh get.
fn cancel_mid_message(len: usize) {
    let (reader, writer) = pipe::<String>().unwrap();
    let reader = Rc::new(reader);
    let msg: String = "half now, half later ".chars().cycle().take(len).collect();
    let wire = frame(&postcard_payload(&msg));
    let cut = (wire.len() / 2).min(pipe_capacity(&writer) - 1);
    raw_write(&writer, &wire[..cut]);
    let blocked = spawn({
        let reader = Rc::clone(&reader);
        move || reader.get()
    });
    yield_until("the reader to take the first part", || unread_bytes(&*reader) == 0);
    assert!(!blocked.is_finished());
    blocked.cancel();
    assert!(blocked.join().unwrap_err().is_cancelled());
    let sending = spawn(move || raw_write(&writer, &wire[cut..]));
    // A fresh get (so the unwinding released the lock) continues the message.
    assert!(reader.get_timeout(LONG).unwrap() == msg, "the message came out corrupted");
    sending.join().unwrap();
}

#[test]
fn cancel_of_a_get_blocked_mid_message_keeps_the_partial_message() {
    hub_test(|| cancel_mid_message(20_000));
}

#[test]
fn cancel_of_a_get_blocked_mid_message_keeps_a_big_partial_message_too() {
    hub_test(|| cancel_mid_message(3 << 20));
}

#[test]
fn a_get_waiting_for_the_lock_times_out_without_disturbing_the_holder() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let reader = Rc::new(reader);
        let msg = pattern(12, 5000);
        let wire = frame(&msg);
        raw_write(&writer, &wire[..100]);
        let holder = spawn({
            let reader = Rc::clone(&reader);
            move || reader.get()
        });
        yield_until("the holder to take the first bytes", || unread_bytes(&*reader) == 0);
        // This get queues behind the holder for the lock, and gives up.
        assert!(matches!(reader.get_timeout(SHORT), Err(Error::Timeout)));
        raw_write(&writer, &wire[100..]);
        assert!(holder.join().unwrap().unwrap() == msg);
    });
}

/// A big message put with nobody reading, cut short by a timeout mid-frame, then a small one:
/// the reader gets both, whole and in order.
fn put_cut_short_mid_frame_is_delivered_whole<C: Codec<Vec<u8>> + 'static>(
    (reader, writer): (Reader<Vec<u8>, C>, Writer<Vec<u8>, C>),
    seed: u64,
) {
    let capacity = pipe_capacity(&writer);
    let big = pattern(seed, capacity + 300_000);
    // Nobody reads: the put fills the pipe and is suspended mid-frame when the timeout fires.
    let cut = greenhub::timeout(SHORT, || writer.put(&big));
    assert!(cut.is_err(), "the put finished with nobody reading: {cut:?}");
    assert_eq!(unread_bytes(&reader), capacity, "the first part of the frame is out");
    let reading = spawn(move || {
        let first = reader.get();
        (first, reader.get())
    });
    writer.put(&b"later".to_vec()).unwrap();
    let (first, second) = reading.join().unwrap();
    assert!(first.unwrap() == big, "the interrupted message arrived corrupted");
    assert_eq!(second.unwrap(), b"later");
}

#[test]
fn put_cut_short_by_a_timeout_mid_frame_is_delivered_whole_before_the_next() {
    hub_test(|| put_cut_short_mid_frame_is_delivered_whole(raw_pipe().unwrap(), 13));
}

#[test]
fn put_cancelled_mid_frame_is_delivered_whole_before_the_next() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let writer = Rc::new(writer);
        let capacity = pipe_capacity(&*writer);
        let big = Rc::new(pattern(14, 2 * capacity + 12_345));
        let writing = spawn({
            let (writer, big) = (Rc::clone(&writer), Rc::clone(&big));
            move || writer.put(&big)
        });
        yield_until("the writer to fill the pipe", || unread_bytes(&reader) == capacity);
        writing.cancel();
        assert!(writing.join().unwrap_err().is_cancelled());
        let reading = spawn(move || {
            let first = reader.get();
            (first, reader.get())
        });
        writer.put(&b"later".to_vec()).unwrap();
        let (first, second) = reading.join().unwrap();
        assert!(first.unwrap() == *big, "the cancelled put's message arrived corrupted");
        assert_eq!(second.unwrap(), b"later");
    });
}

#[test]
fn put_cut_short_mid_frame_then_closed_gives_truncated() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let capacity = pipe_capacity(&writer);
        writer.put(&b"before".to_vec()).unwrap();
        let cut = greenhub::timeout(SHORT, || writer.put(&vec![1; 2 * capacity]));
        assert!(cut.is_err());
        writer.close().unwrap();
        assert_eq!(reader.get().unwrap(), b"before");
        assert!(matches!(reader.get(), Err(Error::Truncated)));
    });
}

#[test]
fn put_cut_short_before_its_first_byte_is_not_delivered() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let capacity = pipe_capacity(&writer);
        // A frame of exactly the pipe's capacity fills the empty pipe to the last byte.
        let filler = pattern(15, capacity - 4);
        greenhub::timeout(LONG, || writer.put(&filler))
            .expect("a frame of the pipe's capacity fits in the empty pipe")
            .unwrap();
        assert_eq!(unread_bytes(&reader), capacity);
        let cut = greenhub::timeout(SHORT, || writer.put(&b"never".to_vec()));
        assert!(cut.is_err(), "the put finished into a full pipe: {cut:?}");
        assert_eq!(unread_bytes(&reader), capacity, "not one byte of it went out");
        let reading = spawn(move || {
            let mut got = Vec::new();
            loop {
                match reader.get() {
                    Ok(msg) => got.push(msg),
                    Err(err) => return (got, err),
                }
            }
        });
        writer.put(&b"after".to_vec()).unwrap();
        drop(writer);
        let (got, end) = reading.join().unwrap();
        assert_eq!(got.len(), 2, "expected the filler and \"after\" only");
        assert!(got[0] == filler);
        assert_eq!(got[1], b"after");
        assert!(matches!(end, Error::Eof), "{end:?}");
    });
}

/// A message whose encoding fails after its bytes are in the frame: a 64 MiB byte string, then
/// an error from the serializer.
struct FailsAfterItsBytes(Vec<u8>);

impl Serialize for FailsAfterItsBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple};
        let mut tuple = s.serialize_tuple(2)?;
        tuple.serialize_element(serde_bytes::Bytes::new(&self.0))?;
        Err(S::Error::custom("refused after the bytes"))
    }
}

impl<'de> Deserialize<'de> for FailsAfterItsBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|bytes| FailsAfterItsBytes(bytes.into_vec()))
    }
}

#[test]
fn a_put_that_fails_or_is_cut_short_before_its_first_byte_keeps_no_memory() {
    const BIG: usize = 64 << 20;
    hub_test(|| {
        // A codec error once 64 MiB are encoded: the frame never went out, so nothing of it
        // may stay in the writer (it used to keep the 64 MiB until the next put).
        let kept_little = |before: u64, what: &str| {
            let after = memory_use().1;
            let kept = after.saturating_sub(before);
            assert!(kept < BIG as u64 / 4, "{what} kept {} MiB in the writer", kept >> 20);
        };
        let (_reader, writer) = pipe::<FailsAfterItsBytes>().unwrap();
        let before = memory_use().1;
        let value = FailsAfterItsBytes(pattern(21, BIG));
        let err = writer.put(&value).unwrap_err();
        assert!(matches!(err, Error::Codec(_)), "{err:?}");
        drop(value);
        kept_little(before, "a failed put");

        // A put cut short by a timeout before its first byte: its message is dropped, and so
        // must be its 64 MiB frame.
        let (reader, writer) = pipe::<(u8, serde_bytes::ByteBuf)>().unwrap();
        let capacity = pipe_capacity(&writer);
        let filler = (1, serde_bytes::ByteBuf::from(pattern(22, capacity - 4 - 1 - 3)));
        assert_eq!(postcard_payload(&filler).len(), capacity - 4, "the filler fills the pipe");
        writer.put(&filler).unwrap();
        assert_eq!(unread_bytes(&reader), capacity);
        let before = memory_use().1;
        let value = (2, serde_bytes::ByteBuf::from(pattern(23, BIG)));
        let cut = greenhub::timeout(SHORT, || writer.put(&value));
        assert!(cut.is_err(), "the put finished into a full pipe: {cut:?}");
        assert_eq!(unread_bytes(&reader), capacity, "not one byte of it went out");
        drop(value);
        kept_little(before, "a put cut short before its first byte");
        let reading = spawn(move || (reader.get().unwrap(), reader.get().unwrap()));
        let last = (3, serde_bytes::ByteBuf::from(b"after".to_vec()));
        writer.put(&last).unwrap();
        assert_eq!(reading.join().unwrap(), (filler, last), "the cut message was not delivered");
    });
}

// ---------------------------------------------------------------------------------------------
// Handles: Debug, AsRawFd, FromRawFd, capacity, close

#[test]
fn debug_output_names_the_handle_its_fd_state_and_message_type() {
    hub_test(|| {
        let (reader, writer) = pipe::<Job>().unwrap();
        let text = format!("{reader:?}");
        assert!(text.starts_with("Reader"), "{text}");
        assert!(text.contains(&format!("fd {}", reader.as_raw_fd())), "{text}");
        assert!(text.contains("open"), "{text}");
        assert!(text.contains("Job"), "{text}");
        let text = format!("{writer:?}");
        assert!(text.starts_with("Writer"), "{text}");
        assert!(text.contains(&format!("fd {}", writer.as_raw_fd())), "{text}");
        let (a, _b) = duplex::<u8, String>().unwrap();
        let text = format!("{a:?}");
        assert!(text.starts_with("Duplex"), "{text}");
        assert!(text.contains("Writer") && text.contains("u8"), "{text}");
        assert!(text.contains("Reader") && text.contains("String"), "{text}");
    });
}

#[test]
fn as_raw_fd_is_the_pipe_end_non_blocking_and_close_on_exec() {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let (r, w) = (reader.as_raw_fd(), writer.as_raw_fd());
        assert_ne!(r, w);
        let target = |fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert!(target(r).to_string_lossy().starts_with("pipe:"), "{:?}", target(r));
        assert_eq!(target(r), target(w), "both ends of one pipe");
        for (fd, mode) in [(r, libc::O_RDONLY), (w, libc::O_WRONLY)] {
            // SAFETY: F_GETFL and F_GETFD on an open fd only return flags.
            let (fl, fd_flags) =
                unsafe { (libc::fcntl(fd, libc::F_GETFL), libc::fcntl(fd, libc::F_GETFD)) };
            assert_eq!(fl & libc::O_ACCMODE, mode);
            assert_ne!(fl & libc::O_NONBLOCK, 0, "fd {fd} blocks");
            assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "fd {fd} survives exec");
        }
        // Bytes written through the writer's fd come out of the reader: it is that pipe.
        raw_write(&writer, &frame(b"via the fd"));
        assert_eq!(reader.get().unwrap(), b"via the fd");
    });
}

#[test]
fn from_raw_fd_adopts_both_ends_of_a_foreign_pipe() {
    hub_test(|| {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a valid out-array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just made both fds, and each is adopted exactly once.
        let (reader, writer) = unsafe {
            (
                Reader::<Vec<u8>, Raw>::from_raw_fd(fds[0]),
                Writer::<Vec<u8>, Raw>::from_raw_fd(fds[1]),
            )
        };
        assert_eq!((reader.as_raw_fd(), writer.as_raw_fd()), (fds[0], fds[1]));
        // SAFETY: F_GETFL on an open fd only returns flags.
        assert_ne!(unsafe { libc::fcntl(fds[0], libc::F_GETFL) } & libc::O_NONBLOCK, 0);
        let big = pattern(16, 3 << 20); // bigger than the pipe: both sides must cooperate
        let sent = big.clone();
        let writing = spawn(move || writer.put(&sent));
        assert!(reader.get().unwrap() == big);
        writing.join().unwrap().unwrap();
        assert!(matches!(reader.get(), Err(Error::Eof)));
    });
}

#[test]
fn pipes_are_grown_to_one_mebibyte() {
    hub_test(|| {
        // Linux lets an unprivileged user grow pipes up to pipe-max-size (1 MiB by default),
        // within a per-user quota; greenhub-ipc asks for 1 MiB and keeps the default if refused.
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .map_or(0, |s| s.trim().parse().unwrap_or(0));
        let (reader, writer) = raw_pipe().unwrap();
        assert_eq!(pipe_capacity(&reader), pipe_capacity(&writer));
        if max >= 1 << 20 {
            assert_eq!(pipe_capacity(&writer), 1 << 20);
        }
    });
}

#[test]
fn close_succeeds_on_each_end_and_the_peer_notices() {
    hub_test(|| {
        let (reader, writer) = pipe::<u8>().unwrap();
        writer.put(&1).unwrap();
        writer.close().unwrap();
        assert_eq!(reader.get().unwrap(), 1);
        reader.close().unwrap();
        let (reader, writer) = pipe::<u8>().unwrap();
        reader.close().unwrap();
        assert!(is_broken_pipe(&writer.put(&1).unwrap_err()));
        writer.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Error texts

#[test]
fn error_display_texts_say_what_happened_and_what_to_do() {
    let errors = hub_test(|| {
        let (mut reader, writer) = pipe::<u16>().unwrap();
        let timeout = reader.get_timeout(Duration::ZERO).unwrap_err();
        reader.set_max_message_size(1);
        writer.put(&1000).unwrap(); // a 2-byte varint
        let too_large = reader.get().unwrap_err();
        reader.set_max_message_size(100);
        assert_eq!(reader.get().unwrap(), 1000, "the refused frame, let through now");
        raw_write(&writer, &frame(&[0xff, 0xff, 0xff]));
        let codec = reader.get().unwrap_err();
        raw_write(&writer, &[0, 0]);
        drop(writer);
        let truncated = reader.get().unwrap_err();
        let (reader, writer) = pipe::<u16>().unwrap();
        drop(writer);
        let eof = reader.get().unwrap_err();
        let (reader, writer) = pipe::<u16>().unwrap();
        drop(reader);
        let broken = writer.put(&1).unwrap_err();
        [timeout, too_large, codec, truncated, eof, broken, Error::Closed]
    });
    let expectations: [&[&str]; 7] = [
        &["timed out", "next call continues"],
        &["of 2 bytes", "limit of 1 bytes", "set_max_message_size"],
        &["decode", "u16"],
        &["middle of a message"],
        &["closed", "no more messages"],
        &["no reader"],
        &["not transferred", "start_process"],
    ];
    for (err, needles) in errors.iter().zip(expectations) {
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "{err:?} displays as {text:?}: no {needle:?}");
        }
    }
    assert!(std::error::Error::source(&errors[5]).is_some(), "Io keeps the io::Error");
    assert!(std::error::Error::source(&errors[0]).is_none());
}

// ---------------------------------------------------------------------------------------------
// Resources

/// One pipe life of each kind: made, used (including the error paths), closed or dropped.
fn one_cycle_of_each_pipe_kind() {
    let (reader, writer) = pipe::<String>().unwrap();
    writer.put(&"x".into()).unwrap();
    assert_eq!(reader.get().unwrap(), "x");
    writer.close().unwrap();
    assert!(matches!(reader.get(), Err(Error::Eof)));
    reader.close().unwrap();

    let (reader, writer) = raw_pipe().unwrap();
    raw_write(&writer, &[0, 0, 0, 9, 1]);
    drop(writer);
    assert!(matches!(reader.get(), Err(Error::Truncated)));
    let (reader, writer) = raw_pipe().unwrap();
    drop(reader);
    assert!(is_broken_pipe(&writer.put(&vec![1]).unwrap_err()));

    let (a, b) = duplex::<u32, u32>().unwrap();
    a.put(&1).unwrap();
    b.put(&(b.get().unwrap() + 1)).unwrap();
    assert_eq!(a.get_timeout(LONG).unwrap(), 2);
    a.close().unwrap();
    drop(b);

    let (reader, _) = read_from_raw_peer(&frame(&postcard_payload(&"adopted".to_string())));
    assert_eq!(reader, ["adopted"]);
}

#[test]
fn no_fd_leak_over_200_pipe_cycles() {
    hub_test(|| {
        let handles = greenhub_ipc::__private::owned_handle_count();
        assert_no_fd_leak(200, one_cycle_of_each_pipe_kind);
        let left = greenhub_ipc::__private::owned_handle_count();
        assert_eq!(left, handles, "handles still registered as owned after 200 cycles");
    });
}

// ---------------------------------------------------------------------------------------------
// Property: random message sequences through a real pipe, read with random timeouts

/// Message sizes: mostly small, some around the read size, a few larger than the pipe.
fn message_sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![
        6 => 0..64usize,
        3 => 0..100_000usize,
        1 => 0..2_500_000usize,
    ];
    proptest::collection::vec(size, 1..24)
}

/// Sends messages of `sizes` from a writer coroutine (yielding after a put where `yields` says
/// so) and reads them in the root with `get_timeout`, each attempt's timeout taken in turn from
/// `timeouts_us`, until an error. Returns the messages, the error, and how many timeouts expired.
fn stream_with_reader_timeouts(
    sizes: &[usize],
    timeouts_us: &[u64],
    yields: &[bool],
) -> (Vec<Vec<u8>>, Error, usize) {
    hub_test(|| {
        let (reader, writer) = raw_pipe().unwrap();
        let messages: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &len)| pattern(i as u64, len)).collect();
        let yields = yields.to_vec();
        let writing = spawn(move || {
            for (msg, &yield_after) in messages.iter().zip(yields.iter().cycle()) {
                writer.put(msg).unwrap();
                if yield_after {
                    yield_now();
                }
            }
        });
        let mut got = Vec::new();
        let mut expired = 0;
        let mut timeouts = timeouts_us.iter().cycle();
        let end = loop {
            assert!(expired < 1_000_000, "no progress");
            match reader.get_timeout(Duration::from_micros(*timeouts.next().unwrap())) {
                Ok(msg) => got.push(msg),
                Err(Error::Timeout) => expired += 1,
                Err(err) => break err,
            }
        };
        writing.join().unwrap();
        (got, end, expired)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_survive_random_reader_timeouts(
        sizes in message_sizes(),
        timeouts_us in proptest::collection::vec(0..3000u64, 1..16),
        yields in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        let (got, end, _expired) = stream_with_reader_timeouts(&sizes, &timeouts_us, &yields);
        prop_assert!(matches!(end, Error::Eof), "ended with {:?}", end);
        prop_assert_eq!(got.len(), sizes.len(), "lost or duplicated messages");
        for (i, msg) in got.iter().enumerate() {
            prop_assert!(*msg == pattern(i as u64, sizes[i]), "message {} corrupted", i);
        }
    }
}

#[test]
fn the_property_stream_does_hit_timeouts_mid_message() {
    // Guards the property test against being vacuous: with short timeouts and big messages,
    // gets do expire mid-stream, and still nothing is lost.
    let sizes = [3 << 20, 10, 2 << 20, 0, 500_000];
    let (got, end, expired) = stream_with_reader_timeouts(&sizes, &[0, 1, 50], &[true, false]);
    assert!(matches!(end, Error::Eof), "{end:?}");
    assert!(expired > 0, "no get timed out");
    assert_eq!(got.len(), sizes.len());
    for (i, msg) in got.iter().enumerate() {
        assert!(*msg == pattern(i as u64, sizes[i]), "message {i} corrupted");
    }
}
