//! Key path (`upstreams[0].servers[1].address`) -> position in the file.
//!
//! `raw` records the position of every value it decodes; `validate`, which works
//! on position-free `Raw*` values, asks here where to point its errors. Owns the
//! path notation (`a.b[0].c`, root = ""). Invariant: `pos` always answers, falling
//! back to the nearest recorded ancestor and finally to 1:1, so an error is never
//! dropped for want of a location. Tested in `config::tests` and by every golden
//! fixture.

use std::collections::HashMap;

use super::node::Pos;

#[derive(Debug, Default)]
pub struct SpanIndex {
    values: HashMap<String, Pos>,
    /// Keys written with no value (`key:` or `key: ~`), at the key.
    nulls: HashMap<String, Pos>,
}

impl SpanIndex {
    pub fn record(&mut self, path: &str, pos: Pos) {
        self.values.entry(path.to_string()).or_insert(pos);
    }

    pub fn record_null(&mut self, path: &str, key_pos: Pos) {
        self.nulls.entry(path.to_string()).or_insert(key_pos);
    }

    /// Where `path` was written as a key without a value, if it was.
    pub fn null_at(&self, path: &str) -> Option<Pos> {
        self.nulls.get(path).copied()
    }

    /// Whether a value was written at `path` (even one that failed to decode).
    pub fn contains(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    /// Where the value at `path` was written, or its nearest written ancestor.
    pub fn pos(&self, path: &str) -> Pos {
        let mut path = path;
        loop {
            if let Some(pos) = self.values.get(path) {
                return *pos;
            }
            match parent(path) {
                Some(p) => path = p,
                None => return Pos::START,
            }
        }
    }
}

/// `parent.key`, or `key` at the root.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub fn item(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The enclosing path: `a.b[0]` for `a.b[0].c`, `a.b` for `a.b[0]`, `""` for `a`.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        return path.rfind('[').map(|i| &path[..i]);
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parent_walks_up_dots_and_indexes() {
        assert_eq!(parent("a.b[0].c"), Some("a.b[0]"));
        assert_eq!(parent("a.b[0]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn pos_falls_back_to_ancestor_then_start() {
        let mut idx = SpanIndex::default();
        idx.record("a.b", Pos { line: 3, col: 5 });
        assert_eq!(idx.pos("a.b[2].c"), Pos { line: 3, col: 5 });
        assert_eq!(idx.pos("z"), Pos::START);
    }
}
