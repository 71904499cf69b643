//! A corked pipe writer: frames pushed during one hub turn leave in one `write`.
//!
//! [`Outgoing::push`] appends a whole frame to a buffer and never suspends; a flusher coroutine
//! writes what has gathered whenever it gets to run, so a burst of small tasks or replies costs
//! one system call instead of one each (gevent's "Nagle by yield"). Guarantee: frames leave
//! whole and in push order; after [`Outgoing::close`] what was pushed is still written, then the
//! pipe is closed (the reader sees `Eof`). Not guaranteed: delivery once the reader is gone (the
//! flusher then stops and [`Outgoing::is_broken`] turns true).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Write;
use std::rc::Rc;

use greenhub::JoinHandle;
use greenhub::sync::Event;

use crate::Error;
use crate::handle::Handle;
use crate::transfer::sealed::Sealed;

/// A buffer of this many bytes is kept for the next batch; a bigger one is freed once written.
const KEEP_BATCH: usize = 1 << 20;

/// The write end of a pipe whose frames are batched; see the module docs.
pub(super) struct Outgoing {
    /// `None` once the flusher has closed it.
    handle: RefCell<Option<Handle>>,
    /// Whole frames not yet handed to the flusher.
    pending: RefCell<Vec<u8>>,
    /// Set when there is something to write, or when closing.
    wake: Event,
    closing: Cell<bool>,
    broken: Cell<bool>,
}

impl Outgoing {
    pub(super) fn new(handle: Handle) -> Rc<Outgoing> {
        Rc::new(Outgoing {
            handle: RefCell::new(Some(handle)),
            pending: RefCell::default(),
            wake: Event::new(),
            closing: Cell::new(false),
            broken: Cell::new(false),
        })
    }

    /// Starts the flusher coroutine in the current hub.
    pub(super) fn start(self: &Rc<Self>) -> JoinHandle<()> {
        let this = Rc::clone(self);
        greenhub::spawn(move || this.flush_until_closed())
    }

    /// Appends one frame (`append` must add a whole frame or, failing, nothing) for the flusher
    /// to write. Never suspends.
    pub(super) fn push(
        &self,
        append: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        append(&mut self.pending.borrow_mut())?;
        self.wake.set();
        Ok(())
    }

    /// Whether a write failed (the reader is gone): nothing pushed now will arrive.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Writes what is pending, then closes the pipe; the flusher then ends.
    pub(super) fn close(&self) {
        self.closing.set(true);
        self.wake.set();
    }

    /// The flusher: waits for frames, writes each batch whole, closes the pipe at the end.
    fn flush_until_closed(&self) {
        let mut batch = Vec::new();
        loop {
            std::mem::swap(&mut batch, &mut *self.pending.borrow_mut());
            if batch.is_empty() {
                if self.closing.get() {
                    break;
                }
                self.wake.clear();
                self.wake.wait();
                continue;
            }
            if self.write_all(&batch).is_err() {
                self.broken.set(true);
                self.pending.borrow_mut().clear();
                break;
            }
            if batch.capacity() > KEEP_BATCH {
                batch = Vec::new();
            }
            batch.clear();
        }
        if let Some(handle) = self.handle.borrow_mut().take() {
            let _ = handle.close();
        }
    }

    /// Writes `bytes` whole, suspending while the pipe is full.
    fn write_all(&self, bytes: &[u8]) -> Result<(), Error> {
        let slot = self.handle.borrow();
        let source = slot.as_ref().ok_or(Error::Closed)?.source()?;
        let mut sent = 0;
        while sent < bytes.len() {
            sent += source.write_with(|mut file| file.write(&bytes[sent..]))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("handle", &self.handle.borrow())
            .field("pending", &self.pending.borrow().len())
            .finish()
    }
}

/// The write end of a pipe on its way to a child, where it becomes an [`Outgoing`].
#[derive(Debug)]
pub(super) struct WriteEnd(pub(super) Handle);

impl Sealed for WriteEnd {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        f(&self.0);
    }
}
