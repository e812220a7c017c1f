//! Running an operator's executable: HA notify hooks (`ha.notify.*`) and server
//! event hooks (`upstreams[].notify.*`).
//!
//! Owns spawning one hook, its time limit and logging the outcome (exit status and
//! clipped output). Does not own when hooks run or how they are serialised: the HA
//! driver runs its hooks in order on one task, server events run one at a time per
//! server and event. Never fails: a hook that cannot start, fails or outlives its
//! limit (then it is killed) is logged. Tested through its callers' tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A hook that runs longer is killed; takeover scripts calling a cloud API fit well within.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Output kept in the log, per stream.
const MAX_LOGGED_OUTPUT: usize = 2048;

/// One run of a hook.
pub struct Invocation<'a> {
    /// What kind of hook this is, for the log ("HA notify", "server event").
    pub kind: &'static str,
    pub path: &'a Path,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

/// Runs `inv` to completion or for at most `timeout`, logging the outcome.
pub async fn run(inv: Invocation<'_>, timeout: Duration) {
    let shown = inv.path.display().to_string();
    let kind = inv.kind;
    let args = inv.args.join(" ");
    let child = tokio::process::Command::new(inv.path)
        .args(inv.args)
        .envs(inv.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hook = %shown, kind, %args, "hook could not start: {e}");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => tracing::error!(hook = %shown, kind, %args, ?timeout, "hook timed out; killed"),
        Ok(Err(e)) => tracing::error!(hook = %shown, kind, %args, "hook failed: {e}"),
        Ok(Ok(out)) => {
            let stdout = clip(&out.stdout);
            let stderr = clip(&out.stderr);
            if out.status.success() {
                tracing::info!(hook = %shown, kind, %args, %stdout, %stderr, "hook ran");
            } else {
                tracing::error!(hook = %shown, kind, %args, status = %out.status, %stdout,
                    %stderr, "hook failed");
            }
        }
    }
}

fn clip(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_LOGGED_OUTPUT) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}
