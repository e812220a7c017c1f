//! Transition tables on a hand-advanced clock: each test names the rule it pins.

use super::*;

const H: Duration = Duration::from_millis(200);
const D: Duration = Duration::from_millis(1000);
const MS: Duration = Duration::from_millis(1);

struct Node {
    m: HaMachine,
    t0: Instant,
    now: Instant,
}

impl Node {
    fn new(id: &str, priority: u8, preempt: bool) -> Self {
        let t0 = Instant::now();
        let cfg = MachineConfig {
            node_id: id.to_owned(),
            priority,
            preempt,
            heartbeat_interval: H,
            dead_interval: D,
        };
        let mut n = Node {
            m: HaMachine::new(cfg, t0),
            t0,
            now: t0,
        };
        assert_eq!(
            n.drain(),
            [Action::BecomeBackup, hb(Role::Backup)],
            "a new machine is a backup that announces itself"
        );
        n
    }

    /// A node that already made it to master with no peer around.
    fn master(id: &str, priority: u8, preempt: bool) -> Self {
        let mut n = Node::new(id, priority, preempt);
        n.at(D, Input::Tick);
        assert_eq!(n.m.role(), Role::Master);
        n.drain();
        n
    }

    fn drain(&mut self) -> Vec<Action> {
        self.m.check_invariants();
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    /// Feeds `input` at `t0 + since` and returns the actions.
    fn at(&mut self, since: Duration, input: Input) -> Vec<Action> {
        self.now = self.t0 + since;
        self.m.handle(input, self.now);
        self.drain()
    }

    /// Feeds `input` at the current instant.
    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.m.handle(input, self.now);
        self.drain()
    }

    fn since(&self) -> Duration {
        self.now - self.t0
    }
}

fn hb(role: Role) -> Action {
    Action::SendHeartbeat {
        role,
        leaving: false,
    }
}

fn peer(id: &str, priority: u8, role: Role) -> Input {
    Input::PeerHeartbeat(PeerView {
        node_id: id.to_owned(),
        priority,
        role,
        leaving: false,
        faulty: role == Role::Fault,
        maintenance: false,
    })
}

fn leaving(id: &str, priority: u8, role: Role) -> Input {
    Input::PeerHeartbeat(PeerView {
        node_id: id.to_owned(),
        priority,
        role,
        leaving: true,
        faulty: role == Role::Fault,
        maintenance: false,
    })
}

#[test]
fn heartbeats_every_interval_and_not_before() {
    let mut n = Node::new("a", 100, true);
    assert_eq!(n.m.poll_timeout(), Some(n.t0 + H));
    assert_eq!(n.at(H - MS, Input::Tick), []);
    assert_eq!(n.at(H, Input::Tick), [hb(Role::Backup)]);
    assert_eq!(n.m.poll_timeout(), Some(n.t0 + 2 * H));
}

#[test]
fn alone_claims_master_after_one_dead_interval() {
    let mut n = Node::new("a", 100, true);
    for k in 1..5 {
        n.at(k * H, Input::Tick);
        assert_eq!(n.m.role(), Role::Backup);
    }
    assert_eq!(n.m.poll_timeout(), Some(n.t0 + D));
    assert_eq!(
        n.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn start_wait_holds_even_a_preempting_higher_node() {
    let mut n = Node::new("a", 200, true);
    assert_eq!(n.at(100 * MS, peer("b", 100, Role::Master)), []);
    assert_eq!(n.m.poll_timeout(), Some(n.t0 + H));
    n.at(H, Input::Tick);
    n.at(2 * H, peer("b", 100, Role::Master));
    n.at(D - MS, Input::Tick);
    assert_eq!(n.m.role(), Role::Backup);
    assert_eq!(
        n.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn higher_node_without_preempt_stays_backup_under_a_healthy_master() {
    let mut n = Node::new("a", 200, false);
    for k in 0..20 {
        n.at(k * H + MS, peer("b", 100, Role::Master));
        n.at((k + 1) * H, Input::Tick);
        assert_eq!(n.m.role(), Role::Backup, "tick {k}");
    }
}

#[test]
fn lower_node_never_preempts() {
    let mut n = Node::new("a", 100, true);
    for k in 0..20 {
        n.at(k * H + MS, peer("b", 200, Role::Master));
        n.at((k + 1) * H, Input::Tick);
        assert_eq!(n.m.role(), Role::Backup, "tick {k}");
    }
}

#[test]
fn master_never_yields_to_a_higher_backup() {
    // Preemption is the higher node's decision; the master waits to lose a conflict.
    let mut n = Node::master("a", 100, true);
    assert_eq!(n.at(D + MS, peer("b", 200, Role::Backup)), []);
    assert_eq!(n.m.role(), Role::Master);
}

#[test]
fn peer_dead_takes_over_after_dead_interval_from_last_heartbeat() {
    let mut n = Node::new("a", 100, true);
    n.at(1500 * MS, peer("b", 200, Role::Master));
    assert_eq!(n.m.role(), Role::Backup);
    let mut t = 1500 * MS;
    while n.since() < 1500 * MS + D - MS {
        let next = n.m.poll_timeout().unwrap();
        assert!(next > n.now, "timeout in the past");
        t = next - n.t0;
        if t >= 1500 * MS + D {
            break;
        }
        n.at(t, Input::Tick);
        assert_eq!(n.m.role(), Role::Backup);
    }
    assert_eq!(t, 1500 * MS + D, "the dead deadline is a poll_timeout");
    assert_eq!(
        n.at(t, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn faulty_peer_is_replaced_at_once_even_during_start_wait() {
    let mut n = Node::new("a", 100, false);
    n.at(50 * MS, peer("b", 200, Role::Master));
    assert_eq!(
        n.at(60 * MS, peer("b", 200, Role::Fault)),
        [Action::BecomeMaster, hb(Role::Master)]
    );
    // The recovered peer comes back as backup; a master does not yield to it.
    assert_eq!(n.at(70 * MS, peer("b", 200, Role::Backup)), []);
    assert_eq!(n.m.role(), Role::Master);
}

#[test]
fn leaving_master_is_replaced_at_once_even_during_start_wait() {
    let mut n = Node::new("a", 100, false);
    n.at(50 * MS, peer("b", 200, Role::Master));
    assert_eq!(
        n.at(60 * MS, leaving("b", 200, Role::Backup)),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn preempting_higher_backup_takes_over_from_master() {
    let mut n = Node::new("a", 200, true);
    n.at(D - MS, peer("b", 100, Role::Master));
    assert_eq!(
        n.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
    // The old master still claims it until it hears us: we win, re-send ARP, tell it now.
    assert_eq!(
        n.at(D + MS, peer("b", 100, Role::Master)),
        [Action::Reannounce, hb(Role::Master)]
    );
    // It stepped down: its clients' ARP entries may still point at it.
    assert_eq!(
        n.at(D + 2 * MS, peer("b", 100, Role::Backup)),
        [Action::Reannounce]
    );
    assert_eq!(n.at(D + 3 * MS, peer("b", 100, Role::Backup)), []);
}

#[test]
fn two_backups_elect_the_higher_after_the_wait() {
    let mut hi = Node::new("a", 200, false);
    let mut lo = Node::new("b", 100, false);
    for k in 0..5 {
        hi.at(k * H + MS, peer("b", 100, Role::Backup));
        lo.at(k * H + MS, peer("a", 200, Role::Backup));
    }
    assert_eq!(
        hi.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
    assert_eq!(lo.at(D, Input::Tick), []);
    assert_eq!(lo.m.role(), Role::Backup);
}

#[test]
fn two_masters_lower_priority_steps_down_at_once() {
    let mut lo = Node::master("a", 100, true);
    assert_eq!(
        lo.at(D + MS, peer("b", 200, Role::Master)),
        [Action::BecomeBackup, hb(Role::Backup)]
    );
    let mut hi = Node::master("b", 200, false);
    assert_eq!(
        hi.at(D + MS, peer("a", 100, Role::Master)),
        [Action::Reannounce, hb(Role::Master)]
    );
}

#[test]
fn equal_priority_higher_node_id_wins() {
    let mut lo = Node::master("lb-a", 100, false);
    assert_eq!(
        lo.at(D + MS, peer("lb-b", 100, Role::Master)),
        [Action::BecomeBackup, hb(Role::Backup)]
    );
    let mut hi = Node::master("lb-b", 100, false);
    assert_eq!(
        hi.at(D + MS, peer("lb-a", 100, Role::Master)),
        [Action::Reannounce, hb(Role::Master)]
    );
    // With preempt, the id order also decides a takeover at equal priority.
    let mut pre = Node::new("lb-b", 100, true);
    pre.at(D - MS, peer("lb-a", 100, Role::Master));
    assert_eq!(
        pre.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

/// A master that already hears a healthy backup peer `b` (priority 100).
fn master_with_peer(id: &str, priority: u8, preempt: bool) -> Node {
    let mut n = Node::master(id, priority, preempt);
    n.at(D, peer("b", 100, Role::Backup));
    n
}

#[test]
fn bad_health_is_fault_and_keeps_advertising_it() {
    let mut n = master_with_peer("a", 200, false);
    let down = Input::LocalHealth { healthy: false };
    assert_eq!(n.at(D + MS, down), [Action::BecomeFault, hb(Role::Fault)]);
    assert!(n.m.faulty());
    assert_eq!(n.at(D + MS + H, Input::Tick), [hb(Role::Fault)]);
    // A healthy master peer took over; recovering without preempt means backup.
    n.at(D + 2 * MS + H, peer("b", 100, Role::Master));
    assert_eq!(n.m.role(), Role::Fault);
    assert_eq!(
        n.at(D + 3 * MS + H, Input::LocalHealth { healthy: true }),
        [Action::BecomeBackup, hb(Role::Backup)]
    );
}

#[test]
fn recovering_higher_node_with_preempt_takes_back_over() {
    let mut n = master_with_peer("a", 200, true);
    n.at(D + MS, Input::LocalHealth { healthy: false });
    n.at(D + 2 * MS, peer("b", 100, Role::Master));
    assert_eq!(
        n.at(D + 3 * MS, Input::LocalHealth { healthy: true }),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn alone_a_faulty_node_keeps_the_vip() {
    let mut n = Node::master("a", 200, true);
    assert_eq!(n.at(D + MS, Input::LocalHealth { healthy: false }), []);
    assert_eq!(n.m.role(), Role::Master);
    assert_eq!(n.at(D + 2 * MS, Input::LocalHealth { healthy: true }), []);
}

#[test]
fn alone_a_new_faulty_node_claims_after_the_start_wait() {
    let mut n = Node::new("a", 200, true);
    assert_eq!(
        n.at(MS, Input::LocalHealth { healthy: false }),
        [Action::BecomeFault, hb(Role::Fault)]
    );
    assert_eq!(
        n.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

fn faulty_peer(id: &str, priority: u8, role: Role) -> Input {
    Input::PeerHeartbeat(PeerView {
        node_id: id.to_owned(),
        priority,
        role,
        leaving: false,
        faulty: true,
        maintenance: false,
    })
}

fn maint_peer(id: &str, priority: u8) -> Input {
    Input::PeerHeartbeat(PeerView {
        node_id: id.to_owned(),
        priority,
        role: Role::Fault,
        leaving: false,
        faulty: false,
        maintenance: true,
    })
}

#[test]
fn both_faulty_the_higher_rank_takes_the_vip() {
    // b (lower) went faulty first and gave the VIP to a; then a goes faulty too.
    let mut n = master_with_peer("a", 200, true);
    n.at(D + MS, faulty_peer("b", 100, Role::Fault));
    assert_eq!(
        n.at(D + 2 * MS, Input::LocalHealth { healthy: false }),
        [],
        "a faulty master keeps the VIP against a faulty lower peer"
    );
    assert_eq!(n.m.role(), Role::Master);
    // The lower node, also faulty, does not claim it.
    let mut low = Node::new("b", 100, true);
    low.at(MS, Input::LocalHealth { healthy: false });
    low.at(2 * MS, faulty_peer("a", 200, Role::Fault));
    low.at(D, Input::Tick);
    low.at(D + MS, faulty_peer("a", 200, Role::Fault));
    assert_eq!(low.m.role(), Role::Fault);
    // The higher one, faulty, claims it from a faulty lower master (preempt).
    let mut high = Node::new("a", 200, true);
    high.at(MS, Input::LocalHealth { healthy: false });
    high.at(2 * MS, faulty_peer("b", 100, Role::Master));
    assert_eq!(high.m.role(), Role::Fault, "start-up wait first");
    high.at(D - MS, faulty_peer("b", 100, Role::Master));
    assert_eq!(
        high.at(D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn both_faulty_without_preempt_the_holder_keeps_it() {
    let mut high = Node::new("a", 200, false);
    high.at(MS, Input::LocalHealth { healthy: false });
    for k in 0..10 {
        high.at(k * H + 2 * MS, faulty_peer("b", 100, Role::Master));
        high.at((k + 1) * H, Input::Tick);
        assert_eq!(high.m.role(), Role::Fault, "tick {k}");
    }
}

#[test]
fn a_faulty_master_yields_to_a_healthy_peer_and_a_healthy_node_takes_from_it() {
    let mut n = Node::master("a", 200, true);
    n.at(D + MS, Input::LocalHealth { healthy: false });
    assert_eq!(
        n.at(D + 2 * MS, peer("b", 100, Role::Backup)),
        [Action::BecomeFault, hb(Role::Fault)]
    );
    // The healthy lower node claims at once, start-up wait or not.
    let mut b = Node::new("b", 100, false);
    assert_eq!(
        b.at(MS, faulty_peer("a", 200, Role::Master)),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn maintenance_yields_while_the_peer_is_alive_even_to_a_faulty_one() {
    let mut n = master_with_peer("a", 200, true);
    assert_eq!(
        n.at(D + MS, Input::Maintenance(true)),
        [Action::BecomeFault, hb(Role::Fault)]
    );
    assert!(n.m.in_maintenance());
    // Health coming back does not end maintenance; a faulty peer does not either.
    assert_eq!(n.feed(Input::LocalHealth { healthy: true }), []);
    assert_eq!(n.at(D + 2 * MS, faulty_peer("b", 100, Role::Master)), []);
    assert_eq!(n.m.role(), Role::Fault);
    assert_eq!(
        n.at(D + 3 * MS, Input::Maintenance(false)),
        [Action::BecomeMaster, hb(Role::Master)]
    );
    // A faulty node takes the VIP from a peer in maintenance.
    let mut f = Node::new("f", 100, false);
    f.at(MS, Input::LocalHealth { healthy: false });
    assert_eq!(
        f.at(2 * MS, maint_peer("g", 200)),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn maintenance_holds_the_vip_once_the_peer_is_dead() {
    let mut n = master_with_peer("a", 200, true);
    n.at(D + MS, Input::Maintenance(true));
    assert_eq!(n.m.role(), Role::Fault);
    // The peer was last heard at D.
    assert_eq!(n.at(2 * D - MS, Input::Tick), [hb(Role::Fault)]);
    assert_eq!(
        n.at(2 * D, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn a_refusal_then_two_heartbeat_intervals_of_silence_is_a_dead_peer() {
    let mut n = Node::new("b", 100, true);
    n.at(D - MS, peer("a", 200, Role::Master));
    n.at(D + MS, peer("a", 200, Role::Master));
    assert_eq!(n.m.role(), Role::Backup);
    n.at(D + 50 * MS, Input::PeerRefused);
    assert!(n.m.poll_timeout().unwrap() <= n.t0 + D + MS + 2 * H);
    n.at(D + 2 * H, Input::Tick);
    assert_eq!(n.m.role(), Role::Backup);
    assert_eq!(
        n.at(D + MS + 2 * H, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)]
    );
}

#[test]
fn a_peer_heard_then_refused_ends_the_start_up_wait() {
    let mut n = Node::new("b", 100, true);
    n.at(100 * MS, peer("a", 200, Role::Master));
    n.at(150 * MS, Input::PeerRefused);
    n.at(100 * MS + 2 * H - MS, Input::Tick);
    assert_eq!(n.m.role(), Role::Backup);
    assert_eq!(
        n.at(100 * MS + 2 * H, Input::Tick),
        [Action::BecomeMaster, hb(Role::Master)],
        "well before the start-up wait (D) ends"
    );
}

#[test]
fn refusals_while_heartbeats_arrive_change_nothing() {
    let mut n = Node::new("b", 100, true);
    for k in 0..30 {
        n.at(k * H + MS, peer("a", 200, Role::Master));
        // A forged ICMP port unreachable after every heartbeat.
        n.at(k * H + 2 * MS, Input::PeerRefused);
        n.at((k + 1) * H, Input::Tick);
        assert_eq!(n.m.role(), Role::Backup, "tick {k}");
    }
    // A refusal with no peer heard yet changes nothing either.
    let mut lone = Node::new("c", 100, true);
    lone.at(MS, Input::PeerRefused);
    lone.at(D - MS, Input::Tick);
    assert_eq!(lone.m.role(), Role::Backup);
}

#[test]
fn shutdown_as_master_releases_then_tells_the_peer_and_goes_inert() {
    let mut n = Node::master("a", 200, true);
    assert_eq!(
        n.at(D + MS, Input::Shutdown),
        [
            Action::BecomeBackup,
            Action::SendHeartbeat {
                role: Role::Backup,
                leaving: true
            }
        ]
    );
    assert_eq!(n.m.poll_timeout(), None);
    assert_eq!(n.at(10 * D, Input::Tick), []);
    assert_eq!(n.feed(peer("b", 100, Role::Fault)), []);
    assert_eq!(n.m.role(), Role::Backup);
}

#[test]
fn shutdown_as_fault_keeps_advertising_fault() {
    let mut n = Node::new("a", 200, true);
    n.at(MS, Input::Maintenance(true));
    assert_eq!(
        n.at(2 * MS, Input::Shutdown),
        [Action::SendHeartbeat {
            role: Role::Fault,
            leaving: true
        }]
    );
}

#[test]
fn peer_status_is_exposed() {
    let mut n = Node::new("a", 200, true);
    assert_eq!(n.m.peer(), None);
    n.at(5 * MS, peer("b", 100, Role::Backup));
    let p = n.m.peer().unwrap();
    assert_eq!(
        (p.role, p.last_seen, p.priority),
        (Role::Backup, n.now, 100)
    );
}

#[test]
fn older_instant_from_the_driver_does_not_move_time_back() {
    let mut n = Node::new("a", 200, true);
    n.at(H, Input::Tick);
    n.at(H - 50 * MS, Input::Tick);
    n.m.check_invariants();
    assert!(n.m.poll_timeout().unwrap() > n.t0 + H);
}

#[test]
fn role_labels_and_gauge_values_follow_the_spec() {
    let all = [
        (Role::Backup, "backup", 0),
        (Role::Master, "master", 1),
        (Role::Fault, "fault", 2),
    ];
    for (role, label, gauge) in all {
        assert_eq!((role.label(), role.gauge()), (label, gauge));
    }
}
