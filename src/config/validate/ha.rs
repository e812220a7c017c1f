//! `ha`: node identity, heartbeat addresses and timing, the shared secret, the VIPs
//! (`vip`, or `vips` with per-VIP priorities; IPv4 or IPv6), tracked upstreams and
//! notify hooks.
//!
//! Reads `secret_file` (>= 32 bytes) and checks notify hooks exist (and, on Unix,
//! are executable). Tested by the golden fixtures.

use std::path::PathBuf;
use std::time::Duration;

use super::listener::check_upstream;
use super::{value, Ctx, NO_ADDR};
use crate::config::raw::{RawHa, RawNotify, RawVip};
use crate::config::span::item;
use crate::config::types::{Ha, Notify, Vip};

const MIN_SECRET: usize = 32;

pub fn ha(cx: &mut Ctx<'_>, raw: RawHa, upstreams: &[String]) -> Ha {
    let node_id = cx.required(raw.node_id, "ha.node_id").unwrap_or_default();
    if node_id.trim().is_empty() && cx.spans.contains("ha.node_id") {
        cx.err("ha.node_id", "node_id must not be empty");
    } else if node_id.len() > crate::ha::wire::MAX_NODE_ID_LEN {
        let msg = format!(
            "node_id is {} bytes; heartbeats carry at most {}",
            node_id.len(),
            crate::ha::wire::MAX_NODE_ID_LEN
        );
        cx.err("ha.node_id", msg);
    }
    let bind = cx.required(raw.bind, "ha.bind");
    let bind = cx.parse(bind.as_deref(), "ha.bind", value::bind);
    let peer = cx.required(raw.peer, "ha.peer");
    let peer = cx.parse(peer.as_deref(), "ha.peer", value::bind);
    if let Some(peer) = peer {
        if peer.port() == 0 || peer.ip().is_unspecified() {
            cx.err(
                "ha.peer",
                format!("peer {peer} needs a concrete IP and a port"),
            );
        } else if bind == Some(peer) {
            cx.err(
                "ha.peer",
                "peer must differ from bind (it is the other node)",
            );
        }
    }
    let priority = cx.int(raw.priority, "ha.priority", 100, 1, 254);
    let heartbeat_interval = cx.duration(
        raw.heartbeat_interval.as_deref(),
        "ha.heartbeat_interval",
        Duration::from_millis(200),
    );
    let dead_interval = cx.duration(
        raw.dead_interval.as_deref(),
        "ha.dead_interval",
        Duration::from_secs(1),
    );
    if dead_interval <= heartbeat_interval {
        let msg = format!(
            "dead_interval ({}) must be longer than heartbeat_interval ({})",
            humantime::format_duration(dead_interval),
            humantime::format_duration(heartbeat_interval)
        );
        cx.err("ha.dead_interval", msg);
    }
    let (secret_file, secret) = secret(cx, raw.secret_file);
    let vips = vips(cx, raw.vip, raw.vips);
    let track_upstreams = raw.track_upstreams.unwrap_or_default();
    for (i, name) in track_upstreams.iter().enumerate() {
        check_upstream(cx, name, &item("ha.track_upstreams", i), upstreams);
    }
    let notify = raw.notify.map(|n| notify(cx, n)).unwrap_or_default();
    Ha {
        node_id,
        bind: bind.unwrap_or(NO_ADDR),
        peer: peer.unwrap_or(NO_ADDR),
        priority: u8::try_from(priority).unwrap_or(100),
        preempt: raw.preempt.unwrap_or(true),
        heartbeat_interval,
        dead_interval,
        secret_file,
        secret,
        vips,
        track_upstreams,
        notify,
    }
}

fn secret(cx: &mut Ctx<'_>, written: Option<String>) -> (PathBuf, Vec<u8>) {
    let path = "ha.secret_file";
    let Some(written) = cx.required(written, path) else {
        return (PathBuf::new(), Vec::new());
    };
    let file = cx.resolve(&written);
    let Some(bytes) = cx.read(path, &written, &file, "secret file") else {
        return (file, Vec::new());
    };
    if bytes.len() < MIN_SECRET {
        let msg = format!(
            "secret file \"{written}\" holds {} bytes; at least {MIN_SECRET} are needed \
             (e.g. head -c 32 /dev/urandom > {written})",
            bytes.len()
        );
        cx.err(path, msg);
    }
    (file, bytes)
}

/// `vip` (one VIP) or `vips` (each elected on its own), never both.
fn vips(cx: &mut Ctx<'_>, one: Option<RawVip>, many: Option<Vec<Option<RawVip>>>) -> Vec<Vip> {
    let out: Vec<Vip> = match (one, many) {
        (Some(_), Some(_)) => {
            cx.err(
                "ha.vips",
                "set either vip (one VIP) or vips (several), not both",
            );
            return Vec::new();
        }
        (Some(v), None) => vec![vip(cx, v, "ha.vip")],
        (None, Some(list)) => {
            if list.is_empty() {
                cx.err("ha.vips", "vips must list at least one VIP");
            } else if list.len() > crate::ha::wire::MAX_VIPS {
                let msg = format!(
                    "{} VIPs listed; a pair carries at most {}",
                    list.len(),
                    crate::ha::wire::MAX_VIPS
                );
                cx.err("ha.vips", msg);
            }
            list.into_iter()
                .enumerate()
                .filter_map(|(i, v)| Some(vip(cx, v?, &item("ha.vips", i))))
                .collect()
        }
        (None, None) => Vec::new(),
    };
    for (i, v) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.address == v.address) {
            let msg = format!("VIP {} is listed twice", v.address);
            cx.err(&format!("{}.address", item("ha.vips", i)), msg);
        }
    }
    out
}

fn vip(cx: &mut Ctx<'_>, raw: RawVip, path: &str) -> Vip {
    let at = |key: &str| format!("{path}.{key}");
    let address = cx.required(raw.address, &at("address"));
    let parsed = cx.parse(address.as_deref(), &at("address"), value::vip);
    let (address, prefix_len) = parsed.unwrap_or((NO_ADDR.ip(), 32));
    let interface = cx
        .required(raw.interface, &at("interface"))
        .unwrap_or_default();
    if interface.trim().is_empty() && cx.spans.contains(&at("interface")) {
        cx.err(&at("interface"), "interface must not be empty");
    }
    let arp = cx.int(raw.gratuitous_arp, &at("gratuitous_arp"), 3, 0, 100);
    let priority = raw
        .priority
        .map(|p| cx.int(Some(p), &at("priority"), 100, 1, 254))
        .map(|p| u8::try_from(p).unwrap_or(100));
    Vip {
        address,
        prefix_len,
        interface,
        gratuitous_arp: u32::try_from(arp).unwrap_or(3),
        priority,
    }
}

fn notify(cx: &mut Ctx<'_>, raw: RawNotify) -> Notify {
    Notify {
        master: raw.master.map(|w| hook(cx, &w, "ha.notify.master")),
        backup: raw.backup.map(|w| hook(cx, &w, "ha.notify.backup")),
        fault: raw.fault.map(|w| hook(cx, &w, "ha.notify.fault")),
    }
}

/// A hook must be an existing executable file; it is run, not read.
pub(super) fn hook(cx: &mut Ctx<'_>, written: &str, path: &str) -> PathBuf {
    let file = cx.resolve(written);
    match std::fs::metadata(&file) {
        Err(_) => cx.err(path, format!("notify hook \"{written}\" does not exist")),
        Ok(m) if !m.is_file() => {
            cx.err(
                path,
                format!("notify hook \"{written}\" is not a regular file"),
            );
        }
        Ok(m) => {
            if !is_executable(&m) {
                let msg = format!("notify hook \"{written}\" is not executable (chmod +x it)");
                cx.err(path, msg);
            }
        }
    }
    file
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    true
}
