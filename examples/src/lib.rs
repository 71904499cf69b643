//! Examples for greenhub: see `examples/`. The library holds what CI needs to check them:
//! [`expected_output`] compares an example's output with the "Expected output" block of its
//! `//!` header (the `check_example_output` binary runs it from `.ci/run`). It also holds what
//! more than one program shares: [`http`], the HTTP/1.1 wire code of `prefork_server` and of the
//! benchmark's HTTP rows.

pub mod expected_output;
pub mod http;

#[cfg(test)]
mod registered {
    use std::path::Path;

    use crate::expected_output::expected_block;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// The `path = "..."` of every `[[example]]` in a manifest.
    fn example_paths(manifest: &Path) -> Vec<String> {
        read(manifest)
            .lines()
            .filter_map(|line| line.strip_prefix("path = \"")?.strip_suffix('"').map(String::from))
            .collect()
    }

    #[test]
    fn every_example_is_registered_and_has_an_expected_output_block() {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut registered: Vec<_> = example_paths(&crate_dir.join("Cargo.toml"))
            .iter()
            .map(|path| crate_dir.join(path))
            .collect();
        let patch_dir = crate_dir.join("../tests-patch");
        registered
            .extend(example_paths(&patch_dir.join("Cargo.toml")).iter().map(|p| patch_dir.join(p)));
        let registered: Vec<_> = registered.iter().map(|p| p.canonicalize().unwrap()).collect();
        for entry in std::fs::read_dir(crate_dir.join("examples")).unwrap() {
            let path = entry.unwrap().path().canonicalize().unwrap();
            if path.is_dir() {
                continue; // modules shared by several examples (`common/`)
            }
            assert!(
                registered.contains(&path),
                "{} is not an [[example]] of examples/Cargo.toml (or tests-patch/Cargo.toml), so CI never runs it",
                path.display()
            );
        }
        for path in &registered {
            let block = expected_block(&read(path))
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(!block.is_empty(), "{}: the Expected output block is empty", path.display());
        }
    }
}
