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
//! The draws are those of random_two: weighted, without replacement.
//!
//! Tests: in `balance/tests.rs`.

use super::{draw_two, live_weight, Candidates, WEIGHT_UNIT};

#[derive(Debug, Clone)]
pub struct PeakEwma {
    weights: Vec<u32>,
}

fn sampled(latency: f64) -> Option<f64> {
    (latency.is_finite() && latency > 0.0).then_some(latency)
}

impl PeakEwma {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C, rand: u64) -> Option<usize> {
        match draw_two(c, &self.weights, rand)? {
            (a, Some(b)) => {
                let (la, lb) = (sampled(c.latency_ns(a)), sampled(c.latency_ns(b)));
                let neutral = la.or(lb).unwrap_or(1.0);
                let ca = self.cost(c, a, la.unwrap_or(neutral));
                let cb = self.cost(c, b, lb.unwrap_or(neutral));
                Some(if cb < ca { b } else { a })
            }
            (a, None) => Some(a),
        }
    }

    fn cost<C: Candidates + ?Sized>(&self, c: &C, i: usize, latency: f64) -> f64 {
        let weight = live_weight(c, &self.weights, i) as f64 / WEIGHT_UNIT as f64;
        latency * (1.0 + c.active(i) as f64 / weight.max(0.001))
    }
}
