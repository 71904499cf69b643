//! Coroutine-local storage: [`local!`](crate::local!) and [`LocalKey`], `thread_local!`'s shape
//! with one value per coroutine.
//!
//! Guarantee: `KEY.with(f)` gives `f` the calling coroutine's own value, created on its first use
//! in that coroutine; the values are dropped when the coroutine ends (returning, panicking,
//! cancelled or unwound by a timeout), newest first, still inside the coroutine; those of a
//! coroutine that overflowed its stack (with `recover_stack_overflow`) are leaked with it,
//! never dropped outside it. Not guaranteed: the address of a value across coroutines, or any
//! sharing between them.
//!
//! # Implementation
//! Each `local!` static gets a small process-wide index the first time it is used; each task
//! has a lazily allocated `Vec` of `Rc<dyn Any>` slots indexed by it (`Task::locals`), so a
//! lookup is a borrow of the task table, two indexings and a reference-count increment. The
//! `Rc` is cloned out of the table before `f` runs, so `f` may use other locals, spawn, or
//! suspend. At the end of the coroutine's body (`Spawned::run`), `drop_all` takes the values
//! out one at a time, newest first, and drops each outside any borrow; in a hub where no
//! coroutine has used a `local!` yet, it does not look in the table at all.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::hub::{Hub, try_hub};
use crate::task::TaskRef;

/// Declares coroutine-local values: `thread_local!`'s syntax, one value per coroutine.
///
/// ```
/// use std::cell::Cell;
///
/// greenhub::local! {
///     /// The request the calling coroutine is serving.
///     static REQUEST_ID: Cell<u64> = Cell::new(0);
/// }
///
/// greenhub::run(|| {
///     REQUEST_ID.with(|id| id.set(7));
///     let other = greenhub::spawn(|| REQUEST_ID.with(Cell::get)); // its own value: 0
///     assert_eq!(other.join().unwrap(), 0);
///     assert_eq!(REQUEST_ID.with(Cell::get), 7);
/// });
/// ```
///
/// Each `static NAME: T = init;` becomes a [`LocalKey<T>`](crate::local::LocalKey); `init` runs
/// once per coroutine, on its first use there. See the [module docs](mod@crate::local).
#[macro_export]
macro_rules! local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr) => {
        $(#[$attr])* $vis static $name: $crate::local::LocalKey<$t> = {
            fn init() -> $t {
                $init
            }
            $crate::local::LocalKey::new(::core::stringify!($name), init)
        };
    };
}

/// No index assigned yet.
const UNASSIGNED: usize = usize::MAX;

/// The next index a `local!` static gets, process-wide.
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

/// A coroutine-local value, declared with [`local!`](crate::local!): each coroutine that uses it
/// has its own `T`.
pub struct LocalKey<T: 'static> {
    name: &'static str,
    init: fn() -> T,
    index: AtomicUsize,
}

/// The error of [`LocalKey::try_with`]: the value was already dropped, or is used for the first
/// time, while the coroutine's locals are being dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AccessError {
    name: &'static str,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "greenhub::local! `{}` used while the coroutine's locals are being dropped, after its \
             own value was dropped (or before it was ever created)",
            self.name
        )
    }
}

impl std::error::Error for AccessError {}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    /// Used by [`local!`](crate::local!); not public API.
    pub const fn new(name: &'static str, init: fn() -> T) -> Self {
        LocalKey { name, init, index: AtomicUsize::new(UNASSIGNED) }
    }

    /// Runs `f` with the calling coroutine's value, creating it first if this coroutine has not
    /// used it yet.
    ///
    /// While a coroutine's locals are being dropped (when it ends), a destructor may use the
    /// locals created *before* its own (they are dropped after it, newest first); using one that
    /// was already dropped, or one never created, panics (see [`try_with`](Self::try_with)).
    ///
    /// # Panics
    /// Outside a hub, or in a hub's exit hook (no coroutine runs there); in the case above; and
    /// if the value's initialiser uses the value itself.
    #[track_caller]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        match self.value() {
            Ok(value) => f(value.downcast_ref::<T>().expect("a local's slot holds its type")),
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`with`](Self::with), but returns an [`AccessError`] instead of panicking when the
    /// value is used after it was dropped (or first used) while the coroutine's locals are
    /// being dropped.
    ///
    /// # Panics
    /// Outside a hub or a coroutine, and on a recursive initialisation, as `with`.
    #[track_caller]
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let value = self.value()?;
        Ok(f(value.downcast_ref::<T>().expect("a local's slot holds its type")))
    }

    /// The calling coroutine's value (created now if needed), or why there is none.
    #[track_caller]
    fn value(&'static self) -> Result<Rc<dyn Any>, AccessError> {
        let (hub, me) = self.current();
        let index = self.index();
        match hub.tasks.with_locals(me, |locals| locals.find(index)) {
            Found::Value(value) => return Ok(value),
            Found::Gone => return Err(AccessError { name: self.name }),
            Found::Initialising => panic!(
                "greenhub::local! `{}` is used by its own initialiser (a recursive \
                 initialisation)",
                self.name
            ),
            Found::Create => {}
        }
        // No borrow is held while `init` runs: it may use other locals, spawn, or suspend. If
        // it panics, the guard empties the slot again.
        let guard = Initialising { hub, me, index };
        let value: Rc<dyn Any> = Rc::new((self.init)());
        std::mem::forget(guard);
        hub.tasks.with_locals(me, |locals| locals.store(index, value.clone()));
        Ok(value)
    }

    /// The hub and the running coroutine, or a panic naming the rule.
    #[track_caller]
    fn current(&self) -> (&'static Hub, TaskRef) {
        let Some(hub) = try_hub() else {
            panic!(
                "greenhub::local! `{}` used outside a hub; a coroutine-local value belongs to a \
                 coroutine: use it inside greenhub::run or a coroutine spawned there (outside a \
                 hub, use thread_local!)",
                self.name
            )
        };
        let Some(me) = hub.running_task() else {
            panic!(
                "greenhub::local! `{}` used outside a coroutine (in a hub's exit hook); use it \
                 inside greenhub::run or a coroutine spawned there",
                self.name
            )
        };
        (hub, me)
    }

    /// This static's slot index, assigned on first use.
    fn index(&self) -> usize {
        let index = self.index.load(Ordering::Relaxed);
        if index != UNASSIGNED {
            return index;
        }
        let fresh = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        match self.index.compare_exchange(UNASSIGNED, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => fresh,
            Err(winner) => winner, // another thread assigned one first; `fresh` stays unused
        }
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// One coroutine's locals (in its task, allocated on its first local).
#[derive(Default)]
pub(crate) struct Locals {
    /// Indexed by the statics' indices.
    slots: Vec<Slot>,
    /// Indices in creation order, for dropping newest first.
    created: Vec<usize>,
    /// The coroutine has ended and its values are being dropped: no new ones.
    dropping: bool,
}

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// Its initialiser is running (a use now is a recursive initialisation).
    Initialising,
    Value(Rc<dyn Any>),
}

/// What a lookup found.
enum Found {
    Value(Rc<dyn Any>),
    /// Not created yet: the slot is marked initialising, the caller creates it.
    Create,
    Initialising,
    /// Dropped already, or never created and the locals are being dropped.
    Gone,
}

impl Locals {
    fn find(&mut self, index: usize) -> Found {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Slot::default);
        }
        match &self.slots[index] {
            Slot::Value(value) => Found::Value(value.clone()),
            Slot::Initialising => Found::Initialising,
            Slot::Empty if self.dropping => Found::Gone,
            Slot::Empty => {
                self.slots[index] = Slot::Initialising;
                Found::Create
            }
        }
    }

    fn store(&mut self, index: usize, value: Rc<dyn Any>) {
        self.slots[index] = Slot::Value(value);
        self.created.push(index);
    }

    /// The newest value left, taken out; from the first call on, no value can be created.
    fn take_newest(&mut self) -> Option<Rc<dyn Any>> {
        self.dropping = true;
        let index = self.created.pop()?;
        match std::mem::take(&mut self.slots[index]) {
            Slot::Value(value) => Some(value),
            Slot::Empty | Slot::Initialising => unreachable!("a created local holds its value"),
        }
    }
}

/// Empties a slot whose initialiser panicked, so that a later use tries again.
struct Initialising {
    hub: &'static Hub,
    me: TaskRef,
    index: usize,
}

impl Drop for Initialising {
    fn drop(&mut self) {
        let index = self.index;
        self.hub.tasks.with_locals(self.me, |locals| locals.slots[index] = Slot::Empty);
    }
}

/// At the end of the running coroutine's body: drops its locals, newest first, inside the
/// coroutine (so their destructors may use the older ones). Every destructor runs even if an
/// earlier one panicked; the first panic is returned.
pub(crate) fn drop_all(hub: &Hub, me: TaskRef) -> Result<(), Box<dyn Any + Send>> {
    let mut first_panic = Ok(());
    if !hub.tasks.has_locals(me) {
        return first_panic; // the common case: no lookup at all, or one
    }
    while let Some(value) = hub.tasks.with_locals(me, Locals::take_newest) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| drop(value)))
            && first_panic.is_ok()
        {
            first_panic = Err(payload);
        }
    }
    first_panic
}
