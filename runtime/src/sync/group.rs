//! `Group`: a set of coroutines joined or cancelled together (gevent's `gevent.pool.Group`).
//!
//! Guarantee: a member belongs to the group from its `spawn` until it ends (returns, panics,
//! or is cancelled, started or not); `join` returns once the group is empty, counting members
//! added while it waits; `cancel_all` returns once every member has unwound. Dropping the group
//! detaches its members: they run on. Not guaranteed: the order in which cancelled members
//! unwind.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::time::Duration;

use slab::Slab;

use super::waitlist::WaitList;
use crate::coroutine::spawn_guarded;
use crate::hub::hub;
use crate::join::JoinHandle;
use crate::sys::HubSection;
use crate::task::TaskRef;
use crate::task::WaitReason;
use crate::timer::deadline_after;

/// Coroutines spawned through it, joined or cancelled together (gevent's `Group`).
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::Group;
///
/// greenhub::run(|| {
///     let group = Group::new();
///     for i in 1..=3u64 {
///         group.spawn(move || greenhub::sleep(Duration::from_millis(i)));
///     }
///     assert_eq!(group.len(), 3);
///     group.join(); // until every member has ended
///     assert!(group.is_empty());
/// });
/// ```
pub struct Group {
    members: Rc<Members>,
}

/// The shared state: who is running, and who waits for that to change.
pub(super) struct Members {
    /// Running members (`None` for the moment between registering and spawning).
    running: RefCell<Slab<Option<TaskRef>>>,
    /// How many members have ended so far.
    ended: Cell<u64>,
    /// Coroutines in `join` or `cancel_all`.
    waiters: WaitList,
}

/// Takes a member out of its group when its body ends or is dropped unrun.
struct Leave {
    members: Weak<Members>,
    key: usize,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(members) = self.members.upgrade() {
            let _section = HubSection::enter(); // the member table, mid-update
            members.running.borrow_mut().remove(self.key);
            members.ended.set(members.ended.get() + 1);
            members.waiters.notify_all();
        }
    }
}

impl Default for Group {
    fn default() -> Self {
        Self::new()
    }
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        let members = Members {
            running: RefCell::new(Slab::new()),
            ended: Cell::new(0),
            waiters: WaitList::new(),
        };
        Group { members: Rc::new(members) }
    }

    /// Spawns `f` as a member of the group (see [`spawn`](crate::spawn)).
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.spawn_guarded(f, (), Location::caller())
    }

    /// [`spawn`](Self::spawn) (spawned at `site`), with `guard` dropped when the member ends,
    /// just before it leaves the group (for `Pool`: its slot).
    #[track_caller]
    pub(crate) fn spawn_guarded<F, T, G>(
        &self,
        f: F,
        guard: G,
        site: &'static Location<'static>,
    ) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
        G: 'static,
    {
        // From the slot's insertion until it names the task, the member table is mid-update.
        let _section = HubSection::enter();
        let key = self.members.running.borrow_mut().insert(None);
        let leave = Leave { members: Rc::downgrade(&self.members), key };
        // The membership goes with the task, not with the body: however the member ends (an
        // overflow abandons what the body holds on its stack), it leaves the group.
        let handle = spawn_guarded(f, (guard, leave), site);
        if let Some(slot) = self.members.running.borrow_mut().get_mut(key) {
            *slot = Some(handle.task());
        }
        handle
    }

    /// How many members are still running (started or not).
    pub fn len(&self) -> usize {
        self.members.running.borrow().len()
    }

    /// Whether no member is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Suspends the caller until every member has ended, including members added while it
    /// waits.
    ///
    /// # Panics
    /// Outside a coroutine, when it must wait (and so from a member of the group itself:
    /// it would wait for itself).
    #[track_caller]
    pub fn join(&self) {
        self.join_as("Group::join");
    }

    /// [`join`](Self::join), naming `what` the caller called in its panic.
    #[track_caller]
    pub(super) fn join_as(&self, what: &str) {
        if !self.is_empty() {
            self.refuse_a_member(what);
        }
        let empty = || self.is_empty().then_some(());
        self.members.waiters.wait_until(WaitReason::Group, None, empty);
    }

    /// Panics, naming the rule, when the calling coroutine is a member: it would wait for
    /// itself to end.
    #[track_caller]
    fn refuse_a_member(&self, what: &str) {
        let me = crate::hub::try_hub().and_then(|hub| hub.running_task());
        if me.is_some() && self.members.running.borrow().iter().any(|(_, t)| *t == me) {
            panic!(
                "greenhub::sync::{what} called by a member of the group; a member cannot \
                 wait for the group to end, since it would wait for itself (call it from \
                 outside the group, or spawn the waiting code outside it)"
            );
        }
    }

    /// Like [`join`](Self::join), for at most `d`; true when every member has ended.
    #[track_caller]
    pub fn join_timeout(&self, d: Duration) -> bool {
        let empty = || self.is_empty().then_some(());
        self.members.waiters.wait_until(WaitReason::Group, deadline_after(d), empty).is_some()
    }

    /// Cancels every member ([`JoinHandle::cancel`]) and suspends the caller until all have
    /// unwound (gevent's `kill`). A member spawned while the others unwind is cancelled too.
    #[track_caller]
    pub fn cancel_all(&self) {
        loop {
            let ended = self.members.ended.get();
            if !self.cancel_running() {
                return;
            }
            let changed = || (self.members.ended.get() != ended || self.is_empty()).then_some(());
            self.members.waiters.wait_until(WaitReason::Group, None, changed);
        }
    }

    /// Cancels every running member without waiting; false if there was none.
    pub(super) fn cancel_running(&self) -> bool {
        let running: Vec<TaskRef> =
            self.members.running.borrow().iter().filter_map(|(_, t)| *t).collect();
        if running.is_empty() {
            return !self.is_empty();
        }
        let hub = hub("Group::cancel_all");
        for task in running {
            hub.cancel(task);
        }
        true
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("running", &self.len()).finish()
    }
}
