//! The `patch_read` and `patch_tcp` rows (issue 10): greenhub's patch against the plain call.
//! Their greenhub column runs `bench-patch-worker` (`bench/patch-worker/`, greenhub with its
//! `patch` feature), built on first use into this program's own target folder; the feature never
//! reaches this binary, so no other row runs patched. Their raw column is the unpatched yardstick:
//! libc's `read` in this program's raw worker, and greenhub's own `net::TcpStream` echo (the
//! `tcp` row's greenhub worker).

use crate::spec::Impl;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The command of a patch row's measurement, or `None` for the usual worker.
pub fn command(exe: &Path, bench: &str, imp: Impl) -> Option<Command> {
    match (bench, imp) {
        ("patch_read" | "patch_tcp", Impl::Greenhub) => {
            let mut c = Command::new(patched_worker(exe));
            c.arg(bench);
            Some(c)
        }
        ("patch_tcp", Impl::Raw) => {
            let mut c = Command::new(exe);
            c.args(["worker", "greenhub", "tcp"]);
            Some(c)
        }
        _ => None,
    }
}

/// The patched worker's path, built once per run (a no-op when it is up to date). A failed build
/// is reported here, and the measurements then fail to start it, which the report shows.
fn patched_worker(exe: &Path) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // This program is <target>/release/bench: build next to it.
            let release = exe.parent().expect("the program lives in a folder");
            let target = release.parent().unwrap_or(release);
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = Path::new(crate::BENCH_DIR).join("Cargo.toml");
            let status = Command::new(cargo)
                .args(["build", "--release", "-q", "-p", "bench-patch-worker", "--manifest-path"])
                .arg(&manifest)
                .arg("--target-dir")
                .arg(target)
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("bench: building bench-patch-worker failed: {s}"),
                Err(e) => eprintln!("bench: cannot run cargo to build bench-patch-worker: {e}"),
            }
            release.join("bench-patch-worker")
        })
        .clone()
}
