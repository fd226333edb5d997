//! Resolves a parsed document (see `tree.rs`) into its value, substitutions included.
//!
//! The value of a path is a fold of its events from the latest down: markers and leaves at the
//! path itself, leaves at its ancestors (`a = ${x}` sets `a.b` too), and, when building an
//! object, the parts of objects its ancestors resolved to. A non-object stops the fold (it
//! hides whatever came before), objects merge, `+=` appends to what lies below it. So a
//! substitution sees the final value of the path it names, after all merging, and nothing is
//! evaluated that a later value hides.
//!
//! A substitution that names its own field, or a path inside it (`path = ${path}":/more"`,
//! `a = ${a} [x]`), reads the field as it was before the definition it sits in: the fold of
//! that lookup ignores the definition and everything after it at or under the field (an
//! *exclusion*). This applies to substitutions that make up the field's value, not to ones
//! nested in an array or object of it (`a = [${a}]` is a cycle), as HOCON specifies. A field
//! reached again through other fields while it is being resolved is a cycle.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::tree::{
    Item, LeafKind, Node, NodeId, Piece, ROOT, Seq, Subst, Trie, TrieNode, render_path,
};
use super::{
    HoconError, MAX_DEPTH, MAX_EXTRA_BYTES, MAX_EXTRA_VALUES, MAX_RESOLVE_STEPS,
    MAX_SUBSTITUTION_CHAIN, echo, kind, locate, merge,
};

/// What a path holds: a value, nothing, or nothing because an ancestor is not an object.
enum Found {
    Value(Value),
    Absent,
    Hidden,
}

/// A path being folded.
struct Site<'a, 'v> {
    /// Its trie node, if it has one.
    node: Option<NodeId>,
    /// Events at or below this sequence number are hidden by a non-object above them.
    floor: Seq,
    /// Events of the node from this sequence number on are excluded (see the module doc).
    ceiling: Seq,
    /// Leaves of the path's ancestors, for a lookup (a build gets them resolved in `inherited`).
    ancestors: &'a [Ancestor<'a>],
    /// The path's part of objects its ancestors resolved to, latest first.
    inherited: &'a [(Seq, &'v Value)],
    excl: &'a [(NodeId, Seq)],
    /// Its nesting level in the value being built: the root is 1.
    level: usize,
}

#[derive(Clone, Copy)]
struct Ancestor<'a> {
    node: NodeId,
    ceiling: Seq,
    /// The path from the ancestor to the folded path.
    rel: &'a [String],
}

/// The outcome of a fold, before an object is built.
struct Folded<'v> {
    /// A marker lies above the stop: the path's trie children belong to the object.
    marker: bool,
    /// Objects above the stop, latest first.
    layers: Vec<(Seq, Cow<'v, Value>)>,
    /// The sequence number of the non-object that stopped the fold.
    stop: Option<Seq>,
    /// The value when it is not an object.
    value: Option<Value>,
    hidden: bool,
}

impl Folded<'_> {
    fn object(&self) -> bool {
        self.marker || !self.layers.is_empty()
    }
}

/// A lookup's outcome, and whether it read its own field's earlier value (then the field, and
/// whether the substitution names the field itself).
struct Lookup {
    found: Found,
    own: Option<(NodeId, bool)>,
}

pub(super) struct Resolver<'d> {
    trie: &'d Trie,
    chars: &'d [char],
    /// Move literals out of the trie instead of copying them: the scope being resolved has no
    /// substitutions, so each literal is read once.
    take: bool,
    values_left: usize,
    bytes_left: usize,
    steps: usize,
    /// Leaves being resolved (node, index in its leaves, path read into it), with the depth of
    /// the lookup stack when they started.
    active: HashMap<(NodeId, usize, Vec<String>), usize>,
    lookups: Vec<&'d Subst>,
}

/// What the next event of a fold contributes.
enum Event<'v> {
    /// A value (or nothing) resolved from a leaf or copied from an inherited object.
    Found(Found),
    /// An inherited object, borrowed.
    Layer(&'v Value),
    /// A `+=` leaf (its index among the node's leaves, the position of its `+=`).
    Append(usize, usize),
    /// A non-object under objects: it hides everything below without being evaluated.
    Stop,
}

/// The next event of a fold: where it comes from.
#[derive(Clone, Copy)]
enum Next {
    Own(usize),
    Ancestor(usize, usize),
    Inherited(usize),
}

/// Where a fold has got to in each of its sources, from the latest event down.
struct Cursors {
    own_lo: usize,
    own_hi: usize,
    ancestor_hi: Vec<usize>,
    inherited: usize,
    upper: Seq,
}

/// A key of an object being built, and where its value comes from.
struct Entry<'k, 'v> {
    key: &'k str,
    first: Seq,
    node: Option<NodeId>,
    ceiling: Seq,
    inherited: Vec<(Seq, &'v Value)>,
}

/// What a lookup needs, worked out before it recurses.
struct Plan {
    path: Vec<String>,
    /// The exclusions with the lookup's own one, when it reads its own field.
    excl: Option<Vec<(NodeId, Seq)>>,
    target: Option<(NodeId, Seq)>,
    /// Ancestors with leaves: node, ceiling, where the rest of the path starts.
    ancestors: Vec<(NodeId, Seq, usize)>,
    own: Option<(NodeId, bool)>,
}

/// A value concatenation so far.
enum Acc {
    Empty,
    Text(String),
    List(Vec<Value>),
    Object(Map<String, Value>),
}

impl<'d> Resolver<'d> {
    /// A resolver that may build `values` values and `bytes` bytes of strings and keys.
    pub(super) fn new(trie: &'d Trie, chars: &'d [char], values: usize, bytes: usize) -> Self {
        Resolver {
            trie,
            chars,
            take: false,
            values_left: values,
            bytes_left: bytes,
            steps: 0,
            active: HashMap::new(),
            lookups: Vec::new(),
        }
    }

    /// A resolver for a scope without substitutions: it moves literals out of the trie, without
    /// a budget, since it builds no more than the text holds.
    pub(super) fn taking(trie: &'d Trie, chars: &'d [char]) -> Self {
        let mut resolver = Resolver::new(trie, chars, usize::MAX, usize::MAX);
        resolver.take = true;
        resolver
    }

    /// The object rooted at `node` (the document's root, or a local trie's), at `level`.
    pub(super) fn object(&mut self, node: NodeId, level: usize) -> Result<Value, HoconError> {
        self.local_object(node, &[], level)
    }

    /// A value outside the root object (the elements of a root array).
    pub(super) fn node(&mut self, node: &'d Node, level: usize) -> Result<Value, HoconError> {
        self.resolve_node(node, None, &[], level)
    }

    // ---- errors, budget, recursion --------------------------------------------------------
    //
    // The resolver recurses through `value_at`, `fold`, `leaf`, `lookup` and the like, so those
    // keep small frames: errors are built in separate cold functions, and work that does not
    // recurse is done in helpers whose frames are gone by the time the recursion happens.

    #[cold]
    #[inline(never)]
    fn error_at(&self, pos: usize, message: String) -> HoconError {
        let (line, column) = locate(self.chars, pos);
        HoconError {
            line,
            column,
            message,
        }
    }

    /// Where an error without a place of its own is reported: the substitution being expanded.
    fn here(&self) -> usize {
        self.lookups.last().map_or(0, |subst| subst.pos)
    }

    fn charge(&mut self, values: usize, bytes: usize) -> Result<(), HoconError> {
        if values > self.values_left || bytes > self.bytes_left {
            return Err(self.over_budget(values > self.values_left));
        }
        self.values_left -= values;
        self.bytes_left -= bytes;
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn over_budget(&self, values: bool) -> HoconError {
        let what = if values {
            format!("{MAX_EXTRA_VALUES} values")
        } else {
            format!("{MAX_EXTRA_BYTES} bytes of text")
        };
        self.error_at(
            self.here(),
            format!(
                "substitutions expand the document by more than {what}, which is not supported"
            ),
        )
    }

    /// An array or object at `level`.
    fn container(&mut self, level: usize) -> Result<(), HoconError> {
        if level > MAX_DEPTH {
            return Err(self.too_deep());
        }
        self.charge(1, 0)
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> HoconError {
        self.error_at(
            self.here(),
            format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
        )
    }

    /// Bounds the recursion of the resolver, so that no document can exhaust the stack.
    fn enter(&mut self) -> Result<(), HoconError> {
        self.steps += 1;
        if self.steps > MAX_RESOLVE_STEPS {
            return Err(self.too_many_steps());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn too_many_steps(&self) -> HoconError {
        self.error_at(
            self.here(),
            format!(
                "substitutions and nesting go deeper than {MAX_RESOLVE_STEPS} steps, which is \
                 not supported"
            ),
        )
    }

    fn leave(&mut self) {
        self.steps = self.steps.saturating_sub(1);
    }

    fn enter_leaf(&mut self, node: NodeId, index: usize, rel: &[String]) -> Result<(), HoconError> {
        let key = (node, index, rel.to_vec());
        if let Some(&start) = self.active.get(&key) {
            return Err(self.cycle(node, start));
        }
        self.active.insert(key, self.lookups.len());
        Ok(())
    }

    fn leave_leaf(&mut self, node: NodeId, index: usize, rel: &[String]) {
        self.active.remove(&(node, index, rel.to_vec()));
    }

    /// The leaf at `node` is needed again while it is being resolved: the lookups made since it
    /// started form the cycle.
    #[cold]
    #[inline(never)]
    fn cycle(&self, node: NodeId, start: usize) -> HoconError {
        const SHOWN: usize = 8;
        let field = self.trie.display(node);
        let mut names = vec![field.clone()];
        names.extend(
            self.lookups
                .get(start..)
                .unwrap_or_default()
                .iter()
                .map(|subst| render_path(&subst.path)),
        );
        if names.last() != Some(&field) {
            names.push(field);
        }
        let mut shown: Vec<String> = names
            .iter()
            .map(|name| format!("`{}`", echo(name)))
            .collect();
        if shown.len() > SHOWN {
            let tail = shown.split_off(shown.len() - SHOWN / 2);
            shown.truncate(SHOWN / 2);
            shown.push("…".to_owned());
            shown.extend(tail);
        }
        self.error_at(
            self.here(),
            format!("substitutions form a cycle: {}", shown.join(" → ")),
        )
    }

    #[cold]
    #[inline(never)]
    fn append_error(&self, node: Option<NodeId>, op: usize, holds: &str) -> HoconError {
        let name = node.map_or_else(String::new, |node| self.trie.display(node));
        self.error_at(
            op,
            format!(
                "cannot append to `{}` with `+=`: it holds {holds}, not an array",
                echo(&name)
            ),
        )
    }

    #[cold]
    #[inline(never)]
    fn unknown(&self, subst: &Subst, own: Option<(NodeId, bool)>) -> HoconError {
        let shown = echo(&subst.shown());
        let message = match own {
            Some((field, true)) => format!(
                "`{shown}` refers to `{}` itself, which has no earlier value",
                echo(&self.trie.display(field))
            ),
            Some((field, false)) => format!(
                "`{shown}` names nothing in `{}` as it was before this definition (a field \
                 that refers to itself reads its earlier value)",
                echo(&self.trie.display(field))
            ),
            None => format!(
                "`{shown}` names nothing in this document (substitutions are looked up in the \
                 document only, never in the environment)"
            ),
        };
        self.error_at(subst.pos, message)
    }

    #[cold]
    #[inline(never)]
    fn chain_too_long(&self, subst: &Subst) -> HoconError {
        self.error_at(
            subst.pos,
            format!(
                "more than {MAX_SUBSTITUTION_CHAIN} substitutions depend on one another \
                 (`a = ${{b}}`, `b = ${{c}}`, …), which is not supported"
            ),
        )
    }

    #[cold]
    #[inline(never)]
    fn mixed(&self, pos: usize, piece: String, first: &str) -> HoconError {
        self.error_at(pos, format!("cannot concatenate {piece} with {first}"))
    }

    // ---- values -----------------------------------------------------------------------------

    /// A literal, moved out of the trie or copied at `level`.
    fn literal(&mut self, cell: &Cell<Value>, level: usize) -> Result<Value, HoconError> {
        if self.take {
            return Ok(cell.take());
        }
        let value = cell.take();
        let copy = self.copy(&value, level);
        cell.set(value);
        copy
    }

    /// A copy of `value` placed at `level`, charged to the budget. Recursion is bounded by
    /// `MAX_DEPTH` levels, as `container` refuses deeper ones, and counts as steps.
    fn copy(&mut self, value: &Value, level: usize) -> Result<Value, HoconError> {
        match value {
            Value::Array(items) => {
                self.enter()?;
                self.container(level)?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.copy(item, level + 1)?);
                }
                self.leave();
                Ok(Value::Array(out))
            }
            Value::Object(map) => {
                self.enter()?;
                self.container(level)?;
                let mut out = Map::new();
                for (key, item) in map {
                    self.charge(0, key.len())?;
                    out.insert(key.clone(), self.copy(item, level + 1)?);
                }
                self.leave();
                Ok(Value::Object(out))
            }
            Value::String(text) => {
                self.charge(1, text.len())?;
                Ok(Value::String(text.clone()))
            }
            other => {
                self.charge(1, 0)?;
                Ok(other.clone())
            }
        }
    }

    /// The value of the path at `site`.
    fn value_at(&mut self, site: &Site<'_, '_>) -> Result<Found, HoconError> {
        self.enter()?;
        let folded = self.fold(site)?;
        let found = self.finish(site, folded)?;
        self.leave();
        Ok(found)
    }

    fn finish(&mut self, site: &Site<'_, '_>, folded: Folded<'_>) -> Result<Found, HoconError> {
        if folded.object() {
            return self.build_object(site, &folded).map(Found::Value);
        }
        Ok(match folded.value {
            Some(value) => Found::Value(value),
            None if folded.hidden => Found::Hidden,
            None => Found::Absent,
        })
    }

    /// Folds the events of `site` from the latest down, to the first non-object.
    fn fold<'v>(&mut self, site: &Site<'_, 'v>) -> Result<Folded<'v>, HoconError>
    where
        'd: 'v,
    {
        let mut cursors = self.cursors(site);
        let mut out = Folded {
            marker: false,
            layers: Vec::new(),
            stop: None,
            value: None,
            hidden: false,
        };
        // `+=` leaves met so far (index among the node's leaves, position of the `+=`),
        // latest first.
        let mut appends: Vec<(usize, usize)> = Vec::new();
        while let Some((seq, next)) = self.next_event(site, &mut cursors, &mut out, &appends)? {
            let event = self.event(site, next, out.object())?;
            if !self.absorb(site, seq, event, &mut out, &mut appends)? {
                break;
            }
        }
        if !appends.is_empty() {
            let base = out.value.take();
            out.value = Some(self.append(site, &appends, base)?);
            out.hidden = false;
        }
        Ok(out)
    }

    fn cursors(&self, site: &Site<'_, '_>) -> Cursors {
        let trie = self.trie;
        let own = site
            .node
            .and_then(|node| trie.nodes.get(node))
            .map_or(&[][..], |node| &node.leaves[..]);
        Cursors {
            own_lo: own.partition_point(|leaf| leaf.seq <= site.floor),
            own_hi: own.partition_point(|leaf| leaf.seq < site.ceiling),
            ancestor_hi: site
                .ancestors
                .iter()
                .map(|ancestor| {
                    trie.nodes.get(ancestor.node).map_or(0, |node| {
                        node.leaves
                            .partition_point(|leaf| leaf.seq < ancestor.ceiling)
                    })
                })
                .collect(),
            inherited: 0,
            upper: site.ceiling,
        }
    }

    /// The latest event not yet folded, its cursor moved past it. Notes a marker above it.
    fn next_event(
        &self,
        site: &Site<'_, '_>,
        cursors: &mut Cursors,
        out: &mut Folded<'_>,
        appends: &[(usize, usize)],
    ) -> Result<Option<(Seq, Next)>, HoconError> {
        let trie = self.trie;
        let node = site.node.and_then(|node| trie.nodes.get(node));
        let mut next: Option<(Seq, Next)> = None;
        if cursors.own_hi > cursors.own_lo {
            let index = cursors.own_hi - 1;
            next = node
                .and_then(|node| node.leaves.get(index))
                .map(|leaf| (leaf.seq, Next::Own(index)));
        }
        for (a, &hi) in cursors.ancestor_hi.iter().enumerate() {
            let leaf = site.ancestors.get(a).and_then(|ancestor| {
                trie.nodes
                    .get(ancestor.node)?
                    .leaves
                    .get(hi.checked_sub(1)?)
            });
            if let Some(leaf) = leaf
                && leaf.seq > site.floor
                && next.is_none_or(|(seq, _)| leaf.seq > seq)
            {
                next = Some((leaf.seq, Next::Ancestor(a, hi - 1)));
            }
        }
        if let Some(&(seq, _)) = site.inherited.get(cursors.inherited)
            && next.is_none_or(|(best, _)| seq > best)
        {
            next = Some((seq, Next::Inherited(cursors.inherited)));
        }
        let below = next.map_or(site.floor, |(seq, _)| seq);
        let markers = node.map_or(&[][..], |node| &node.markers[..]);
        if marker_between(markers, below, cursors.upper) {
            if let Some(&(_, op)) = appends.last() {
                return Err(self.append_error(site.node, op, "an object"));
            }
            out.marker = true;
        }
        if let Some((seq, next)) = next {
            cursors.upper = seq;
            match next {
                Next::Own(index) => cursors.own_hi = index,
                Next::Ancestor(a, index) => {
                    if let Some(hi) = cursors.ancestor_hi.get_mut(a) {
                        *hi = index;
                    }
                }
                Next::Inherited(i) => cursors.inherited = i + 1,
            }
        }
        Ok(next)
    }

    /// What the event `next` contributes; with `object_above`, non-objects that need no
    /// evaluation to be known as such are not evaluated.
    fn event<'v>(
        &mut self,
        site: &Site<'_, 'v>,
        next: Next,
        object_above: bool,
    ) -> Result<Event<'v>, HoconError>
    where
        'd: 'v,
    {
        let trie = self.trie;
        Ok(match next {
            Next::Own(index) => {
                let node = site.node.unwrap_or(ROOT);
                let Some(leaf) = trie.nodes.get(node).and_then(|n| n.leaves.get(index)) else {
                    return Ok(Event::Stop);
                };
                match &leaf.kind {
                    LeafKind::Append { .. } if object_above => Event::Stop,
                    LeafKind::Append { op, .. } => Event::Append(index, *op),
                    LeafKind::Value {
                        node: Node::Literal(cell),
                        ..
                    } if object_above && !literal_is_object(cell) => Event::Stop,
                    LeafKind::Value {
                        node: Node::Array(_),
                        ..
                    } if object_above => Event::Stop,
                    LeafKind::Value { .. } => {
                        Event::Found(self.leaf(node, index, &[], site.excl, site.level)?)
                    }
                }
            }
            Next::Ancestor(a, index) => match site.ancestors.get(a) {
                Some(ancestor) => Event::Found(self.leaf(
                    ancestor.node,
                    index,
                    ancestor.rel,
                    site.excl,
                    site.level,
                )?),
                None => Event::Stop,
            },
            Next::Inherited(i) => match site.inherited.get(i) {
                Some(&(_, value)) if value.is_object() => Event::Layer(value),
                Some(_) if object_above => Event::Stop,
                Some(&(_, value)) => Event::Found(Found::Value(self.copy(value, site.level)?)),
                None => Event::Stop,
            },
        })
    }

    /// Folds `event` (at `seq`) into `out`; false when the fold stops there.
    fn absorb<'v>(
        &self,
        site: &Site<'_, 'v>,
        seq: Seq,
        event: Event<'v>,
        out: &mut Folded<'v>,
        appends: &mut Vec<(usize, usize)>,
    ) -> Result<bool, HoconError> {
        let layer = match event {
            Event::Append(index, op) => {
                appends.push((index, op));
                return Ok(true);
            }
            Event::Stop => {
                out.stop = Some(seq);
                return Ok(false);
            }
            Event::Layer(value) => Cow::Borrowed(value),
            Event::Found(Found::Value(Value::Object(map))) => Cow::Owned(Value::Object(map)),
            Event::Found(Found::Value(value)) => {
                out.stop = Some(seq);
                if !out.object() {
                    out.value = Some(value);
                }
                return Ok(false);
            }
            Event::Found(Found::Absent) => return Ok(true),
            Event::Found(Found::Hidden) => {
                out.stop = Some(seq);
                out.hidden = !out.object();
                return Ok(false);
            }
        };
        if let Some(&(_, op)) = appends.last() {
            return Err(self.append_error(site.node, op, "an object"));
        }
        out.layers.push((seq, layer));
        Ok(true)
    }

    /// `base` (what lies below the `+=` leaves) with their values appended, earliest first.
    fn append(
        &mut self,
        site: &Site<'_, '_>,
        appends: &[(usize, usize)],
        base: Option<Value>,
    ) -> Result<Value, HoconError> {
        let lowest = appends.last().map_or(0, |&(_, op)| op);
        let mut items = match base {
            None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.append_error(site.node, lowest, kind(&other))),
        };
        self.container(site.level)?;
        let node = site.node.unwrap_or(ROOT);
        for &(index, _) in appends.iter().rev() {
            let Some(LeafKind::Append { node: value, .. }) = self
                .trie
                .nodes
                .get(node)
                .and_then(|n| n.leaves.get(index))
                .map(|leaf| &leaf.kind)
            else {
                continue;
            };
            self.enter_leaf(node, index, &[])?;
            items.push(self.resolve_node(value, None, site.excl, site.level + 1)?);
            self.leave_leaf(node, index, &[]);
        }
        Ok(Value::Array(items))
    }

    /// The object folded at `site`: its trie children and the keys of the objects above the
    /// stop, each folded in turn, in the order they first appeared.
    fn build_object(
        &mut self,
        site: &Site<'_, '_>,
        folded: &Folded<'_>,
    ) -> Result<Value, HoconError> {
        self.container(site.level)?;
        let floor = folded.stop.unwrap_or(site.floor);
        let entries = self.entries(site, folded, floor);
        let mut map = Map::new();
        for entry in &entries {
            if let Some(value) = self.entry_value(site, floor, entry)? {
                self.charge(0, entry.key.len())?;
                map.insert(entry.key.to_owned(), value);
            }
        }
        Ok(Value::Object(map))
    }

    /// The keys of the object folded at `site`, in the order they first appeared.
    fn entries<'k>(
        &self,
        site: &Site<'_, '_>,
        folded: &'k Folded<'_>,
        floor: Seq,
    ) -> Vec<Entry<'k, 'k>>
    where
        'd: 'k,
    {
        let trie = self.trie;
        let mut entries: Vec<Entry<'k, 'k>> = Vec::new();
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        if folded.marker
            && let Some(node) = site.node.and_then(|node| trie.nodes.get(node))
        {
            for &child in &node.children {
                let Some(child_node) = trie.nodes.get(child) else {
                    continue;
                };
                let ceiling = ceiling_of(site.excl, child, site.ceiling);
                let Some(first) = first_event(child_node, floor, ceiling) else {
                    continue;
                };
                if !folded.layers.is_empty() {
                    by_key.insert(&child_node.key, entries.len());
                }
                entries.push(Entry {
                    key: &child_node.key,
                    first,
                    node: Some(child),
                    ceiling,
                    inherited: Vec::new(),
                });
            }
        }
        for (seq, layer) in &folded.layers {
            let Value::Object(map) = layer.as_ref() else {
                continue;
            };
            for (key, value) in map {
                match by_key.get(key.as_str()).and_then(|&i| entries.get_mut(i)) {
                    Some(entry) => {
                        entry.first = entry.first.min(*seq);
                        entry.inherited.push((*seq, value));
                    }
                    None => {
                        by_key.insert(key, entries.len());
                        entries.push(Entry {
                            key,
                            first: *seq,
                            node: None,
                            ceiling: Seq::MAX,
                            inherited: vec![(*seq, value)],
                        });
                    }
                }
            }
        }
        if !entries.is_sorted_by_key(|entry| entry.first) {
            entries.sort_by_key(|entry| entry.first);
        }
        entries
    }

    /// The value of one key of an object being built, if it has one.
    fn entry_value(
        &mut self,
        site: &Site<'_, '_>,
        floor: Seq,
        entry: &Entry<'_, '_>,
    ) -> Result<Option<Value>, HoconError> {
        if entry.node.is_none()
            && let Some(&(_, value)) = entry.inherited.first()
            && (entry.inherited.len() == 1 || !value.is_object())
        {
            // Only one object has the key, or the latest is not an object: copy its value.
            return self.copy(value, site.level + 1).map(Some);
        }
        if entry.inherited.is_empty()
            && let Some(cell) = self.plain_literal(entry.node, floor, entry.ceiling)
        {
            // The common case, a key set to a literal last: no fold needed.
            return self.literal(cell, site.level + 1).map(Some);
        }
        let child = Site {
            node: entry.node,
            floor,
            ceiling: entry.ceiling,
            ancestors: &[],
            inherited: &entry.inherited,
            excl: site.excl,
            level: site.level + 1,
        };
        Ok(match self.value_at(&child)? {
            Found::Value(value) => Some(value),
            Found::Absent | Found::Hidden => None,
        })
    }

    /// The literal that `node` holds when its latest event (above `floor`, below `ceiling`) is
    /// a literal leaf that is not an object.
    fn plain_literal(
        &self,
        node: Option<NodeId>,
        floor: Seq,
        ceiling: Seq,
    ) -> Option<&'d Cell<Value>> {
        let trie = self.trie;
        let node = trie.nodes.get(node?)?;
        let top = node.leaves.get(
            node.leaves
                .partition_point(|leaf| leaf.seq < ceiling)
                .checked_sub(1)?,
        )?;
        let LeafKind::Value {
            node: Node::Literal(cell),
            ..
        } = &top.kind
        else {
            return None;
        };
        (top.seq > floor
            && !marker_between(&node.markers, top.seq, ceiling)
            && !literal_is_object(cell))
        .then_some(cell)
    }

    /// The value of leaf `index` of `node`, read at `rel` below it (empty: the leaf's value).
    fn leaf(
        &mut self,
        node: NodeId,
        index: usize,
        rel: &[String],
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Found, HoconError> {
        let trie = self.trie;
        let Some(leaf) = trie.nodes.get(node).and_then(|n| n.leaves.get(index)) else {
            return Ok(Found::Absent);
        };
        let LeafKind::Value {
            node: value,
            self_seq,
            object_concat,
        } = &leaf.kind
        else {
            // An array (`+=`) hides what lies below it.
            return Ok(Found::Hidden);
        };
        let own = (node, *self_seq);
        match value {
            Node::Literal(cell) => self.literal_at(cell, rel, level),
            Node::Array(_) if !rel.is_empty() => Ok(Found::Hidden),
            Node::Subst(subst) => {
                self.enter_leaf(node, index, rel)?;
                let found = self.subst_leaf(subst, own, *object_concat, rel, excl, level)?;
                self.leave_leaf(node, index, rel);
                Ok(found)
            }
            Node::Array(_) | Node::Object(_) | Node::Concat(_) => {
                self.enter_leaf(node, index, rel)?;
                let whole_level = level.saturating_sub(rel.len()).max(1);
                let whole = self.resolve_node(value, Some(own), excl, whole_level)?;
                self.leave_leaf(node, index, rel);
                Ok(navigate(whole, rel))
            }
        }
    }

    /// A literal leaf read at `rel` below it.
    fn literal_at(
        &mut self,
        cell: &Cell<Value>,
        rel: &[String],
        level: usize,
    ) -> Result<Found, HoconError> {
        if rel.is_empty() {
            return self.literal(cell, level).map(Found::Value);
        }
        if !literal_is_object(cell) {
            return Ok(Found::Hidden);
        }
        let whole = self.literal(cell, level.saturating_sub(rel.len()).max(1))?;
        Ok(navigate(whole, rel))
    }

    /// A substitution leaf of field `own`, read at `rel` below it.
    fn subst_leaf(
        &mut self,
        subst: &'d Subst,
        own: (NodeId, Seq),
        object_concat: bool,
        rel: &[String],
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Found, HoconError> {
        let lookup = self.lookup(subst, rel, Some(own), excl, level)?;
        if !rel.is_empty() {
            return Ok(lookup.found);
        }
        match lookup.found {
            Found::Value(value) if object_concat && !value.is_object() => Err(self.mixed(
                subst.pos,
                format!("`{}` ({})", echo(&subst.shown()), kind(&value)),
                "an object",
            )),
            Found::Value(value) => Ok(Found::Value(value)),
            Found::Absent | Found::Hidden => Err(self.unknown(subst, lookup.own)),
        }
    }

    /// A value; `own` is the field it makes up, for self-references, if it is a field's value.
    fn resolve_node(
        &mut self,
        node: &'d Node,
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        match node {
            Node::Literal(cell) => self.literal(cell, level),
            Node::Array(items) => self.array(items, excl, level),
            Node::Object(root) => self.local_object(*root, excl, level),
            Node::Subst(subst) => self.substitute(subst, own, excl, level),
            Node::Concat(pieces) => self.concat(pieces, own, excl, level),
        }
    }

    fn array(
        &mut self,
        items: &'d [Node],
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        self.enter()?;
        self.container(level)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(self.resolve_node(item, None, excl, level + 1)?);
        }
        self.leave();
        Ok(Value::Array(out))
    }

    fn local_object(
        &mut self,
        root: NodeId,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        let site = Site {
            node: Some(root),
            floor: 0,
            ceiling: Seq::MAX,
            ancestors: &[],
            inherited: &[],
            excl,
            level,
        };
        match self.value_at(&site)? {
            Found::Value(value) => Ok(value),
            Found::Absent | Found::Hidden => {
                self.container(level)?;
                Ok(Value::Object(Map::new()))
            }
        }
    }

    /// The value `subst` names.
    fn substitute(
        &mut self,
        subst: &'d Subst,
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        let lookup = self.lookup(subst, &[], own, excl, level)?;
        match lookup.found {
            Found::Value(value) => Ok(value),
            Found::Absent | Found::Hidden => Err(self.unknown(subst, lookup.own)),
        }
    }

    /// Looks up `subst`'s path, then `rel` below it. When the path goes through `own` (the
    /// field the substitution makes up), the field is read as it was before the definition.
    fn lookup(
        &mut self,
        subst: &'d Subst,
        rel: &[String],
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Lookup, HoconError> {
        let plan = self.plan(subst, rel, own, excl)?;
        let ancestors: Vec<Ancestor<'_>> = plan
            .ancestors
            .iter()
            .map(|&(node, ceiling, start)| Ancestor {
                node,
                ceiling,
                rel: plan.path.get(start..).unwrap_or_default(),
            })
            .collect();
        let site = Site {
            node: plan.target.map(|(node, _)| node),
            floor: 0,
            ceiling: plan.target.map_or(Seq::MAX, |(_, ceiling)| ceiling),
            ancestors: &ancestors,
            inherited: &[],
            excl: plan.excl.as_deref().unwrap_or(excl),
            level,
        };
        self.lookups.push(subst);
        let found = self.value_at(&site)?;
        self.lookups.pop();
        self.leave();
        Ok(Lookup {
            found,
            own: plan.own,
        })
    }

    /// Checks a lookup may go ahead (the matching `leave` is in `lookup`), and finds the trie
    /// nodes along its path.
    fn plan(
        &mut self,
        subst: &Subst,
        rel: &[String],
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
    ) -> Result<Plan, HoconError> {
        if self.lookups.len() >= MAX_SUBSTITUTION_CHAIN {
            return Err(self.chain_too_long(subst));
        }
        self.enter()?;
        self.charge(1, 0)?;
        let trie = self.trie;
        let path: Vec<String> = subst.path.iter().chain(rel).cloned().collect();
        let mut walked = Vec::with_capacity(path.len());
        let mut at = ROOT;
        for segment in &path {
            match trie.child(at, segment) {
                Some(child) => {
                    walked.push(child);
                    at = child;
                }
                None => break,
            }
        }
        let mut plan = Plan {
            path,
            excl: None,
            target: None,
            ancestors: Vec::new(),
            own: None,
        };
        if let Some((field, seq)) = own
            && let Some(at) = walked.iter().position(|&node| node == field)
        {
            let mut with_own = excl.to_vec();
            with_own.push((field, seq));
            plan.excl = Some(with_own);
            plan.own = Some((field, at + 1 == subst.path.len()));
        }
        let excl = plan.excl.as_deref().unwrap_or(excl);
        let mut ceiling = Seq::MAX;
        for (depth, &node) in walked.iter().enumerate() {
            ceiling = ceiling_of(excl, node, ceiling);
            if depth + 1 == plan.path.len() {
                plan.target = Some((node, ceiling));
            } else if trie.nodes.get(node).is_some_and(|n| !n.leaves.is_empty()) {
                plan.ancestors.push((node, ceiling, depth + 1));
            }
        }
        Ok(plan)
    }

    /// A value concatenation: strings (with the whitespace between them), arrays, or objects,
    /// never a mix.
    fn concat(
        &mut self,
        pieces: &'d [Piece],
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        self.enter()?;
        let mut acc = Acc::Empty;
        // The first piece, as messages describe it.
        let mut first = String::new();
        for piece in pieces {
            let value = self.piece(piece, own, excl, level)?;
            acc = self.combine(acc, piece, value, &mut first)?;
        }
        let value = self.concatenated(acc, level)?;
        self.leave();
        Ok(value)
    }

    fn piece(
        &mut self,
        piece: &'d Piece,
        own: Option<(NodeId, Seq)>,
        excl: &[(NodeId, Seq)],
        level: usize,
    ) -> Result<Value, HoconError> {
        match &piece.item {
            Item::Token(token) => Ok(Value::String(token.text().to_owned())),
            Item::Subst(subst) => self.substitute(subst, own, excl, level),
            Item::Array(node) => self.resolve_node(node, None, excl, level),
        }
    }

    /// `acc` with `piece`, whose value is `value`, concatenated.
    fn combine(
        &mut self,
        acc: Acc,
        piece: &Piece,
        value: Value,
        first: &mut String,
    ) -> Result<Acc, HoconError> {
        let literal = !matches!(piece.item, Item::Subst(_));
        let described = describe_piece(piece, &value);
        let acc = match (acc, value) {
            (Acc::Empty, Value::Array(items)) => Acc::List(items),
            (Acc::Empty, Value::Object(map)) => Acc::Object(map),
            (Acc::Empty, simple) => {
                let text = simple_text(simple, literal);
                self.charge(0, text.len())?;
                Acc::Text(text)
            }
            (Acc::Text(mut text), simple) if !simple.is_array() && !simple.is_object() => {
                let more = simple_text(simple, literal);
                self.charge(0, piece.gap.len() + more.len())?;
                text.push_str(&piece.gap);
                text.push_str(&more);
                Acc::Text(text)
            }
            (Acc::List(mut items), Value::Array(more)) => {
                items.extend(more);
                Acc::List(items)
            }
            (Acc::Object(mut map), Value::Object(more)) => {
                merge(&mut map, more);
                Acc::Object(map)
            }
            _ => return Err(self.mixed(piece.pos, described, first)),
        };
        if first.is_empty() {
            *first = described;
        }
        Ok(acc)
    }

    fn concatenated(&mut self, acc: Acc, level: usize) -> Result<Value, HoconError> {
        Ok(match acc {
            Acc::Empty => Value::String(String::new()),
            Acc::Text(text) => {
                self.charge(1, 0)?;
                Value::String(text)
            }
            Acc::List(items) => {
                self.container(level)?;
                Value::Array(items)
            }
            Acc::Object(map) => {
                self.container(level)?;
                Value::Object(map)
            }
        })
    }
}

/// The smallest ceiling `excl` sets on `node`, or `inherited`.
fn ceiling_of(excl: &[(NodeId, Seq)], node: NodeId, inherited: Seq) -> Seq {
    excl.iter()
        .filter(|(field, _)| *field == node)
        .map(|&(_, seq)| seq)
        .fold(inherited, Seq::min)
}

/// Whether `markers` (sorted) holds one strictly between `low` and `high`.
fn marker_between(markers: &[Seq], low: Seq, high: Seq) -> bool {
    markers
        .get(markers.partition_point(|&seq| seq <= low))
        .is_some_and(|&seq| seq < high)
}

/// The first event at `node` (a leaf or a marker) above `floor` and below `ceiling`.
fn first_event(node: &TrieNode, floor: Seq, ceiling: Seq) -> Option<Seq> {
    let leaf = node
        .leaves
        .get(node.leaves.partition_point(|leaf| leaf.seq <= floor))
        .map(|leaf| leaf.seq);
    let marker = node
        .markers
        .get(node.markers.partition_point(|&seq| seq <= floor))
        .copied();
    [leaf, marker]
        .into_iter()
        .flatten()
        .filter(|&seq| seq < ceiling)
        .min()
}

fn literal_is_object(cell: &Cell<Value>) -> bool {
    let value = cell.take();
    let object = value.is_object();
    cell.set(value);
    object
}

/// The part of `value` at `rel`.
fn navigate(value: Value, rel: &[String]) -> Found {
    let mut at = value;
    for segment in rel {
        at = match at {
            Value::Object(mut map) => match map.remove(segment) {
                Some(inner) => inner,
                None => return Found::Absent,
            },
            _ => return Found::Hidden,
        };
    }
    Found::Value(at)
}

/// A simple value as it reads in a string: numbers as JSON writes them, and a substitution
/// that is `null` as nothing (HOCON's rule; a literal `null` reads `null`).
fn simple_text(value: Value, literal: bool) -> String {
    match value {
        Value::String(text) => text,
        Value::Null if !literal => String::new(),
        other => other.to_string(),
    }
}

fn describe_piece(piece: &Piece, value: &Value) -> String {
    match &piece.item {
        Item::Subst(subst) => format!("`{}` ({})", echo(&subst.shown()), kind(value)),
        Item::Token(_) => "a string".to_owned(),
        Item::Array(_) => "an array".to_owned(),
    }
}
