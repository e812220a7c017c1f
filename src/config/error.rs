//! Configuration errors: one located problem ([`ConfigError`]) and the sorted set
//! of all of them ([`ConfigErrors`]) that `load`/`parse` return.
//!
//! Owns the user-facing text format `FILE:LINE:COL: PATH: message`; does not decide
//! what is wrong (that is `raw` and `validate`). Invariant: a `ConfigErrors` is never
//! empty and is sorted by (line, col), ties kept in discovery order. Tested by the
//! golden fixtures, which pin the exact Display output.

use std::fmt;

use super::node::Pos;

/// One problem in the configuration file.
///
/// `line`/`col` are 1-based and point at the offending value (or key, for unknown
/// keys; or the enclosing mapping, for missing keys). Two special shapes: an empty
/// `path` (YAML syntax errors) is left out of the Display, and `line == 0` (the file
/// could not be read at all) leaves out the position too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write_escaped(f, &self.path)?;
            f.write_str(": ")?;
        }
        write_escaped(f, &self.message)
    }
}

/// Writes `s` with control characters escaped: keys and values quoted in a
/// message come from the file, and a key like `"a\nb"` must not break the
/// one-error-per-line output (found by `config/fuzz.rs`).
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.chars().any(char::is_control) {
        return f.write_str(s);
    }
    for ch in s.chars() {
        if ch.is_control() {
            write!(f, "{}", ch.escape_default())?;
        } else {
            fmt::Write::write_char(f, ch)?;
        }
    }
    Ok(())
}

/// Every problem found in one file, sorted by position. Display prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Sorts by position; `None` when there is nothing to report.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        if errors.is_empty() {
            return None;
        }
        // Stable: errors at the same spot stay in the order they were found.
        errors.sort_by_key(|e| (e.line, e.col));
        errors.dedup();
        Some(ConfigErrors { errors })
    }

    pub(crate) fn single(error: ConfigError) -> ConfigErrors {
        ConfigErrors {
            errors: vec![error],
        }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always false; present because clippy pairs it with `len`.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects problems for one file as they are found, in any order.
#[derive(Debug)]
pub(crate) struct Report {
    file: String,
    errors: Vec<ConfigError>,
}

impl Report {
    pub fn new(file: &str) -> Report {
        Report {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub fn push(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn finish(self) -> Option<ConfigErrors> {
        ConfigErrors::new(self.errors)
    }
}
