//! Least connections, weighted: the available server with the fewest requests in
//! flight per unit of weight (`active_i * w_j` vs `active_j * w_i`, no floats). Ties
//! are broken by `rand` in proportion to weight, so a burst that sees all servers idle
//! spreads by weight instead of piling on index 0. O(servers) per pick.
//!
//! Tests: in `balance/tests.rs`.

use super::{least_loaded, Candidates};

#[derive(Debug, Clone)]
pub struct LeastConnections {
    weights: Vec<u32>,
}

impl LeastConnections {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: weights.to_vec(),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C, rand: u64) -> Option<usize> {
        least_loaded(c, &self.weights, rand)
    }
}
