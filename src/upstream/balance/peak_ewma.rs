//! Peak-EWMA: like random_two, but the cost compared is
//! `latency_ns * (1 + active / weight)`, so a slow server is avoided even when idle.
//!
//! Why not `latency * (active + 1) / weight`: the draws are already weighted, and
//! dividing the idle term by the weight as well makes the heavier of two idle servers
//! win every comparison, so at low concurrency weights 1,2,3 came out as 3 %, 22 %,
//! 75 %. With the weight only on the load term, equal idle servers tie, the first draw
//! wins, and traffic follows the weights.
//!
//! A server with no latency sample yet is costed with the latency of the servers it
//! is compared with (their mean, or 1 when none has a sample), which makes the
//! comparison one of load alone: new servers get traffic at once and earn a sample.
//! Both draws unavailable: a cost scan over all available servers.
//!
//! Tests: in `balance/tests.rs`.

use super::{is_available, mix64, Candidates, WeightedDraw};

#[derive(Debug, Clone)]
pub struct PeakEwma {
    draw: WeightedDraw,
}

fn sampled(latency: f64) -> Option<f64> {
    (latency.is_finite() && latency > 0.0).then_some(latency)
}

impl PeakEwma {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            draw: WeightedDraw::new(weights),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C, rand: u64) -> Option<usize> {
        let (a, b) = self.draw.two(rand)?;
        match (is_available(c, a), is_available(c, b)) {
            (true, true) if a != b => {
                let (la, lb) = (sampled(c.latency_ns(a)), sampled(c.latency_ns(b)));
                let neutral = la.or(lb).unwrap_or(1.0);
                let ca = self.cost(c, a, la.unwrap_or(neutral));
                let cb = self.cost(c, b, lb.unwrap_or(neutral));
                Some(if cb < ca { b } else { a })
            }
            (true, _) => Some(a),
            (false, true) => Some(b),
            (false, false) => self.scan(c, mix64(rand)),
        }
    }

    fn cost<C: Candidates + ?Sized>(&self, c: &C, i: usize, latency: f64) -> f64 {
        let weight = f64::from(self.draw.weights[i].max(1));
        latency * (1.0 + c.active(i) as f64 / weight)
    }

    /// Cheapest available server, unsampled ones at the mean sampled latency; ties go
    /// to the first in a rotation chosen by `rand` (a rare path: both draws were out).
    fn scan<C: Candidates + ?Sized>(&self, c: &C, rand: u64) -> Option<usize> {
        let w = &self.draw.weights;
        let n = w.len();
        if n == 0 {
            return None;
        }
        let live = |i: usize| w[i] > 0 && is_available(c, i);
        let (sum, count) = (0..n)
            .filter(|&i| live(i))
            .filter_map(|i| sampled(c.latency_ns(i)))
            .fold((0.0, 0u32), |(s, k), l| (s + l, k + 1));
        let neutral = if count > 0 {
            sum / f64::from(count)
        } else {
            1.0
        };
        let start = (rand % n as u64) as usize;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !live(i) {
                continue;
            }
            let cost = self.cost(c, i, sampled(c.latency_ns(i)).unwrap_or(neutral));
            match best {
                Some((_, b)) if cost >= b => {}
                _ => best = Some((i, cost)),
            }
        }
        best.map(|(i, _)| i)
    }
}
