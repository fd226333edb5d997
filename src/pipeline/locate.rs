//! Finds where a key path (`jobs.top_cities.from`) sits in a YAML text.
//!
//! serde_yaml reports positions for syntax and type errors only; semantic errors found after
//! parsing (an unknown upstream, a cycle) would otherwise have no line. Pipeline files are
//! block-style YAML, so following indentation is enough to find a key; when it is not (flow
//! style, anchors), the error is still reported, just without a position.

/// 1-based (line, column) of the last key of `path`, or of the deepest prefix that exists.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    // Stack of (indent, key) for the mapping keys enclosing the current line.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, (usize, usize))> = None;
    for (line_index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some(key) = mapping_key(trimmed) else {
            continue;
        };
        while stack.last().is_some_and(|(depth, _)| *depth >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let matched = stack
            .iter()
            .zip(path)
            .take_while(|((_, key), wanted)| key == *wanted)
            .count();
        if matched == stack.len() && matched > best.map_or(0, |(depth, _)| depth) {
            best = Some((matched, (line_index + 1, indent + 1)));
            if matched == path.len() {
                break;
            }
        }
    }
    best.map(|(_, position)| position)
}

/// 1-based (line, column) of item `index` (0-based) of the block sequence under `path`
/// (`checks:` followed by `- …` lines); the key's own position when the items cannot be
/// followed (flow style, fewer items).
pub fn locate_item(text: &str, path: &[&str], index: usize) -> Option<(usize, usize)> {
    let (key_line, key_column) = locate(text, path)?;
    let key_indent = key_column - 1;
    let mut item_indent = None;
    let mut seen = 0;
    for (line_index, line) in text.lines().enumerate().skip(key_line) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent < key_indent || (indent == key_indent && !trimmed.starts_with('-')) {
            break;
        }
        if !trimmed.starts_with('-') || *item_indent.get_or_insert(indent) != indent {
            continue;
        }
        if seen == index {
            return Some((line_index + 1, indent + 1));
        }
        seen += 1;
    }
    Some((key_line, key_column))
}

/// The key of a `key: value` or `key:` line, unquoted.
fn mapping_key(trimmed: &str) -> Option<String> {
    if trimmed.starts_with('-') {
        return None;
    }
    let (key, _) = if let Some(rest) = trimmed.strip_prefix('"') {
        let end = rest.find('"')?;
        (&rest[..end], &rest[end + 1..])
    } else if let Some(rest) = trimmed.strip_prefix('\'') {
        let end = rest.find('\'')?;
        (&rest[..end], &rest[end + 1..])
    } else {
        let colon = trimmed
            .find(": ")
            .or_else(|| trimmed.strip_suffix(':').map(str::len))?;
        (&trimmed[..colon], &trimmed[colon..])
    };
    Some(key.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::locate;

    const TEXT: &str = "version: 1\nname: shop\njobs:\n  # a comment\n  hourly:\n    grain: hourly\n    from: events\n  daily:\n    grain: daily\n    from: [hourly]\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(locate(TEXT, &["name"]), Some((2, 1)));
        assert_eq!(locate(TEXT, &["jobs", "hourly"]), Some((5, 3)));
        assert_eq!(locate(TEXT, &["jobs", "daily", "from"]), Some((10, 5)));
    }

    #[test]
    fn finds_the_items_of_a_block_sequence() {
        let text = "jobs:\n  a:\n    checks:\n      - not_null: x\n        severity: warn\n      - unique: y\n    grain: daily\n";
        assert_eq!(
            super::locate_item(text, &["jobs", "a", "checks"], 0),
            Some((4, 7))
        );
        assert_eq!(
            super::locate_item(text, &["jobs", "a", "checks"], 1),
            Some((6, 7))
        );
        // No third item: the key itself.
        assert_eq!(
            super::locate_item(text, &["jobs", "a", "checks"], 2),
            Some((3, 5))
        );
    }

    #[test]
    fn falls_back_to_the_deepest_existing_prefix() {
        assert_eq!(locate(TEXT, &["jobs", "daily", "filter"]), Some((8, 3)));
        assert_eq!(locate(TEXT, &["sources"]), None);
    }
}
