//! check_example_output: does an example print what its `//!` header says it prints?
//!
//! Usage: `check_example_output EXAMPLE.rs OUTPUT` (OUTPUT: a file holding the example's stdout,
//! or `-` for stdin). Exit status 0 when every line matches the header's "Expected output" block
//! (placeholders: `{pid}`, `{port}`, `{n}`, `{...}`; see `examples::expected_output`), 1 with the
//! first difference and the whole output otherwise, 2 on a usage or header error. `.ci/run`
//! calls it after running each example.

use std::io::Read;
use std::process::ExitCode;

use examples::expected_output::{compare, expected_block};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source_path, output_path] = args.as_slice() else {
        eprintln!("usage: check_example_output EXAMPLE.rs OUTPUT (a file, or - for stdin)");
        return ExitCode::from(2);
    };
    let source = match std::fs::read_to_string(source_path) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("{source_path}: {err}");
            return ExitCode::from(2);
        }
    };
    let output = match read_output(output_path) {
        Ok(output) => output,
        Err(err) => {
            eprintln!("{output_path}: {err}");
            return ExitCode::from(2);
        }
    };
    let expected = match expected_block(&source) {
        Ok(expected) => expected,
        Err(err) => {
            eprintln!("{source_path}: {err}");
            return ExitCode::from(2);
        }
    };
    match compare(&expected, &output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(mismatch) => {
            eprintln!(
                "{source_path}: the output does not match the header's Expected output: {mismatch}"
            );
            eprintln!("the whole output:\n{output}");
            ExitCode::from(1)
        }
    }
}

fn read_output(path: &str) -> std::io::Result<String> {
    if path == "-" {
        let mut output = String::new();
        std::io::stdin().read_to_string(&mut output)?;
        Ok(output)
    } else {
        std::fs::read_to_string(path)
    }
}
