//! Health verdicts from probe results: the rise/fall counter, and when to send the
//! first probe of each server.
//!
//! Owns: `HealthMachine` (pure, one per server, driven by the probe task) and
//! `probe_offset`. Does not own: probing itself, timers, or publishing the verdict to
//! the server's atomic state (the probe driver does that with the returned change).
//!
//! Invariants: a machine starts healthy (a server serves at once, before any probe
//! has answered); it turns unhealthy only after `fall` consecutive failures and healthy
//! again only after `rise` consecutive passes; a result of the other kind resets the
//! streak. `rise` and `fall` of 0 are treated as 1 (config validation rejects them; this
//! keeps the machine total).
//!
//! Tests: table tests of result sequences, and `probe_offset` spreading, below.

use std::time::Duration;

/// The rise/fall counter of one server.
#[derive(Debug, Clone)]
pub struct HealthMachine {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Consecutive results that disagree with `healthy`; reset by one that agrees.
    streak: u32,
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    /// The new verdict.
    pub healthy: bool,
    /// How many consecutive results caused it (`rise` or `fall`).
    pub after: u32,
}

impl HealthMachine {
    /// A healthy machine needing `rise` passes to recover and `fall` failures to fail.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: true,
            streak: 0,
        }
    }

    /// Folds in one probe result; returns the change of verdict, if any.
    pub fn record(&mut self, passed: bool) -> Option<HealthChange> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        let after = self.streak;
        self.streak = 0;
        Some(HealthChange {
            healthy: passed,
            after,
        })
    }

    /// The current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }
}

/// Delay before the first probe of server `index` out of `count`, spreading the
/// first probes evenly over one `interval` so servers are not all probed at once.
/// `index` wraps modulo `count`; a `count` of 0 gives zero.
pub fn probe_offset(index: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let slot = (index % count) as u128;
    let nanos = interval.as_nanos() * slot / count as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `results` ("p" pass, "f" fail) through a fresh machine and returns the
    /// index and change of every transition.
    fn run(rise: u32, fall: u32, results: &str) -> Vec<(usize, HealthChange)> {
        let mut m = HealthMachine::new(rise, fall);
        let mut out = Vec::new();
        for (i, c) in results.chars().enumerate() {
            if let Some(ch) = m.record(c == 'p') {
                assert_eq!(m.healthy(), ch.healthy);
                out.push((i, ch));
            }
        }
        out
    }

    fn change(healthy: bool, after: u32) -> HealthChange {
        HealthChange { healthy, after }
    }

    #[test]
    fn starts_healthy() {
        assert!(HealthMachine::new(2, 3).healthy());
    }

    #[test]
    fn rise_fall_table() {
        // (rise, fall, results, expected transitions)
        type Case<'a> = (u32, u32, &'a str, &'a [(usize, HealthChange)]);
        let cases: &[Case] = &[
            (2, 3, "ppppp", &[]),
            (2, 3, "ff", &[]),
            (2, 3, "fff", &[(2, change(false, 3))]),
            (2, 3, "ffpff", &[]), // a pass resets the failure streak
            (2, 3, "fffp", &[(2, change(false, 3))]),
            (
                2,
                3,
                "fffpp",
                &[(2, change(false, 3)), (4, change(true, 2))],
            ),
            (2, 3, "fffpfp", &[(2, change(false, 3))]), // a failure resets the pass streak
            (
                2,
                3,
                "fffppfff",
                &[
                    (2, change(false, 3)),
                    (4, change(true, 2)),
                    (7, change(false, 3)),
                ],
            ),
            (
                1,
                1,
                "fpf",
                &[
                    (0, change(false, 1)),
                    (1, change(true, 1)),
                    (2, change(false, 1)),
                ],
            ),
            (0, 0, "f", &[(0, change(false, 1))]), // zero treated as one
            (
                3,
                2,
                "ffffpppp",
                &[(1, change(false, 2)), (6, change(true, 3))],
            ),
        ];
        for (rise, fall, results, want) in cases {
            assert_eq!(
                run(*rise, *fall, results),
                *want,
                "rise {rise} fall {fall} {results}"
            );
        }
    }

    #[test]
    fn probe_offsets_spread_evenly() {
        let interval = Duration::from_secs(2);
        let offsets: Vec<_> = (0..4).map(|i| probe_offset(i, 4, interval)).collect();
        assert_eq!(
            offsets,
            [0, 500, 1000, 1500].map(Duration::from_millis).to_vec()
        );
        assert_eq!(probe_offset(0, 1, interval), Duration::ZERO);
        assert_eq!(probe_offset(3, 0, interval), Duration::ZERO);
        assert_eq!(probe_offset(5, 4, interval), Duration::from_millis(500));
        assert_eq!(
            probe_offset(2, 3, Duration::from_nanos(10)),
            Duration::from_nanos(6)
        );
        for i in 0..1000 {
            assert!(probe_offset(i, 1000, interval) < interval);
        }
    }
}
