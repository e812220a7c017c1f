use super::*;
use std::sync::Arc;

fn cfg(threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        reset_timeout: Duration::from_secs(30),
        monitor_interval: Duration::from_secs(5),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One step of a transition table: at `at` ms after the base, do `op`, expect `want`
/// as the returned transition's target (or `None`) and `phase` afterwards.
#[derive(Debug, Clone, Copy)]
enum Op {
    Fail,
    Pass,
    Try(Admit),
    Abandon,
}

type Step = (u64, Op, Option<Phase>, Phase);

/// Runs a table against both the pure machine and the shared state, which must agree.
fn run(threshold: u32, steps: &[Step]) {
    let base = Instant::now();
    let mut m = BreakerMachine::new(cfg(threshold));
    let s = BreakerState::new(cfg(threshold), base);
    for (i, &(at, op, want, phase)) in steps.iter().enumerate() {
        let now = base + ms(at);
        let (gm, gs) = match op {
            Op::Fail => (
                m.on_failure(now).map(|t| t.to),
                s.record_failure(now).map(|t| t.to),
            ),
            Op::Pass => (
                m.on_success(now).map(|t| t.to),
                s.record_success(now).map(|t| t.to),
            ),
            Op::Try(a) => {
                assert_eq!(m.admit(now), a, "machine step {i} {steps:?}");
                assert_eq!(s.admit(now), a, "state step {i} {steps:?}");
                (None, None)
            }
            Op::Abandon => {
                m.on_trial_abandoned();
                s.on_trial_abandoned();
                (None, None)
            }
        };
        assert_eq!(gm, want, "machine transition at step {i}: {:?}", steps[i]);
        assert_eq!(gs, want, "state transition at step {i}: {:?}", steps[i]);
        assert_eq!(
            m.phase(now),
            phase,
            "machine phase at step {i}: {:?}",
            steps[i]
        );
        assert_eq!(
            s.phase(now),
            phase,
            "state phase at step {i}: {:?}",
            steps[i]
        );
        // Half-open availability depends on the trial slot; the trial tests cover it.
        let avail = match phase {
            Phase::Closed => Some(true),
            Phase::Open => Some(false),
            Phase::HalfOpen => None,
        };
        if let Some(avail) = avail {
            assert_eq!(s.available(now), avail, "available at step {i}");
        }
    }
}

use Op::*;
use Phase::*;

const C: Phase = Closed;
const O: Phase = Open;
const H: Phase = HalfOpen;

#[test]
fn four_failures_then_success_then_four_stays_closed() {
    let mut t: Vec<Step> = (0..4).map(|i| (i * 100, Fail, None, C)).collect();
    t.push((450, Pass, None, C));
    t.extend((0..4).map(|i| (500 + i * 100, Fail, None, C)));
    t.push((900, Fail, Some(O), O)); // the fifth after the reset opens
    run(5, &t);
}

#[test]
fn five_failures_within_monitor_interval_open() {
    run(
        5,
        &[
            (0, Fail, None, C),
            (1000, Fail, None, C),
            (2000, Fail, None, C),
            (3000, Fail, None, C),
            (4999, Fail, Some(O), O),
            (5000, Try(Admit::No), None, O),
        ],
    );
}

#[test]
fn failures_spread_over_more_than_monitor_interval_stay_closed() {
    // One failure every 1.5 s: never five inside any 5 s window.
    let t: Vec<Step> = (0..20).map(|i| (i * 1500, Fail, None, C)).collect();
    run(5, &t);
    // Exactly at the edge a failure still counts (older than, not as old as).
    run(
        5,
        &[
            (0, Fail, None, C),
            (1000, Fail, None, C),
            (2000, Fail, None, C),
            (3000, Fail, None, C),
            (5000, Fail, Some(O), O),
        ],
    );
    run(
        5,
        &[
            (0, Fail, None, C),
            (1000, Fail, None, C),
            (2000, Fail, None, C),
            (3000, Fail, None, C),
            (5001, Fail, None, C),
            (5500, Fail, Some(O), O),
        ],
    );
}

#[test]
fn open_rejects_until_reset_then_exactly_one_trial() {
    let mut t: Vec<Step> = (0..5).map(|i| (i, Fail, None, C)).collect();
    t[4].2 = Some(O);
    t[4].3 = O;
    t.extend([
        (10, Try(Admit::No), None, O),
        (10_000, Pass, None, O), // a late success while open is ignored
        (20_000, Fail, None, O), // and so is a late failure: no extension
        (30_003, Try(Admit::No), None, O),
        (30_004, Try(Admit::Trial), None, H),
        (30_005, Try(Admit::No), None, H),
        (31_000, Try(Admit::No), None, H),
        (32_000, Pass, Some(C), C),
        (32_001, Try(Admit::Yes), None, C),
    ]);
    run(5, &t);
}

#[test]
fn trial_failure_reopens_for_a_full_reset_timeout() {
    run(
        5,
        &[
            (0, Fail, None, C),
            (0, Fail, None, C),
            (0, Fail, None, C),
            (0, Fail, None, C),
            (0, Fail, Some(O), O),
            (30_000, Try(Admit::Trial), None, H),
            (31_000, Fail, Some(O), O),
            (31_001, Try(Admit::No), None, O),
            (60_999, Try(Admit::No), None, O),
            (61_000, Try(Admit::Trial), None, H),
            (61_500, Pass, Some(C), C),
            // Closed again with a clean count: four failures do not open.
            (62_000, Fail, None, C),
            (62_000, Fail, None, C),
            (62_000, Fail, None, C),
            (62_000, Fail, None, C),
        ],
    );
}

#[test]
fn abandoned_trial_frees_the_slot() {
    run(
        1,
        &[
            (0, Fail, Some(O), O),
            (30_000, Try(Admit::Trial), None, H),
            (30_001, Try(Admit::No), None, H),
            (30_002, Abandon, None, H),
            (30_003, Try(Admit::Trial), None, H),
            (30_004, Pass, Some(C), C),
        ],
    );
}

#[test]
fn threshold_one_opens_on_first_failure_and_zero_means_one() {
    for threshold in [0, 1] {
        run(
            threshold,
            &[
                (0, Pass, None, C),
                (1, Fail, Some(O), O),
                (29_999, Try(Admit::No), None, O),
                (30_001, Fail, Some(O), O), // half-open failure reopens
                (60_001, Try(Admit::Trial), None, H),
                (60_002, Pass, Some(C), C),
                (60_003, Fail, Some(O), O),
            ],
        );
    }
}

#[test]
fn transitions_carry_from_and_reason() {
    let base = Instant::now();
    let mut m = BreakerMachine::new(cfg(1));
    let t = m.on_failure(base).unwrap();
    assert_eq!((t.from, t.to), (Closed, Open));
    assert!(!t.reason.is_empty());
    let later = base + Duration::from_secs(30);
    let t = m.on_failure(later).unwrap();
    assert_eq!((t.from, t.to), (HalfOpen, Open));
    let t = m.on_success(later + Duration::from_secs(30)).unwrap();
    assert_eq!((t.from, t.to), (HalfOpen, Closed));
    assert_eq!(Phase::Closed as u8, 0);
    assert_eq!(Phase::Open as u8, 1);
    assert_eq!(Phase::HalfOpen as u8, 2);
}

#[test]
fn success_on_closed_without_failures_does_not_lock() {
    let base = Instant::now();
    let s = BreakerState::new(cfg(5), base);
    let guard = s.machine.lock().unwrap();
    // Would deadlock if the fast path took the lock.
    assert_eq!(s.record_success(base), None);
    assert_eq!(s.admit(base), Admit::Yes);
    assert!(s.available(base));
    drop(guard);
}

#[test]
fn state_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<BreakerState>();
}

#[test]
fn concurrent_admits_get_exactly_one_trial() {
    for round in 0..50 {
        let base = Instant::now();
        let s = Arc::new(BreakerState::new(cfg(1), base));
        s.record_failure(base);
        let at = base + Duration::from_secs(31);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..100).filter(|_| s.admit(at) == Admit::Trial).count()
                })
            })
            .collect();
        let trials: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(trials, 1, "round {round}");
        assert!(!s.available(at));
        s.on_trial_abandoned();
        assert!(s.available(at));
        assert_eq!(s.admit(at), Admit::Trial);
    }
}

#[test]
fn concurrent_failures_open_once() {
    let base = Instant::now();
    let s = Arc::new(BreakerState::new(cfg(5), base));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || (0..50).filter_map(|_| s.record_failure(base)).count())
        })
        .collect();
    let opened: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(opened, 1);
    assert_eq!(s.phase(base), Open);
    assert_eq!(s.admit(base), Admit::No);
}

#[test]
fn reload_keeps_state_and_applies_new_settings() {
    let base = Instant::now();
    let s = BreakerState::new(cfg(5), base);
    s.record_failure(base);
    s.record_failure(base);
    s.set_config(cfg(3));
    assert_eq!(s.phase(base), Closed);
    assert_eq!(s.record_failure(base).map(|t| t.to), Some(Open));
}
