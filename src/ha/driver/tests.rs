//! Driver tests: two real drivers talking over loopback UDP with a recording fake VIP,
//! mostly on a paused clock (time advances only when both are idle).

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::ha::wire::{self, Heartbeat};
use crate::metrics;

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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx("malformed") > m);
    assert!(rx("bad_auth") > bad);
    assert!(rx("unknown_node") > unknown);
    assert!(rx("replay") > replay);
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
