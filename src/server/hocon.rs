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
//! - unquoted strings and value concatenation (`a = hello world`, `a = 10 secs`), of arrays
//!   (`[1] [2]`) and of objects (`{ a = 1 } { b = 2 }`);
//! - `"""triple-quoted"""` raw strings, `#` and `//` comments;
//! - substitutions `${a.b}` of paths of the same document, resolved as HOCON specifies (see
//!   `resolve.rs`): after all merging, so a later definition of the path wins; alone they
//!   keep the type of what they name, else they concatenate (`"x"${a}"y"`, `${a} secs`,
//!   `${a} [3]`, `${base} { x = 1 }`); a field that names itself (`path = ${path}":/more"`,
//!   `a = ${a} [x]`, `a += x`) reads its earlier value. Unknown paths, cycles and mixed
//!   concatenations (an object with a string, …) are errors.
//!
//! Refused with an error naming them, because a posted config must not reach the server's
//! environment or filesystem: `include`, and optional substitutions `${?...}`, which fall back
//! to environment variables. For the same reason a substitution is looked up in the document
//! only: Typesafe Config would read `${HOME}` from the environment when the document has no
//! `HOME`, Floe reports it unknown.
//!
//! Every error carries the 1-based line and column of the offending character (for an error
//! found while resolving, the substitution or `+=` at fault), and repeats at most
//! [`ECHO_CHARS`] characters of any token it names (a key, a number), so a 3 MB key makes a
//! short error, not a 6 MB one.
//!
//! Hostile input is bounded: nesting by [`MAX_DEPTH`], substitutions by
//! [`MAX_SUBSTITUTION_CHAIN`], the resolver's recursion by [`MAX_RESOLVE_STEPS`], and what
//! substitutions copy by [`MAX_EXTRA_VALUES`] and [`MAX_EXTRA_BYTES`]: `a = [1, 1]`,
//! `b = [${a}, ${a}]`, `c = [${b}, ${b}]`, … doubles with every line, so 60 short lines would
//! otherwise ask for 2⁶⁰ values.

use serde_json::{Map, Number, Value};

mod resolve;
mod tree;

use resolve::Resolver;
use tree::{Item, LeafKind, Node, NodeId, Piece, ROOT, Subst, Token, Trie, render_path};

/// Deep enough for any real config, shallow enough that the recursive descent (and dropping the
/// resulting `Value`) cannot exhaust a thread's stack. Applies to resolved values too.
const MAX_DEPTH: usize = 128;

/// The most substitutions that may depend on one another at once (`a = ${b}`, `b = ${c}`, …,
/// or a field redefined with `a = ${a} [x]` over and over; `+=` does not count): real configs
/// use a handful.
const MAX_SUBSTITUTION_CHAIN: usize = 32;

/// The deepest the resolver recurses, counting nesting levels and substitutions together (a
/// substitution costs up to four steps): a bound on its stack use whatever the document. A step
/// takes a few hundred bytes of stack, under 4 KiB in an unoptimised build, so the bound stays
/// near 1 MiB even there, inside the 2 MiB of a tokio worker or a test thread.
const MAX_RESOLVE_STEPS: usize = MAX_DEPTH + 4 * MAX_SUBSTITUTION_CHAIN;

/// How many values (and, for [`MAX_EXTRA_BYTES`], bytes of strings and keys) resolving may build
/// beyond what the text itself holds. Copying a 1,000-value object into 100 places stays well
/// under; an exponential expansion (`b = [${a}, ${a}]`, `c = [${b}, ${b}]`, …) stops after a
/// few milliseconds and some tens of megabytes, instead of exhausting memory. A document
/// without substitutions is never limited by these.
const MAX_EXTRA_VALUES: usize = 1 << 18;
const MAX_EXTRA_BYTES: usize = 8 << 20;

/// The most characters of one token an error message repeats.
const ECHO_CHARS: usize = 80;

/// `token` as an error message repeats it: whole up to [`ECHO_CHARS`] characters, else its
/// first ones and `…`.
fn echo(token: &str) -> String {
    crate::error::first_chars(token, ECHO_CHARS)
}

/// A parse error at a 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct HoconError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a HOCON (or JSON) document and resolves its substitutions. The root is an object
/// unless the document is an array; an empty or comment-only document is `{}`.
pub fn parse(text: &str) -> Result<Value, HoconError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        trie: Trie::new(),
        field: None,
        substs: 0,
        values: 0,
        bytes: 0,
    };
    let root = parser.document()?;
    let Parser {
        chars,
        trie,
        substs,
        values,
        bytes,
        ..
    } = parser;
    let mut resolver = if substs == 0 {
        Resolver::taking(&trie, &chars)
    } else {
        Resolver::new(
            &trie,
            &chars,
            values.saturating_add(MAX_EXTRA_VALUES),
            bytes.saturating_add(MAX_EXTRA_BYTES),
        )
    };
    match &root {
        Root::Object => resolver.object(ROOT, 1),
        Root::Array(node) => resolver.node(node, 1),
    }
}

/// The 1-based line and column of `index` in `chars`.
fn locate(chars: &[char], index: usize) -> (usize, usize) {
    let before = chars.get(..index.min(chars.len())).unwrap_or_default();
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let column = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
    (line, column)
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

/// The document's root: the object in the trie's [`ROOT`], or an array.
enum Root {
    Object,
    Array(Node),
}

/// Where a value goes: the field at a trie node (an object there is merged into the node), or
/// an array element or appended value (an object there gets a local trie).
#[derive(Clone, Copy)]
enum Target {
    Field(NodeId),
    Element,
}

/// What a value concatenation holds so far.
#[derive(Clone, Copy)]
enum Mode {
    /// Nothing but substitutions yet.
    Open,
    Simple,
    List,
    Object,
}

/// A value being parsed (see [`Parser::value`]).
struct Pieces {
    /// The sequence number the value starts at (see `LeafKind::Value`).
    self_seq: tree::Seq,
    substs_before: usize,
    nodes_before: usize,
    mode: Mode,
    /// Its pieces, but for objects, merged into `object` as they come.
    pieces: Vec<Piece>,
    object: Option<NodeId>,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    trie: Trie,
    /// The field whose value is being parsed, to name the objects nested in it.
    field: Option<NodeId>,
    /// Substitutions parsed so far.
    substs: usize,
    /// Values and bytes of strings and keys parsed so far: what resolving may build anyway.
    values: usize,
    bytes: usize,
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
        locate(&self.chars, index)
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

    fn document(&mut self) -> Result<Root, HoconError> {
        self.skip_blank();
        let (root, what) = match self.peek() {
            Some('[') => (Root::Array(self.array(1)?), "array"),
            Some('{') => {
                self.object_into(ROOT, 1)?;
                (Root::Object, "object")
            }
            _ => {
                self.trie.mark(ROOT);
                self.fields(ROOT, 1, None)?;
                return Ok(Root::Object);
            }
        };
        self.skip_blank();
        match self.peek() {
            None => Ok(root),
            c => Err(self.error_here(format!(
                "expected end of input after the root {what}, found {}",
                describe(c)
            ))),
        }
    }

    /// The object starting at the `{` here, merged into `node`.
    fn object_into(&mut self, node: NodeId, depth: usize) -> Result<(), HoconError> {
        self.check_depth(depth)?;
        let open = self.pos;
        self.pos += 1;
        self.trie.mark(node);
        self.values += 1;
        self.fields(node, depth, Some(open))
    }

    /// The child `key` of `parent` in the trie.
    fn child(&mut self, parent: NodeId, key: String) -> NodeId {
        let bytes = key.len();
        let (child, created) = self.trie.child_or_insert(parent, key);
        if created {
            self.values += 1;
            self.bytes += bytes;
        }
        child
    }

    /// The fields of the object at `node`, at `depth`: up to the `}` matching `open`, or to the
    /// end of input for a root without braces.
    fn fields(
        &mut self,
        node: NodeId,
        depth: usize,
        open: Option<usize>,
    ) -> Result<(), HoconError> {
        let expected_key = if open.is_some() {
            "a key or `}`"
        } else {
            "a key"
        };
        loop {
            self.skip_blank();
            match (self.peek(), open) {
                (None, None) => return Ok(()),
                (None, Some(open)) => {
                    return Err(self.error_here(format!(
                        "expected `}}` to close the object opened at {}, found end of input",
                        self.location_text(open)
                    )));
                }
                (Some('}'), Some(_)) => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {}
            }
            let name = self.field(node, depth, expected_key)?;
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

    /// Parses one `key = value` (or `key : value`, `key += value`, `key { ... }`) into the
    /// object at `node`; returns the key as messages show it (see [`echo`]).
    fn field(
        &mut self,
        node: NodeId,
        depth: usize,
        expected_key: &str,
    ) -> Result<String, HoconError> {
        let (target, name, value_depth) = self.field_key(node, depth, expected_key)?;
        self.skip_inline();
        let op = self.pos;
        let outer = self.field.replace(target);
        match (self.peek(), self.peek_at(1)) {
            (Some('=' | ':'), _) => {
                self.pos += 1;
                self.skip_blank();
                let expected = if self.chars.get(op) == Some(&':') {
                    "a value after `:`"
                } else {
                    "a value after `=`"
                };
                self.field_value(target, value_depth, expected)?;
            }
            (Some('+'), Some('=')) => {
                self.pos += 2;
                self.skip_blank();
                // The value lands in the array, one level deeper than the field.
                let value = self.element(value_depth + 1, "a value after `+=`")?;
                self.trie
                    .push_leaf(target, LeafKind::Append { node: value, op });
            }
            (Some('{'), _) => self.field_value(target, value_depth, "a value")?,
            _ => return Err(self.bad_field_op(&name)),
        }
        self.field = outer;
        Ok(name)
    }

    /// The key of a field of the object at `node`: its trie node, its name as messages show it,
    /// and the depth of its value.
    fn field_key(
        &mut self,
        node: NodeId,
        depth: usize,
        expected_key: &str,
    ) -> Result<(NodeId, String, usize), HoconError> {
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
        // `a.b.c = v` is `a { b { c = v } }`: `a` and `a.b` become objects here.
        let last = path.len() - 1;
        let mut target = node;
        for (i, segment) in path.into_iter().enumerate() {
            target = self.child(target, segment);
            if i < last {
                self.trie.mark(target);
                self.values += 1;
            }
        }
        Ok((target, name, value_depth))
    }

    #[cold]
    #[inline(never)]
    fn bad_field_op(&self, name: &str) -> HoconError {
        self.error_here(format!(
            "expected `=`, `:` or `{{` after key `{name}`, found {}",
            describe(self.peek())
        ))
    }

    /// The value of the field at `node`, recorded in the trie.
    fn field_value(
        &mut self,
        node: NodeId,
        depth: usize,
        expected: &str,
    ) -> Result<(), HoconError> {
        let self_seq = self.trie.next_seq();
        match self.value(Target::Field(node), depth, expected)? {
            // An object, or a concatenation with one, is merged into the field already.
            Node::Object(_) => {}
            value => self.trie.push_leaf(
                node,
                LeafKind::Value {
                    node: value,
                    self_seq,
                    object_concat: false,
                },
            ),
        }
        Ok(())
    }

    /// An array element or appended value.
    fn element(&mut self, depth: usize, expected: &str) -> Result<Node, HoconError> {
        self.value(Target::Element, depth, expected)
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
        let (path, quoted_any) = self.path_expression(expected)?;
        if !quoted_any && path == ["include"] && self.include_follows() {
            return Err(self.error_at(start, "`include` is not supported"));
        }
        Ok(path)
    }

    /// A path (of a key or a substitution): segments, quoted or not, separated by `.`. Returns
    /// whether any segment was quoted.
    fn path_expression(&mut self, expected: &str) -> Result<(Vec<String>, bool), HoconError> {
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
        Ok((path, quoted_any))
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

    /// A field value, array element or appended value: one piece, or a concatenation of pieces
    /// on one line (strings, arrays or objects, and substitutions among any of them); `expected`
    /// names what was expected, for messages. An object is merged into the target's node (a
    /// local trie's for an element), and `Node::Object` of that node returned.
    fn value(&mut self, target: Target, depth: usize, expected: &str) -> Result<Node, HoconError> {
        let mut pieces = Pieces {
            self_seq: self.trie.next_seq(),
            substs_before: self.substs,
            nodes_before: self.trie.nodes.len(),
            mode: Mode::Open,
            pieces: Vec::new(),
            object: None,
        };
        let mut gap_start = self.pos;
        let mut expected = Some(expected);
        loop {
            let gap: String = self.chars[gap_start..self.pos].iter().collect();
            if !self.piece(&mut pieces, target, depth, gap, expected)? {
                break;
            }
            expected = None;
            gap_start = self.pos;
            self.skip_ws();
            if self.at_value_end() {
                break;
            }
        }
        self.finish_value(pieces, target, depth)
    }

    /// Parses the next piece of a value into `pieces`; false when what follows cannot join
    /// the concatenation (an array or object after a string, text after an array or object):
    /// the caller then reports a missing separator there. `expected` is set for the first.
    fn piece(
        &mut self,
        pieces: &mut Pieces,
        target: Target,
        depth: usize,
        gap: String,
        expected: Option<&str>,
    ) -> Result<bool, HoconError> {
        let pos = self.pos;
        if self.starts_with("${") {
            self.substitution_piece(pieces, gap, pos)?;
            return Ok(true);
        }
        match self.peek() {
            Some('{') if matches!(pieces.mode, Mode::Open | Mode::Object) => {
                let node = self.object_target(pieces, target);
                self.object_into(node, depth)?;
            }
            Some('[') if matches!(pieces.mode, Mode::Open | Mode::List) => {
                pieces.mode = Mode::List;
                let array = self.array(depth)?;
                pieces.pieces.push(Piece {
                    gap,
                    pos,
                    item: Item::Array(array),
                });
            }
            Some('{' | '[') => return Ok(false),
            _ if expected.is_some() || matches!(pieces.mode, Mode::Open | Mode::Simple) => {
                let token = self.simple_token(expected)?;
                pieces.mode = Mode::Simple;
                self.values += 1;
                self.bytes += gap.len() + token.text().len();
                pieces.pieces.push(Piece {
                    gap,
                    pos,
                    item: Item::Token(token),
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn substitution_piece(
        &mut self,
        pieces: &mut Pieces,
        gap: String,
        pos: usize,
    ) -> Result<(), HoconError> {
        let subst = self.substitution()?;
        match pieces.object {
            // `{ … } ${a}`: merged in turn, so it must be an object.
            Some(node) => self.trie.push_leaf(
                node,
                LeafKind::Value {
                    node: Node::Subst(subst),
                    self_seq: pieces.self_seq,
                    object_concat: true,
                },
            ),
            None => pieces.pieces.push(Piece {
                gap,
                pos,
                item: Item::Subst(subst),
            }),
        }
        Ok(())
    }

    /// The node an object piece merges into; the first one also takes the substitutions before
    /// it, in order.
    fn object_target(&mut self, pieces: &mut Pieces, target: Target) -> NodeId {
        pieces.mode = Mode::Object;
        if let Some(node) = pieces.object {
            return node;
        }
        let node = match target {
            Target::Field(node) => node,
            Target::Element => {
                self.values += 1;
                self.trie.local_root(self.field)
            }
        };
        for piece in pieces.pieces.drain(..) {
            if let Item::Subst(subst) = piece.item {
                self.trie.push_leaf(
                    node,
                    LeafKind::Value {
                        node: Node::Subst(subst),
                        self_seq: pieces.self_seq,
                        object_concat: true,
                    },
                );
            }
        }
        pieces.object = Some(node);
        node
    }

    fn finish_value(
        &mut self,
        pieces: Pieces,
        target: Target,
        depth: usize,
    ) -> Result<Node, HoconError> {
        if let Some(node) = pieces.object {
            if matches!(target, Target::Element) && self.substs == pieces.substs_before {
                // Without substitutions, the object can be resolved now and its trie dropped.
                let value = Resolver::taking(&self.trie, &self.chars).object(node, depth)?;
                self.trie.truncate(pieces.nodes_before);
                return Ok(Node::literal(value));
            }
            return Ok(Node::Object(node));
        }
        self.concatenation(pieces.pieces)
    }

    /// The value of non-object `pieces`: a lone piece keeps its type, tokens concatenate into a
    /// string and arrays into an array; anything else is resolved later.
    fn concatenation(&mut self, mut pieces: Vec<Piece>) -> Result<Node, HoconError> {
        if pieces.len() == 1
            && let Some(piece) = pieces.pop()
        {
            return match piece.item {
                Item::Token(token) => self.typed(token, piece.pos).map(Node::literal),
                Item::Subst(subst) => Ok(Node::Subst(subst)),
                Item::Array(array) => Ok(array),
            };
        }
        if pieces
            .iter()
            .all(|piece| matches!(piece.item, Item::Token(_)))
        {
            // Concatenation keeps the whitespace between tokens (the trailing run is not a gap).
            let mut text = String::new();
            for (i, piece) in pieces.into_iter().enumerate() {
                if let Item::Token(token) = piece.item {
                    if i > 0 {
                        text.push_str(&piece.gap);
                    }
                    text.push_str(&token.into_text());
                }
            }
            return Ok(Node::literal(Value::String(text)));
        }
        if pieces
            .iter()
            .all(|piece| matches!(piece.item, Item::Array(_)))
        {
            let mut items = Vec::new();
            for piece in pieces {
                match piece.item {
                    Item::Array(Node::Array(more)) => items.extend(more),
                    Item::Array(Node::Literal(cell)) => match cell.into_inner() {
                        Value::Array(more) => items.extend(more.into_iter().map(Node::literal)),
                        other => items.push(Node::literal(other)),
                    },
                    Item::Array(other) => items.push(other),
                    _ => {}
                }
            }
            return Ok(collapse_array(items));
        }
        Ok(Node::Concat(pieces))
    }

    /// A lone token's value: numbers, booleans and null keep their type.
    fn typed(&self, token: Token, start: usize) -> Result<Value, HoconError> {
        match token {
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
        }
    }

    /// `${path}` here. `${?path}` is refused: it falls back to an environment variable.
    fn substitution(&mut self) -> Result<Subst, HoconError> {
        let open = self.pos;
        let optional = self.peek_at(2) == Some('?');
        self.pos += if optional { 3 } else { 2 };
        self.skip_ws();
        if optional {
            let shown = match self.path_expression("a path") {
                Ok((path, _)) => format!("${{?{}}}", render_path(&path)),
                Err(_) => "${?…}".to_owned(),
            };
            return Err(self.error_at(
                open,
                format!(
                    "`{}`: environment lookups are not supported: a posted config must not read \
                     the server's environment",
                    echo(&shown)
                ),
            ));
        }
        let (path, _) = self.path_expression("a path after `${`")?;
        self.skip_ws();
        if self.peek() != Some('}') {
            return Err(self.error_here(format!(
                "expected `}}` to close the substitution opened at {}, found {}",
                self.location_text(open),
                describe(self.peek())
            )));
        }
        self.pos += 1;
        self.substs += 1;
        self.values += 1;
        Ok(Subst { path, pos: open })
    }

    fn array(&mut self, depth: usize) -> Result<Node, HoconError> {
        self.check_depth(depth)?;
        let open = self.pos;
        self.pos += 1;
        self.values += 1;
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
                    return Ok(collapse_array(items));
                }
                _ => {}
            }
            items.push(self.element(depth + 1, "a value or `]`")?);
            if !self.separator() && !matches!(self.peek(), None | Some(']')) {
                return Err(self.error_here(format!(
                    "expected `,`, newline or `]` after an array element, found {}",
                    describe(self.peek())
                )));
            }
        }
    }

    /// Where a value stops; a piece that cannot continue it stops it too (see [`Self::value`]).
    fn at_value_end(&self) -> bool {
        matches!(self.peek(), None | Some('\n' | ',' | '}' | ']' | '#')) || self.starts_with("//")
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

/// An array of `items`: a literal when none holds a substitution.
fn collapse_array(items: Vec<Node>) -> Node {
    if items.iter().all(|item| matches!(item, Node::Literal(_))) {
        let values = items
            .into_iter()
            .filter_map(|item| match item {
                Node::Literal(cell) => Some(cell.into_inner()),
                _ => None,
            })
            .collect();
        return Node::literal(Value::Array(values));
    }
    Node::Array(items)
}

#[cfg(test)]
mod tests;
