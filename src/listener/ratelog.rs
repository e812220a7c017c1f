//! Rate limiting for log lines about refused client input.
//!
//! A hostile client can send thousands of malformed requests a second; each is
//! counted in `tandem_rejected_requests_total`, but logging each one would let
//! the attacker fill the disk. [`RateLog`] lets at most `per_window` lines per
//! reason through in each window and reports how many it held back when the
//! next window opens, so the log stays truthful without growing with the attack.
//!
//! Pure: `now` is passed in; no clock reads, no IO. [`log_refusal`] is the thin
//! shell the listeners call: one `RateLog` per worker thread (the hot path has no
//! locks), so the bound is `per_window` × workers lines per second per reason.
//! The set of reasons is small and static (`&'static str` labels), so the table
//! cannot grow with input. Unit-tested below on synthetic instants.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Lines per reason per second that [`log_refusal`] lets through on one worker.
pub const LINES_PER_SECOND: u32 = 5;

/// Whether to write a log line now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it; `suppressed` lines for this reason were dropped since the
    /// last line that was written.
    Log { suppressed: u64 },
    /// Drop it (it is still counted for the next `Log`).
    Suppress,
}

#[derive(Debug)]
struct Slot {
    reason: &'static str,
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
}

/// Fixed-window limiter keyed by reason.
#[derive(Debug)]
pub struct RateLog {
    per_window: u32,
    window: Duration,
    slots: Vec<Slot>,
}

impl RateLog {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            slots: Vec::new(),
        }
    }

    /// Decides for one event of `reason` at `now`.
    pub fn check(&mut self, reason: &'static str, now: Instant) -> Decision {
        let idx = match self.slots.iter().position(|s| s.reason == reason) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    reason,
                    window_start: now,
                    emitted: 0,
                    suppressed: 0,
                });
                self.slots.len() - 1
            }
        };
        let (per_window, window) = (self.per_window, self.window);
        let Some(slot) = self.slots.get_mut(idx) else {
            return Decision::Suppress;
        };
        if now.saturating_duration_since(slot.window_start) >= window {
            slot.window_start = now;
            slot.emitted = 0;
        }
        if slot.emitted < per_window {
            slot.emitted += 1;
            let suppressed = std::mem::take(&mut slot.suppressed);
            Decision::Log { suppressed }
        } else {
            slot.suppressed = slot.suppressed.saturating_add(1);
            Decision::Suppress
        }
    }
}

thread_local! {
    static WORKER_LOG: RefCell<RateLog> =
        RefCell::new(RateLog::new(LINES_PER_SECOND, Duration::from_secs(1)));
}

/// Logs one refused request or connection, unless this worker already logged
/// [`LINES_PER_SECOND`] for `reason` in the current second. `status` is the
/// HTTP status the client was answered, 0 for a connection-level refusal
/// (an HTTP/2 GOAWAY).
pub fn log_refusal(listener: &str, peer: Option<SocketAddr>, reason: &'static str, status: u16) {
    let decision = WORKER_LOG.with(|l| match l.try_borrow_mut() {
        Ok(mut l) => l.check(reason, Instant::now()),
        Err(_) => Decision::Suppress,
    });
    if let Decision::Log { suppressed } = decision {
        match peer {
            Some(peer) => tracing::info!(
                listener,
                %peer,
                reason,
                status,
                suppressed,
                "refused hostile or malformed client input"
            ),
            None => tracing::info!(
                listener,
                reason,
                status,
                suppressed,
                "refused hostile or malformed client input"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn at_most_n_lines_per_window_per_reason() {
        let now = t0();
        let mut r = RateLog::new(3, Duration::from_secs(1));
        let logged = (0..1000)
            .filter(|_| matches!(r.check("bare_lf", now), Decision::Log { .. }))
            .count();
        assert_eq!(logged, 3);
    }

    #[test]
    fn reasons_have_separate_budgets() {
        let now = t0();
        let mut r = RateLog::new(1, Duration::from_secs(1));
        assert_eq!(r.check("a", now), Decision::Log { suppressed: 0 });
        assert_eq!(r.check("a", now), Decision::Suppress);
        assert_eq!(r.check("b", now), Decision::Log { suppressed: 0 });
    }

    #[test]
    fn next_window_reports_what_was_suppressed() {
        let now = t0();
        let mut r = RateLog::new(2, Duration::from_secs(1));
        for _ in 0..10 {
            r.check("x", now);
        }
        assert_eq!(
            r.check("x", now + Duration::from_millis(999)),
            Decision::Suppress
        );
        assert_eq!(
            r.check("x", now + Duration::from_secs(1)),
            Decision::Log { suppressed: 9 }
        );
        assert_eq!(
            r.check("x", now + Duration::from_secs(1)),
            Decision::Log { suppressed: 0 }
        );
        assert_eq!(
            r.check("x", now + Duration::from_secs(1)),
            Decision::Suppress
        );
    }

    #[test]
    fn a_sustained_flood_logs_a_bounded_number_of_lines() {
        let start = t0();
        let mut r = RateLog::new(5, Duration::from_secs(1));
        // 100,000 events over 10 s: at most 5 per second get through.
        let logged = (0..100_000u64)
            .filter(|i| {
                let now = start + Duration::from_micros(i * 100);
                matches!(r.check("flood", now), Decision::Log { .. })
            })
            .count();
        assert!(logged <= 5 * 10 + 5, "{logged}");
        assert!(logged >= 5 * 10, "{logged}");
    }
}
