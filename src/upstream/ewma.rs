//! Peak-EWMA latency estimate per server, shared by all worker threads.
//!
//! Owns: the estimate (`EwmaState`, two atomics) and its update rule (`next`).
//! Does not own: the clock (callers pass nanoseconds since a process-wide origin) nor
//! the choice of server (`balance::peak_ewma` reads `get`).
//!
//! Rule (as finagle's and linkerd's peak EWMA): a sample above the estimate replaces it
//! at once, so a server that turns slow is avoided on the next pick; a sample below it
//! pulls the estimate down with weight `1 - exp(-elapsed/tau)`, so it takes about `tau`
//! to trust a server again. Reads decay the estimate toward zero for the time since the
//! last sample, so an avoided server gets retried instead of starving on an old peak.
//!
//! Invariants: the estimate is `0.0` until the first sample ("no sample yet"); it is
//! never negative nor NaN. Concurrency: `observe` is a load-compute-store, not a CAS
//! loop; two threads observing at once may lose one sample. That costs one data point
//! of an estimate that is already an approximation, and keeps the path to one pair of
//! relaxed loads and stores.
//!
//! Tests: `next` table tests and `EwmaState` behaviour below.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// finagle's and linkerd's default decay time.
pub const DEFAULT_TAU: Duration = Duration::from_secs(10);

/// One server's latency estimate, in nanoseconds, as `f64` bits in atomics.
#[derive(Debug)]
pub struct EwmaState {
    /// `f64` bits of the estimate in nanoseconds; `0.0` means no sample yet.
    estimate_bits: AtomicU64,
    /// When `estimate_bits` was last written, in nanoseconds since the caller's origin.
    stamp_ns: AtomicU64,
    /// Decay time constant in nanoseconds.
    tau_ns: f64,
}

impl Default for EwmaState {
    fn default() -> Self {
        Self::new()
    }
}

impl EwmaState {
    /// An estimate with no sample and the default `tau` of 10 s.
    pub fn new() -> Self {
        Self::with_tau(DEFAULT_TAU)
    }

    /// An estimate with no sample and the given decay time (a zero `tau` means every
    /// sample replaces the estimate).
    pub fn with_tau(tau: Duration) -> Self {
        Self {
            estimate_bits: AtomicU64::new(0.0f64.to_bits()),
            stamp_ns: AtomicU64::new(0),
            tau_ns: tau.as_nanos() as f64,
        }
    }

    /// Folds one round-trip time observed at `now_ns` into the estimate.
    pub fn observe(&self, rtt: Duration, now_ns: u64) {
        let prev = f64::from_bits(self.estimate_bits.load(Ordering::Relaxed));
        let stamp = self.stamp_ns.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(stamp) as f64;
        let value = next(prev, rtt.as_nanos() as f64, elapsed, self.tau_ns);
        self.estimate_bits.store(value.to_bits(), Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
    }

    /// The estimate in nanoseconds at `now_ns`, decayed toward zero for the time since
    /// the last sample; `0.0` when there has been no sample.
    pub fn get(&self, now_ns: u64) -> f64 {
        let prev = f64::from_bits(self.estimate_bits.load(Ordering::Relaxed));
        let stamp = self.stamp_ns.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(stamp) as f64;
        next(prev, 0.0, elapsed, self.tau_ns)
    }
}

/// The peak-EWMA update: `prev` estimate, new sample `rtt_ns`, `elapsed_ns` since the
/// previous update, decay time `tau_ns`. A `prev` of zero (no sample) takes the sample.
pub fn next(prev: f64, rtt_ns: f64, elapsed_ns: f64, tau_ns: f64) -> f64 {
    let rtt = if rtt_ns.is_finite() && rtt_ns > 0.0 {
        rtt_ns
    } else {
        0.0
    };
    let prev = if prev.is_finite() && prev > 0.0 {
        prev
    } else {
        return rtt;
    };
    if rtt > prev {
        return rtt;
    }
    let elapsed = if elapsed_ns.is_finite() && elapsed_ns > 0.0 {
        elapsed_ns
    } else {
        0.0
    };
    if tau_ns <= 0.0 || !tau_ns.is_finite() {
        return rtt;
    }
    let w = (-elapsed / tau_ns).exp();
    prev * w + rtt * (1.0 - w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: f64 = 10e9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn next_table() {
        let e1 = (-1.0f64).exp();
        // (prev, rtt, elapsed, tau, expected)
        let cases = [
            (0.0, 5e6, 0.0, TAU, 5e6), // first sample taken as is
            (1e6, 5e6, 0.0, TAU, 5e6), // peak: jump up at once
            (5e6, 1e6, 0.0, TAU, 5e6), // no time passed: no decay
            (5e6, 1e6, TAU, TAU, 5e6 * e1 + 1e6 * (1.0 - e1)), // one tau
            (5e6, 1e6, 1e15, TAU, 1e6), // long ago: the sample wins
            (5e6, 1e6, -3.0, TAU, 5e6), // clock skew: no decay
            (5e6, f64::NAN, 0.0, TAU, 5e6), // bad sample counts as zero
            (f64::NAN, 2e6, 0.0, TAU, 2e6), // bad state is replaced
            (5e6, 1e6, 1.0, 0.0, 1e6), // tau zero: no memory
        ];
        for (prev, rtt, elapsed, tau, want) in cases {
            let got = next(prev, rtt, elapsed, tau);
            assert!(
                close(got, want),
                "next({prev}, {rtt}, {elapsed}, {tau}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn state_starts_empty_and_decays_on_read() {
        let s = EwmaState::new();
        assert_eq!(s.get(123), 0.0);
        s.observe(Duration::from_millis(10), 1_000);
        assert!(close(s.get(1_000), 10e6));
        let later = s.get(1_000 + 10_000_000_000);
        assert!(close(later, 10e6 * (-1.0f64).exp()));
        // Reading does not write: the stored estimate is unchanged.
        assert!(close(s.get(1_000), 10e6));
    }

    #[test]
    fn state_peaks_then_recovers() {
        let s = EwmaState::with_tau(Duration::from_secs(1));
        s.observe(Duration::from_millis(1), 0);
        s.observe(Duration::from_millis(100), 1_000_000);
        assert!(close(s.get(1_000_000), 100e6));
        let mut now = 1_000_000;
        for _ in 0..50 {
            now += 100_000_000;
            s.observe(Duration::from_millis(1), now);
        }
        let est = s.get(now);
        assert!(est < 2e6, "estimate {est} should be back near 1 ms");
    }
}
