//! The "Expected output" block of an example's `//!` header, and whether a run matched it.
//!
//! CI runs every example and compares what it printed on stdout with the ```` ```text ```` block
//! that follows the words "Expected output" in its header, line by line, so the docs cannot
//! drift from the code. Everything in the block is literal except four placeholders:
//!
//! | placeholder | matches |
//! |---|---|
//! | `{pid}` | a process id: one or more digits |
//! | `{port}` | a port: one or more digits |
//! | `{n}` | a number: digits with optional `.` and `,`, and an optional leading sign |
//! | `{...}` | any text, possibly empty, up to the end of the line |
//!
//! Guaranteed: a line matches only if every literal character is there, in order, and every
//! placeholder covers text of its kind; the output must have exactly as many lines as the block.
//! Not checked: stderr.

use std::fmt;

/// One piece of an expected line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text that must appear as is.
    Literal(String),
    /// `{pid}` or `{port}`: one or more ASCII digits.
    Digits,
    /// `{n}`: an optional sign, then digits, `.` and `,`, with at least one digit.
    Number,
    /// `{...}`: anything up to the end of the line.
    Rest,
}

/// A placeholder's spelling and what it stands for.
const PLACEHOLDERS: [(&str, Piece); 4] = [
    ("{pid}", Piece::Digits),
    ("{port}", Piece::Digits),
    ("{n}", Piece::Number),
    ("{...}", Piece::Rest),
];

/// One line of an "Expected output" block, split into literals and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses one expected line: the four placeholders, everything else literal.
    pub fn parse(line: &str) -> Pattern {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = line;
        'outer: while let Some(c) = rest.chars().next() {
            for (spelling, piece) in &PLACEHOLDERS {
                if let Some(after) = rest.strip_prefix(spelling) {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece.clone());
                    rest = after;
                    continue 'outer;
                }
            }
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Pattern { pieces }
    }

    /// Whether `line` (one line of output, without its newline) matches this pattern.
    pub fn matches(&self, line: &str) -> bool {
        matches_from(&self.pieces, line)
    }
}

/// Matches `pieces` against all of `text`, backtracking over how much each placeholder takes
/// (so `{n}, ` matches `10000, ` although `,` may be part of a number).
fn matches_from(pieces: &[Piece], text: &str) -> bool {
    let Some((first, others)) = pieces.split_first() else {
        return text.is_empty();
    };
    match first {
        Piece::Literal(literal) => {
            text.strip_prefix(literal.as_str()).is_some_and(|after| matches_from(others, after))
        }
        Piece::Rest => (0..=text.len())
            .rev()
            .filter(|&end| text.is_char_boundary(end))
            .any(|end| matches_from(others, &text[end..])),
        Piece::Digits => {
            candidate_ends(text, is_digits).any(|end| matches_from(others, &text[end..]))
        }
        Piece::Number => {
            candidate_ends(text, is_number).any(|end| matches_from(others, &text[end..]))
        }
    }
}

/// Every end (longest first) of a prefix of `text` that `accept` takes; all are ASCII.
fn candidate_ends(text: &str, accept: fn(&str) -> bool) -> impl Iterator<Item = usize> + '_ {
    let run = text.bytes().take_while(|b| b.is_ascii_digit() || b".,+-".contains(b)).count();
    (1..=run).rev().filter(move |&end| accept(&text[..end]))
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn is_number(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
}

/// Why an example's header has no usable "Expected output" block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// No `//!` line mentions "Expected output".
    NoExpectedOutput,
    /// "Expected output" is not followed by a ```` ```text ```` fence inside the header.
    NoTextBlock,
    /// The ```` ```text ```` block is not closed inside the header.
    Unclosed,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::NoExpectedOutput => {
                "the `//!` header has no \"Expected output\" line; add one, followed by a ```text block of what the example prints"
            }
            HeaderError::NoTextBlock => {
                "\"Expected output\" is not followed by a ```text block in the `//!` header"
            }
            HeaderError::Unclosed => "the Expected output ```text block is not closed with ``` in the `//!` header",
        })
    }
}

impl std::error::Error for HeaderError {}

/// The expected lines of an example, taken from the `//!` header of its source.
pub fn expected_block(source: &str) -> Result<Vec<String>, HeaderError> {
    let header: Vec<&str> = source
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .map(|line| {
            let text = &line[3..];
            text.strip_prefix(' ').unwrap_or(text)
        })
        .collect();
    let start = header
        .iter()
        .position(|line| line.contains("Expected output"))
        .ok_or(HeaderError::NoExpectedOutput)?;
    let fence = start
        + header[start..]
            .iter()
            .position(|line| line.trim_end() == "```text")
            .ok_or(HeaderError::NoTextBlock)?;
    let body = &header[fence + 1..];
    let end = body.iter().position(|line| line.trim_end() == "```").ok_or(HeaderError::Unclosed)?;
    Ok(body[..end].iter().map(|line| line.to_string()).collect())
}

/// How a run's output differs from the expected block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Line `line` (1-based) differs.
    Line {
        /// 1-based line number.
        line: usize,
        /// The expected line, placeholders included.
        expected: String,
        /// What the example printed there.
        actual: String,
    },
    /// The output has a different number of lines.
    Length {
        /// Lines in the expected block.
        expected: usize,
        /// Lines the example printed.
        actual: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Line { line, expected, actual } => {
                write!(f, "line {line} differs:\n  expected: {expected}\n  printed:  {actual}")
            }
            Mismatch::Length { expected, actual } => {
                write!(f, "the header expects {expected} line(s), the example printed {actual}")
            }
        }
    }
}

/// Compares `output` with `expected`, line by line; the first difference, if any.
pub fn compare(expected: &[String], output: &str) -> Result<(), Mismatch> {
    let actual: Vec<&str> = output.lines().collect();
    for (index, (want, got)) in expected.iter().zip(&actual).enumerate() {
        if !Pattern::parse(want).matches(got) {
            return Err(Mismatch::Line {
                line: index + 1,
                expected: want.clone(),
                actual: got.to_string(),
            });
        }
    }
    if expected.len() != actual.len() {
        return Err(Mismatch::Length { expected: expected.len(), actual: actual.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, line: &str) -> bool {
        Pattern::parse(pattern).matches(line)
    }

    #[test]
    fn literal_text_must_match_exactly() {
        assert!(matches("all workers exited with 0", "all workers exited with 0"));
        assert!(!matches("all workers exited with 0", "all workers exited with 1"));
        assert!(!matches("exited", "exited "));
        assert!(!matches("exited ", "exited"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn pid_and_port_take_digits_only() {
        assert!(matches("started (pid {pid})", "started (pid 20138)"));
        assert!(!matches("started (pid {pid})", "started (pid )"));
        assert!(!matches("started (pid {pid})", "started (pid -1)"));
        assert!(!matches("port {port}", "port 80.5"));
        assert!(matches("pids {pid}, {pid}, each", "pids 20168, 20170, each"));
    }

    #[test]
    fn a_number_takes_a_sign_points_and_commas() {
        for number in ["0", "0.37", "-3", "+1.5", "38,842", "1,000,000.25"] {
            assert!(matches("in {n} s", &format!("in {number} s")), "{number}");
        }
        for not_a_number in ["", "-", ".", "1e3", "abc", "1 2"] {
            assert!(!matches("in {n} s", &format!("in {not_a_number} s")), "{not_a_number}");
        }
    }

    #[test]
    fn a_number_gives_back_a_comma_that_the_pattern_needs() {
        assert!(matches("{n}, then {n}.", "10000, then 5."));
        assert!(matches("[{n}, {n}]", "[1,5, 2]"));
    }

    #[test]
    fn the_rest_placeholder_takes_anything_to_the_end_of_the_line() {
        assert!(matches("server: {...}", "server: whatever it says (1 2 3)"));
        assert!(matches("server: {...}", "server: "));
        assert!(!matches("server: {...}", "client: x"));
        assert!(matches("a {...} z", "a b c z"));
    }

    #[test]
    fn unknown_braces_are_literal() {
        assert!(matches("{x} {n", "{x} {n"));
        assert!(!matches("{x}", "5"));
    }

    const SOURCE: &str = "//! title\n//!\n//! Expected output (varies):\n//! ```text\n//! a {n}\n//!\n//!   b\n//! ```\n//! after\n\nfn main() {}\n";

    #[test]
    fn the_block_is_read_from_the_header() {
        assert_eq!(expected_block(SOURCE).unwrap(), ["a {n}", "", "  b"]);
    }

    #[test]
    fn a_header_without_a_block_is_an_error() {
        assert_eq!(
            expected_block("//! no block\nfn main() {}"),
            Err(HeaderError::NoExpectedOutput)
        );
        assert_eq!(
            expected_block("//! Expected output:\n//! none\n"),
            Err(HeaderError::NoTextBlock)
        );
        assert_eq!(
            expected_block("//! Expected output:\n//! ```text\n//! a\n"),
            Err(HeaderError::Unclosed)
        );
        // A block after the header (in code) does not count.
        assert_eq!(
            expected_block("//! Expected output:\nfn main() {}\n//! ```text\n//! a\n//! ```\n"),
            Err(HeaderError::NoTextBlock)
        );
    }

    #[test]
    fn output_is_compared_line_by_line_and_by_length() {
        let expected = expected_block(SOURCE).unwrap();
        assert_eq!(compare(&expected, "a 1.5\n\n  b\n"), Ok(()));
        assert_eq!(
            compare(&expected, "a x\n\n  b\n"),
            Err(Mismatch::Line { line: 1, expected: "a {n}".into(), actual: "a x".into() })
        );
        assert_eq!(
            compare(&expected, "a 1\n\n  b\nextra\n"),
            Err(Mismatch::Length { expected: 3, actual: 4 })
        );
        assert_eq!(compare(&expected, "a 1\n"), Err(Mismatch::Length { expected: 3, actual: 1 }));
    }
}
