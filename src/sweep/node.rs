//! Reading `[axes]` in the order the spec writes it: the `toml` crate's tables are sorted
//! by key, but every value it parses carries its position (`toml::Spanned`), so the axes
//! are read as a tree of spanned nodes and their leaves sorted by where they start.

use std::fmt;

use anyhow::{bail, Result};
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A value of `[axes]`: a table (recursed into), or anything else.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A table, with each entry's position.
    Table(Vec<(String, Spanned<Node>)>),
    /// Any other value.
    Leaf(toml::Value),
}

/// Keys of a range table (`{ log = [a, b], points = n }`, with an optional `key`): such a
/// table is an axis.
const RANGE_KEYS: [&str; 6] = ["log", "linear", "points", "values", "labels", "key"];

/// The axes under `root` (dotted key, value), in the order the spec writes them. A table
/// whose keys are all range keys is one axis; other tables nest keys (`hyper.opt.lr`).
pub fn axis_leaves(root: Spanned<Node>) -> Result<Vec<(String, toml::Value)>> {
    let Node::Table(entries) = root.into_inner() else {
        bail!("[axes] must be a table of key = values")
    };
    let mut out = Vec::new();
    collect("", entries, &mut out);
    out.sort_by_key(|(start, _, _)| *start);
    Ok(out.into_iter().map(|(_, k, v)| (k, v)).collect())
}

fn collect(
    prefix: &str,
    entries: Vec<(String, Spanned<Node>)>,
    out: &mut Vec<(usize, String, toml::Value)>,
) {
    for (key, node) in entries {
        let key = join(prefix, &key);
        let start = node.span().start;
        match node.into_inner() {
            Node::Table(children) if !is_range(&children) => collect(&key, children, out),
            node => out.push((start, key, value(node))),
        }
    }
}

fn is_range(entries: &[(String, Spanned<Node>)]) -> bool {
    !entries.is_empty()
        && entries
            .iter()
            .all(|(k, _)| RANGE_KEYS.contains(&k.as_str()))
}

/// The plain TOML value of a node.
fn value(node: Node) -> toml::Value {
    match node {
        Node::Leaf(v) => v,
        Node::Table(entries) => toml::Value::Table(
            entries
                .into_iter()
                .map(|(k, n)| (k, value(n.into_inner())))
                .collect(),
        ),
    }
}

/// `prefix.key`, or `key` at the top.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The leaves of `value` under `prefix`: (dotted key, non-table value). A table is
/// merged key by key, so `task = { seq_len = 60 }` sets `task.seq_len` only.
pub fn flatten(prefix: &str, value: &toml::Value) -> Vec<(String, toml::Value)> {
    match value {
        toml::Value::Table(t) => t
            .iter()
            .flat_map(|(k, v)| flatten(&join(prefix, k), v))
            .collect(),
        v => vec![(prefix.to_owned(), v.clone())],
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Spanned<Node>>()? {
            entries.push((k, v));
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<toml::Value>()? {
            items.push(v);
        }
        Ok(Node::Leaf(toml::Value::Array(items)))
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Leaf(toml::Value::Boolean(v)))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Leaf(toml::Value::Integer(v)))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Node, E> {
        let v = i64::try_from(v).map_err(|_| E::custom("integer out of range"))?;
        Ok(Node::Leaf(toml::Value::Integer(v)))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Leaf(toml::Value::Float(v)))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Leaf(toml::Value::String(v.to_owned())))
    }
}
