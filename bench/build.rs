//! Records the compiler's version for the report.
fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-V").output();
    let version = out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = version.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={}", version.trim_start_matches("rustc "));
    println!("cargo:rerun-if-changed=build.rs");
}
