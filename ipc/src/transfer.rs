//! `Transfer`: the values whose handles can be given to a child process.
//!
//! A transfer is a move: [`start_process`](crate::start_process) takes the handles, the child
//! gets them (and owns them), and the parent's copies are closed once the child exists. Every
//! other pipe handle the child inherits through fork is closed there (`Error::Closed` if used).

use crate::handle::Handle;

/// Values made of pipe handles that can be moved into a child process: [`Reader`](crate::Reader),
/// [`Writer`](crate::Writer), [`Duplex`](crate::Duplex), a program's
/// [`ChildStdin`](crate::ChildStdin), [`ChildStdout`](crate::ChildStdout) and
/// [`ChildStderr`](crate::ChildStderr), `()`, tuples of up to 8, `Vec<T>`, `Option<T>`, `[T; N]`,
/// `Box<T>`.
///
/// The trait is sealed: its one method is an implementation detail.
pub trait Transfer: sealed::Sealed {}

pub(crate) mod sealed {
    use super::Handle;

    /// Visits every handle a transferable value holds.
    pub trait Sealed {
        /// Calls `f` on each handle.
        fn each_handle(&self, f: &mut dyn FnMut(&Handle));
    }
}

impl<T: sealed::Sealed> Transfer for T {}

/// The ids of every handle in `value`.
pub(crate) fn handle_ids(value: &impl Transfer) -> Vec<u64> {
    let mut ids = Vec::new();
    value.each_handle(&mut |h| ids.push(h.id()));
    ids
}

/// In a freshly forked child: the child owns every handle in `value` now.
pub(crate) fn adopt(value: &impl Transfer) {
    value.each_handle(&mut |h| h.adopt());
}

impl sealed::Sealed for () {
    fn each_handle(&self, _: &mut dyn FnMut(&Handle)) {}
}

impl<T: sealed::Sealed> sealed::Sealed for Option<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        if let Some(inner) = self {
            inner.each_handle(f);
        }
    }
}

impl<T: sealed::Sealed> sealed::Sealed for Vec<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }
}

impl<T: sealed::Sealed, const N: usize> sealed::Sealed for [T; N] {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }
}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for Box<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        (**self).each_handle(f);
    }
}

macro_rules! tuple_transfer {
    ($($name:ident)+) => {
        impl<$($name: sealed::Sealed),+> sealed::Sealed for ($($name,)+) {
            #[allow(non_snake_case)]
            fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
                let ($($name,)+) = self;
                $($name.each_handle(f);)+
            }
        }
    };
}

tuple_transfer!(A);
tuple_transfer!(A B);
tuple_transfer!(A B C);
tuple_transfer!(A B C D);
tuple_transfer!(A B C D E);
tuple_transfer!(A B C D E F);
tuple_transfer!(A B C D E F G);
tuple_transfer!(A B C D E F G H);
