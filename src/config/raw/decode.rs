//! The small decoder `raw` is written with: node tree -> Rust values, collecting
//! every problem instead of stopping at the first.
//!
//! Owns shape and primitive-type checks (mapping, list, string, integer, bool),
//! unknown and duplicate keys, and recording each value's position in the
//! [`SpanIndex`]. Does not know any key's meaning. Invariants: a value that fails to
//! decode is reported here exactly once and then reads as absent, but its path stays
//! in the span index so `validate` can tell "written but wrong" from "missing"; a
//! null value (`key:` or `key: ~`) reads as absent and is not recorded. Tested
//! through the golden fixtures (unknown keys, wrong types, duplicates).

use crate::config::error::Report;
use crate::config::node::{Node, NodeKind};
use crate::config::span::{child, item, SpanIndex};

pub struct Decoder<'r> {
    pub spans: SpanIndex,
    report: &'r mut Report,
}

/// The known keys of one mapping, checked and positioned.
pub struct Fields<'n> {
    path: String,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The non-null value written for `key`.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, v)| *k == key && !v.is_null())
            .map(|(_, v)| *v)
    }

    /// Whether `key` was written at all, even as null (`tcp:` means `tcp: {}`).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    pub fn path(&self, key: &str) -> String {
        child(&self.path, key)
    }
}

impl<'r> Decoder<'r> {
    pub fn new(report: &'r mut Report) -> Decoder<'r> {
        Decoder {
            spans: SpanIndex::default(),
            report,
        }
    }

    pub fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.report.push(node.pos, path, message);
    }

    /// Checks that `node` is a mapping whose keys are all in `known`.
    pub fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            let found = node.describe();
            self.error(node, path, format!("expected a mapping, found {found}"));
            return None;
        };
        let mut fields = Fields {
            path: path.to_string(),
            entries: Vec::new(),
        };
        for (key_node, value) in entries {
            let NodeKind::Scalar { text: key, .. } = &key_node.kind else {
                self.error(key_node, path, "mapping keys must be plain strings");
                continue;
            };
            let key_path = child(path, key);
            if !known.contains(&key.as_str()) {
                self.error(key_node, &key_path, unknown_key(key, known));
                continue;
            }
            if fields.has(key) {
                let first = self.spans.pos(&key_path).line;
                let msg = format!("duplicate key \"{key}\" (first set on line {first})");
                self.error(key_node, &key_path, msg);
                continue;
            }
            if value.is_null() {
                self.spans.record_null(&key_path, key_node.pos);
            } else {
                self.spans.record(&key_path, value.pos);
            }
            fields.entries.push((key.as_str(), value));
        }
        Some(fields)
    }

    /// Any scalar, as text: numbers are accepted where a string is expected.
    pub fn string(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        let node = f.get(key)?;
        self.scalar(node, &f.path(key), "a string")
    }

    fn scalar(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { text, .. } => Some(text.clone()),
            _ => {
                let found = node.describe();
                self.error(node, path, format!("expected {what}, found {found}"));
                None
            }
        }
    }

    pub fn int(&mut self, f: &Fields<'_>, key: &str) -> Option<i64> {
        let node = f.get(key)?;
        self.int_node(node, &f.path(key))
    }

    fn int_node(&mut self, node: &Node, path: &str) -> Option<i64> {
        let text = self.scalar(node, path, "an integer")?;
        match text.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(node, path, format!("expected an integer, found \"{text}\""));
                None
            }
        }
    }

    pub fn bool(&mut self, f: &Fields<'_>, key: &str) -> Option<bool> {
        let node = f.get(key)?;
        let path = f.path(key);
        let text = self.scalar(node, &path, "true or false")?;
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                let msg = format!("expected true or false, found \"{text}\"");
                self.error(node, &path, msg);
                None
            }
        }
    }

    /// A list under `key`; each element's path is recorded and handed out.
    pub fn list<'n>(&mut self, f: &Fields<'n>, key: &str) -> Option<Vec<(String, &'n Node)>> {
        let node = f.get(key)?;
        let path = f.path(key);
        let NodeKind::Seq(items) = &node.kind else {
            let found = node.describe();
            self.error(node, &path, format!("expected a list, found {found}"));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, n) in items.iter().enumerate() {
            let p = item(&path, i);
            self.spans.record(&p, n.pos);
            out.push((p, n));
        }
        Some(out)
    }

    /// A list of mappings, each decoded by `each`; failed elements stay as `None`
    /// so indexes (and the paths `validate` builds from them) keep matching the file.
    pub fn list_of<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        mut each: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<Option<T>>> {
        let items = self.list(f, key)?;
        Some(items.into_iter().map(|(p, n)| each(self, n, &p)).collect())
    }

    pub fn string_list(&mut self, f: &Fields<'_>, key: &str) -> Option<Vec<String>> {
        let items = self.list(f, key)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (p, n) in items {
            match self.scalar(n, &p, "a string") {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub fn int_list(&mut self, f: &Fields<'_>, key: &str) -> Option<Vec<i64>> {
        let items = self.list(f, key)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (p, n) in items {
            match self.int_node(n, &p) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

fn unknown_key(key: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (distance(key, k), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 1.max(key.len() / 3) => {
            format!("unknown key \"{key}\" (did you mean \"{k}\"?)")
        }
        _ => format!(
            "unknown key \"{key}\" (expected one of: {})",
            known.join(", ")
        ),
    }
}

/// Levenshtein distance; keys are short, so the quadratic table is fine.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        let msg = unknown_key("ballance", &["name", "balance", "servers"]);
        assert_eq!(msg, "unknown key \"ballance\" (did you mean \"balance\"?)");
        let msg = unknown_key("zzzzzz", &["name", "bind"]);
        assert_eq!(msg, "unknown key \"zzzzzz\" (expected one of: name, bind)");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("same", "same"), 0);
    }
}
