//! The parsed, not yet resolved document.
//!
//! HOCON resolves substitutions after all merging, so the parser cannot build the final value
//! as it reads. It records instead, for every path of the document, what each definition did
//! to it, in text order (a *sequence number* orders all of them): a *marker* where a
//! definition makes the path an object (`a { … }`, or `a.b = …`, which makes `a` one), and a
//! *leaf* where a definition sets the path to anything else (a literal, an array, a
//! substitution, a concatenation, `+=`). Paths form a trie; the resolver folds the events of a
//! path from the latest down to compute its value (see `resolve.rs`).
//!
//! Objects that are not a field of the document (an object in an array, or appended with
//! `+=`) get a trie of their own, a *local* one: substitutions never look paths up in it.

use std::cell::Cell;
use std::collections::HashMap;

use serde_json::Value;

pub(super) type NodeId = usize;
/// Orders every marker and leaf of a document as the text does; the first is 1, so 0 is below
/// all of them.
pub(super) type Seq = usize;

/// The document's root object.
pub(super) const ROOT: NodeId = 0;

/// `${path}`, at `pos` (the index of its `$`).
pub(super) struct Subst {
    pub(super) path: Vec<String>,
    pub(super) pos: usize,
}

impl Subst {
    /// As messages show it: `${a.b}`.
    pub(super) fn shown(&self) -> String {
        format!("${{{}}}", render_path(&self.path))
    }
}

/// One token of a simple value. A lone token keeps its JSON type; several concatenate into a
/// string, which is why numbers keep their source text.
pub(super) enum Token {
    Quoted(String),
    Number(String),
    Unquoted(String),
}

impl Token {
    pub(super) fn text(&self) -> &str {
        match self {
            Token::Quoted(text) | Token::Number(text) | Token::Unquoted(text) => text,
        }
    }

    pub(super) fn into_text(self) -> String {
        match self {
            Token::Quoted(text) | Token::Number(text) | Token::Unquoted(text) => text,
        }
    }
}

/// One piece of a value concatenation, with the whitespace before it (kept between strings,
/// dropped between arrays or objects).
pub(super) struct Piece {
    pub(super) gap: String,
    pub(super) pos: usize,
    pub(super) item: Item,
}

pub(super) enum Item {
    Token(Token),
    Subst(Subst),
    Array(Node),
}

/// An unresolved value: an array element, the value of a leaf, an appended value.
pub(super) enum Node {
    /// A value without substitutions. In a cell so that a document without substitutions can
    /// move it out instead of copying it (see `Resolver::take`).
    Literal(Cell<Value>),
    /// An array with substitutions somewhere inside.
    Array(Vec<Node>),
    /// An object with substitutions somewhere inside: the root of a local trie.
    Object(NodeId),
    Subst(Subst),
    Concat(Vec<Piece>),
}

impl Node {
    pub(super) fn literal(value: Value) -> Node {
        Node::Literal(Cell::new(value))
    }
}

pub(super) enum LeafKind {
    /// `path = value`. `self_seq` is the sequence number this definition starts at: a
    /// substitution in it that names its own path reads the path as it was before. With
    /// `object_concat`, the value is a substitution merged with objects (`${a} { … }`), which
    /// must therefore be an object.
    Value {
        node: Node,
        self_seq: Seq,
        object_concat: bool,
    },
    /// `path += node`, its `+=` at `op`.
    Append { node: Node, op: usize },
}

pub(super) struct Leaf {
    pub(super) seq: Seq,
    pub(super) kind: LeafKind,
}

pub(super) struct TrieNode {
    pub(super) parent: Option<NodeId>,
    pub(super) key: String,
    /// For the root of a local trie: the field whose value holds it, to name it in messages.
    pub(super) owner: Option<NodeId>,
    /// In the order they first appeared.
    pub(super) children: Vec<NodeId>,
    /// The children by key, once there are more than [`INDEX_FROM`] (fewer are scanned).
    index: Option<HashMap<String, NodeId>>,
    /// Sorted by sequence number, as all three lists are.
    pub(super) leaves: Vec<Leaf>,
    pub(super) markers: Vec<Seq>,
}

/// From how many children a node indexes them by key.
const INDEX_FROM: usize = 16;

pub(super) struct Trie {
    pub(super) nodes: Vec<TrieNode>,
    seq: Seq,
}

impl Trie {
    pub(super) fn new() -> Trie {
        Trie {
            nodes: vec![TrieNode::new(None, String::new(), None)],
            seq: 0,
        }
    }

    /// The sequence number the next marker or leaf will get.
    pub(super) fn next_seq(&self) -> Seq {
        self.seq + 1
    }

    pub(super) fn child(&self, parent: NodeId, key: &str) -> Option<NodeId> {
        let node = self.nodes.get(parent)?;
        match &node.index {
            Some(index) => index.get(key).copied(),
            None => node
                .children
                .iter()
                .copied()
                .find(|&child| self.nodes.get(child).is_some_and(|c| c.key == key)),
        }
    }

    /// The child `key` of `parent`, created if need be; true when it was.
    pub(super) fn child_or_insert(&mut self, parent: NodeId, key: String) -> (NodeId, bool) {
        if let Some(child) = self.child(parent, &key) {
            return (child, false);
        }
        let child = self.nodes.len();
        let mut build_index = false;
        if let Some(parent_node) = self.nodes.get_mut(parent) {
            parent_node.children.push(child);
            match &mut parent_node.index {
                Some(index) => {
                    index.insert(key.clone(), child);
                }
                None => build_index = parent_node.children.len() > INDEX_FROM,
            }
        }
        self.nodes.push(TrieNode::new(Some(parent), key, None));
        if build_index {
            let index = self.nodes.get(parent).map(|node| {
                node.children
                    .iter()
                    .filter_map(|&c| Some((self.nodes.get(c)?.key.clone(), c)))
                    .collect()
            });
            if let Some(node) = self.nodes.get_mut(parent) {
                node.index = index;
            }
        }
        (child, true)
    }

    /// A new local trie, for an object in the value of `owner`.
    pub(super) fn local_root(&mut self, owner: Option<NodeId>) -> NodeId {
        self.nodes.push(TrieNode::new(None, String::new(), owner));
        self.nodes.len() - 1
    }

    fn bump(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    pub(super) fn mark(&mut self, node: NodeId) {
        let seq = self.bump();
        if let Some(node) = self.nodes.get_mut(node) {
            node.markers.push(seq);
        }
    }

    pub(super) fn push_leaf(&mut self, node: NodeId, kind: LeafKind) {
        let seq = self.bump();
        if let Some(node) = self.nodes.get_mut(node) {
            node.leaves.push(Leaf { seq, kind });
        }
    }

    /// Drops the nodes from `len` on: a local trie that was resolved as soon as it was parsed.
    /// Nothing older refers to them.
    pub(super) fn truncate(&mut self, len: usize) {
        while self.nodes.len() > len {
            let Some(node) = self.nodes.pop() else { break };
            // A local trie's nodes hang from its root, itself without a parent: this is for
            // safety only.
            if let Some(parent) = node.parent.filter(|&parent| parent < len)
                && let Some(parent) = self.nodes.get_mut(parent)
            {
                parent.children.retain(|&child| child < len);
                if let Some(index) = &mut parent.index {
                    index.remove(&node.key);
                }
            }
        }
    }

    /// The path of `node` as messages show it: `a.b`, `"x.y".c`, or `list[…].a` in an object
    /// of the array `list`.
    pub(super) fn display(&self, node: NodeId) -> String {
        let mut segments = Vec::new();
        let mut at = node;
        let mut prefix = String::new();
        // Bounded: every step goes one level up a trie that is at most `MAX_DEPTH` deep, and
        // local tries nest at most as deep as the text does.
        while let Some(current) = self.nodes.get(at) {
            match current.parent {
                Some(parent) => {
                    segments.push(current.key.clone());
                    at = parent;
                }
                None => {
                    if at != ROOT {
                        prefix = match current.owner {
                            Some(owner) if owner != at => format!("{}[…]", self.display(owner)),
                            _ => "[…]".to_owned(),
                        };
                    }
                    break;
                }
            }
        }
        segments.reverse();
        match (prefix.is_empty(), segments.is_empty()) {
            (true, _) => render_path(&segments),
            (false, true) => prefix,
            (false, false) => format!("{prefix}.{}", render_path(&segments)),
        }
    }
}

impl TrieNode {
    fn new(parent: Option<NodeId>, key: String, owner: Option<NodeId>) -> TrieNode {
        TrieNode {
            parent,
            key,
            owner,
            children: Vec::new(),
            index: None,
            leaves: Vec::new(),
            markers: Vec::new(),
        }
    }
}

/// A path as it would be written: segments that are plain words as they are, others quoted.
pub(super) fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let plain = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if plain {
            out.push_str(segment);
        } else {
            out.push_str(&serde_json::Value::String(segment.clone()).to_string());
        }
    }
    out
}
