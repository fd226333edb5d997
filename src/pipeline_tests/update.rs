//! `floe test --update`: rewrites the `rows:` of expectations with the rows jobs produced.
//!
//! serde_yaml cannot write a document back with its comments, so the file is edited as text:
//! each rewritten `rows:` block (the key's line and the lines of its value) is replaced by the
//! new rows, one flow mapping per line, and every other byte of the file is kept, comments
//! included. Comments inside a rewritten `rows:` block are lost. The block is found by its key
//! path (`tests.<test>.expect.<job>.rows`) in block-style YAML; an expectation written in flow
//! style (`expect: {job: {rows: …}}`) cannot be rewritten and is reported.

use super::compare::{Cell, row_yaml};
use crate::pipeline::locate::locate;

/// New rows for one expectation.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub test: String,
    pub job: String,
    /// The columns to write, in order.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// `text` with each rewrite's `rows:` block replaced.
pub fn rewrite_expectations(text: &str, rewrites: &[Rewrite]) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut spans = Vec::new();
    for rewrite in rewrites {
        let path = ["tests", &rewrite.test, "expect", &rewrite.job, "rows"];
        let not_found = || {
            format!(
                "cannot find `rows:` of job `{}` in test `{}` as a block-style key (`rows:` on \
                 its own line under `expect:` → `{}:`); write the expectation that way to \
                 update it",
                rewrite.job, rewrite.test, rewrite.job
            )
        };
        let (line, column) = locate(text, &path).ok_or_else(not_found)?;
        let first = line - 1;
        let indent = column - 1;
        let key_line = lines.get(first).ok_or_else(not_found)?;
        let key_text = key_line.get(indent..).unwrap_or_default();
        if !["rows:", "\"rows\":", "'rows':"]
            .iter()
            .any(|key| key_text.starts_with(key))
        {
            return Err(not_found());
        }
        let last = block_end(&lines, first, indent);
        let pad = " ".repeat(indent);
        let mut replacement = String::new();
        if rewrite.rows.is_empty() {
            replacement.push_str(&format!("{pad}rows: []{newline}"));
        } else {
            replacement.push_str(&format!("{pad}rows:{newline}"));
            for row in &rewrite.rows {
                replacement.push_str(&format!(
                    "{pad}  - {}{newline}",
                    row_yaml(&rewrite.columns, row)
                ));
            }
        }
        // The last line of the file may have had no newline: neither has its replacement.
        if !lines[last].ends_with('\n') {
            replacement.truncate(replacement.len() - newline.len());
        }
        spans.push((first, last, replacement));
    }
    spans.sort_by_key(|(first, _, _)| *first);
    if spans.windows(2).any(|pair| pair[1].0 <= pair[0].1) {
        return Err("two expectations to rewrite share lines".to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut next = 0;
    for (first, last, replacement) in spans {
        out.extend(lines[next..first].iter().copied());
        out.push_str(&replacement);
        next = last + 1;
    }
    out.extend(lines[next..].iter().copied());
    Ok(out)
}

/// The index of the last line of the value of the key on line `first` at `indent`: following
/// lines indented deeper, or block sequence items at the key's indentation, with comments and
/// blank lines in between (but not after the last of them).
fn block_end(lines: &[&str], first: usize, indent: usize) -> usize {
    let mut last = first;
    for (at, line) in lines.iter().enumerate().skip(first + 1) {
        let trimmed = line.trim_start();
        let content = trimmed.trim_end();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let line_indent = line.len() - trimmed.len();
        let item = content == "-" || content.starts_with("- ");
        if line_indent > indent || (line_indent == indent && item) {
            last = at;
        } else {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
version: 1
pipeline: shop
tests:
  # the first test
  one:
    partition: 2024-01-03
    expect:
      daily:
        rows:
          - {n: 1}   # stale
          # inside
          - {n: 2}
        ordered: true   # kept
      hourly:
        rows: [{n: 9}]
  two:
    partition: 2024-01-03
    expect:
      daily:
        rows:
        - n: 7
      # a comment before the next key
    given: {}
";

    fn rewrite(test: &str, job: &str, values: &[i128]) -> Rewrite {
        Rewrite {
            test: test.to_owned(),
            job: job.to_owned(),
            columns: vec!["v".to_owned()],
            rows: values.iter().map(|v| vec![Cell::Int(*v)]).collect(),
        }
    }

    #[test]
    fn rewrites_only_the_rows_blocks() {
        let out = rewrite_expectations(
            TEXT,
            &[
                rewrite("one", "daily", &[3]),
                rewrite("one", "hourly", &[]),
                rewrite("two", "daily", &[4, 5]),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "\
version: 1
pipeline: shop
tests:
  # the first test
  one:
    partition: 2024-01-03
    expect:
      daily:
        rows:
          - {v: 3}
        ordered: true   # kept
      hourly:
        rows: []
  two:
    partition: 2024-01-03
    expect:
      daily:
        rows:
          - {v: 4}
          - {v: 5}
      # a comment before the next key
    given: {}
"
        );
    }

    #[test]
    fn refuses_what_it_cannot_find() {
        let err = rewrite_expectations(TEXT, &[rewrite("three", "daily", &[1])]).unwrap_err();
        assert!(err.contains("cannot find `rows:`"), "{err}");
        let flow = "tests:\n  one:\n    expect: {daily: {rows: []}}\n";
        assert!(rewrite_expectations(flow, &[rewrite("one", "daily", &[1])]).is_err());
    }
}
