//! Power of two choices, weighted: two weighted-random draws (one from each half of
//! `rand`), keep the one with less `active/weight`. When a draw lands on an
//! unavailable server the other is taken; when both do, a least-loaded scan decides,
//! so an available server is always found if one exists. O(log servers) per pick
//! except in that fallback.
//!
//! Tests: in `balance/tests.rs`.

use super::{is_available, least_loaded, lighter, mix64, Candidates, WeightedDraw};

#[derive(Debug, Clone)]
pub struct RandomTwo {
    draw: WeightedDraw,
}

impl RandomTwo {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            draw: WeightedDraw::new(weights),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C, rand: u64) -> Option<usize> {
        let (a, b) = self.draw.two(rand)?;
        let w = &self.draw.weights;
        match (is_available(c, a), is_available(c, b)) {
            (true, true) if a != b && lighter(c.active(b), w[b], c.active(a), w[a]) => Some(b),
            (true, _) => Some(a),
            (false, true) => Some(b),
            // The draws' bits are spent; remix them for the scan's rotation.
            (false, false) => least_loaded(c, w, mix64(rand)),
        }
    }
}
