//! The measured loop of the `patch_read` row, shared by the raw worker (plain libc in this
//! program, which has no patch) and the patched worker (`patch-worker/`, which includes this file
//! with `#[path]`): `read`s of one byte from a pipe that always has data, so no call blocks and
//! the figure is what one call costs. The pipe is made with `pipe(2)` and left blocking, as a
//! program that knows nothing of the patch would; it is refilled between timed stretches (the
//! refill is not timed). The figure is the fastest stretch of [`STRETCH`] calls: on a loaded
//! machine, the stretches some other process's burst lands in say nothing about the call.

use std::io;
use std::time::Instant;

/// Calls per timed stretch: a pipe's default capacity (64 KiB) holds one stretch's bytes.
const STRETCH: u64 = 1 << 16;

/// Times `n` one-byte `read`s on a ready pipe, in stretches of [`STRETCH`]; returns the
/// nanoseconds per call of the fastest stretch.
pub fn ns_per_read(n: u64) -> io::Result<f64> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [r, w] = fds;
    let chunk = vec![b'x'; STRETCH as usize];
    let (mut left, mut best) = (n, f64::INFINITY);
    let mut byte = 0u8;
    while left > 0 {
        // SAFETY: `chunk` is valid for reads of its length; `w` is our pipe's write end.
        let put = unsafe { libc::write(w, chunk.as_ptr().cast(), chunk.len()) };
        if put <= 0 {
            return Err(io::Error::last_os_error());
        }
        let stretch = left.min(put as u64);
        let t0 = Instant::now();
        for _ in 0..stretch {
            // SAFETY: `byte` is valid for a one-byte write; `r` is our pipe's read end.
            if unsafe { libc::read(r, (&raw mut byte).cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        best = best.min(t0.elapsed().as_nanos() as f64 / stretch as f64);
        // What this stretch left unread (when n ends mid-stretch) is drained untimed.
        drain(r, put as u64 - stretch)?;
        left -= stretch;
    }
    // SAFETY: both fds are ours and closed once.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    Ok(best)
}

fn drain(r: libc::c_int, mut bytes: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    while bytes > 0 {
        let want = buf.len().min(bytes as usize);
        // SAFETY: `buf` is valid for writes of `want` bytes.
        let got = unsafe { libc::read(r, buf.as_mut_ptr().cast(), want) };
        if got <= 0 {
            return Err(io::Error::last_os_error());
        }
        bytes -= got as u64;
    }
    Ok(())
}
