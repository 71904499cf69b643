//! The per-fd table: what the patch knows about each fd number, shared by every thread.
//!
//! Guarantee: an entry is created lazily, on the first patched call on the fd inside a coroutine,
//! from what the kernel says about it then (its flags and its type); `close`, `dup2`/`dup3` over
//! it and `accept` returning its number drop it, and `dup`/`F_DUPFD` copy it to the new number
//! (the new fd shares the open file description, and its O_NONBLOCK). Each entry remembers the
//! inode and type of the fd it describes, and [`Entry::still_describes`] checks them before the
//! patch acts on a stale entry (an fd closed by a call we do not see, such as glibc's internal
//! `close` in `fclose`, and its number reused). A duplicate made of an fd with no entry yet has
//! none either; the table remembers that such *untracked twins* exist, so that the patch looks
//! for a twin's entry ([`find`]) before it takes an fd's O_NONBLOCK for the program's. Not
//! guaranteed: that two fds sharing one description agree when the program changes O_NONBLOCK
//! through one of them.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::real;

/// How the patch treats an fd.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Passed straight to libc: regular files, directories, block devices, fds the program made
    /// non-blocking itself, anything epoll cannot watch.
    Direct,
    /// A socket or pipe the patch put in non-blocking mode: a call that would block suspends
    /// the coroutine until the fd is ready; `user_nonblocking` says whether the program asked
    /// for O_NONBLOCK itself since (then it gets EAGAIN as usual).
    Managed { user_nonblocking: bool },
    /// A file description other processes may share (inherited stdio, terminals, fds inherited
    /// through fork, fds open before `install`, fds given to another program), and blocking
    /// eventfds, timerfds, signalfds and inotify instances ([`Kind::Anon`]): never switched
    /// to non-blocking by the patch; a call waits for readiness through the hub first, then
    /// makes the blocking call (at once if the kernel answers it at once whatever the
    /// readiness: a direction the fd was not opened for, a read too short for a record), unless
    /// `user_nonblocking` (the program set O_NONBLOCK itself: straight through, and back to
    /// waiting when it clears it).
    Polled { user_nonblocking: bool },
}

impl Mode {
    /// Whether a call in this mode is passed straight to libc (never waits).
    pub(crate) fn direct(self) -> bool {
        matches!(
            self,
            Mode::Direct
                | Mode::Managed { user_nonblocking: true }
                | Mode::Polled { user_nonblocking: true }
        )
    }
}

/// What the kernel says an fd is, as far as the patch cares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Socket,
    Fifo,
    CharDevice,
    /// An anonymous inode (no file type in `st_mode`): eventfd, timerfd, signalfd, inotify,
    /// epoll, userfaultfd, ... (all on the one anon inode, so their inodes tell them apart from
    /// nothing but other kinds).
    Anon,
    /// Regular files, directories, block devices, symlinks (`O_PATH`): never block.
    Other,
}

/// One fd's entry: its mode, kind and identity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    pub(crate) mode: Mode,
    pub(crate) kind: Kind,
    pub(crate) inode: u64,
    /// Whether `SO_RCVTIMEO` / `SO_SNDTIMEO` may be set on it (found when the entry was made,
    /// set by the `setsockopt` hook): only then does a wait read them, one `getsockopt` each.
    pub(crate) timeouts: bool,
}

const CHUNK: usize = 1024;
const CHUNKS: usize = 1024;

/// One slot: `word` packs mode, kind and the timeouts bit (0 = no entry), `inode` the
/// identity, `epoch` counts the times the number stopped naming its file ([`epoch`]).
#[derive(Default)]
struct Slot {
    word: AtomicU32,
    inode: AtomicU64,
    epoch: AtomicU64,
}

type Chunk = [Slot; CHUNK];

/// Two levels so that an unused range of fd numbers costs nothing: chunks of 1024 slots are
/// allocated on first use and never freed (covers fd numbers below 2^20).
static TABLE: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

#[inline]
fn slot(fd: i32, create: bool) -> Option<&'static Slot> {
    let fd = usize::try_from(fd).ok()?;
    let (chunk, index) = (fd / CHUNK, fd % CHUNK);
    let cell = TABLE.get(chunk)?;
    let mut ptr = cell.load(Ordering::Acquire);
    if ptr.is_null() {
        if !create {
            return None;
        }
        let fresh: Box<Chunk> = Box::new(std::array::from_fn(|_| Slot::default()));
        let fresh = Box::into_raw(fresh);
        match cell.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => ptr = fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                ptr = winner;
            }
        }
    }
    // SAFETY: a non-null chunk pointer was published by the compare_exchange above (by this or
    // another thread) and chunks are never freed, so it is valid for 'static.
    Some(unsafe { &(*ptr)[index] })
}

/// The timeouts bit of a slot's word.
const TIMEOUTS: u32 = 1 << 8;

fn encode(mode: Mode, kind: Kind, timeouts: bool) -> u32 {
    let m = match mode {
        Mode::Direct => 1,
        Mode::Managed { user_nonblocking: false } => 2,
        Mode::Managed { user_nonblocking: true } => 3,
        Mode::Polled { user_nonblocking: false } => 4,
        Mode::Polled { user_nonblocking: true } => 5,
    };
    let k = match kind {
        Kind::Socket => 0,
        Kind::Fifo => 1,
        Kind::CharDevice => 2,
        Kind::Other => 3,
        Kind::Anon => 4,
    };
    m | (k << 4) | if timeouts { TIMEOUTS } else { 0 }
}

fn decode(word: u32, inode: u64) -> Option<Entry> {
    let mode = match word & 0xf {
        1 => Mode::Direct,
        2 => Mode::Managed { user_nonblocking: false },
        3 => Mode::Managed { user_nonblocking: true },
        4 => Mode::Polled { user_nonblocking: false },
        5 => Mode::Polled { user_nonblocking: true },
        _ => return None,
    };
    let kind = match (word >> 4) & 0xf {
        0 => Kind::Socket,
        1 => Kind::Fifo,
        2 => Kind::CharDevice,
        4 => Kind::Anon,
        _ => Kind::Other,
    };
    Some(Entry { mode, kind, inode, timeouts: word & TIMEOUTS != 0 })
}

/// The entry of `fd`, if the patch has one.
#[inline]
pub(crate) fn get(fd: i32) -> Option<Entry> {
    let slot = slot(fd, false)?;
    let word = slot.word.load(Ordering::Acquire);
    decode(word, slot.inode.load(Ordering::Relaxed))
}

/// The epoch of `fd`'s number now (0 for a number the table has never seen): it changes
/// whenever the patch sees the number stop naming the file it named (`close`, `dup2`/`dup3`
/// over it, `accept` returning it), so a registration kept for an older epoch is stale.
pub(crate) fn epoch(fd: i32) -> u64 {
    slot(fd, false).map_or(0, |s| s.epoch.load(Ordering::Relaxed))
}

/// Records `entry` for `fd` (the same file as before, or a number with no entry).
pub(crate) fn set(fd: i32, entry: Entry) {
    if let Some(slot) = slot(fd, true) {
        store(slot, entry);
    }
}

/// [`set`], but only where the table has room for `fd` already: never allocates (for a child
/// between `fork` and `exec`, where allocating is not safe).
pub(crate) fn update(fd: i32, entry: Entry) {
    if let Some(slot) = slot(fd, false) {
        store(slot, entry);
    }
}

fn store(slot: &Slot, entry: Entry) {
    slot.inode.store(entry.inode, Ordering::Relaxed);
    slot.word.store(encode(entry.mode, entry.kind, entry.timeouts), Ordering::Release);
}

/// Set once a duplicate was made of an fd with no entry ([`copy`]): from then on an fd without
/// an entry may share its description with one that has an entry.
static UNTRACKED_TWINS: AtomicBool = AtomicBool::new(false);

/// Whether an fd with no entry may share its description with an fd that has one.
pub(crate) fn untracked_twins() -> bool {
    UNTRACKED_TWINS.load(Ordering::Relaxed)
}

/// Calls `f` on every fd that has an entry, with it, in fd order. Reads the whole table: for
/// slow paths only. Never allocates.
pub(crate) fn each(mut f: impl FnMut(i32, Entry)) {
    find(|fd, entry| {
        f(fd, entry);
        false
    });
}

/// The first fd (and its entry) for which `matches` holds, in fd order. Reads the whole table:
/// for slow paths only. Never allocates.
pub(crate) fn find(mut matches: impl FnMut(i32, Entry) -> bool) -> Option<(i32, Entry)> {
    for (c, cell) in TABLE.iter().enumerate() {
        let ptr = cell.load(Ordering::Acquire);
        if ptr.is_null() {
            continue;
        }
        // SAFETY: as in `slot`: a published chunk is never freed.
        let chunk = unsafe { &*ptr };
        for (i, slot) in chunk.iter().enumerate() {
            let word = slot.word.load(Ordering::Acquire);
            let Some(entry) = decode(word, slot.inode.load(Ordering::Relaxed)) else { continue };
            let fd = (c * CHUNK + i) as i32;
            if matches(fd, entry) {
                return Some((fd, entry));
            }
        }
    }
    None
}

/// Forgets `fd` (closed, or its number now names another file): a new epoch.
pub(crate) fn clear(fd: i32) {
    if let Some(slot) = slot(fd, false) {
        slot.word.store(0, Ordering::Release);
        slot.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

/// `new` is a duplicate of `old` (dup, dup2, dup3, F_DUPFD): it shares the description, and
/// no longer names what it named before.
pub(crate) fn copy(old: i32, new: i32) {
    clear(new);
    match get(old) {
        Some(entry) => set(new, entry),
        None => UNTRACKED_TWINS.store(true, Ordering::Relaxed),
    }
}

/// The kind and inode of `fd` as the kernel reports them now; `None` when it is not open.
pub(crate) fn identify(fd: i32) -> Option<(Kind, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one stat struct.
    if unsafe { real::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::CharDevice,
        0 => Kind::Anon,
        _ => Kind::Other,
    };
    Some((kind, st.st_ino))
}

impl Entry {
    /// Whether this entry still describes the fd now open under `fd` (same type and inode).
    pub(crate) fn still_describes(&self, fd: i32) -> bool {
        identify(fd) == Some((self.kind, self.inode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_clear() {
        let fd = 900_001;
        assert_eq!(get(fd), None);
        for mode in [
            Mode::Direct,
            Mode::Managed { user_nonblocking: false },
            Mode::Managed { user_nonblocking: true },
            Mode::Polled { user_nonblocking: false },
            Mode::Polled { user_nonblocking: true },
        ] {
            let timeouts = matches!(mode, Mode::Polled { .. });
            let entry = Entry { mode, kind: Kind::Fifo, inode: 77, timeouts };
            set(fd, entry);
            assert_eq!(get(fd), Some(entry));
        }
        copy(fd, fd + 1);
        assert_eq!(get(fd + 1).map(|e| e.inode), Some(77));
        let before = epoch(fd);
        clear(fd);
        assert_eq!(get(fd), None);
        assert_eq!(epoch(fd), before + 1, "a cleared number starts a new epoch");
        copy(fd, fd + 1);
        assert_eq!(get(fd + 1), None, "copying a missing entry clears the target");
        assert!(untracked_twins(), "a copy of a missing entry was not noted");
    }

    #[test]
    fn find_sees_every_entry_and_update_never_makes_room() {
        let entry = Entry { mode: Mode::Direct, kind: Kind::Socket, inode: 4242, timeouts: false };
        set(910_003, entry);
        let found = find(|_, e| e.inode == 4242);
        assert_eq!(found, Some((910_003, entry)));
        update(1_000_000, entry); // a chunk nothing made yet: nothing happens
        assert_eq!(get(1_000_000), None);
        update(910_004, entry);
        assert_eq!(get(910_004), Some(entry));
    }

    #[test]
    fn negative_and_huge_fds_have_no_entry() {
        set(-1, Entry { mode: Mode::Direct, kind: Kind::Other, inode: 1, timeouts: false });
        assert_eq!(get(-1), None);
        set(i32::MAX, Entry { mode: Mode::Direct, kind: Kind::Other, inode: 1, timeouts: false });
        assert_eq!(get(i32::MAX), None);
    }
}
