//! Configuration loading: `proxy.yaml` text -> validated [`types::Config`], or every
//! problem in it, located.
//!
//! Pipeline: `node` (the only user of the YAML crate) builds a positioned tree;
//! `raw` decodes it into `Raw*` values, reporting unknown keys and wrong types and
//! recording each value's position in a `span::SpanIndex`; `validate` applies
//! defaults and checks values, files and cross-references, placing its errors
//! through the index. All errors are collected and returned sorted by position as
//! [`ConfigErrors`]. Owns nothing about what the config is used for.
//! Tested by golden fixtures under `tests/golden/config/` (exact error output) and
//! field-by-field checks of the valid fixtures, both in `config/tests.rs`.

mod error;
mod node;
mod raw;
mod span;
mod spelling;
pub mod types;
mod validate;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::path::Path;

use error::Report;
pub use error::{ConfigError, ConfigErrors};

/// Reads and validates the file. `Err` carries every problem found, sorted by position.
pub fn load(path: &Path) -> Result<types::Config, ConfigErrors> {
    let text = read(path)?;
    parse_file(&text, path)
}

/// The file's text, or the one error saying why it cannot be read. With
/// [`parse_file`], lets a caller keep the exact bytes it validated (the reload
/// audit records their SHA-256).
pub fn read(path: &Path) -> Result<String, ConfigErrors> {
    let label = path.display().to_string();
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError {
            file: label,
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })
    })
}

/// Validates `text` read from `path`: errors are labelled with the path and
/// relative paths resolve against its directory.
pub fn parse_file(text: &str, path: &Path) -> Result<types::Config, ConfigErrors> {
    let label = path.display().to_string();
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse(text, &label, base_dir)
}

/// Same for text already in memory; `file_label` is what error lines start with.
/// Relative paths in the file are resolved against `base_dir`.
pub fn parse(text: &str, file_label: &str, base_dir: &Path) -> Result<types::Config, ConfigErrors> {
    let located = |pos: node::Pos, message: String| {
        ConfigErrors::single(ConfigError {
            file: file_label.to_string(),
            line: pos.line,
            col: pos.col,
            path: String::new(),
            message,
        })
    };
    let root = match node::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            let msg = "the file is empty; it needs at least listeners and upstreams";
            return Err(located(node::Pos::START, msg.to_string()));
        }
        Err(e) => return Err(located(e.pos, e.message)),
    };
    let mut report = Report::new(file_label);
    let (raw, spans) = raw::decode(&root, &mut report);
    let config = validate::validate(raw, &spans, &mut report, base_dir);
    match report.finish() {
        None => Ok(config),
        Some(errors) => Err(errors),
    }
}
