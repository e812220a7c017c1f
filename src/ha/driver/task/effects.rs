//! The side effects of one VIP's role change, in the order the parent module's docs
//! promise: audit, log and count the change (one function, [`log_role_change`]), add or remove
//! the VIP, announce it, queue the notify hook with the VIP.

use std::time::Duration;

use super::{Driver, Election};
use crate::ha::driver::{VipOps, ANNOUNCE_SPACING};
use crate::ha::machine::{Action, Role};
use crate::metrics;

impl<V: VipOps> Driver<V> {
    pub(super) async fn perform(&mut self, i: usize, action: Action) {
        let dead = self.cfg.machine.dead_interval;
        let Some(e) = self.elections.get_mut(i) else {
            return;
        };
        match action {
            Action::SendHeartbeat { .. } => {}
            Action::BecomeMaster => {
                log_role_change(e, Role::Master, dead);
                if let Some(vip) = &e.vip {
                    match vip.add().await {
                        Ok(()) => e.held = true,
                        Err(err) => vip_error("add", &err),
                    }
                }
                announce(e);
                self.hook(i, Role::Master);
            }
            Action::BecomeBackup | Action::BecomeFault => {
                let role = if action == Action::BecomeBackup {
                    Role::Backup
                } else {
                    Role::Fault
                };
                log_role_change(e, role, dead);
                if let Some(a) = e.announcer.take() {
                    a.abort();
                }
                if let Some(vip) = &e.vip {
                    match vip.remove().await {
                        Ok(()) => e.held = false,
                        Err(err) => vip_error("remove", &err),
                    }
                }
                self.hook(i, role);
            }
            Action::Reannounce => {
                tracing::info!(
                    vip = e.label.as_deref().unwrap_or(""),
                    "HA: re-announcing the VIP (the peer held it too)"
                );
                announce(e);
            }
        }
        if let Some(e) = self.elections.get(i) {
            if let Some(g) = &e.held_gauge {
                g.set(i64::from(e.held));
            }
        }
        metrics::global().ha_role.set(self.node_role().gauge());
    }

    fn hook(&self, i: usize, role: Role) {
        let n = &self.cfg.notify;
        let path = match role {
            Role::Master => &n.master,
            Role::Backup => &n.backup,
            Role::Fault => &n.fault,
        };
        if let Some(path) = path {
            let vip = self.elections.get(i).and_then(|e| e.label.clone());
            self.hooks.run(path.clone(), role.label(), vip);
        }
    }
}

/// Every role change of every VIP is logged and counted here, and only here (the
/// election still shows the old role in `e.role` and the machine's view of the peer, for
/// a log line that wants to say why); records the new role.
fn log_role_change<V: VipOps>(e: &mut Election<V>, to: Role, dead_interval: Duration) {
    crate::audit::ha_transition(e.label.as_deref(), e.role, to, &e.machine, dead_interval);
    let m = metrics::global();
    let vip = e.label.as_deref().unwrap_or("");
    match e.role {
        Some(from) => {
            m.ha_transitions.with_label_values(&[to.label()]).inc();
            tracing::warn!(vip, from = from.label(), to = to.label(), "HA role change");
        }
        None => tracing::info!(vip, role = to.label(), "HA: starting"),
    }
    e.role = Some(to);
}

/// Sends the configured announcements: the first now (so it precedes the master hook),
/// the others every [`ANNOUNCE_SPACING`] on a task of their own.
pub(super) fn announce<V: VipOps>(e: &mut Election<V>) {
    let Some(vip) = e.vip.clone() else { return };
    if let Some(a) = e.announcer.take() {
        a.abort();
    }
    let n = e.announcements;
    if n == 0 {
        return;
    }
    e.announcer = Some(tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(ANNOUNCE_SPACING).await;
            }
            if let Err(e) = vip.announce().await {
                vip_error("arp", &e);
            }
        }
    }));
}

fn vip_error(op: &str, e: &crate::ha::vip::VipError) {
    metrics::global()
        .ha_vip_errors
        .with_label_values(&[op])
        .inc();
    tracing::error!(op, "HA: VIP operation failed: {e}");
}
