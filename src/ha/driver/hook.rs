//! Notify hooks: the `ha.notify.{master,backup,fault}` executables, run with the new role
//! as the first argument and the VIP (`address/prefix`) as the second when one is
//! configured (`notify.sh master 10.0.0.100/24`), with the same in the environment
//! (`TANDEM_ROLE`, `TANDEM_VIP`). With several VIPs a hook runs once per VIP whose role
//! changes.
//!
//! Owns spawning, the timeout and logging the outcome. Hooks run one at a time, in the
//! order of the transitions, on a task of their own, so a slow hook never delays a
//! heartbeat and a `backup` hook never overtakes the `master` hook before it. A hook
//! that outlives [`HOOK_TIMEOUT`] is killed. Failures are logged, never fatal.
//! Tested by the driver tests (`driver/tests.rs`) with a shell script that records calls.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A hook that runs longer is killed; takeover scripts calling a cloud API fit well within.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Queued hooks beyond this are dropped (and logged): only a wedged hook gets here.
const QUEUE: usize = 32;
/// Output kept in the log, per stream.
const MAX_LOGGED_OUTPUT: usize = 2048;

/// One queued call: executable, role, VIP.
type Call = (PathBuf, &'static str, Option<String>);

pub struct Hooks {
    tx: mpsc::Sender<Call>,
    task: JoinHandle<()>,
}

impl Hooks {
    pub fn start(timeout: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Call>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some((path, role, vip)) = rx.recv().await {
                run_one(path, role, vip, timeout).await;
            }
        });
        Hooks { tx, task }
    }

    /// Queues `path role [vip]`; never waits.
    pub fn run(&self, path: PathBuf, role: &'static str, vip: Option<String>) {
        if let Err(e) = self.tx.try_send((path, role, vip)) {
            tracing::error!(role, "HA notify hook not run: queue full or closed ({e})");
        }
    }

    /// Lets queued hooks finish for up to `within` (SIGTERM: the backup hook should run).
    pub async fn finish(self, within: Duration) {
        let Hooks { tx, mut task } = self;
        drop(tx);
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::warn!("HA notify hooks still running at shutdown; abandoning them");
            task.abort();
        }
    }
}

async fn run_one(path: PathBuf, role: &'static str, vip: Option<String>, timeout: Duration) {
    let shown = path.display().to_string();
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg(role).env("TANDEM_ROLE", role);
    if let Some(vip) = &vip {
        cmd.arg(vip).env("TANDEM_VIP", vip);
    }
    let vip = vip.unwrap_or_default();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hook = %shown, role, %vip, "HA notify hook could not start: {e}");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            tracing::error!(hook = %shown, role, %vip, ?timeout, "HA notify hook timed out; killed")
        }
        Ok(Err(e)) => tracing::error!(hook = %shown, role, %vip, "HA notify hook failed: {e}"),
        Ok(Ok(out)) => {
            let stdout = clip(&out.stdout);
            let stderr = clip(&out.stderr);
            if out.status.success() {
                tracing::info!(hook = %shown, role, %vip, %stdout, %stderr, "HA notify hook ran");
            } else {
                tracing::error!(hook = %shown, role, %vip, status = %out.status, %stdout, %stderr,
                    "HA notify hook failed");
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
