//! Per-server circuit breaker (closed -> open -> half-open with one trial).
//!
//! Owns: the decision of whether a server may take a request given its recent
//! failures. `BreakerMachine` is the pure core (single owner, `&mut self`, `now`
//! passed in); `BreakerState` wraps one for all worker threads. Does not own: deciding
//! what counts as a failure (the proxy's attempt classification does), metrics, or
//! timers (half-open is reached by time passing, observed lazily at the next call).
//!
//! Semantics: closed counts failures in a sliding window (a failure older than
//! `monitor_interval` no longer counts; a success clears the count);
//! `failure_threshold` counted failures open it. Open admits nothing for
//! `reset_timeout`, then it is half-open: exactly one trial request is admitted; its
//! success closes, its failure opens again for a full `reset_timeout`. A verdict that
//! arrives while open (a request admitted before the breaker opened) is ignored. A
//! verdict that arrives while half-open is taken as the trial's, whoever sent it: the
//! server answered (or failed) after the reset, which is what the trial asks.
//!
//! Concurrency trade-off in `BreakerState`: the hot path (`available`, `admit`, and
//! `record_success` while closed with nothing counted) reads and CASes atomics only.
//! Failures and transitions lock a `std::sync::Mutex<BreakerMachine>` briefly: they
//! are the rare path, and one lock keeps the window and the transitions exactly those
//! of the tested machine instead of a second, lock-free copy of the same logic. The
//! trial slot itself is an atomic (`trial`) so that claiming it never locks; the
//! machine's own slot is used only through its single-owner API.
//!
//! Invariants: at most one trial is in flight per half-open period (the CAS on `trial`);
//! `phase`, `open_until_ns` and `counted` mirror the machine after every locked call.
//! Limitation: `on_trial_abandoned` from a trial of an earlier half-open period (one
//! that outlived a reopen and another `reset_timeout`) frees the current slot early.
//!
//! Tests: `breaker/tests.rs` — transition tables on a hand-advanced clock, and threads
//! racing for the trial slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// Breaker settings (defaults: 5 failures, 30 s reset, 5 s monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Counted failures that open the breaker; 0 is treated as 1.
    pub failure_threshold: u32,
    /// How long an open breaker admits nothing before turning half-open.
    pub reset_timeout: Duration,
    /// How long a failure keeps counting.
    pub monitor_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            monitor_interval: Duration::from_secs(5),
        }
    }
}

/// The breaker's phase; `as u8` gives the metric value (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Phase {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// Whether a request may go to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go.
    Yes,
    /// Half-open: go as the single trial; report its verdict, or `on_trial_abandoned`.
    Trial,
    /// Open, or half-open with the trial already out.
    No,
}

/// A phase change, for logs and `tandem_circuit_breaker_transitions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub reason: &'static str,
}

/// Where the machine is. Half-open is `Open` with `now >= until`: it is reached by time
/// alone, so storing it would need a timer.
#[derive(Debug, Clone)]
enum State {
    /// Times of counted failures, oldest first; never more than the threshold.
    Closed {
        failures: VecDeque<Instant>,
    },
    Open {
        until: Instant,
        trial: bool,
    },
}

/// The pure breaker of one server.
#[derive(Debug, Clone)]
pub struct BreakerMachine {
    cfg: BreakerConfig,
    state: State,
}

impl BreakerMachine {
    /// A closed breaker with no counted failures.
    pub fn new(cfg: BreakerConfig) -> Self {
        let cfg = BreakerConfig {
            failure_threshold: cfg.failure_threshold.max(1),
            ..cfg
        };
        Self {
            cfg,
            state: State::Closed {
                failures: VecDeque::new(),
            },
        }
    }

    /// The settings in force (threshold already raised to at least 1).
    pub fn config(&self) -> BreakerConfig {
        self.cfg
    }

    /// New settings after a reload, keeping the phase and counted failures: a
    /// surviving server keeps its breaker state across a reload. An open deadline already
    /// set is kept; the new `reset_timeout` applies from the next opening.
    pub fn set_config(&mut self, cfg: BreakerConfig) {
        self.cfg = BreakerConfig {
            failure_threshold: cfg.failure_threshold.max(1),
            ..cfg
        };
    }

    /// Decides one request, claiming the trial slot when it answers `Trial`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match &mut self.state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until, .. } if now < *until => Admit::No,
            State::Open { trial: true, .. } => Admit::No,
            State::Open { trial, .. } => {
                *trial = true;
                Admit::Trial
            }
        }
    }

    /// A request to the server succeeded.
    pub fn on_success(&mut self, now: Instant) -> Option<Transition> {
        match &mut self.state {
            State::Closed { failures } => {
                failures.clear();
                None
            }
            State::Open { until, .. } if now < *until => None,
            State::Open { .. } => {
                self.state = State::Closed {
                    failures: VecDeque::new(),
                };
                Some(Transition {
                    from: Phase::HalfOpen,
                    to: Phase::Closed,
                    reason: "trial request succeeded",
                })
            }
        }
    }

    /// A request to the server failed.
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        let threshold = self.cfg.failure_threshold as usize;
        let monitor = self.cfg.monitor_interval;
        match &mut self.state {
            State::Closed { failures } => {
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > monitor)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                if failures.len() < threshold {
                    return None;
                }
                self.open(now);
                Some(Transition {
                    from: Phase::Closed,
                    to: Phase::Open,
                    reason: "failure threshold reached",
                })
            }
            State::Open { until, .. } if now < *until => None,
            State::Open { .. } => {
                self.open(now);
                Some(Transition {
                    from: Phase::HalfOpen,
                    to: Phase::Open,
                    reason: "trial request failed",
                })
            }
        }
    }

    /// The trial request ended without a verdict; the next request may be the trial.
    pub fn on_trial_abandoned(&mut self) {
        if let State::Open { trial, .. } = &mut self.state {
            *trial = false;
        }
    }

    /// The phase at `now`.
    pub fn phase(&self, now: Instant) -> Phase {
        match &self.state {
            State::Closed { .. } => Phase::Closed,
            State::Open { until, .. } if now < *until => Phase::Open,
            State::Open { .. } => Phase::HalfOpen,
        }
    }

    /// Failures currently counted (closed only; 0 otherwise).
    pub fn counted_failures(&self) -> usize {
        match &self.state {
            State::Closed { failures } => failures.len(),
            State::Open { .. } => 0,
        }
    }

    /// When the breaker turns (or turned) half-open, if it is open.
    pub fn open_until(&self) -> Option<Instant> {
        match &self.state {
            State::Closed { .. } => None,
            State::Open { until, .. } => Some(*until),
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.cfg.reset_timeout,
            trial: false,
        };
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;

/// One server's breaker, shared by all worker threads (`Send + Sync`).
#[derive(Debug)]
pub struct BreakerState {
    /// Zero point of every `*_ns` field; captured once so instants fit in a `u64`.
    origin: Instant,
    /// `CLOSED` or `OPEN` (half-open is `OPEN` past `open_until_ns`); lets the hot path
    /// decide with one load.
    phase: AtomicU8,
    /// When the open breaker turns half-open; meaningful while `phase` is `OPEN`.
    /// Written before `phase` and `trial` (release) so readers never pair a new phase
    /// with a stale deadline.
    open_until_ns: AtomicU64,
    /// The half-open trial slot: claimed by CAS so two threads never both get `Trial`.
    trial: AtomicBool,
    /// Failures counted by the closed machine; zero lets `record_success` skip the lock.
    counted: AtomicU32,
    /// The source of truth for transitions; locked only on failures and transitions.
    machine: Mutex<BreakerMachine>,
}

impl BreakerState {
    /// A closed breaker; `origin` must not be later than any `now` passed afterwards
    /// (earlier instants are treated as `origin`).
    pub fn new(cfg: BreakerConfig, origin: Instant) -> Self {
        Self {
            origin,
            phase: AtomicU8::new(CLOSED),
            open_until_ns: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            counted: AtomicU32::new(0),
            machine: Mutex::new(BreakerMachine::new(cfg)),
        }
    }

    /// Whether a pick may choose this server: closed, or half-open with the trial slot
    /// free. Atomic loads only.
    pub fn available(&self, now: Instant) -> bool {
        if self.phase.load(Ordering::Acquire) == CLOSED {
            return true;
        }
        self.nanos(now) >= self.open_until_ns.load(Ordering::Acquire)
            && !self.trial.load(Ordering::Acquire)
    }

    /// Decides one request. Closed: one load. Half-open: one CAS for the trial slot.
    pub fn admit(&self, now: Instant) -> Admit {
        if self.phase.load(Ordering::Acquire) == CLOSED {
            return Admit::Yes;
        }
        let now_ns = self.nanos(now);
        if now_ns < self.open_until_ns.load(Ordering::Acquire) {
            return Admit::No;
        }
        if self
            .trial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Admit::No;
        }
        // The CAS synchronises with the release that freed the slot; if that was a
        // reopen (or a close), re-read so the slot is not taken for a stale period.
        let still_half_open = self.phase.load(Ordering::Acquire) == OPEN
            && now_ns >= self.open_until_ns.load(Ordering::Acquire);
        if still_half_open {
            Admit::Trial
        } else {
            self.trial.store(false, Ordering::Release);
            if self.phase.load(Ordering::Acquire) == CLOSED {
                Admit::Yes
            } else {
                Admit::No
            }
        }
    }

    /// A request succeeded. Lock-free when closed with nothing counted (the common
    /// case) or open before the reset.
    pub fn record_success(&self, now: Instant) -> Option<Transition> {
        match self.phase.load(Ordering::Acquire) {
            CLOSED if self.counted.load(Ordering::Acquire) == 0 => return None,
            OPEN if self.nanos(now) < self.open_until_ns.load(Ordering::Acquire) => return None,
            _ => {}
        }
        let mut m = self.lock();
        let t = m.on_success(now);
        self.publish(&m);
        t
    }

    /// A request failed. Takes the lock (failures are the rare path).
    pub fn record_failure(&self, now: Instant) -> Option<Transition> {
        let mut m = self.lock();
        let t = m.on_failure(now);
        self.publish(&m);
        t
    }

    /// New settings after a reload; see `BreakerMachine::set_config`.
    pub fn set_config(&self, cfg: BreakerConfig) {
        self.lock().set_config(cfg);
    }

    /// The trial admitted by `admit` ended without a verdict: free the slot.
    pub fn on_trial_abandoned(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// The phase at `now`, for metrics and `/status`.
    pub fn phase(&self, now: Instant) -> Phase {
        if self.phase.load(Ordering::Acquire) == CLOSED {
            Phase::Closed
        } else if self.nanos(now) < self.open_until_ns.load(Ordering::Acquire) {
            Phase::Open
        } else {
            Phase::HalfOpen
        }
    }

    /// Copies the machine's state into the atomics; called with the lock held, so
    /// publishes never interleave. Deadline first, then slot, then phase.
    fn publish(&self, m: &BreakerMachine) {
        self.counted.store(
            u32::try_from(m.counted_failures()).unwrap_or(u32::MAX),
            Ordering::Release,
        );
        match m.open_until() {
            Some(until) => {
                let was_open = self.phase.load(Ordering::Acquire) == OPEN;
                let until_ns = self.nanos(until);
                let reopened = !was_open || self.open_until_ns.load(Ordering::Acquire) != until_ns;
                self.open_until_ns.store(until_ns, Ordering::Release);
                if reopened {
                    self.trial.store(false, Ordering::Release);
                }
                self.phase.store(OPEN, Ordering::Release);
            }
            None => {
                self.trial.store(false, Ordering::Release);
                self.phase.store(CLOSED, Ordering::Release);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, BreakerMachine> {
        // A panic while holding the lock cannot leave the machine half-updated in a way
        // that matters more than stopping the breaker, so keep using it.
        self.machine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}
