//! Smooth weighted round robin (nginx's rule), lock-free, on weights read at pick time.
//!
//! Each server has a `current` value; a pick adds every available server's effective
//! weight to its `current`, takes the largest, and subtracts the total of the added
//! weights from it. That yields nginx's interleaved order (`a a b a c a a` for 5,1,1)
//! and follows weight changes (slow start, overrides) and availability at once: an
//! unavailable server's `current` simply stands still. Updates are relaxed atomic
//! adds, so worker threads share one rotation without locks; concurrent picks may
//! read each other's half-done adds, which only perturbs the order, never the sum of
//! the `current` values, so the shares stay those of the weights. O(servers) a pick.
//!
//! Tests: in `balance/tests.rs`.

use std::sync::atomic::{AtomicI64, Ordering};

use super::{live_weight, Candidates};

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct RoundRobin {
    weights: Vec<u32>,
    /// nginx's `current_weight` per server, in [`super::WEIGHT_UNIT`]s.
    current: Vec<AtomicI64>,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
            current: weights.iter().map(|_| AtomicI64::new(0)).collect(),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, cur) in self.current.iter().enumerate() {
            let w = i64::try_from(live_weight(c, &self.weights, i)).unwrap_or(i64::MAX / 4);
            if w == 0 {
                continue;
            }
            total = total.saturating_add(w);
            let now = cur.fetch_add(w, Ordering::Relaxed).saturating_add(w);
            if best.is_none_or(|(_, b)| now > b) {
                best = Some((i, now));
            }
        }
        let (i, _) = best?;
        self.current.get(i)?.fetch_sub(total, Ordering::Relaxed);
        Some(i)
    }
}
