//! Notify hooks: the `ha.notify.{master,backup,fault}` executables, run with the new role
//! as the first argument and the VIP (`address/prefix`) as the second when one is
//! configured (`notify.sh master 10.0.0.100/24`), with the same in the environment
//! (`TANDEM_ROLE`, `TANDEM_VIP`). With several VIPs a hook runs once per VIP whose role
//! changes.
//!
//! Owns spawning, the timeout and logging the outcome. Hooks run one at a time, in the
//! order of the transitions, on a task of their own, so a slow hook never delays a
//! heartbeat and a `backup` hook never overtakes the `master` hook before it. A hook
//! that outlives [`HOOK_TIMEOUT`] is killed. Failures are logged, never fatal (the
//! running and logging of one hook is [`crate::hook`], shared with server events).
//! Tested by the driver tests (`driver/tests.rs`) with a shell script that records calls.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::hook::HOOK_TIMEOUT;
/// Queued hooks beyond this are dropped (and logged): only a wedged hook gets here.
const QUEUE: usize = 32;

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
    let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match vip.as_deref() {
        Some(vip) => (
            vec![role, vip],
            vec![("TANDEM_ROLE", role), ("TANDEM_VIP", vip)],
        ),
        None => (vec![role], vec![("TANDEM_ROLE", role)]),
    };
    let inv = crate::hook::Invocation {
        kind: "HA notify",
        path: &path,
        args: &args,
        env: &env,
    };
    crate::hook::run(inv, timeout).await;
}
