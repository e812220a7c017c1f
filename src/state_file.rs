//! `admin.state_file`: the operator's runtime server states across restarts.
//!
//! Owns the file: its format, reading it at start-up and rewriting it after
//! every change of the [`RuntimeStore`] (not the store itself, nor applying
//! entries to servers). The file is JSON, `{"version": 1, "servers": [entry,
//! ...]}` with each entry as the store keeps it (upstream, server, state,
//! weight, changed_ms), so a restored entry competes with the HA peer's by its
//! time of change like any other.
//!
//! Writes are atomic: a temporary file in the same directory is written and
//! fsynced, renamed over the file, and the directory fsynced, so a crash leaves
//! the old file or the new one, never half of one. A file that is missing
//! starts with no state; one that cannot be read or parsed is logged and
//! ignored (never fatal: the node serves with every server `ready`), and is
//! replaced at the next change. Which file is written follows the current
//! configuration, so a reload that changes `admin.state_file` takes effect at
//! the next change.
//!
//! Tested below (round trip, corrupt and missing files) and end to end in
//! `tests/operations/server_state.rs` (restart with a state file, corrupt file).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotHandle;
use crate::upstream::runtime::{RuntimeEntry, RuntimeStore};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    servers: Vec<RuntimeEntry>,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}; this tandem reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The entries in `path`; none when the file does not exist yet.
pub fn load(path: &Path) -> Result<Vec<RuntimeEntry>, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|source| StateFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    if file.version != VERSION {
        return Err(StateFileError::Version {
            path: path.to_owned(),
            found: file.version,
        });
    }
    Ok(file.servers)
}

/// Writes `entries` to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn save(path: &Path, entries: Vec<RuntimeEntry>) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let file = StateFile {
        version: VERSION,
        servers: entries,
    };
    let mut text = serde_json::to_vec_pretty(&file)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    text.push(b'\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Merges the file's entries into `store` at start-up. Problems are logged
/// and the file ignored: a node without its old state still serves.
pub fn restore(store: &RuntimeStore, path: &Path) {
    match load(path) {
        Ok(entries) => {
            let n = entries.len();
            for e in entries {
                store.merge(e);
            }
            if n > 0 {
                tracing::info!(file = %path.display(), servers = n, "runtime server states restored");
            }
        }
        Err(e) => tracing::error!(
            "{e}; ignored: every server starts ready (the file is rewritten at the next change)"
        ),
    }
}

/// Rewrites the configured state file after every change of `store`, until
/// the task is dropped. Changes that come while a write runs are coalesced
/// into the next write.
pub async fn keep_written(store: RuntimeStore, snapshot: SnapshotHandle) {
    let mut changes = store.subscribe();
    while changes.changed().await.is_ok() {
        let Some(path) = snapshot.peek().config.admin.state_file.clone() else {
            continue;
        };
        let entries = store.entries();
        let written = tokio::task::spawn_blocking(move || save(&path, entries)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!(error = %e, "state file writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::runtime::AdminState;

    fn entry(server: &str, state: AdminState, weight: Option<u32>) -> RuntimeEntry {
        RuntimeEntry {
            upstream: "app".into(),
            server: server.into(),
            state,
            weight,
            changed_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn saved_entries_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(
            load(&path).unwrap().is_empty(),
            "a missing file is no state"
        );
        let entries = vec![
            entry("10.0.0.1:80", AdminState::Drain, None),
            entry("10.0.0.2:80", AdminState::Ready, Some(3)),
        ];
        save(&path, entries.clone()).unwrap();
        assert_eq!(load(&path).unwrap(), entries);
        // Only the file itself is left behind, no temporary.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("is not valid"), "{e}");
        std::fs::write(&path, r#"{"version": 9, "servers": []}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("has version 9"), "{e}");
        // restore() logs and ignores: the store stays empty.
        let store = RuntimeStore::new();
        restore(&store, &path);
        assert!(store.entries().is_empty());
    }

    #[test]
    fn restore_merges_by_time_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, vec![entry("10.0.0.1:80", AdminState::Maint, None)]).unwrap();
        let store = RuntimeStore::new();
        restore(&store, &path);
        assert_eq!(store.entries()[0].state, AdminState::Maint);
    }
}
