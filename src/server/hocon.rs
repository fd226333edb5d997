//! HOCON → JSON for job configs posted to the spark-jobserver compatible API.
//!
//! spark-jobserver clients post job configuration either as JSON or as HOCON, Typesafe Config's
//! `key = value` superset of JSON. This module owns the subset of HOCON those clients use
//! (<https://github.com/lightbend/config/blob/main/HOCON.md>) and turns it into a
//! [`serde_json::Value`]:
//!
//! - all of JSON, parsed to the same value serde_json produces;
//! - optional root braces, `=` / `:` / `key { ... }` fields separated by commas or newlines,
//!   trailing commas;
//! - dotted key paths (`a.b.c = 1`), quoted keys (`"a.b" = 1` is one key), and HOCON's
//!   duplicate-key rule: two objects merge, otherwise the later value wins;
//! - `+=` array append;
//! - unquoted strings and value concatenation (`a = hello world`, `a = 10 secs`);
//! - `"""triple-quoted"""` raw strings, `#` and `//` comments.
//!
//! Substitutions (`${...}`, `${?...}`) and `include` are rejected with an error naming them:
//! resolving them needs an environment and a filesystem that a posted config must not reach.
//! Every error carries the 1-based line and column of the offending character, and repeats
//! at most [`ECHO_CHARS`] characters of any token it names (a key, a number), so a 3 MB key
//! makes a short error, not a 6 MB one.

use serde_json::{Map, Number, Value};

/// Deep enough for any real config, shallow enough that the recursive descent (and dropping the
/// resulting `Value`) cannot exhaust a thread's stack.
const MAX_DEPTH: usize = 128;

/// The most characters of one token an error message repeats.
const ECHO_CHARS: usize = 80;

/// `token` as an error message repeats it: whole up to [`ECHO_CHARS`] characters, else its
/// first ones and `…`.
fn echo(token: &str) -> String {
    match token.char_indices().nth(ECHO_CHARS) {
        None => token.to_owned(),
        Some((end, _)) => format!("{}…", &token[..end]),
    }
}

/// A parse error at a 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct HoconError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a HOCON (or JSON) document. The root is an object unless the document is an array;
/// an empty or comment-only document is `{}`.
pub fn parse(text: &str) -> Result<Value, HoconError> {
    Parser {
        chars: text.chars().collect(),
        pos: 0,
    }
    .document()
}

/// HOCON reserves these: they can appear in neither unquoted strings nor unquoted keys.
fn is_forbidden(c: char) -> bool {
    matches!(
        c,
        '$' | '"'
            | '{'
            | '}'
            | '['
            | ']'
            | ':'
            | '='
            | ','
            | '+'
            | '#'
            | '`'
            | '^'
            | '?'
            | '!'
            | '@'
            | '*'
            | '&'
            | '\\'
    )
}

/// Newlines are separators, so they are not whitespace here; a BOM is.
fn is_inline_ws(c: char) -> bool {
    c != '\n' && (c.is_whitespace() || c == '\u{feff}')
}

fn describe(c: Option<char>) -> String {
    match c {
        None => "end of input".to_owned(),
        Some('\n') => "newline".to_owned(),
        Some(' ') => "space".to_owned(),
        Some('\t') => "tab".to_owned(),
        Some('`') => "'`'".to_owned(),
        Some(c) if c.is_control() || c.is_whitespace() || c == '\u{feff}' => {
            format!("U+{:04X}", u32::from(c))
        }
        Some(c) => format!("`{c}`"),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// HOCON's duplicate-key rule: objects merge key by key, anything else is replaced.
fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(new)) => merge(existing, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Sets `path` in `map` as if `path[0] { path[1] { ... = value } }` had been written, so dotted
/// keys merge with earlier fields. On a failed `+=` returns the kind of the value in the way.
fn insert(
    map: &mut Map<String, Value>,
    path: &[String],
    value: Value,
    append: bool,
) -> Result<(), &'static str> {
    match path {
        [] => Ok(()),
        [key] if append => match map.get_mut(key) {
            Some(Value::Array(items)) => {
                items.push(value);
                Ok(())
            }
            Some(other) => Err(kind(other)),
            None => {
                map.insert(key.clone(), Value::Array(vec![value]));
                Ok(())
            }
        },
        [key] => {
            match (map.get_mut(key), value) {
                (Some(Value::Object(existing)), Value::Object(new)) => merge(existing, new),
                (_, value) => {
                    map.insert(key.clone(), value);
                }
            }
            Ok(())
        }
        [key, rest @ ..] => match map.get_mut(key) {
            Some(Value::Object(child)) => insert(child, rest, value, append),
            _ => {
                let mut child = Map::new();
                insert(&mut child, rest, value, append)?;
                map.insert(key.clone(), Value::Object(child));
                Ok(())
            }
        },
    }
}

/// One token of a simple value. A lone token keeps its JSON type; several concatenate into a
/// string, which is why numbers keep their source text.
enum Token {
    Quoted(String),
    Number(String),
    Unquoted(String),
}

impl Token {
    fn into_text(self) -> String {
        match self {
            Token::Quoted(text) | Token::Number(text) | Token::Unquoted(text) => text,
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn starts_with(&self, text: &str) -> bool {
        self.starts_with_at(self.pos, text)
    }

    fn starts_with_at(&self, index: usize, text: &str) -> bool {
        text.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(index + i) == Some(&c))
    }

    fn at_comment(&self) -> bool {
        self.peek() == Some('#') || self.starts_with("//")
    }

    fn location(&self, index: usize) -> (usize, usize) {
        let before = &self.chars[..index.min(self.chars.len())];
        let line = before.iter().filter(|&&c| c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        (line, column)
    }

    fn location_text(&self, index: usize) -> String {
        let (line, column) = self.location(index);
        format!("line {line}, column {column}")
    }

    fn error_at(&self, index: usize, message: impl Into<String>) -> HoconError {
        let (line, column) = self.location(index);
        HoconError {
            line,
            column,
            message: message.into(),
        }
    }

    fn error_here(&self, message: impl Into<String>) -> HoconError {
        self.error_at(self.pos, message)
    }

    fn check_depth(&self, depth: usize) -> Result<(), HoconError> {
        if depth > MAX_DEPTH {
            return Err(self.error_here(format!(
                "nesting deeper than {MAX_DEPTH} levels is not supported"
            )));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_inline_ws) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and comments up to, not including, the next newline.
    fn skip_inline(&mut self) {
        loop {
            self.skip_ws();
            if !self.at_comment() {
                return;
            }
            while self.peek().is_some_and(|c| c != '\n') {
                self.pos += 1;
            }
        }
    }

    fn skip_blank(&mut self) {
        loop {
            self.skip_inline();
            if self.peek() != Some('\n') {
                return;
            }
            self.pos += 1;
        }
    }

    /// Consumes what may separate two fields or array elements (newlines, at most one comma);
    /// false when there was none.
    fn separator(&mut self) -> bool {
        self.skip_inline();
        let mut found = false;
        if self.peek() == Some('\n') {
            found = true;
            self.skip_blank();
        }
        if self.peek() == Some(',') {
            self.pos += 1;
            found = true;
        }
        found
    }

    fn document(&mut self) -> Result<Value, HoconError> {
        self.skip_blank();
        let (value, what) = match self.peek() {
            Some('[') => (Value::Array(self.array(1)?), "array"),
            Some('{') => (Value::Object(self.object(1)?), "object"),
            _ => return self.fields(1, None).map(Value::Object),
        };
        self.skip_blank();
        match self.peek() {
            None => Ok(value),
            c => Err(self.error_here(format!(
                "expected end of input after the root {what}, found {}",
                describe(c)
            ))),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Map<String, Value>, HoconError> {
        self.check_depth(depth)?;
        let open = self.pos;
        self.pos += 1;
        self.fields(depth, Some(open))
    }

    /// The fields of an object at `depth`: up to the `}` matching `open`, or to the end of input
    /// for a root without braces.
    fn fields(
        &mut self,
        depth: usize,
        open: Option<usize>,
    ) -> Result<Map<String, Value>, HoconError> {
        let mut map = Map::new();
        let expected_key = if open.is_some() {
            "a key or `}`"
        } else {
            "a key"
        };
        loop {
            self.skip_blank();
            match (self.peek(), open) {
                (None, None) => return Ok(map),
                (None, Some(open)) => {
                    return Err(self.error_here(format!(
                        "expected `}}` to close the object opened at {}, found end of input",
                        self.location_text(open)
                    )));
                }
                (Some('}'), Some(_)) => {
                    self.pos += 1;
                    return Ok(map);
                }
                _ => {}
            }
            let name = self.field(&mut map, depth, expected_key)?;
            let separated = match (self.separator(), self.peek(), open) {
                (true, ..) | (false, None, None) | (false, Some('}'), Some(_)) => true,
                (false, ..) => false,
            };
            if !separated {
                let expected = if open.is_some() {
                    "`,`, newline or `}`"
                } else {
                    "`,` or newline"
                };
                return Err(self.error_here(format!(
                    "expected {expected} after the value of `{name}`, found {}",
                    describe(self.peek())
                )));
            }
        }
    }

    /// Parses one `key = value` (or `key : value`, `key += value`, `key { ... }`) into `map`;
    /// returns the key as messages show it (see [`echo`]).
    fn field(
        &mut self,
        map: &mut Map<String, Value>,
        depth: usize,
        expected_key: &str,
    ) -> Result<String, HoconError> {
        let key_start = self.pos;
        let path = self.key(expected_key)?;
        let name = echo(&path.join("."));
        // The path's own segments become nested objects, so they count towards the depth.
        if depth + path.len() - 1 > MAX_DEPTH {
            return Err(self.error_at(
                key_start,
                format!(
                    "key `{name}` nests deeper than {MAX_DEPTH} levels, which is not supported"
                ),
            ));
        }
        let value_depth = depth + path.len();
        self.skip_inline();
        let op = self.pos;
        let (value, append) = match self.peek() {
            Some(sep @ ('=' | ':')) => {
                self.pos += 1;
                self.skip_blank();
                let value = self.value(value_depth, &format!("a value after `{sep}`"))?;
                (value, false)
            }
            Some('+') if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                self.skip_blank();
                (self.value(value_depth, "a value after `+=`")?, true)
            }
            Some('{') => (self.value(value_depth, "a value")?, false),
            c => {
                return Err(self.error_here(format!(
                    "expected `=`, `:` or `{{` after key `{name}`, found {}",
                    describe(c)
                )));
            }
        };
        insert(map, &path, value, append).map_err(|existing| {
            self.error_at(
                op,
                format!("cannot append to `{name}` with `+=`: it holds {existing}, not an array"),
            )
        })?;
        Ok(name)
    }

    /// Whether the character here belongs to an unquoted string or key segment; `dot` says
    /// whether `.` does, as it does in values but separates the segments of a key.
    fn unquoted_char_here(&self, dot: bool) -> bool {
        match self.peek() {
            None | Some('\n') => false,
            Some('.') => dot,
            Some('/') => self.peek_at(1) != Some('/'),
            Some(c) => !is_forbidden(c) && !is_inline_ws(c),
        }
    }

    fn key(&mut self, expected: &str) -> Result<Vec<String>, HoconError> {
        let start = self.pos;
        let mut path = Vec::new();
        let mut quoted_any = false;
        loop {
            if self.starts_with("\"\"\"") {
                return Err(self.error_here("a triple-quoted string cannot be a key"));
            } else if self.peek() == Some('"') {
                quoted_any = true;
                path.push(self.quoted_string()?);
            } else if self.unquoted_char_here(false) {
                let segment_start = self.pos;
                while self.unquoted_char_here(false) {
                    self.pos += 1;
                }
                path.push(self.chars[segment_start..self.pos].iter().collect());
            } else {
                let expected = if path.is_empty() {
                    expected
                } else {
                    "a key segment after `.`"
                };
                return Err(self.error_here(format!(
                    "expected {expected}, found {}",
                    describe(self.peek())
                )));
            }
            if self.peek() != Some('.') {
                break;
            }
            self.pos += 1;
        }
        if !quoted_any && path == ["include"] && self.include_follows() {
            return Err(self.error_at(start, "`include` is not supported"));
        }
        Ok(path)
    }

    /// After a bare `include` key: does an include target follow rather than a separator?
    fn include_follows(&self) -> bool {
        let mut at = self.pos;
        while self.chars.get(at).is_some_and(|&c| is_inline_ws(c)) {
            at += 1;
        }
        ["\"", "file(", "url(", "classpath(", "required("]
            .iter()
            .any(|target| self.starts_with_at(at, target))
    }

    /// A field value or array element; `expected` names what was expected, for messages.
    fn value(&mut self, depth: usize, expected: &str) -> Result<Value, HoconError> {
        match self.peek() {
            Some('{') => {
                let mut object = self.object(depth)?;
                // `a = { x = 1 } { y = 2 }` concatenates by merging, as duplicate keys do.
                loop {
                    self.skip_ws();
                    if self.peek() != Some('{') {
                        return Ok(Value::Object(object));
                    }
                    let next = self.object(depth)?;
                    merge(&mut object, next);
                }
            }
            Some('[') => {
                let mut array = self.array(depth)?;
                loop {
                    self.skip_ws();
                    if self.peek() != Some('[') {
                        return Ok(Value::Array(array));
                    }
                    let next = self.array(depth)?;
                    array.extend(next);
                }
            }
            _ => self.simple_value(expected),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Value>, HoconError> {
        self.check_depth(depth)?;
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => {
                    return Err(self.error_here(format!(
                        "expected `]` to close the array opened at {}, found end of input",
                        self.location_text(open)
                    )));
                }
                Some(']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {}
            }
            items.push(self.value(depth + 1, "a value or `]`")?);
            if !self.separator() && !matches!(self.peek(), None | Some(']')) {
                return Err(self.error_here(format!(
                    "expected `,`, newline or `]` after an array element, found {}",
                    describe(self.peek())
                )));
            }
        }
    }

    /// Where a simple value stops. An opening bracket ends it too, so that the caller reports a
    /// missing separator instead of a bad character in a string.
    fn at_value_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some('\n' | ',' | '}' | ']' | '#' | '{' | '[')
        ) || self.starts_with("//")
    }

    /// Strings, numbers, booleans, null, and concatenations of them on one line.
    fn simple_value(&mut self, expected: &str) -> Result<Value, HoconError> {
        let start = self.pos;
        let first = self.simple_token(Some(expected))?;
        let mut ws_start = self.pos;
        self.skip_ws();
        if self.at_value_end() {
            return match first {
                Token::Quoted(text) => Ok(Value::String(text)),
                Token::Number(text) => serde_json::from_str::<Number>(&text)
                    .map(Value::Number)
                    .map_err(|_| {
                        self.error_at(start, format!("number `{}` is out of range", echo(&text)))
                    }),
                Token::Unquoted(text) => Ok(match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => Value::String(text),
                }),
            };
        }
        // Concatenation keeps the whitespace between tokens and drops the trailing run.
        let mut text = first.into_text();
        loop {
            let gap: String = self.chars[ws_start..self.pos].iter().collect();
            let token = self.simple_token(None)?;
            text.push_str(&gap);
            text.push_str(&token.into_text());
            ws_start = self.pos;
            self.skip_ws();
            if self.at_value_end() {
                return Ok(Value::String(text));
            }
        }
    }

    /// One quoted string, number or unquoted run. `expected` is `None` inside a concatenation,
    /// where a reserved character is a mistake in the string rather than a missing value.
    fn simple_token(&mut self, expected: Option<&str>) -> Result<Token, HoconError> {
        if self.starts_with("\"\"\"") {
            return self.triple_quoted().map(Token::Quoted);
        }
        if self.peek() == Some('"') {
            return self.quoted_string().map(Token::Quoted);
        }
        let start = self.pos;
        // Numbers are scanned first because an exponent may hold `+`, which unquoted text may not.
        self.pos += self.number_len();
        let number_end = self.pos;
        while self.unquoted_char_here(true) {
            self.pos += 1;
        }
        if self.pos > start {
            let text: String = self.chars[start..self.pos].iter().collect();
            return Ok(if number_end == self.pos {
                Token::Number(text)
            } else {
                Token::Unquoted(text)
            });
        }
        Err(self.bad_value_start(expected))
    }

    fn bad_value_start(&self, expected: Option<&str>) -> HoconError {
        if self.starts_with("${?") {
            return self.error_here("optional substitutions (`${?...}`) are not supported");
        }
        if self.starts_with("${") {
            return self.error_here("substitutions (`${...}`) are not supported");
        }
        let found = describe(self.peek());
        let message = match (expected, self.peek()) {
            (Some(expected), None | Some('\n' | ',' | '}' | ']' | '#' | '/' | '=' | ':')) => {
                format!("expected {expected}, found {found}")
            }
            (_, Some(_)) => {
                format!(
                    "{found} is not allowed in an unquoted string; put the value in double quotes"
                )
            }
            (None, None) => format!("expected a value, found {found}"),
        };
        self.error_here(message)
    }

    /// Length of the longest JSON number starting here, 0 if there is none.
    fn number_len(&self) -> usize {
        let digit = |i: usize| self.peek_at(i).is_some_and(|c| c.is_ascii_digit());
        let mut i = usize::from(self.peek() == Some('-'));
        match self.peek_at(i) {
            Some('0') => i += 1,
            Some('1'..='9') => {
                while digit(i) {
                    i += 1;
                }
            }
            _ => return 0,
        }
        if self.peek_at(i) == Some('.') && digit(i + 1) {
            i += 1;
            while digit(i) {
                i += 1;
            }
        }
        if matches!(self.peek_at(i), Some('e' | 'E')) {
            let mut j = i + 1;
            if matches!(self.peek_at(j), Some('+' | '-')) {
                j += 1;
            }
            if digit(j) {
                while digit(j) {
                    j += 1;
                }
                i = j;
            }
        }
        i
    }

    fn unterminated(&self, open: usize) -> HoconError {
        self.error_here(format!(
            "unterminated string starting at {}",
            self.location_text(open)
        ))
    }

    /// A JSON string. A raw newline ends it as unterminated: only triple quotes span lines.
    fn quoted_string(&mut self) -> Result<String, HoconError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => return Err(self.unterminated(open)),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => out.push(self.escape(open)?),
                Some(c) if u32::from(c) < 0x20 => {
                    return Err(self.error_here(format!(
                        "control character U+{:04X} must be escaped in a quoted string",
                        u32::from(c)
                    )));
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
    }

    /// The escape starting at the backslash here.
    fn escape(&mut self, open: usize) -> Result<char, HoconError> {
        let backslash = self.pos;
        let Some(c) = self.peek_at(1) else {
            self.pos += 1;
            return Err(self.unterminated(open));
        };
        self.pos += 2;
        let simple = match c {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.unicode_escape(backslash),
            other => {
                return Err(self.error_at(
                    backslash,
                    format!(
                        "invalid escape in a quoted string: `\\` followed by {}",
                        describe(Some(other))
                    ),
                ));
            }
        };
        Ok(simple)
    }

    /// `\uXXXX` (the `\u` already consumed), pairing surrogates as JSON requires.
    fn unicode_escape(&mut self, escape_start: usize) -> Result<char, HoconError> {
        let high = self.hex4()?;
        let code = match high {
            0xD800..=0xDBFF => {
                if !self.starts_with("\\u") {
                    return Err(self.error_at(
                        escape_start,
                        format!("unpaired surrogate `\\u{high:04X}` in a unicode escape"),
                    ));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error_at(
                        escape_start,
                        format!("unpaired surrogate `\\u{high:04X}` in a unicode escape"),
                    ));
                }
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(self.error_at(
                    escape_start,
                    format!("unpaired surrogate `\\u{high:04X}` in a unicode escape"),
                ));
            }
            _ => high,
        };
        char::from_u32(code).ok_or_else(|| {
            self.error_at(escape_start, format!("invalid unicode escape U+{code:X}"))
        })
    }

    fn hex4(&mut self) -> Result<u32, HoconError> {
        let mut code = 0;
        for _ in 0..4 {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                return Err(self.error_here(format!(
                    "expected 4 hex digits after `\\u`, found {}",
                    describe(self.peek())
                )));
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    /// `"""raw"""`: no escapes, newlines kept. Per HOCON, quotes beyond the closing three are
    /// content, so `""""a""""` is `"a"`.
    fn triple_quoted(&mut self) -> Result<String, HoconError> {
        let open = self.pos;
        self.pos += 3;
        let content_start = self.pos;
        loop {
            if self.starts_with("\"\"\"") {
                let mut end = self.pos + 3;
                while self.chars.get(end) == Some(&'"') {
                    end += 1;
                }
                let text = self.chars[content_start..end - 3].iter().collect();
                self.pos = end;
                return Ok(text);
            }
            if self.peek().is_none() {
                return Err(self.error_here(format!(
                    "unterminated triple-quoted string starting at {}",
                    self.location_text(open)
                )));
            }
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests;
