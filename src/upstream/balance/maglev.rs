//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016),
//! weighted.
//!
//! Build: the table size `M` is the smallest prime >= max(65537, 100 * servers)
//! (capped near 4 Mi entries), so each server owns ~100+ slots and the disruption of
//! a membership change stays around 1 %. Each server's preference list is the
//! permutation `offset + j * skip (mod M)` derived from two hashes of its stable key
//! (its address), never from its index, so a rebuilt table after a reload that adds
//! or removes servers keeps the others' slots (up to Maglev's small disruption).
//! Servers take turns filling their next preferred free slot; the weighted variant
//! gives a server `weight / max_weight` turns per round (credit accumulated per round),
//! so slot counts follow the weights. Weight-0 servers get no slots.
//!
//! Lookup: `table[hash % M]`. If that server is unavailable (unhealthy, breaker open,
//! already tried) the key is rehashed with the attempt number up to `REHASHES` times,
//! then servers are scanned from `hash % n`; both depend only on the hash and the set
//! of available servers, so a key whose server is out stays on one fallback server
//! and keys of available servers do not move at all. No hash (the key was absent):
//! random_two over the available servers.
//!
//! Tests: `maglev/tests.rs` (spread, weights, disruption on removal, stickiness).

use super::{hash_seeded, is_available, mix64, Candidates, RandomTwo};

#[cfg(test)]
mod tests;

/// Smallest table: the paper's default, a prime.
const MIN_TABLE: u64 = 65_537;
/// Table size cap (16 MiB of `u32`); past ~42k servers the 100-slot target lapses.
const MAX_TABLE: u64 = 1 << 22;
/// Rehash attempts before scanning when a key's server is unavailable.
const REHASHES: u64 = 8;
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct Maglev {
    /// Slot -> server index; empty when no server has weight.
    table: Vec<u32>,
    weights: Vec<u32>,
    /// Used when the request has no hash key.
    unkeyed: RandomTwo,
}

impl Maglev {
    pub fn new(servers: &[(String, u32)]) -> Self {
        let weights: Vec<u32> = servers.iter().map(|(_, w)| *w).collect();
        Self {
            table: build_table(servers, table_size(servers.len())),
            unkeyed: RandomTwo::new(&weights),
            weights,
        }
    }

    pub fn pick<C: Candidates + ?Sized>(
        &self,
        c: &C,
        hash: Option<u64>,
        rand: u64,
    ) -> Option<usize> {
        let Some(hash) = hash else {
            return self.unkeyed.pick(c, rand);
        };
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let mut h = hash;
        for attempt in 0..=REHASHES {
            if attempt > 0 {
                h = mix64(hash ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
            let i = self.table[(h % m) as usize] as usize;
            if is_available(c, i) {
                return Some(i);
            }
        }
        let n = self.weights.len();
        let start = (hash % n as u64) as usize;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.weights[i] > 0 && is_available(c, i))
    }

    /// The server owning `hash` when every server is available (for tests and tools).
    pub fn owner(&self, hash: u64) -> Option<usize> {
        let m = self.table.len() as u64;
        (m > 0).then(|| self.table[(hash % m) as usize] as usize)
    }

    /// The table size `M`.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Smallest prime >= max(`MIN_TABLE`, 100 * servers), the target capped at `MAX_TABLE`.
fn table_size(servers: usize) -> usize {
    let mut m = (servers as u64)
        .saturating_mul(100)
        .clamp(MIN_TABLE, MAX_TABLE);
    while !is_prime(m) {
        m += 1;
    }
    m as usize
}

/// Fills the lookup table: weighted turns over each server's preference permutation.
fn build_table(servers: &[(String, u32)], m: usize) -> Vec<u32> {
    let max_weight = u64::from(servers.iter().map(|(_, w)| *w).max().unwrap_or(0));
    if max_weight == 0 || m < 2 {
        return Vec::new();
    }
    let m64 = m as u64;
    // (server, weight, next preferred slot, step); the step is in 1..M, and M is
    // prime, so every preference list visits every slot.
    let mut live: Vec<(u32, u64, u64, u64)> = servers
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w > 0)
        .map(|(i, (key, w))| {
            let offset = hash_seeded(key.as_bytes(), 1) % m64;
            let skip = hash_seeded(key.as_bytes(), 2) % (m64 - 1) + 1;
            (i as u32, u64::from(*w), offset, skip)
        })
        .collect();
    let mut credit = vec![0u64; live.len()];
    let mut table = vec![EMPTY; m];
    let mut filled = 0;
    while filled < m {
        for (k, (server, weight, next, skip)) in live.iter_mut().enumerate() {
            credit[k] += *weight;
            // `weight <= max_weight`, so at most one turn per round.
            if credit[k] < max_weight {
                continue;
            }
            credit[k] -= max_weight;
            while table[*next as usize] != EMPTY {
                *next = (*next + *skip) % m64;
            }
            table[*next as usize] = *server;
            *next = (*next + *skip) % m64;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}
