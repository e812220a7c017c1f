//! Table tests of [`Attempts`], one per transition, on upstreams built from
//! YAML and a paused clock: no socket is opened.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::upstream::attempt::ClientFault;
use crate::upstream::breaker::Phase;
use crate::upstream::ServerRegistry;

/// Three servers, `retries` extra attempts, a breaker that opens on the
/// first failure and half-opens after 1 s.
fn upstream(retries: u32) -> Upstream {
    let text = format!(
        "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:
  - name: app
    retries: {retries}
    circuit_breaker:
      failure_threshold: 1
      reset_timeout: 1s
    servers:
      - address: 127.0.0.1:3001
      - address: 127.0.0.1:3002
      - address: 127.0.0.1:3003
"
    );
    let config = crate::config::parse(&text, "test.yaml", Path::new(".")).unwrap();
    ServerRegistry::default().build_upstream(&config.upstreams[0], &HashMap::new())
}

const OK: Outcome = Outcome::Response {
    status: 200,
    elapsed: Duration::from_millis(1),
};

fn phase(up: &Upstream, i: usize) -> Phase {
    up.servers[i].breaker.phase(Instant::now())
}

#[tokio::test(start_paused = true)]
async fn connect_error_is_recorded_and_retried_elsewhere_for_any_request() {
    let up = upstream(2);
    let retries_before = up.metrics.retries.get();
    let mut a = up.attempts(None, false);
    let first = a.next().unwrap();
    let v = a.report(
        &first,
        Outcome::Failed(Failure::ConnectError),
        Instant::now(),
    );
    assert_eq!(v, Verdict::Retry);
    assert_eq!(phase(&up, first.index), Phase::Open, "breaker heard it");
    let second = a.next().unwrap();
    assert_ne!(second.index, first.index, "another server");
    assert_eq!(up.metrics.retries.get(), retries_before + 1);
    assert_eq!(a.report(&second, OK, Instant::now()), Verdict::Respond);
}

#[tokio::test(start_paused = true)]
async fn reset_after_send_is_retried_only_when_replayable() {
    for (replayable, want) in [
        (true, Verdict::Retry),
        (false, Verdict::Fail(StatusCode::BAD_GATEWAY)),
    ] {
        let up = upstream(2);
        let mut a = up.attempts(None, replayable);
        let sel = a.next().unwrap();
        let v = a.report(&sel, Outcome::Failed(Failure::Reset), Instant::now());
        assert_eq!(v, want, "replayable {replayable}");
        assert_eq!(phase(&up, sel.index), Phase::Open, "recorded either way");
    }
}

#[tokio::test(start_paused = true)]
async fn failure_status_is_recorded_and_retried_only_when_replayable() {
    let status = Outcome::Response {
        status: 503,
        elapsed: Duration::from_millis(1),
    };
    for (replayable, want) in [(true, Verdict::Retry), (false, Verdict::Respond)] {
        let up = upstream(2);
        let mut a = up.attempts(None, replayable);
        let sel = a.next().unwrap();
        assert_eq!(a.report(&sel, status, Instant::now()), want);
        assert_eq!(phase(&up, sel.index), Phase::Open);
    }
    // The last attempt passes the failure status on rather than a 502.
    let up = upstream(0);
    let mut a = up.attempts(None, true);
    let sel = a.next().unwrap();
    assert_eq!(a.report(&sel, status, Instant::now()), Verdict::Respond);
}

#[tokio::test(start_paused = true)]
async fn client_failure_never_reaches_the_breaker() {
    let up = upstream(2);
    let mut a = up.attempts(None, true);
    let sel = a.next().unwrap();
    let f = Failure::Client(ClientFault::Aborted);
    assert_eq!(
        a.report(&sel, Outcome::Failed(f), Instant::now()),
        Verdict::Client(f)
    );
    assert_eq!(phase(&up, sel.index), Phase::Closed);
}

/// Opens every breaker and lets `reset_timeout` pass: the next selection is
/// a half-open trial.
async fn all_half_open(up: &Upstream) {
    for s in &up.servers {
        s.breaker.record_failure(Instant::now());
    }
    tokio::time::advance(Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn breaker_trial_success_closes_and_abandoned_trial_frees_the_slot() {
    let up = upstream(0);
    all_half_open(&up).await;
    let mut a = up.attempts(None, true);
    let sel = a.next().unwrap();
    assert!(sel.trial);
    assert_eq!(a.report(&sel, OK, Instant::now()), Verdict::Respond);
    assert_eq!(
        phase(&up, sel.index),
        Phase::Closed,
        "trial verdict is its head"
    );

    // A trial whose attempt is dropped unreported (the client went away).
    let up = upstream(0);
    all_half_open(&up).await;
    let mut a = up.attempts(Some(7), true);
    let sel = a.next().unwrap();
    let index = sel.index;
    assert!(sel.trial);
    drop(sel);
    drop(a);
    assert_eq!(
        up.servers[index].breaker.admit(Instant::now()),
        crate::upstream::breaker::Admit::Trial,
        "the slot came back"
    );

    // A trial ended by the client's own failure also gives the slot back.
    let up = upstream(0);
    all_half_open(&up).await;
    let mut a = up.attempts(None, true);
    let sel = a.next().unwrap();
    let f = Outcome::Failed(Failure::Client(ClientFault::Stalled));
    a.report(&sel, f, Instant::now());
    assert_eq!(
        sel.server.breaker.admit(Instant::now()),
        crate::upstream::breaker::Admit::Trial
    );
}

#[tokio::test(start_paused = true)]
async fn budget_exhausted_answers_with_the_last_failure() {
    for (failure, status) in [
        (Failure::ConnectError, StatusCode::BAD_GATEWAY),
        (Failure::ConnectTimeout, StatusCode::GATEWAY_TIMEOUT),
    ] {
        let up = upstream(1);
        let mut a = up.attempts(None, false);
        for _ in 0..2 {
            let sel = a.next().unwrap();
            let v = a.report(&sel, Outcome::Failed(failure), Instant::now());
            assert_eq!(v, Verdict::Retry);
        }
        assert!(a.next().is_none(), "retries: 1 means two attempts");
        assert_eq!(a.status(), status);
    }
}

#[tokio::test(start_paused = true)]
async fn no_server_answers_503() {
    let up = upstream(2);
    for s in &up.servers {
        s.set_healthy(false);
    }
    let mut a = up.attempts(None, true);
    assert!(a.next().is_none());
    assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The queue said no for the first attempt: no other selection is tried.
    let up = upstream(2);
    let mut a = up.attempts(None, true);
    a.queued(Err(NoServer::Unavailable));
    assert!(a.next().is_none());
    assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn pooled_connection_closed_before_the_answer_is_resent_by_the_rules() {
    for (replay, replayable, want) in [
        (Replay::Unsent, false, true),
        (Replay::Unsent, true, true),
        (Replay::Unanswered, true, true),
        (Replay::Unanswered, false, false),
        (Replay::No, true, false),
    ] {
        assert_eq!(
            may_resend(replay, replayable),
            want,
            "{replay:?} {replayable}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ewma_is_updated_for_peak_ewma_only() {
    let slow = Outcome::Response {
        status: 200,
        elapsed: Duration::from_secs(1),
    };
    for (balance, moved) in [("peak_ewma", true), ("round_robin", false)] {
        let up = upstream(0);
        let mut config = up.config.clone();
        config.balance = if moved {
            crate::config::types::BalanceKind::PeakEwma
        } else {
            crate::config::types::BalanceKind::RoundRobin
        };
        let up = Upstream { config, ..up };
        let mut a = up.attempts(None, false);
        let sel = a.next().unwrap();
        let now = Instant::now();
        let before = sel.server.ewma.get(crate::clock::nanos_since_origin(now));
        a.report(&sel, slow, now);
        let after = sel.server.ewma.get(crate::clock::nanos_since_origin(now));
        assert_eq!(after != before, moved, "{balance}: {before} -> {after}");
    }
}
