//! Driver tests: two real drivers talking over loopback UDP with a recording fake VIP,
//! mostly on a paused clock (time advances only when both are idle).

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::ha::wire::{self, Heartbeat};
use crate::metrics;
use crate::upstream::runtime::RuntimeStore;

#[derive(Clone, Default)]
struct FakeVip(Arc<Mutex<Vec<&'static str>>>);

impl FakeVip {
    fn events(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
    fn held(&self) -> bool {
        self.events()
            .iter()
            .rev()
            .find(|e| **e != "announce")
            .is_some_and(|e| *e == "add")
    }
}

impl VipOps for FakeVip {
    async fn add(&self) -> Result<(), VipError> {
        self.0.lock().unwrap().push("add");
        Ok(())
    }
    async fn remove(&self) -> Result<(), VipError> {
        self.0.lock().unwrap().push("remove");
        Ok(())
    }
    async fn announce(&self) -> Result<(), VipError> {
        self.0.lock().unwrap().push("announce");
        Ok(())
    }
}

fn free_addr() -> SocketAddr {
    StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn cfg(id: &str, priority: u8, bind: SocketAddr, peer: SocketAddr) -> DriverConfig {
    DriverConfig {
        machine: MachineConfig {
            node_id: id.to_owned(),
            priority,
            preempt: true,
            heartbeat_interval: Duration::from_millis(100),
            dead_interval: Duration::from_millis(500),
        },
        bind,
        peer,
        key: Key::new(&[7u8; 32]).unwrap(),
        vips: vec![VipConfig {
            label: "10.0.0.100/24".into(),
            priority,
            announcements: 3,
        }],
        notify: Notify::default(),
        hook_timeout: Duration::from_secs(5),
    }
}

fn role(h: &HaDriverHandle) -> &'static str {
    h.handle().status().role
}

fn rx(result: &str) -> u64 {
    metrics::global()
        .ha_heartbeats
        .with_label_values(&["rx", result])
        .get()
}

#[tokio::test(start_paused = true)]
async fn pair_elects_higher_priority_and_hands_over_on_shutdown() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let (va, vb) = (FakeVip::default(), FakeVip::default());
    let a = spawn(cfg("lb-a", 200, a_addr, b_addr), Some(va.clone()), || true)
        .await
        .unwrap();
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), Some(vb.clone()), || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(role(&a), "master");
    assert_eq!(role(&b), "backup");
    assert_eq!(
        va.events(),
        ["remove", "add", "announce", "announce", "announce"]
    );
    assert_eq!(vb.events(), ["remove"]);
    assert!(a.handle().status().vip_held);
    assert_eq!(b.handle().status().peer_role, Some("master"));
    assert!(b.handle().status().peer_last_seen_ms.unwrap() <= 100);

    // Planned hand-over: no dead_interval wait on the backup.
    a.shutdown().await;
    assert!(!va.held(), "VIP released on shutdown: {:?}", va.events());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(role(&b), "master");
    assert!(vb.held());
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dead_peer_is_taken_over_after_dead_interval() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let vb = FakeVip::default();
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), Some(vb.clone()), || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(role(&b), "backup", "waits one dead_interval at start");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(role(&b), "master");
    assert!(vb.held());
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn own_heartbeats_reflected_back_are_unknown_node() {
    let addr = free_addr();
    let before = rx("unknown_node");
    let d = spawn(cfg("lb-a", 100, addr, addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx("unknown_node") > before);
    assert_eq!(role(&d), "master", "its own packets are not a live peer");
    d.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn peer_id_is_pinned_and_forgeries_are_counted() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = spawn(cfg("lb-a", 200, a_addr, b_addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(role(&a), "master");
    let key = Key::new(&[7u8; 32]).unwrap();
    let other = Key::new(&[8u8; 32]).unwrap();
    let hb = |id: &str, epoch: u64| Heartbeat {
        node_id: id.into(),
        vips: vec![wire::VipState {
            priority: 254,
            role: wire::WireRole::Master,
        }],
        leaving: false,
        faulty: false,
        maintenance: false,
        config_hash: 0,
        epoch,
        seq: 1,
    };
    let tx = StdUdp::bind("127.0.0.1:0").unwrap();
    let (m, bad, unknown, replay) = (
        rx("malformed"),
        rx("bad_auth"),
        rx("unknown_node"),
        rx("replay"),
    );
    tx.send_to(b"garbage", b_addr).unwrap();
    tx.send_to(&wire::encode(&hb("lb-a", u64::MAX), &other), b_addr)
        .unwrap();
    tx.send_to(&wire::encode(&hb("lb-c", u64::MAX), &key), b_addr)
        .unwrap();
    tx.send_to(&wire::encode(&hb("lb-a", 1), &key), b_addr)
        .unwrap();
    // A peer of another wire version (1): refused and counted, never a role change.
    let version = rx("bad_version");
    let mut old_version = wire::encode(&hb("lb-a", u64::MAX), &key);
    old_version[4] = 1;
    for _ in 0..5 {
        tx.send_to(&old_version, b_addr).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx("malformed") > m);
    assert!(rx("bad_auth") > bad);
    assert!(rx("unknown_node") > unknown);
    assert!(rx("replay") > replay);
    assert!(rx("bad_version") >= version + 5);
    assert_eq!(role(&a), "master");
    assert_eq!(role(&b), "backup");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unhealthy_or_maintenance_gives_the_vip_up() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let (va, vb) = (FakeVip::default(), FakeVip::default());
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let a = spawn(
        cfg("lb-a", 200, a_addr, b_addr),
        Some(va.clone()),
        move || h.load(std::sync::atomic::Ordering::SeqCst),
    )
    .await
    .unwrap();
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), Some(vb.clone()), || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(role(&a), "master");

    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(role(&a), "fault");
    assert_eq!(role(&b), "master");
    assert!(!va.held() && vb.held());

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(role(&a), "master", "preempts back once healthy");
    assert_eq!(role(&b), "backup");

    a.handle().set_maintenance(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(role(&a), "fault");
    assert!(a.handle().status().maintenance);
    assert_eq!(role(&b), "master");
    a.shutdown().await;
    b.shutdown().await;
}

/// Real processes: not on a paused clock (the hook timeout would fire while the child
/// runs, since the runtime looks idle).
#[tokio::test]
async fn hooks_run_in_order_with_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let script = dir.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2 $TANDEM_VIP\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let mut c = cfg("lb-a", 200, a_addr, b_addr);
    c.machine.dead_interval = Duration::from_millis(200);
    c.machine.heartbeat_interval = Duration::from_millis(50);
    c.notify = Notify {
        master: Some(script.clone()),
        backup: Some(script.clone()),
        fault: Some(script.clone()),
    };
    let a = spawn(c, None::<FakeVip>, || true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.shutdown().await;
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "backup 10.0.0.100/24 10.0.0.100/24",
            "master 10.0.0.100/24 10.0.0.100/24",
            "backup 10.0.0.100/24 10.0.0.100/24"
        ],
        "role and VIP as arguments, the VIP in TANDEM_VIP too"
    );
}

#[tokio::test(start_paused = true)]
async fn master_reannounces_when_a_silent_peer_returns() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let va = FakeVip::default();
    let a = spawn(cfg("lb-a", 200, a_addr, b_addr), Some(va.clone()), || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(role(&a), "master");
    let announced = |v: &FakeVip| v.events().iter().filter(|e| **e == "announce").count();
    assert_eq!(announced(&va), 3);
    // The peer may have held the VIP while we could not hear it (a healed partition).
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(role(&a), "master");
    assert_eq!(announced(&va), 6, "{:?}", va.events());
    a.shutdown().await;
    b.shutdown().await;
}

fn vip_cfg(label: &str, priority: u8) -> VipConfig {
    VipConfig {
        label: label.into(),
        priority,
        announcements: 1,
    }
}

/// Two VIPs with opposite priorities, runtime replication and a fixed config hash.
async fn node(
    id: &str,
    bind: SocketAddr,
    peer: SocketAddr,
    prios: [u8; 2],
    hash: u64,
    healthy: Arc<std::sync::atomic::AtomicBool>,
) -> (HaDriverHandle, [FakeVip; 2], RuntimeStore) {
    let mut c = cfg(id, prios[0], bind, peer);
    c.vips = vec![
        vip_cfg("10.0.0.100/24", prios[0]),
        vip_cfg("10.0.0.101/24", prios[1]),
    ];
    let vips = [FakeVip::default(), FakeVip::default()];
    let store = RuntimeStore::new();
    let sources = Sources {
        health: Box::new(move || healthy.load(std::sync::atomic::Ordering::SeqCst)),
        config_hash: Box::new(move || hash),
        runtime: Some(store.clone()),
    };
    let d = spawn_with(
        c,
        vec![Some(vips[0].clone()), Some(vips[1].clone())],
        sources,
    )
    .await
    .unwrap();
    (d, vips, store)
}

fn up() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(true))
}

fn vip_roles(h: &HaDriverHandle) -> Vec<&'static str> {
    h.handle().status().vips.iter().map(|v| v.role).collect()
}

#[tokio::test(start_paused = true)]
async fn active_active_each_holds_one_vip_and_one_holds_both_when_the_other_dies() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let (a, va, _) = node("lb-a", a_addr, b_addr, [200, 100], 1, up()).await;
    let (b, vb, _) = node("lb-b", b_addr, a_addr, [100, 200], 1, up()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(vip_roles(&a), ["master", "backup"]);
    assert_eq!(vip_roles(&b), ["backup", "master"]);
    assert!(va[0].held() && !va[1].held() && !vb[0].held() && vb[1].held());
    let st = a.handle().status();
    assert_eq!(st.role, "master");
    assert_eq!(st.vips[1].peer_role, Some("master"));
    assert_eq!(st.config_in_sync, Some(true));

    b.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(vip_roles(&a), ["master", "master"]);
    assert!(va[0].held() && va[1].held());

    // b comes back and takes its VIP back (preempt), a keeps its own.
    let (b, vb, _) = node("lb-b", b_addr, a_addr, [100, 200], 1, up()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(vip_roles(&a), ["master", "backup"]);
    assert_eq!(vip_roles(&b), ["backup", "master"]);
    assert!(va[0].held() && !va[1].held() && !vb[0].held() && vb[1].held());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_heartbeat_takes_over_after_two_intervals_not_the_dead_interval() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = spawn(cfg("lb-a", 200, a_addr, b_addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    let b = spawn(cfg("lb-b", 100, b_addr, a_addr), None::<FakeVip>, || true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(role(&b), "backup");
    let refused = rx("refused");
    // As SIGKILL: a's socket closes, the kernel answers b's heartbeats with port
    // unreachable. Heartbeat 100 ms, dead interval 500 ms.
    a.kill();
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert!(rx("refused") > refused, "the refusal was seen");
    assert_eq!(
        role(&b),
        "master",
        "taken over well before the dead interval"
    );
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn both_faulty_the_higher_node_keeps_the_vip() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let (ha, hb) = (up(), up());
    let (a, va, _) = node("lb-a", a_addr, b_addr, [200, 200], 1, ha.clone()).await;
    let (b, vb, _) = node("lb-b", b_addr, a_addr, [100, 100], 1, hb.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(vip_roles(&a), ["master", "master"]);
    hb.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ha.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.handle().status().faulty && b.handle().status().faulty);
    assert_eq!(vip_roles(&a), ["master", "master"], "never dark");
    assert_eq!(vip_roles(&b), ["fault", "fault"]);
    assert!(va[0].held() && va[1].held() && !vb[0].held() && !vb[1].held());
    // The lower node recovers first: it serves, the faulty one yields.
    hb.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(vip_roles(&b), ["master", "master"]);
    assert_eq!(vip_roles(&a), ["fault", "fault"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn drift_is_reported_and_runtime_state_is_replicated_both_ways() {
    use crate::upstream::runtime::{AdminState, RuntimeChange};
    use crate::upstream::ServerKey;
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let (a, _, sa) = node("lb-a", a_addr, b_addr, [200, 200], 7, up()).await;
    // Set before the peer exists: reaches it by the full sync when it appears.
    let k1 = ServerKey {
        upstream: "app".into(),
        address: "10.0.0.1:3000".into(),
    };
    sa.set_local(
        &k1,
        RuntimeChange {
            state: Some(AdminState::Drain),
            weight: None,
        },
        1_000,
    );
    let (b, _, sb) = node("lb-b", b_addr, a_addr, [100, 100], 8, up()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sb.get(&k1).map(|e| e.state), Some(AdminState::Drain));
    let st = b.handle().status();
    assert_eq!(st.config_in_sync, Some(false));
    assert_eq!(st.config_hash, "0000000000000008");
    assert_eq!(st.peer_config_hash.as_deref(), Some("0000000000000007"));
    // A change on the backup travels to the master as it happens; a later change wins.
    let k2 = ServerKey {
        upstream: "app".into(),
        address: "10.0.0.2:3000".into(),
    };
    sb.set_local(
        &k2,
        RuntimeChange {
            state: None,
            weight: Some(Some(5)),
        },
        2_000,
    );
    sb.set_local(
        &k1,
        RuntimeChange {
            state: Some(AdminState::Ready),
            weight: None,
        },
        3_000,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sa.get(&k2).and_then(|e| e.weight), Some(5));
    assert_eq!(sa.get(&k1).map(|e| e.state), Some(AdminState::Ready));
    assert_eq!(sa.entries(), sb.entries());
    a.shutdown().await;
    b.shutdown().await;
}
