//! No write of greenhub-ipc's can raise SIGPIPE, whatever the disposition.
//!
//! Pipes have no `MSG_NOSIGNAL`, and ignoring SIGPIPE once (as [`pipe`](crate::pipe) does when
//! it is still the default) does not survive a program that sets it back to `SIG_DFL` later: its
//! next write to a pipe without readers would kill it (exit 141). So every write goes through
//! [`write`]: SIGPIPE is *blocked* on the writing thread, a write to a dead reader then only
//! fails with `EPIPE`, and the SIGPIPE the kernel queued for it is consumed at once
//! (`sigtimedwait` with a zero timeout), so it is never delivered later either.
//!
//! The cost per write: blocking around each write would be two `pthread_sigmask` system calls
//! per message (about as much again as a small message's `write`). Instead the block is taken
//! once per hub, at the first write on its thread, and kept until that hub's `run` ends (an exit
//! hook consumes any SIGPIPE still pending and lifts the block, if greenhub set it); a write then
//! costs one thread-local check, and only an `EPIPE` costs a system call more. A write on a
//! thread without a hub (one that needs no wait works there) takes the block around itself.
//!
//! Guaranteed: a greenhub-ipc write never kills the process by SIGPIPE. Not guaranteed: anything
//! about SIGPIPE for other code on a hub's thread while that hub runs, which greenhub's block
//! covers too (a write of its own to a dead socket or pipe gets `EPIPE` and no signal, as in
//! any Rust program with the default disposition), or threads started from that thread
//! meanwhile, which inherit the block.

use std::cell::Cell;
use std::io;

use crate::sys;

thread_local! {
    /// The hub of this thread for which SIGPIPE is blocked (by greenhub or already by the
    /// program), if any.
    static BLOCKED_FOR_HUB: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs one write system call (`op`) so that it cannot raise SIGPIPE.
#[inline]
pub(crate) fn write<R>(op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    let Some(hub) = greenhub::ext::hub_id() else {
        return write_outside_a_hub(op);
    };
    block_for_hub(hub);
    let result = op();
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        sys::take_pending_sigpipe();
    }
    result
}

/// [`write`] on a thread without a hub (a write that needs no wait works there: before `run`,
/// after it, on another thread): no hub's end to keep the block until, so it is taken around
/// this one write. Until a probe showed it, such a write was not protected, and a program that
/// had set SIGPIPE back to the default died of it.
#[cold]
fn write_outside_a_hub<R>(op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    let was_blocked = sys::block_sigpipe();
    let result = op();
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        sys::take_pending_sigpipe();
    }
    if !was_blocked {
        sys::unblock_sigpipe();
    }
    result
}

/// Blocks SIGPIPE on this thread until hub `hub`'s `run` ends, once per hub.
#[inline]
fn block_for_hub(hub: u64) {
    if BLOCKED_FOR_HUB.get() == Some(hub) {
        return;
    }
    BLOCKED_FOR_HUB.set(Some(hub));
    let was_blocked = sys::block_sigpipe();
    greenhub::ext::at_exit(move || {
        sys::take_pending_sigpipe();
        if !was_blocked {
            sys::unblock_sigpipe();
        }
        BLOCKED_FOR_HUB.set(None);
    });
}
