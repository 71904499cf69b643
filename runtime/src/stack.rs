//! Coroutine stacks: the per-hub pool of guard-paged stacks.
//!
//! Guarantee: every stack has an inaccessible guard page below it; a refused stack is an error
//! naming the limit, never an abort. Not guaranteed: which pooled stack a coroutine gets, or that
//! stack memory is returned to the OS.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;

use corosensei::stack::DefaultStack;

use crate::coroutine::{CoBox, CoroutineId};
use crate::join::JoinError;
use crate::sys;

/// The stack type every coroutine runs on.
pub(crate) type CoStack = DefaultStack;

/// How many free stacks a hub keeps for reuse. Beyond that, finished coroutines' stacks are
/// unmapped (a stack's touched pages stay resident while pooled).
const STACK_POOL_MAX: usize = 1024;

/// Guard-paged stacks for reuse: a fresh mapping costs microseconds, a reused one nanoseconds.
/// The pool keeps each stack inside the box of the finished coroutine that last ran on it, so a
/// new coroutine reuses the box's allocation too.
pub(crate) struct StackPool {
    /// Boxes holding finished coroutines, each with its stack.
    free: RefCell<Vec<CoBox>>,
    size: usize,
    refusal_reported: Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl StackPool {
    pub(crate) fn new(size: usize) -> Self {
        StackPool {
            free: RefCell::new(Vec::new()),
            size,
            refusal_reported: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// The usable size of this pool's stacks, in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// An empty box and a stack for coroutine `id`: pooled ones, or new ones.
    pub(crate) fn take(&self, id: CoroutineId) -> Result<(CoBox, CoStack), JoinError> {
        if let Some(mut finished) = self.free.borrow_mut().pop() {
            let stack = finished.take().expect("pooled boxes hold a coroutine").into_stack();
            return Ok((finished, stack));
        }
        match DefaultStack::new(self.size) {
            Ok(stack) => Ok((Box::new(None), stack)),
            Err(e) => {
                let message = stack_refused_message(id, self.size, &e);
                if !self.refusal_reported.replace(true) {
                    // Once per hub on stderr (thousands of refusals would drown it); every
                    // refused coroutine still carries the message in its JoinError.
                    eprintln!("{message}");
                }
                Err(JoinError::panicked(Box::new(message)))
            }
        }
    }

    /// Keeps a finished coroutine (its box and stack) for reuse, up to the pool's size.
    pub(crate) fn put(&self, finished: CoBox) {
        let mut free = self.free.borrow_mut();
        if free.len() < STACK_POOL_MAX {
            free.push(finished);
        }
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StackPool({} free of {} bytes)", self.free.borrow().len(), self.size)
    }
}

fn stack_refused_message(id: CoroutineId, size: usize, e: &std::io::Error) -> String {
    let limit = sys::max_map_count()
        .map(|n| format!("vm.max_map_count is {n}, about {} live stacks", n / 2))
        .unwrap_or_else(|| "see vm.max_map_count".to_string());
    format!(
        "greenhub: the OS refused a stack for coroutine {id} ({size} bytes + guard page): {e}. \
         Each live coroutine stack is two memory mappings and the sysctl vm.max_map_count caps \
         the mappings of a process ({limit}); raise it (sysctl -w vm.max_map_count=N) or keep \
         fewer coroutines alive at once."
    )
}
