//! Smooth weighted round robin (nginx's sequence), lock-free.
//!
//! The sequence is computed once at build: weights are divided by their gcd and, when
//! they sum past `MAX_SEQUENCE`, scaled down proportionally (every non-zero weight
//! stays >= 1); then nginx's rule (add each weight to its current value, take the
//! largest, subtract the total from it) yields an interleaved order such as
//! `a a b a c a a` for 5,1,1. A pick steps a shared cursor (relaxed `fetch_add`: the
//! order between threads does not matter, only that every slot is used once per
//! lap). Unavailable servers are skipped by scanning forward at most one lap, and the
//! cursor is moved past the skipped slots so the next pick continues after the chosen
//! one instead of landing on the same replacement.
//!
//! Tests: in `balance/tests.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{is_available, Candidates};

/// Longest sequence kept; larger weight sums are scaled down to it.
const MAX_SEQUENCE: u64 = 4096;

/// Smooth weighted round robin over a precomputed sequence.
#[derive(Debug)]
pub struct RoundRobin {
    /// Server indices in smooth order; weight-0 servers never appear.
    sequence: Vec<u32>,
    /// Next position in `sequence` (taken modulo its length).
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            sequence: smooth_sequence(weights),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn pick<C: Candidates + ?Sized>(&self, c: &C) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
        for k in 0..len {
            let i = self.sequence[(start + k) % len] as usize;
            if is_available(c, i) {
                if k > 0 {
                    self.cursor.fetch_add(k, Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }

    /// The precomputed order, for tests and `/status`.
    pub fn sequence(&self) -> &[u32] {
        &self.sequence
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Weights reduced by their gcd and scaled to sum to about `MAX_SEQUENCE` at most.
fn reduced(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let w: Vec<u64> = weights.iter().map(|w| u64::from(*w) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum <= MAX_SEQUENCE {
        return w;
    }
    w.iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                // Rounded to nearest; every live server keeps at least one slot.
                ((u128::from(w) * u128::from(MAX_SEQUENCE) + u128::from(sum) / 2) / u128::from(sum))
                    .max(1) as u64
            }
        })
        .collect()
}

/// nginx's smooth weighted round robin, unrolled over one lap.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let w = reduced(weights);
    let total: u64 = w.iter().sum();
    let mut current = vec![0i128; w.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, wi) in w.iter().enumerate() {
            current[i] += i128::from(*wi);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= i128::from(total);
        sequence.push(best as u32);
    }
    sequence
}
