//! Selection across tiers and effective weights, on upstreams built from YAML.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::runtime::AdminState;
use super::*;

fn upstream(yaml_upstream: &str) -> Upstream {
    let text = format!(
        "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n{yaml_upstream}"
    );
    let config = crate::config::parse(&text, "test.yaml", Path::new(".")).unwrap();
    ServerRegistry::default().build_upstream(&config.upstreams[0], &HashMap::new())
}

fn shares(up: &Upstream, n: usize) -> Vec<f64> {
    let mut got = vec![0usize; up.servers.len()];
    for _ in 0..n {
        got[up.select(&Tried::default(), None).unwrap().index] += 1;
    }
    got.iter().map(|&c| c as f64 / n as f64).collect()
}

const FOUR_AND_TWO: &str = "  - name: app
    balance: BALANCE
    failover: FAILOVER
    servers:
      - address: 127.0.0.1:3001
      - address: 127.0.0.1:3002
      - address: 127.0.0.1:3003
      - address: 127.0.0.1:3004
      - address: 127.0.0.1:3005
        tier: 1
      - address: 127.0.0.1:3006
        tier: 1
";

fn four_and_two(balance: &str, failover: &str) -> Upstream {
    upstream(
        &FOUR_AND_TWO
            .replace("BALANCE", balance)
            .replace("FAILOVER", failover),
    )
}

const BALANCES: [&str; 5] = [
    "round_robin",
    "least_connections",
    "random_two",
    "peak_ewma",
    "consistent_hash",
];

#[test]
fn all_down_keeps_tier_one_idle_until_every_primary_is_out() {
    for balance in BALANCES {
        let up = four_and_two(balance, "all_down");
        for down in 0..4 {
            let s = shares(&up, 2000);
            assert_eq!(s[4] + s[5], 0.0, "{balance}, {down} down: {s:?}");
            up.servers[down].set_healthy(false);
        }
        let s = shares(&up, 2000);
        assert!((s[4] + s[5] - 1.0).abs() < 1e-9, "{balance}: {s:?}");
        assert!(
            s[4] > 0.3 && s[5] > 0.3,
            "{balance} spreads over tier 1: {s:?}"
        );
        // Recovery: back to tier 0 at once.
        up.servers[2].set_healthy(true);
        let s = shares(&up, 500);
        assert_eq!(s[2], 1.0, "{balance}: {s:?}");
    }
}

#[test]
fn gradual_spills_the_envoy_share_to_tier_one() {
    for balance in BALANCES {
        let up = four_and_two(balance, "gradual");
        for (down, tier0) in [(1, 1.0), (2, 0.7), (3, 0.35)] {
            for s in &up.servers[..4] {
                s.set_healthy(true);
            }
            for s in &up.servers[..down] {
                s.set_healthy(false);
            }
            let s = shares(&up, 20_000);
            let got: f64 = s[..4].iter().sum();
            assert!((got - tier0).abs() < 0.02, "{balance}, {down} down: {s:?}");
        }
    }
}

#[test]
fn drained_and_zero_weight_servers_count_as_lost_capacity() {
    let up = four_and_two("round_robin", "gradual");
    up.servers[0].set_admin_state(AdminState::Drain);
    up.servers[1].set_weight_override(Some(0));
    let s = shares(&up, 20_000);
    assert_eq!(s[0] + s[1], 0.0, "{s:?}");
    assert!((s[2] + s[3] - 0.7).abs() < 0.02, "{s:?}");
}

#[test]
fn a_retry_prefers_the_same_tier_then_the_next() {
    let up = four_and_two("round_robin", "all_down");
    let mut tried = Tried::default();
    for _ in 0..4 {
        let sel = up.select(&tried, None).unwrap();
        assert!(sel.index < 4, "tier 0 first");
        tried.insert(sel.index);
    }
    let sel = up.select(&tried, None).unwrap();
    assert!(sel.index >= 4, "then tier 1, got {}", sel.index);
    // A retry after a tier-1 attempt stays in tier 1 while it has an untried server.
    let mut tried = Tried::default();
    tried.insert(4);
    for _ in 0..50 {
        assert_eq!(up.select(&tried, None).unwrap().index, 5);
    }
}

#[test]
fn a_server_with_no_tier_one_servers_is_untouched() {
    let up = upstream("  - name: app\n    servers:\n      - address: 127.0.0.1:3001\n      - address: 127.0.0.1:3002\n");
    assert!(!up.tiered);
    let s = shares(&up, 1000);
    assert!((s[0] - 0.5).abs() < 0.01, "{s:?}");
}

#[test]
fn slow_start_ramps_a_returning_server_and_reports_its_weight() {
    let up = upstream(
        "  - name: app\n    slow_start: 1h\n    servers:\n      - address: 127.0.0.1:3001\n      - address: 127.0.0.1:3002\n",
    );
    // Present at start: full weight.
    assert_eq!(up.effective_weight(1), 1.0);
    up.servers[1].set_healthy(false);
    up.servers[1].set_healthy(true);
    let w = up.effective_weight(1);
    assert!((0.1..0.11).contains(&w), "{w}");
    let s = shares(&up, 22_000);
    assert!((s[1] - 0.1 / 1.1).abs() < 0.02, "{s:?}");
}

#[test]
fn every_return_starts_a_slow_start() {
    let window = Some(Duration::from_secs(3600));
    let up = upstream(
        "  - name: app\n    slow_start: 1h\n    servers:\n      - address: 127.0.0.1:3001\n        weight: 4\n",
    );
    let s = &up.servers[0];
    let ramping = |s: &ServerState| s.pick_weight(window) < 0.5;
    assert!(!ramping(s));
    // Staying healthy is no return.
    s.set_healthy(true);
    assert!(!ramping(s));

    let fresh = || {
        upstream("  - name: app\n    slow_start: 1h\n    servers:\n      - address: 127.0.0.1:3001\n        weight: 4\n")
    };
    let up = fresh();
    up.servers[0].set_admin_state(AdminState::Maint);
    assert_eq!(up.servers[0].pick_weight(window), 0.0);
    up.servers[0].set_admin_state(AdminState::Ready);
    assert!(ramping(&up.servers[0]), "admin state back to ready");

    let up = fresh();
    up.servers[0].set_weight_override(Some(0));
    assert_eq!(up.servers[0].pick_weight(window), 0.0);
    up.servers[0].set_weight_override(Some(2));
    assert!(ramping(&up.servers[0]), "weight raised from 0");

    let up = fresh();
    log_breaker_transition(
        &up.servers[0],
        &breaker::Transition {
            from: breaker::Phase::HalfOpen,
            to: breaker::Phase::Closed,
            reason: "trial passed",
        },
    );
    assert!(ramping(&up.servers[0]), "breaker closed after its trial");

    // Added by a reload: a server the previous snapshot did not have.
    let registry = ServerRegistry::default();
    let text = "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    slow_start: 1h\n    servers:\n      - address: 127.0.0.1:3001\nSECOND";
    let first =
        crate::config::parse(&text.replace("SECOND", ""), "t.yaml", Path::new(".")).unwrap();
    let up = registry.build_upstream(&first.upstreams[0], &HashMap::new());
    assert!(!ramping(&up.servers[0]), "present at start");
    let previous: HashMap<ServerKey, Arc<ServerState>> = up
        .servers
        .iter()
        .map(|s| (s.key.clone(), s.clone()))
        .collect();
    let second = text.replace("SECOND", "      - address: 127.0.0.1:3002\n");
    let second = crate::config::parse(&second, "t.yaml", Path::new(".")).unwrap();
    let up = registry.build_upstream(&second.upstreams[0], &previous);
    assert!(!ramping(&up.servers[0]), "kept across the reload");
    assert!(ramping(&up.servers[1]), "added by the reload");
}

#[test]
fn tried_has_no_limit_on_server_indexes() {
    let mut t = Tried::default();
    assert!(t.is_empty());
    for i in [0, 127, 128, 5000] {
        assert!(!t.contains(i));
        t.insert(i);
        t.insert(i);
        assert!(t.contains(i));
    }
    assert!(!t.contains(129) && !t.is_empty());
}

#[test]
fn a_retry_in_a_large_upstream_never_repeats_a_server_past_the_128th() {
    let mut yaml = String::from("  - name: app\n    servers:\n");
    for i in 0..140 {
        yaml.push_str(&format!(
            "      - address: 127.0.1.{}:{}\n",
            i % 250,
            3000 + i
        ));
    }
    let up = upstream(&yaml);
    // Every server but the last two was tried: a retry must pick one of those.
    let mut tried = Tried::default();
    for i in 0..138 {
        tried.insert(i);
    }
    for _ in 0..200 {
        let i = up.select(&tried, None).unwrap().index;
        assert!(i >= 138, "picked tried server {i}");
    }
}
