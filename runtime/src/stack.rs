//! Coroutine stacks: greenhub's own allocator, carving guard-paged stacks out of large
//! reservations, and the per-hub pool that reuses them.
//!
//! ```text
//!  one reservation: mmap(MAP_NORESERVE), read-write, one mapping (VMA)
//!  low addresses                                                            high addresses
//!  +-------+----------------+-------+----------------+-------+-------------+--- - - ---+
//!  | guard |    stack 0     | guard |    stack 1     | guard |   stack 2   |  not yet  |
//!  | page  | (usable bytes) | page  |                | page  |             |  carved   |
//!  +-------+----------------+-------+----------------+-------+-------------+--- - - ---+
//!  ^limit 0          base 0 ^ ^limit 1        base 1 ^
//!  each stack grows down from its base towards its own guard page
//! ```
//!
//! Guarantee: every stack has an inaccessible guard page right below it. Where the kernel has
//! lightweight guard regions (`madvise(MADV_GUARD_INSTALL)`, Linux 6.13+, probed once per
//! process) a guard is an entry in the page tables, so a reservation of any number of stacks
//! stays one mapping and `vm.max_map_count` does not bound the number of coroutines; elsewhere
//! guards are `mprotect(PROT_NONE)` pages, two mappings per stack, as with corosensei's
//! `DefaultStack`. A refused stack is a [`JoinError`] naming what ran out, never an abort; after
//! a refusal the pool refuses without asking the OS again until a stack has been given back or
//! 10 ms have passed ([`ASK_AGAIN_AFTER`]). Not guaranteed: which stack a coroutine gets, or
//! when pooled pages return to the OS.
//!
//! Invariants: a stack is in exactly one place: a free list of its size class (`warm`, inside
//! the box of the finished coroutine that last ran on it, or `cold`, its pages given back), a
//! live coroutine, or nowhere (quarantined after an overflow: never handed out again, and its
//! reservation is never unmapped). `live` counts the stacks held by coroutines. All state is per
//! hub: a forked child's fresh hub reserves its own address space, so it can never hand out a
//! stack of the inherited (leaked) hub, live or free.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corosensei::stack::valgrind::ValgrindStackRegistration;
use corosensei::stack::{MIN_STACK_SIZE, Stack, StackPointer};

use crate::coroutine::CoBox;
use crate::join::JoinError;
use crate::sys::{self, GuardKind};

/// The largest stack a coroutine may ask for: far beyond any real need, small enough that a
/// stack plus its guard page always fits in the address space.
pub(crate) const MAX_STACK_SIZE: usize = 1 << 40;

/// How many warm stacks (pages still resident) one size class keeps. Past that by
/// [`GIVE_BACK_BATCH`], the oldest are given back to the OS down to this many, in as few
/// `madvise` calls as their addresses allow.
const WARM_MAX: usize = 1024;

/// How many stacks one give-back returns at most. Coroutines end in no address order, so the
/// stacks of one batch seldom merge into fewer calls: a batch costs about one `madvise` (~3 us)
/// per stack, all paid by the coroutine exit that crossed the bound. Batches of 1,024 made that
/// exit a 3 ms stall every 1,024 exits (the sleepers rows' p99 lateness); 32 bounds it near
/// 100 us and keeps what little merging there is.
const GIVE_BACK_BATCH: usize = 32;

/// Stacks in a size class's first reservation; each later one is twice the last, up to
/// [`MAX_RESERVATION`] bytes.
const FIRST_CHUNK: usize = 64;

/// The largest single reservation, in bytes (a failed one is retried at half the size).
const MAX_RESERVATION: usize = 1 << 30;

/// How long after the OS last refused a stack the pool refuses by itself (no system call)
/// while no stack has been given back. Then it asks the OS again: the limit may have been
/// raised or memory freed meanwhile, and a hub whose coroutines all live on (a server's root
/// and acceptor) would otherwise refuse every new coroutine forever. A refused ask costs a
/// few `mmap`s (the reservation is retried at halves), so at most one every 10 ms.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(10);

/// The least usable stack a coroutine gets, whatever it asks for: its body may need almost
/// nothing, but a cancel, a `timeout` or the shutdown unwinds it, and the unwinder, `catch_unwind`
/// and the panic hook need more than one page (a probe's 4 KiB coroutine aborted with an
/// overflow report when cancelled; 8 KiB was enough there, and this leaves room for destructors
/// that run during the unwind). Only the pages a stack touches cost memory.
pub(crate) const MIN_USABLE_STACK: usize = 16 * 1024;

/// Checks a requested stack size against the rule, naming `what` the user called.
#[track_caller]
pub(crate) fn check_stack_size(bytes: usize, what: &str) {
    assert!(
        (1..=MAX_STACK_SIZE).contains(&bytes),
        "greenhub: {what}({bytes}): a coroutine stack must be between 1 byte and 1 TiB \
         (it is rounded up to whole pages, at least {MIN_USABLE_STACK} bytes)"
    );
}

/// The usable size a valid request gets: whole pages, at least [`MIN_USABLE_STACK`] (which is
/// more than corosensei's own minimum).
pub(crate) fn rounded(bytes: usize) -> usize {
    const { assert!(MIN_USABLE_STACK >= MIN_STACK_SIZE) };
    let page = sys::page();
    bytes.max(MIN_USABLE_STACK).div_ceil(page) * page
}

/// One stack carved out of a reservation: `[limit, base)`, the guard page at `limit`.
pub(crate) struct CoStack {
    base: StackPointer,
    limit: StackPointer,
    _valgrind: ValgrindStackRegistration,
}

impl CoStack {
    fn new(limit: usize, base: usize) -> CoStack {
        let nonzero = |a| NonZeroUsize::new(a).expect("a stack is never at address 0");
        let valgrind = ValgrindStackRegistration::new(limit as *mut u8, base - limit);
        CoStack { base: nonzero(base), limit: nonzero(limit), _valgrind: valgrind }
    }
}

// SAFETY: corosensei's contract: `[limit, base)` is memory this stack owns alone (carved once
// from a reservation and then moved, never copied, between the pool and one coroutine), at
// least MIN_STACK_SIZE usable bytes above a guard page at `limit` that faults on any access
// (installed before the stack is handed out, kept by MADV_DONTNEED); both ends are page-aligned,
// so aligned to STACK_ALIGNMENT; and the reservation outlives the stack (unmapped only when the
// pool is dropped with no stack live, never while one is quarantined).
unsafe impl Stack for CoStack {
    #[inline]
    fn base(&self) -> StackPointer {
        self.base
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// The free stacks of one usable size, and where fresh ones of that size are carved from.
struct SizeClass {
    usable: usize,
    /// Finished coroutines (box and stack); their touched pages are still resident.
    warm: Vec<CoBox>,
    /// Stacks whose pages were given back.
    cold: Vec<CoStack>,
    /// The uncarved part of the current reservation: `[next, end)`.
    next: usize,
    end: usize,
    /// Stacks in the next reservation.
    next_chunk: usize,
}

impl SizeClass {
    fn new(usable: usize) -> SizeClass {
        let chunk = FIRST_CHUNK.min(max_chunk(usable + sys::page()));
        SizeClass { usable, warm: Vec::new(), cold: Vec::new(), next: 0, end: 0, next_chunk: chunk }
    }

    fn slot(&self) -> usize {
        self.usable + sys::page()
    }
}

fn max_chunk(slot: usize) -> usize {
    (MAX_RESERVATION / slot).max(1)
}

struct Reservation {
    addr: usize,
    len: usize,
    /// Holds a quarantined stack: never unmapped.
    pinned: bool,
}

/// The first refusal's message, reused for every later refusal; and when the OS last refused,
/// with how many stacks live: until one is given back or [`ASK_AGAIN_AFTER`] has passed, the
/// pool refuses without asking the OS.
struct Refusal {
    message: Arc<str>,
    live: usize,
    at: Instant,
}

/// A hub's stacks: free ones for reuse (a fresh stack costs a guard install, a reused one
/// nothing), and the reservations they are carved from.
pub(crate) struct StackPool {
    default_size: usize,
    guard: GuardKind,
    classes: RefCell<Vec<SizeClass>>,
    reservations: RefCell<Vec<Reservation>>,
    refusal: RefCell<Option<Refusal>>,
    live: Cell<usize>,
    /// Stacks quarantined after an overflow: never reused, never unmapped (named by the refusal
    /// message, since they count against the same limits as live ones).
    quarantined: Cell<usize>,
    _not_send: PhantomData<*mut ()>,
}

impl StackPool {
    /// A pool whose coroutines get `default_size` usable bytes unless they ask otherwise.
    pub(crate) fn new(default_size: usize) -> Self {
        StackPool {
            default_size: rounded(default_size),
            guard: sys::guard_kind(),
            classes: RefCell::new(Vec::new()),
            reservations: RefCell::new(Vec::new()),
            refusal: RefCell::new(None),
            live: Cell::new(0),
            quarantined: Cell::new(0),
            _not_send: PhantomData,
        }
    }

    /// The usable size of a stack for a coroutine that asked for `requested` (or the default).
    pub(crate) fn usable_size(&self, requested: Option<usize>) -> usize {
        requested.map_or(self.default_size, rounded)
    }

    /// An empty box and a stack of `usable` bytes: pooled ones, or a fresh stack.
    pub(crate) fn take(&self, usable: usize) -> Result<(CoBox, CoStack), JoinError> {
        let mut classes = self.classes.borrow_mut();
        let class = class_of(&mut classes, usable);
        let taken = if let Some(mut finished) = class.warm.pop() {
            let stack = finished.take().expect("pooled boxes hold a coroutine").into_stack();
            (finished, stack)
        } else if let Some(stack) = class.cold.pop() {
            (Box::new(None), stack)
        } else {
            (Box::new(None), self.carve(class)?)
        };
        self.live.set(self.live.get() + 1);
        Ok(taken)
    }

    /// Takes back a finished coroutine (its box and its stack of `usable` bytes) for reuse.
    pub(crate) fn put(&self, finished: CoBox, usable: usize) {
        self.live.set(self.live.get() - 1);
        let mut classes = self.classes.borrow_mut();
        let class = class_of(&mut classes, usable);
        class.warm.push(finished);
        if class.warm.len() >= WARM_MAX + GIVE_BACK_BATCH {
            self.give_back_oldest(class);
        }
    }

    /// A coroutine died on this stack (an overflow): the stack is never reused and its
    /// reservation never unmapped, so whatever pointed into it stays harmless.
    pub(crate) fn quarantine(&self, dead: CoBox, limit: usize) {
        self.live.set(self.live.get() - 1);
        self.quarantined.set(self.quarantined.get() + 1);
        let mut reservations = self.reservations.borrow_mut();
        if let Some(r) = reservations.iter_mut().find(|r| (r.addr..r.addr + r.len).contains(&limit))
        {
            r.pinned = true;
        }
        // The coroutine has returned (the trap made it), so dropping it touches no stack
        // memory; the slot is in no free list and the carving point has passed it.
        drop(dead);
    }

    /// A fresh stack from the class's current reservation (a new one when it is used up).
    fn carve(&self, class: &mut SizeClass) -> Result<CoStack, JoinError> {
        if let Some(refusal) = self.refusal.borrow().as_ref()
            && self.live.get() >= refusal.live
            && refusal.at.elapsed() < ASK_AGAIN_AFTER
        {
            return Err(JoinError::no_stack(refusal.message.clone()));
        }
        if class.next == class.end {
            self.reserve_for(class).map_err(|failure| self.refuse(failure, class.usable))?;
        }
        let limit = class.next;
        // SAFETY: `limit` is the page-aligned start of an uncarved slot of our reservation;
        // nothing lives there yet.
        unsafe { sys::install_guard(limit, self.guard) }
            .map_err(|e| self.refuse(Failure::Guard(e), class.usable))?;
        class.next += class.slot();
        Ok(CoStack::new(limit, limit + class.slot()))
    }

    /// Reserves address space for the class's next stacks, halving the request on refusal.
    fn reserve_for(&self, class: &mut SizeClass) -> Result<(), Failure> {
        let slot = class.slot();
        let mut count = class.next_chunk;
        loop {
            let len = count * slot;
            match sys::reserve(len) {
                Ok(addr) => {
                    self.reservations.borrow_mut().push(Reservation { addr, len, pinned: false });
                    (class.next, class.end) = (addr, addr + len);
                    class.next_chunk = (count * 2).min(max_chunk(slot));
                    return Ok(());
                }
                Err(_) if count > 1 => count /= 2,
                Err(e) => return Err(Failure::Reserve(e, len)),
            }
        }
    }

    /// A refusal: the first one says on stderr what ran out (looking it up costs a read of
    /// /proc); later ones reuse its message.
    #[cold]
    fn refuse(&self, failure: Failure, usable: usize) -> JoinError {
        let mut refusal = self.refusal.borrow_mut();
        let live = self.live.get();
        let message = match refusal.as_mut() {
            Some(earlier) => {
                (earlier.live, earlier.at) = (live, Instant::now());
                earlier.message.clone()
            }
            None => {
                let quarantined = self.quarantined.get();
                let message: Arc<str> =
                    refused_message(&failure, usable, self.guard, quarantined).into();
                // Once per hub (thousands of refusals would drown stderr); every refused
                // coroutine still carries the message in its JoinError.
                crate::stderr::line(format_args!("{message}"));
                *refusal = Some(Refusal { message: message.clone(), live, at: Instant::now() });
                message
            }
        };
        JoinError::no_stack(message)
    }

    /// Gives the pages of the oldest warm stacks back to the OS, keeping [`WARM_MAX`] warm.
    #[cold]
    fn give_back_oldest(&self, class: &mut SizeClass) {
        let excess = class.warm.len() - WARM_MAX;
        let mut stacks: Vec<CoStack> = class
            .warm
            .drain(..excess)
            .map(|mut finished| {
                finished.take().expect("pooled boxes hold a coroutine").into_stack()
            })
            .collect();
        stacks.sort_by_key(|s| s.limit);
        let page = sys::page();
        let mut run: Option<(usize, usize)> = None;
        for stack in &stacks {
            let (limit, base) = (stack.limit.get(), stack.base.get());
            // Lightweight guards survive MADV_DONTNEED, so neighbouring stacks go in one call,
            // guards included; an mprotect guard is skipped (it holds nothing anyway).
            let start = if self.guard == GuardKind::Lightweight { limit } else { limit + page };
            run = match run {
                Some((from, to)) if to == start => Some((from, base)),
                Some((from, to)) => {
                    // SAFETY: free stacks of ours: nothing lives in them.
                    unsafe { sys::discard(from, to - from) };
                    Some((start, base))
                }
                None => Some((start, base)),
            };
        }
        if let Some((from, to)) = run {
            // SAFETY: as above.
            unsafe { sys::discard(from, to - from) };
        }
        class.cold.extend(stacks);
    }
}

/// The class of `usable`-byte stacks, made on first use.
///
/// Most hubs use one size (the default): the first class is tried inline, the search is out of
/// line. (As one function LLVM did not inline it: a call on every `take` and `put`, 17
/// instructions each; inlined, callgrind counts 1,533 -> 1,501 instructions per spawn+join,
/// `bench worker greenhub spawn batch=1000`.)
#[inline(always)]
fn class_of(classes: &mut Vec<SizeClass>, usable: usize) -> &mut SizeClass {
    if classes.first().is_some_and(|c| c.usable == usable) {
        return &mut classes[0];
    }
    search_class(classes, usable)
}

#[cold]
#[inline(never)]
fn search_class(classes: &mut Vec<SizeClass>, usable: usize) -> &mut SizeClass {
    let at = match classes.iter().position(|c| c.usable == usable) {
        Some(at) => at,
        None => {
            classes.push(SizeClass::new(usable));
            classes.len() - 1
        }
    };
    &mut classes[at]
}

impl Drop for StackPool {
    fn drop(&mut self) {
        self.classes.get_mut().clear(); // finished coroutines: dropping them touches no stack
        if self.live.get() != 0 {
            return; // a stack is still in use somewhere: leak the reservations rather than pull them away
        }
        for r in self.reservations.get_mut().drain(..).filter(|r| !r.pinned) {
            // SAFETY: a whole reservation of ours; no stack carved from it is live (`live` is
            // zero, and the free ones were just dropped) and none is quarantined in it.
            unsafe { sys::unreserve(r.addr, r.len) };
        }
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StackPool({} live, {:?} guards)", self.live.get(), self.guard)
    }
}

/// What the OS refused.
enum Failure {
    /// Address space for a reservation of this many bytes.
    Reserve(io::Error, usize),
    /// A guard page.
    Guard(io::Error),
}

/// Why no stack: the real cause, looked up once (this reads /proc); `quarantined` stacks of
/// overflowed coroutines count against the limits too.
fn refused_message(
    failure: &Failure,
    usable: usize,
    guard: GuardKind,
    quarantined: usize,
) -> String {
    let (error, len) = match failure {
        Failure::Reserve(e, len) => (e, *len),
        Failure::Guard(e) => (e, sys::page()),
    };
    let near_map_limit = match (sys::map_count(), sys::max_map_count()) {
        (Some(n), Some(max)) => n + 16 >= max,
        _ => false,
    };
    let cause = if error.raw_os_error() != Some(libc::ENOMEM) {
        format!("{error}")
    } else if let Some(limit) = address_space_limit_hit(len) {
        limit
    } else if near_map_limit
        || (guard == GuardKind::Mprotect && matches!(failure, Failure::Guard(_)))
    {
        let max = sys::max_map_count().map_or("its value".to_string(), |n| n.to_string());
        let per_stack = match guard {
            GuardKind::Mprotect => format!(
                "the guard pages are mprotect'ed (this kernel lacks MADV_GUARD_INSTALL, Linux \
                 6.13+, or GREENHUB_STACK_GUARDS=mprotect is set), so each live coroutine stack \
                 is two memory mappings: about {} stacks",
                sys::max_map_count().map_or(0, |n| n / 2)
            ),
            GuardKind::Lightweight => {
                "stacks share mappings; the rest of the process uses them up".to_string()
            }
        };
        format!(
            "the process has reached the kernel's cap on memory mappings, the sysctl \
             vm.max_map_count ({max}); {per_stack}. Raise it (sysctl -w vm.max_map_count=N) \
             or keep fewer coroutines alive at once"
        )
    } else {
        format!(
            "out of memory: the kernel refused {len} bytes ({error}; see vm.overcommit_memory). \
             Keep fewer coroutines alive at once or give them smaller stacks"
        )
    };
    let dead = match quarantined {
        0 => String::new(),
        n => format!(
            " ({n} of the stacks this hub holds are quarantined: coroutines that overflowed with \
             recover_stack_overflow on, whose stacks are kept, never reused, and count as live \
             ones do)"
        ),
    };
    format!(
        "greenhub: the OS refused a coroutine stack ({usable} bytes + guard page): {cause}{dead}."
    )
}

/// The RLIMIT_AS message, if that limit is what a reservation of `len` bytes ran into.
fn address_space_limit_hit(len: usize) -> Option<String> {
    let limit = sys::address_space_limit()?;
    let mapped = sys::mapped_bytes().unwrap_or(0);
    (mapped.saturating_add(len as u64) > limit).then(|| {
        format!(
            "the address-space limit RLIMIT_AS (ulimit -v) of {limit} bytes is reached (the \
             process maps {mapped} bytes). Raise the limit, give coroutines smaller stacks \
             (Builder::stack_size) or keep fewer alive at once"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// A stack for code that must leave the current one (re-exported by `ext`)

/// A stack of its own, for code that must not run on the current one: at least `size` usable
/// bytes above an inaccessible guard page, mapped with `mmap` like a thread's stack and
/// unmapped when dropped. greenhub-ipc runs the whole life of a forked child on one
/// ([`on_stack`]), whatever room the coroutine that forked had left.
pub struct FreshStack(corosensei::stack::DefaultStack);

impl FreshStack {
    /// Maps the stack (its size rounded up to whole pages) and its guard page.
    ///
    /// # Errors
    /// The OS's refusal of the mapping (`mmap`, `mprotect`): the address space or the memory
    /// ran out.
    pub fn new(size: usize) -> std::io::Result<FreshStack> {
        corosensei::stack::DefaultStack::new(size).map(FreshStack)
    }
}

impl std::fmt::Debug for FreshStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use corosensei::stack::Stack;
        let bytes = self.0.base().get() - self.0.limit().get();
        write!(f, "FreshStack({bytes} bytes with its guard page)")
    }
}

/// Runs `f` on `stack` instead of the current stack, and returns its value (or carries its
/// panic) back to the caller's stack. An overflow of `stack` hits its guard page: a plain
/// SIGSEGV, as for a thread's own stack (greenhub's reporter watches coroutine stacks only).
pub fn on_stack<R>(stack: FreshStack, f: impl FnOnce() -> R) -> R {
    corosensei::on_stack(stack.0, f)
}

#[cfg(test)]
mod tests {
    use super::{Failure, GuardKind, refused_message};
    use std::io;

    /// A probe's hub ran out of mappings after ~32,765 recovered overflows with mprotect guards,
    /// and the message told it to keep fewer coroutines alive while none was: it names the
    /// quarantined stacks now.
    #[test]
    fn a_refusal_names_the_quarantined_stacks_of_overflowed_coroutines() {
        let failure = Failure::Guard(io::Error::from_raw_os_error(libc::EPERM));
        let message = refused_message(&failure, 16 << 10, GuardKind::Mprotect, 3);
        assert!(message.contains("3 of the stacks this hub holds are quarantined"), "{message}");
        let none = refused_message(&failure, 16 << 10, GuardKind::Mprotect, 0);
        assert!(!none.contains("quarantined"), "{none}");
    }
}
