//! The audit trail: who changed what, through which door, and how it went.
//!
//! Owns the audit events and their fields; not the actions themselves (reloads
//! are `reload.rs`'s, admin writes `admin.rs`'s, role changes the HA driver's).
//! Every event goes to the log target `tandem::audit` with the field
//! `audit=true`, so a JSON log line can be filtered on it. The logging setup
//! keeps this target at `info` whatever `--log-level` says (see `telemetry`).
//!
//! The pure parts — [`diff`] of two validated configs, [`sha256_hex`] of the
//! file, [`ha_reason`] for a role change — are unit-tested below; the events
//! themselves end to end in `tests/operations/audit.rs`. Unit tests: `audit/tests.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::types::{Config, Listener, Upstream};
use crate::ha::machine::{HaMachine, PeerStatus, Role};

const TARGET: &str = "tandem::audit";

/// Who asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// SIGHUP sent to the process.
    Signal,
    /// The admin API: the client's address and whether it presented the
    /// configured bearer token (false when no token is configured).
    Admin { remote: SocketAddr, token: bool },
}

impl Source {
    fn label(&self) -> &'static str {
        match self {
            Source::Signal => "SIGHUP",
            Source::Admin { .. } => "admin",
        }
    }

    fn remote(&self) -> String {
        match self {
            Source::Signal => String::new(),
            Source::Admin { remote, .. } => remote.to_string(),
        }
    }

    fn token(&self) -> bool {
        matches!(self, Source::Admin { token: true, .. })
    }
}

/// Names added, removed and changed in one kind of configuration item.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    /// Compares two keyed sets; every list comes out sorted.
    fn between<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Self {
        let mut c = Changes::default();
        for (k, v) in new {
            match old.get(k) {
                None => c.added.push(k.clone()),
                Some(o) if o != v => c.changed.push(k.clone()),
                Some(_) => {}
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What a reload changed. Listeners and upstreams are named by `name`;
/// servers by `upstream/address`. An upstream counts as changed when one of
/// its own settings changed; changes to its server list show under `servers`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    pub listeners: Changes,
    pub upstreams: Changes,
    pub servers: Changes,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.upstreams.is_empty() && self.servers.is_empty()
    }
}

impl fmt::Display for ConfigDiff {
    /// `listeners +a -b ~c; servers +app/10.0.0.1:80`, or `nothing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let mut first = true;
        for (kind, c) in [
            ("listeners", &self.listeners),
            ("upstreams", &self.upstreams),
            ("servers", &self.servers),
        ] {
            if c.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            f.write_str(kind)?;
            for (sign, names) in [('+', &c.added), ('-', &c.removed), ('~', &c.changed)] {
                for n in names {
                    write!(f, " {sign}{n}")?;
                }
            }
        }
        Ok(())
    }
}

/// What changed from `old` to `new` (both validated).
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let listeners = |c: &Config| -> BTreeMap<String, Listener> {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect()
    };
    // An upstream's own settings, without its servers.
    let upstreams = |c: &Config| -> BTreeMap<String, Upstream> {
        c.upstreams
            .iter()
            .map(|u| {
                let mut own = u.clone();
                own.servers.clear();
                (u.name.clone(), own)
            })
            .collect()
    };
    let servers = |c: &Config| -> BTreeMap<String, crate::config::types::Server> {
        c.upstreams
            .iter()
            .flat_map(|u| {
                u.servers
                    .iter()
                    .map(move |s| (format!("{}/{}", u.name, s.address), s.clone()))
            })
            .collect()
    };
    ConfigDiff {
        listeners: Changes::between(&listeners(old), &listeners(new)),
        upstreams: Changes::between(&upstreams(old), &upstreams(new)),
        servers: Changes::between(&servers(old), &servers(new)),
    }
}

/// Lower-case hex SHA-256 of the configuration text as read.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records one reload attempt. `sha256` is absent when the file could not be
/// read; `changes` only for a reload that took effect. A failure comes as its
/// located problems, recorded joined by `; `.
pub fn reload<P: std::fmt::Display>(
    source: &Source,
    outcome: Result<u64, &[P]>,
    sha256: Option<&str>,
    changes: Option<&ConfigDiff>,
) {
    let empty = Changes::default();
    let d = changes.map(|c| (&c.listeners, &c.upstreams, &c.servers));
    let (l, u, s) = d.unwrap_or((&empty, &empty, &empty));
    let (result, generation, errors) = match outcome {
        Ok(g) => ("success", g, String::new()),
        Err(problems) => {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ("failure", 0, problems.join("; "))
        }
    };
    tracing::info!(
        target: TARGET,
        audit = true,
        action = "reload",
        source = source.label(),
        remote = %source.remote(),
        token = source.token(),
        result,
        generation,
        sha256 = sha256.unwrap_or(""),
        changes = %changes.map_or_else(String::new, ToString::to_string),
        listeners_added = %l.added.join(","),
        listeners_removed = %l.removed.join(","),
        listeners_changed = %l.changed.join(","),
        upstreams_added = %u.added.join(","),
        upstreams_removed = %u.removed.join(","),
        upstreams_changed = %u.changed.join(","),
        servers_added = %s.added.join(","),
        servers_removed = %s.removed.join(","),
        servers_changed = %s.changed.join(","),
        errors = %errors,
        "configuration reload"
    );
}

/// Records one write through the admin API (reloads are recorded by
/// [`reload`] with their outcome as well). `action` names what was asked,
/// e.g. `PUT /upstreams/app/servers/10.0.0.1:80 {"state":"drain"}`.
pub fn admin_write(source: &Source, action: &str, result: &str) {
    tracing::info!(
        target: TARGET,
        audit = true,
        action,
        source = source.label(),
        remote = %source.remote(),
        token = source.token(),
        result,
        "admin API write"
    );
}

/// Records an HA role change (`from` is `None` for the first role taken).
pub fn ha_role_change(vip: Option<&str>, from: Option<&str>, to: &str, reason: &str) {
    tracing::info!(
        target: TARGET,
        audit = true,
        action = "ha_role",
        source = "ha",
        vip = vip.unwrap_or(""),
        from = from.unwrap_or("none"),
        to,
        reason,
        "HA role change"
    );
}

/// Records the HA driver's change of `vip` (`None`: the node's one VIP, or
/// none configured) from `from` to `to`, with its reason read off the
/// deciding machine's view of the peer (the driver's one call into the audit).
pub fn ha_transition(
    vip: Option<&str>,
    from: Option<Role>,
    to: Role,
    machine: &HaMachine,
    dead_interval: Duration,
) {
    let reason = ha_reason(to, machine.peer().as_ref(), Instant::now(), dead_interval);
    ha_role_change(vip, from.map(Role::label), to.label(), &reason);
}

/// Why a node takes role `to`, from what it knows of its peer (the driver
/// calls this where it performs the change).
pub fn ha_reason(
    to: Role,
    peer: Option<&PeerStatus>,
    now: Instant,
    dead_interval: Duration,
) -> String {
    let alive = peer.filter(|p| !p.leaving && now < p.last_seen + dead_interval);
    match (to, peer, alive) {
        (Role::Fault, _, _) => {
            "this node is faulty (a tracked upstream has no healthy server, or maintenance)".into()
        }
        (Role::Master, None, _) => "no heartbeat from the peer within the dead interval".into(),
        (Role::Master, Some(p), None) if p.leaving => {
            format!("peer {} handed the VIP over (shutting down)", p.node_id)
        }
        (Role::Master, Some(p), None) => format!(
            "peer {} silent for {} ms",
            p.node_id,
            now.saturating_duration_since(p.last_seen).as_millis()
        ),
        (Role::Master, _, Some(p)) if p.role == Role::Fault => {
            format!("peer {} is faulty", p.node_id)
        }
        (Role::Master, _, Some(p)) => format!(
            "this node outranks peer {} (priority {})",
            p.node_id, p.priority
        ),
        (Role::Backup, _, Some(p)) if p.role == Role::Master => {
            format!("peer {} is master", p.node_id)
        }
        (Role::Backup, _, Some(p)) => format!(
            "peer {} (priority {}) outranks this node",
            p.node_id, p.priority
        ),
        (Role::Backup, _, None) => "starting: waiting for the peer".into(),
    }
}

#[cfg(test)]
mod tests;
