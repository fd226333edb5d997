//! Refuses YAML texts whose flow nesting (`[[[…` / `{{{…`) is deep, before the YAML parser sees
//! them.
//!
//! libyaml, under serde_yaml, keeps a record per open flow collection and walks all of them for
//! every token, so its cost grows with the square of the nesting: a 200 KB upload of nested
//! `[` took 29 s of CPU (49 s in a debug build) before serde_yaml's own depth limit refused it.
//! [`flow_depth_bound`] reads the text once, with no recursion, and gives an upper bound on the
//! flow nesting libyaml will reach; a text over [`MAX_YAML_FLOW_DEPTH`] is refused at once.
//!
//! The bound must never be lower than libyaml's level, so the scan follows the YAML rules that
//! decide whether a bracket opens or closes a collection: brackets inside quoted scalars, block
//! scalars (`|`, `>`) and comments do not count, and in block context a bracket opens a
//! collection only where a value starts. Where it cannot tell, it counts the bracket.

/// The deepest flow nesting a pipeline file may have. Real pipelines use one or two levels
/// (`from: [a, b]`, `aggregations: { … }`).
pub const MAX_YAML_FLOW_DEPTH: usize = 64;

/// An upper bound on the deepest flow-collection nesting of `text`. Linear in its length.
pub fn flow_depth_bound(text: &str) -> usize {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut scan = Scan::default();
    let mut index = 0;
    while index < lines.len() {
        index = scan.line(&lines, index);
    }
    scan.deepest
}

/// What the last thing read was, to tell whether a quote or bracket starts a value.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// An indicator after which a value starts (`[`, `{`, `,`, `: `, `- `, `? `), or nothing.
    #[default]
    Indicator,
    /// Text of a plain scalar, which may run on to the next line.
    Plain,
    /// The end of a quoted scalar or a flow collection.
    Closed,
}

#[derive(Default)]
struct Scan {
    /// Open flow collections, as far as the scan can tell.
    depth: usize,
    deepest: usize,
    /// Inside a quoted scalar that runs on from an earlier line: its quote character.
    quote: Option<char>,
    last: Last,
    /// Set where the scan could misread what follows (a line that may continue a plain scalar
    /// starts with a quote or bracket): from there on every `[` and `{` counts and no closing
    /// bracket does, which can only over-count.
    pessimistic: bool,
}

fn is_document_marker(line: &str) -> bool {
    (line.starts_with("---") || line.starts_with("..."))
        && line[3..].chars().next().is_none_or(char::is_whitespace)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

impl Scan {
    fn open(&mut self) {
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
    }

    /// Scans `lines[index]` (and, for a block scalar, the lines it spans); returns the index of
    /// the next line to scan.
    fn line(&mut self, lines: &[&str], index: usize) -> usize {
        let line = lines[index].strip_suffix('\r').unwrap_or(lines[index]);
        let chars: Vec<char> = line.chars().collect();
        if self.pessimistic {
            for c in chars {
                if c == '[' || c == '{' {
                    self.open();
                }
            }
            return index + 1;
        }
        let mut at = 0;
        if is_document_marker(line) {
            // A document marker ends everything open (inside a quoted scalar it is an error
            // libyaml stops at); a value may follow it on the line.
            self.depth = 0;
            self.quote = None;
            self.last = Last::Indicator;
            at = 3;
        } else if self.depth == 0 && self.quote.is_none() {
            // Block context: a line starts a value, unless it continues a plain scalar. When
            // it might, and starts with something that would mean structure, give up reading.
            let first = line.trim_start().chars().next();
            if self.last == Last::Plain && matches!(first, Some('[' | '{' | '\'' | '"' | '|' | '>'))
            {
                self.pessimistic = true;
                return self.line(lines, index);
            }
            if first.is_some_and(|c| c != '#') {
                self.last = Last::Indicator;
            }
        }
        while at < chars.len() {
            if let Some(quote) = self.quote {
                at = self.skip_quoted(&chars, at, quote);
                continue;
            }
            let c = chars[at];
            let next = chars.get(at + 1).copied();
            let spaced = |c: Option<char>| c.is_none_or(char::is_whitespace);
            let after_space = at == 0 || chars[at - 1].is_whitespace();
            let value_start = self.last == Last::Indicator;
            match c {
                ' ' | '\t' => {}
                '#' if after_space => break,
                '[' | '{' if self.depth > 0 || value_start => {
                    self.open();
                    self.last = Last::Indicator;
                }
                ']' | '}' if self.depth > 0 => {
                    self.depth -= 1;
                    self.last = Last::Closed;
                }
                ',' if self.depth > 0 => self.last = Last::Indicator,
                ':' if self.depth > 0 || spaced(next) => self.last = Last::Indicator,
                '?' | '-' if value_start && spaced(next) => {}
                // An anchor or a tag before a value: the value still starts after it.
                '&' | '!' if value_start => {
                    while at + 1 < chars.len() && !chars[at + 1].is_whitespace() {
                        at += 1;
                    }
                }
                '\'' | '"' if value_start => {
                    self.quote = Some(c);
                    at = self.skip_quoted(&chars, at + 1, c);
                    continue;
                }
                '|' | '>' if self.depth == 0 && value_start => {
                    self.last = Last::Closed;
                    return block_scalar_end(lines, index);
                }
                _ => self.last = Last::Plain,
            }
            at += 1;
        }
        index + 1
    }

    /// Skips quoted text from `at`; returns where scanning goes on, with `self.quote` cleared
    /// when the closing quote was found on this line.
    fn skip_quoted(&mut self, chars: &[char], mut at: usize, quote: char) -> usize {
        while at < chars.len() {
            match chars[at] {
                '\\' if quote == '"' => at += 2,
                '\'' if quote == '\'' && chars.get(at + 1) == Some(&'\'') => at += 2,
                c if c == quote => {
                    self.quote = None;
                    self.last = Last::Closed;
                    return at + 1;
                }
                _ => at += 1,
            }
        }
        chars.len()
    }
}

/// The index of the first line after a block scalar whose indicator is on `lines[index]`: its
/// content is every following line that is blank or indented more than the indicator's line.
fn block_scalar_end(lines: &[&str], index: usize) -> usize {
    let parent = indent_of(lines[index]);
    let mut next = index + 1;
    while let Some(line) = lines.get(next) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let blank = line.trim().is_empty();
        if !blank && (indent_of(line) <= parent || is_document_marker(line)) {
            break;
        }
        next += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flow_nesting_in_both_contexts() {
        assert_eq!(flow_depth_bound("a: 1\nb: [x, y]\n"), 1);
        assert_eq!(flow_depth_bound("a: {b: [1, [2]], c: {d: e}}\n"), 3);
        assert_eq!(flow_depth_bound("- [[[]]]\n- {}\n"), 3);
        assert_eq!(
            flow_depth_bound(&format!(
                "a: {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )),
            100_000
        );
        // JSON is YAML: `:` needs no space inside flow collections.
        assert_eq!(flow_depth_bound(r#"{"a":[{"b":[1]}]}"#), 4);
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        assert_eq!(flow_depth_bound("filter: x[1] = 'a[b'\n"), 0);
        assert_eq!(flow_depth_bound("a: \"[[[\" # [[[\n"), 0);
        assert_eq!(flow_depth_bound("a: |\n  [[[[\n  ]\nb: 1\n"), 0);
        assert_eq!(flow_depth_bound("a: ['it''s ]', \"\\\"]\"]\n"), 1);
    }

    #[test]
    fn closing_brackets_that_are_not_closings_cannot_hide_real_nesting() {
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        // `]` inside a block scalar, whose content ends at the dedent.
        let text = format!("a: |\n  [ \"\n  ]]]]\nb: {deep}\nc: \"\n");
        assert!(flow_depth_bound(&text) >= 500);
        // A quote inside a block-context plain scalar opens nothing.
        let text = format!("a: x[ 'foo\nb: {deep} '\n");
        assert!(flow_depth_bound(&text) >= 500);
        // Quoted `]` inside a flow collection.
        let text = format!("a: [\"]]]]]]\", {deep}]\n");
        assert!(flow_depth_bound(&text) >= 501);
        // A quoted scalar over several lines, then a document marker.
        let text = format!("a: \"x\n  ]]]\n---\nb: {deep}\n");
        assert!(flow_depth_bound(&text) >= 500);
        // A plain scalar with a quote inside a flow collection does not start a string, on
        // its first line or the next.
        let text = format!("a: [a\"b, {deep}, \"]\n");
        assert!(flow_depth_bound(&text) >= 501);
        let text = format!("x: [a\n\" , {deep} , \"]\n");
        assert!(flow_depth_bound(&text) >= 501);
        // A line that may continue a plain scalar and starts with a quote.
        let text = format!("a: foo\n  \" \nb: {deep}\nc: \"\n");
        assert!(flow_depth_bound(&text) >= 500);
        let text = format!("a:\n  foo\n  [bar, ']'\nb: {deep}\n");
        assert!(flow_depth_bound(&text) >= 500);
        // Anchors and tags before a flow collection, and a value after a document marker.
        assert!(flow_depth_bound(&format!("a: &x !!seq {deep}\n")) >= 500);
        assert!(flow_depth_bound(&format!("--- {deep}\n")) >= 500);
        // A quoted scalar after `? ` inside a flow collection.
        let text = format!("a: [? \"]]]\" : {deep}]\n");
        assert!(flow_depth_bound(&text) >= 501);
    }
}
