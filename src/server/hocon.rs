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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        match parse(text) {
            Ok(value) => value,
            Err(err) => panic!("{text:?} failed: {err}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(value) => panic!("{text:?} parsed to {value}"),
            Err(err) => err.to_string(),
        }
    }

    fn same_as_serde(text: &str) {
        let expected: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(text), expected, "{text}");
    }

    #[test]
    fn json_documents_parse_like_serde_json() {
        same_as_serde("{}");
        same_as_serde("[]");
        same_as_serde(r#"{"a": 1, "b": [true, false, null], "c": {"d": "e"}}"#);
        same_as_serde(r#"[1, -2, 3.5, -0.25, 1e10, 2E-3, 1.5e+2, 0, -0]"#);
        same_as_serde(r#"[18446744073709551615, -9223372036854775808, 123456789012345678901234]"#);
        same_as_serde(r#"{"s": "q\"b\\s\/b\bf\fn\nr\rt\t u\u00e9 \ud83d\ude00 \u0000"}"#);
        same_as_serde(r#"{"a.b": {"": "empty key"}, "ünï": "çødé 😀"}"#);
        same_as_serde("{\n  \"a\":\n    1,\n  \"b\" : [\n    1,\n    2\n  ]\n}\n");
        same_as_serde("[[[[]]], {}, [{}], \"#not a comment\", \"// nor this\"]");
    }

    #[test]
    fn spark_jobserver_examples() {
        assert_eq!(
            ok(r#"input.string = "a b c a b see""#),
            json!({"input": {"string": "a b c a b see"}})
        );
        let config = r#"
spark.context-settings {
  num-cpu-cores = 2
  memory-per-node = 512m
}
query = "SELECT 1"
partition = "2024-01-01T00:00:00Z"
force = true
"#;
        assert_eq!(
            ok(config),
            json!({
                "spark": {"context-settings": {"num-cpu-cores": 2, "memory-per-node": "512m"}},
                "query": "SELECT 1",
                "partition": "2024-01-01T00:00:00Z",
                "force": true
            })
        );
        let config = r#"input { source = events, app = shop, from = "2024-01-01", to = "2024-01-02" }
keys = [category, city]"#;
        assert_eq!(
            ok(config),
            json!({
                "input": {"source": "events", "app": "shop", "from": "2024-01-01", "to": "2024-01-02"},
                "keys": ["category", "city"]
            })
        );
    }

    #[test]
    fn empty_and_comment_only_documents_are_empty_objects() {
        assert_eq!(ok(""), json!({}));
        assert_eq!(ok(" \n\t\r\n "), json!({}));
        assert_eq!(ok("# nothing\n// here\n"), json!({}));
    }

    #[test]
    fn separators_and_trailing_commas() {
        assert_eq!(ok("a = 1, b : 2\nc { }"), json!({"a": 1, "b": 2, "c": {}}));
        assert_eq!(ok("{a = 1,}"), json!({"a": 1}));
        assert_eq!(ok("a = [1, 2,]"), json!({"a": [1, 2]}));
        assert_eq!(ok("a = [\n  1\n  2\n  , 3\n]"), json!({"a": [1, 2, 3]}));
        assert_eq!(ok("a=1\r\nb=2\r\n"), json!({"a": 1, "b": 2}));
        assert_eq!(ok("a = \n  1"), json!({"a": 1}));
        assert_eq!(ok("\u{feff}{\"bom\": true}"), json!({"bom": true}));
    }

    #[test]
    fn dotted_keys_and_merging() {
        assert_eq!(ok("a.b.c = 1"), json!({"a": {"b": {"c": 1}}}));
        assert_eq!(ok("a.b = 1\na.c = 2"), json!({"a": {"b": 1, "c": 2}}));
        assert_eq!(ok("\"a.b\" = 1"), json!({"a.b": 1}));
        assert_eq!(ok("a.\"b.c\".d = 1"), json!({"a": {"b.c": {"d": 1}}}));
        assert_eq!(
            ok("a { x = 1, n { p = 1 } }\na { y = 2, n { q = 2 } }"),
            json!({"a": {"x": 1, "y": 2, "n": {"p": 1, "q": 2}}})
        );
        assert_eq!(ok("a { x = 1 }\na = 5"), json!({"a": 5}));
        assert_eq!(ok("a = 5\na.b = 1"), json!({"a": {"b": 1}}));
        assert_eq!(ok("a = [1]\na = [2]"), json!({"a": [2]}));
        assert_eq!(
            ok(r#"{"a": {"x": 1}, "a": {"y": 2}}"#),
            json!({"a": {"x": 1, "y": 2}})
        );
        assert_eq!(ok("a = {x = 1} {y = 2}"), json!({"a": {"x": 1, "y": 2}}));
        assert_eq!(ok("a = [1] [2, 3]"), json!({"a": [1, 2, 3]}));
        assert_eq!(
            ok("1.5 = x\ntrue = y"),
            json!({"1": {"5": "x"}, "true": "y"})
        );
        assert_eq!(ok("include = 1"), json!({"include": 1}));
    }

    #[test]
    fn append() {
        assert_eq!(ok("a += 1\na += x"), json!({"a": [1, "x"]}));
        assert_eq!(
            ok("a = [0]\na.b += 1\nc = [0]\nc += 1"),
            json!({"a": {"b": [1]}, "c": [0, 1]})
        );
    }

    #[test]
    fn unquoted_strings_and_concatenation() {
        assert_eq!(ok("a = hello world"), json!({"a": "hello world"}));
        assert_eq!(ok("a = 10 secs"), json!({"a": "10 secs"}));
        assert_eq!(ok("a = 10secs"), json!({"a": "10secs"}));
        assert_eq!(
            ok("a = event  is\tnot null   "),
            json!({"a": "event  is\tnot null"})
        );
        assert_eq!(ok("a = /tmp/x.parquet"), json!({"a": "/tmp/x.parquet"}));
        assert_eq!(
            ok("a = 1.5.3, b = -, c = .5"),
            json!({"a": "1.5.3", "b": "-", "c": ".5"})
        );
        assert_eq!(ok("a = \"x\" y \"z\""), json!({"a": "x y z"}));
        assert_eq!(ok("a = true false"), json!({"a": "true false"}));
        assert_eq!(
            ok("a = \"true\", b = \"1\""),
            json!({"a": "true", "b": "1"})
        );
        assert_eq!(
            ok("a = 1e+5, b = -3, c = yes"),
            json!({"a": 1e5, "b": -3, "c": "yes"})
        );
    }

    #[test]
    fn comments() {
        let text = "# leading\na = 1 # trailing\nb = two words // trailing\n// own line\nc = \"# kept\"\nd = [1, # in array\n 2]";
        assert_eq!(
            ok(text),
            json!({"a": 1, "b": "two words", "c": "# kept", "d": [1, 2]})
        );
        assert_eq!(ok("a = x//y"), json!({"a": "x"}));
    }

    #[test]
    fn triple_quoted_strings() {
        assert_eq!(
            ok("a = \"\"\"line \\n one\n  \"quoted\" line two\"\"\""),
            json!({"a": "line \\n one\n  \"quoted\" line two"})
        );
        assert_eq!(ok("a = \"\"\"x\"\"\"\"\""), json!({"a": "x\"\""}));
        assert_eq!(ok("a = \"\"\"\"\"\""), json!({"a": ""}));
        assert_eq!(ok("a = \"\""), json!({"a": ""}));
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                "a = 1\nb = 2\nmemory =",
                "line 3, column 9: expected a value after `=`, found end of input",
            ),
            (
                "a = \"abc",
                "line 1, column 9: unterminated string starting at line 1, column 5",
            ),
            (
                "a = 1\nb = \"abc\nc = 2",
                "line 2, column 9: unterminated string starting at line 2, column 5",
            ),
            (
                "{\n  a = 1\n  b = 2\n  ",
                "line 4, column 3: expected `}` to close the object opened at line 1, column 1, found end of input",
            ),
            (
                "a = [1, 2",
                "line 1, column 10: expected `]` to close the array opened at line 1, column 5, found end of input",
            ),
            (
                "a = ${b}",
                "line 1, column 5: substitutions (`${...}`) are not supported",
            ),
            (
                "a = x ${?b}",
                "line 1, column 7: optional substitutions (`${?...}`) are not supported",
            ),
            (
                "a = 1\ninclude \"other.conf\"",
                "line 2, column 1: `include` is not supported",
            ),
            (
                "include required(\"x\")",
                "line 1, column 1: `include` is not supported",
            ),
            (
                "url = http://example.com",
                "line 1, column 11: `:` is not allowed in an unquoted string; put the value in double quotes",
            ),
            (
                "a = what?",
                "line 1, column 9: `?` is not allowed in an unquoted string; put the value in double quotes",
            ),
            (
                "a = {} b = 1",
                "line 1, column 8: expected `,` or newline after the value of `a`, found `b`",
            ),
            (
                "x { a = [] b = 1 }",
                "line 1, column 12: expected `,`, newline or `}` after the value of `a`, found `b`",
            ),
            (
                "a b = 1",
                "line 1, column 3: expected `=`, `:` or `{` after key `a`, found `b`",
            ),
            (
                "a.b. = 1",
                "line 1, column 5: expected a key segment after `.`, found space",
            ),
            (
                "a = 1,\n, b = 2",
                "line 2, column 1: expected a key, found `,`",
            ),
            (
                "{ = 1 }",
                "line 1, column 3: expected a key or `}`, found `=`",
            ),
            (
                "a = [1,,2]",
                "line 1, column 8: expected a value or `]`, found `,`",
            ),
            (
                "a = [1 {}]",
                "line 1, column 8: expected `,`, newline or `]` after an array element, found `{`",
            ),
            ("a = 1\n}", "line 2, column 1: expected a key, found `}`"),
            (
                "a = 1 }",
                "line 1, column 7: expected `,` or newline after the value of `a`, found `}`",
            ),
            (
                "{} x",
                "line 1, column 4: expected end of input after the root object, found `x`",
            ),
            (
                "[1] [2]",
                "line 1, column 5: expected end of input after the root array, found `[`",
            ),
            (
                "a = 1\na += 2",
                "line 2, column 3: cannot append to `a` with `+=`: it holds a number, not an array",
            ),
            (
                "a = \"x\\qy\"",
                "line 1, column 7: invalid escape in a quoted string: `\\` followed by `q`",
            ),
            (
                "a = \"\\u12G4\"",
                "line 1, column 10: expected 4 hex digits after `\\u`, found `G`",
            ),
            (
                "a = \"\\ud800x\"",
                "line 1, column 6: unpaired surrogate `\\uD800` in a unicode escape",
            ),
            (
                "a = \"tab\there\"",
                "line 1, column 9: control character U+0009 must be escaped in a quoted string",
            ),
            (
                "a = \"\"\"never\nclosed",
                "line 2, column 7: unterminated triple-quoted string starting at line 1, column 5",
            ),
            (
                "a = 1e400",
                "line 1, column 5: number `1e400` is out of range",
            ),
            (
                "\"\"\"k\"\"\" = 1",
                "line 1, column 1: a triple-quoted string cannot be a key",
            ),
            (
                "42",
                "line 1, column 3: expected `=`, `:` or `{` after key `42`, found end of input",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(err(text), expected, "input: {text:?}");
        }
    }

    #[test]
    fn errors_repeat_at_most_a_short_piece_of_a_token() {
        let key = "k".repeat(3 << 20);
        let shown = format!("`{}…`", "k".repeat(ECHO_CHARS));
        let digits = "9".repeat(1 << 20);
        for text in [
            key.clone(),
            format!("{key} = 1 2}}"),
            format!("{key} = 1\n{key} += 2"),
            format!("{}b = 1", "a.".repeat(100_000)),
            format!("a = {digits}e999999"),
        ] {
            let message = err(&text);
            assert!(
                message.len() < 300,
                "{} bytes: {}…",
                message.len(),
                &message[..300]
            );
            assert!(message.contains('…'), "{message}");
        }
        assert!(err(&key).contains(&shown), "{}", err(&key));
        // Short tokens are repeated whole.
        assert_eq!(
            err("abc = 1 2}"),
            "line 1, column 10: expected `,` or newline after the value of `abc`, found `}`"
        );
        assert_eq!(echo(&"é".repeat(81)), format!("{}…", "é".repeat(80)));
    }

    #[test]
    fn nesting_is_capped_without_overflowing_the_stack() {
        let ok_depth = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok_depth).is_ok());
        assert_eq!(
            err(&"[".repeat(100_000)),
            "line 1, column 129: nesting deeper than 128 levels is not supported"
        );
        assert!(parse(&"{\"a\":".repeat(100_000)).is_err());
        assert!(parse(&"a {".repeat(100_000)).is_err());
        assert!(parse(&format!("{}b = 1", "a.".repeat(100_000))).is_err());
        let deep_key = format!("{}b = 1", "a.".repeat(MAX_DEPTH - 1));
        assert!(parse(&deep_key).is_ok());
        assert!(parse(&format!("a{deep_key}")).is_ok());
        assert!(parse(&format!("a.{deep_key}")).is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn serialized_json_round_trips(value in json_value()) {
            // HOCON roots are objects or arrays, so scalars are wrapped.
            let value = if value.is_array() || value.is_object() { value } else { json!([value]) };
            for text in [serde_json::to_string(&value), serde_json::to_string_pretty(&value)] {
                let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                let expected: Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(parsed, expected);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn hocon_like_text_never_panics(
            text in "[ \t\r\na-z0-9.={}\\[\\],:\"#/+$?\\\\u-]{0,80}"
        ) {
            if let Err(error) = parse(&text) {
                prop_assert!(error.line >= 1 && error.column >= 1);
                prop_assert!(error.line <= text.lines().count() + 1);
            }
        }
    }
}
