//! Unit tests of the audit log's pure parts: the config diff, the digest,
//! the HA reasons.

use super::*;
use std::path::Path;

fn config(listeners: &str, upstreams: &str) -> Config {
    let text = format!("listeners:\n{listeners}upstreams:\n{upstreams}");
    crate::config::parse(&text, "t.yaml", Path::new(".")).unwrap()
}

#[test]
fn diff_names_what_was_added_removed_and_changed() {
    let old = config(
        "  - {name: web, bind: '127.0.0.1:8080', upstream: app}\n\
         \x20 - {name: old, bind: '127.0.0.1:8081', upstream: app}\n",
        "  - name: app\n    servers: [{address: '10.0.0.1:80'}, {address: '10.0.0.2:80'}]\n\
         \x20 - name: api\n    servers: [{address: '10.0.0.9:80'}]\n",
    );
    let new = config(
        "  - {name: web, bind: '127.0.0.1:9090', upstream: app}\n\
         \x20 - {name: new, bind: '127.0.0.1:8082', upstream: app}\n",
        "  - name: app\n    retries: 0\n    servers: [{address: '10.0.0.1:80', weight: 5}, {address: '10.0.0.3:80'}]\n\
         \x20 - name: api\n    servers: [{address: '10.0.0.9:80'}]\n",
    );
    let d = diff(&old, &new);
    let c = |a: &[&str], r: &[&str], ch: &[&str]| Changes {
        added: a.iter().map(|s| s.to_string()).collect(),
        removed: r.iter().map(|s| s.to_string()).collect(),
        changed: ch.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(d.listeners, c(&["new"], &["old"], &["web"]));
    assert_eq!(d.upstreams, c(&[], &[], &["app"]), "api is untouched");
    assert_eq!(
        d.servers,
        c(
            &["app/10.0.0.3:80"],
            &["app/10.0.0.2:80"],
            &["app/10.0.0.1:80"]
        )
    );
    assert_eq!(
        d.to_string(),
        "listeners +new -old ~web; upstreams ~app; servers +app/10.0.0.3:80 -app/10.0.0.2:80 ~app/10.0.0.1:80"
    );
}

#[test]
fn diff_of_a_config_with_itself_is_empty() {
    let c = config(
        "  - {name: web, bind: '127.0.0.1:8080', upstream: app}\n",
        "  - {name: app, servers: [{address: '10.0.0.1:80'}]}\n",
    );
    let d = diff(&c, &c);
    assert!(d.is_empty());
    assert_eq!(d.to_string(), "nothing");
}

#[test]
fn server_list_changes_do_not_mark_the_upstream_changed() {
    let old = config(
        "  - {name: web, bind: '127.0.0.1:8080', upstream: app}\n",
        "  - {name: app, servers: [{address: '10.0.0.1:80'}]}\n",
    );
    let new = config(
        "  - {name: web, bind: '127.0.0.1:8080', upstream: app}\n",
        "  - {name: app, servers: [{address: '10.0.0.1:80'}, {address: '10.0.0.2:80'}]}\n",
    );
    let d = diff(&old, &new);
    assert!(d.upstreams.is_empty() && d.listeners.is_empty());
    assert_eq!(d.servers.added, vec!["app/10.0.0.2:80".to_string()]);
}

#[test]
fn sha256_matches_the_known_digest() {
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

fn peer(role: Role, last_seen: Instant, leaving: bool) -> PeerStatus {
    PeerStatus {
        node_id: "lb-b".into(),
        priority: 100,
        role,
        leaving,
        faulty: role == Role::Fault,
        maintenance: false,
        last_seen,
    }
}

#[test]
fn ha_reasons_name_the_cause() {
    let t0 = Instant::now();
    let dead = Duration::from_secs(1);
    let later = t0 + Duration::from_millis(1500);
    let r = |to, p: Option<&PeerStatus>, now| ha_reason(to, p, now, dead);
    assert_eq!(
        r(Role::Master, None, t0),
        "no heartbeat from the peer within the dead interval"
    );
    assert_eq!(
        r(Role::Master, Some(&peer(Role::Master, t0, false)), later),
        "peer lb-b silent for 1500 ms"
    );
    assert_eq!(
        r(Role::Master, Some(&peer(Role::Master, t0, true)), t0),
        "peer lb-b handed the VIP over (shutting down)"
    );
    assert_eq!(
        r(Role::Master, Some(&peer(Role::Fault, t0, false)), t0),
        "peer lb-b is faulty"
    );
    assert_eq!(
        r(Role::Master, Some(&peer(Role::Backup, t0, false)), t0),
        "this node outranks peer lb-b (priority 100)"
    );
    assert_eq!(
        r(Role::Backup, Some(&peer(Role::Master, t0, false)), t0),
        "peer lb-b is master"
    );
    assert_eq!(r(Role::Backup, None, t0), "starting: waiting for the peer");
    assert!(r(Role::Fault, None, t0).starts_with("this node is faulty"));
}
