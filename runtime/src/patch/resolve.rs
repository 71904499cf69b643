//! `getaddrinfo`: the lookup runs on one of the hub's helper threads, so the hub never blocks
//! on DNS.

use std::ffi::{CStr, CString, c_char, c_int};

use libc::addrinfo;

use super::active;
use super::blocking_call::{guard, interrupted_errno};
use super::real::{self, errno, set_errno};
use crate::coroutine;
use crate::hub::try_hub;

/// A result list of getaddrinfo, freed unless handed to the caller.
struct AddrList(*mut addrinfo);

// SAFETY: the list is plain heap memory owned by this value; glibc's freeaddrinfo may run on
// any thread.
unsafe impl Send for AddrList {}

impl Drop for AddrList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a non-null list came from getaddrinfo and is freed once, here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// `getaddrinfo` inside a coroutine: copies its inputs and runs the real call on a helper thread
/// (glibc's resolver makes its own, unpatched, blocking calls). `None` outside a coroutine.
///
/// # Safety
/// The pointers are valid as for libc's getaddrinfo.
pub(super) unsafe fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Option<c_int> {
    if !active() || res.is_null() {
        return None;
    }
    // SAFETY: non-null strings are NUL-terminated (the caller's contract).
    let copy = |s: *const c_char| (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_owned());
    let (node, service) = (copy(node), copy(service));
    // SAFETY: a non-null `hints` points to a live addrinfo (the caller's contract).
    let hints = (!hints.is_null())
        .then(|| unsafe { *hints })
        .map(|h| (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol));
    Some(guard(libc::EAI_SYSTEM, || {
        let hub = try_hub().expect("inside a coroutine");
        let job = move || resolve(node, service, hints);
        match coroutine::without_unwinding(hub, || crate::spawn_blocking(job)) {
            Ok((rc, list, e)) => {
                let mut list = list;
                // SAFETY: `res` is a valid out-pointer (the caller's contract).
                unsafe { *res = std::mem::replace(&mut list.0, std::ptr::null_mut()) };
                if rc == libc::EAI_SYSTEM {
                    set_errno(e);
                }
                rc
            }
            Err(why) => {
                set_errno(interrupted_errno(why));
                libc::EAI_SYSTEM
            }
        }
    }))
}

type Hints = Option<(c_int, c_int, c_int, c_int)>;

/// On the helper thread: the real getaddrinfo over owned copies of the inputs.
fn resolve(
    node: Option<CString>,
    service: Option<CString>,
    hints: Hints,
) -> (c_int, AddrList, c_int) {
    // SAFETY: an all-zero addrinfo is the documented "no hints" value.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    if let Some((flags, family, socktype, protocol)) = hints {
        (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol) =
            (flags, family, socktype, protocol);
    }
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    let mut list = AddrList(std::ptr::null_mut());
    let hints_ptr = if hints.is_some() { &raw const h } else { std::ptr::null() };
    // SAFETY: the strings and hints are live for the call; `list.0` is a valid out-pointer.
    let rc = unsafe { real::getaddrinfo(ptr(&node), ptr(&service), hints_ptr, &mut list.0) };
    (rc, list, errno())
}
