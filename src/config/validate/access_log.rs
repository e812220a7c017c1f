//! `access_log`: where the access log goes and in which format.
//!
//! `path` is `stdout`, `stderr` or a file (resolved against the config file's
//! directory). A file is checked without being created or written: an existing
//! regular file must open for appending, a missing one needs an existing
//! parent directory; FIFOs and devices are accepted as they are (opening a FIFO
//! for writing would wait for a reader). Tested by `config::tests`.

use std::path::Path;

use super::Ctx;
use crate::config::raw::RawAccessLog;
use crate::config::types::{AccessLog, AccessLogFormat, LogTarget};

/// The validated section, or `None` when `path` is missing or unusable.
pub fn access_log(cx: &mut Ctx<'_>, raw: RawAccessLog) -> Option<AccessLog> {
    let format = match raw.format.as_deref() {
        None | Some("json") => AccessLogFormat::Json,
        Some("text") => AccessLogFormat::Text,
        Some(other) => {
            let msg = format!("expected json or text, found \"{other}\"");
            cx.err("access_log.format", msg);
            AccessLogFormat::Json
        }
    };
    let written = cx.required(raw.path, "access_log.path")?;
    let target = match written.as_str() {
        "stdout" => LogTarget::Stdout,
        "stderr" => LogTarget::Stderr,
        "" => {
            let msg = "path must not be empty: a file, \"stdout\" or \"stderr\"";
            cx.err("access_log.path", msg);
            return None;
        }
        _ => {
            let file = cx.resolve(&written);
            if let Err(why) = check_file(&file, Path::new(&written)) {
                cx.err(
                    "access_log.path",
                    format!("cannot write the access log to \"{written}\": {why}"),
                );
                return None;
            }
            LogTarget::File(file)
        }
    };
    Some(AccessLog { target, format })
}

/// Whether `file` can take the log, judged without creating or changing it.
/// Messages name the path as `written`.
fn check_file(file: &Path, written: &Path) -> Result<(), String> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => Err("it is a directory".to_string()),
        Ok(m) if m.is_file() => std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map(drop)
            .map_err(|e| reason(&e)),
        // A FIFO, a character device (/dev/null): opened when logging starts.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = file.parent().unwrap_or(Path::new("/"));
            let shown = written.parent().unwrap_or(Path::new(".")).display();
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("\"{shown}\" is not a directory")),
                Err(_) => Err(format!("directory \"{shown}\" does not exist")),
            }
        }
        Err(e) => Err(reason(&e)),
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}
