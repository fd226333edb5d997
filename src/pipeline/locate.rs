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
    fn falls_back_to_the_deepest_existing_prefix() {
        assert_eq!(locate(TEXT, &["jobs", "daily", "filter"]), Some((8, 3)));
        assert_eq!(locate(TEXT, &["sources"]), None);
    }
}
