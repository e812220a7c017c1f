//! Server selection: the five balancing algorithms (`upstreams[].balance`) behind one enum.
//!
//! Owns: choosing one server index for a request, given a live view of the servers
//! (`Candidates`). Does not own: the servers' state (health, breaker, in-flight
//! counts, latency; the lead's `ServerState` atomics implement `Candidates`),
//! retries (the caller marks tried servers unavailable and picks again), nor the
//! request's hash key extraction (the caller hashes it with `hash_key`).
//!
//! Weights are read at pick time through [`Candidates::weight`] (configured weight,
//! operator override, slow-start ramp), so every algorithm but consistent hashing
//! follows them at once; random draws and round robin are O(servers) per pick,
//! which is nothing next to a request for the pools tandem fronts.
//!
//! Invariants: a `Balancer` is built once per snapshot, is `Send + Sync`, and keeps
//! per-pick mutable state only in atomics (the round-robin weights), so worker threads
//! share it through the snapshot's `Arc` without locks. `pick` returns only indices
//! for which `available` was true during the call and whose weight is non-zero, and
//! `None` only when no such index exists. It never panics, whatever `Candidates`
//! answers (indices past `len` count as unavailable). Randomness comes in as `rand`.
//!
//! Tests: `balance/tests.rs` (distribution, availability, load preference for every
//! algorithm, driven by a seeded splitmix64) and `balance/maglev/tests.rs`
//! (consistency and disruption bounds).

mod least_connections;
mod maglev;
mod peak_ewma;
mod random_two;
mod round_robin;

#[cfg(test)]
mod tests;

pub use least_connections::LeastConnections;
pub use maglev::Maglev;
pub use peak_ewma::PeakEwma;
pub use random_two::RandomTwo;
pub use round_robin::RoundRobin;

/// The configured algorithm (defined with the config types).
pub use crate::config::types::BalanceKind;

/// One upstream's selector; an enum over a closed set so a pick is a `match`, not a
/// virtual call.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastConnections(LeastConnections),
    RandomTwo(RandomTwo),
    PeakEwma(PeakEwma),
    ConsistentHash(Maglev),
}

/// The live view of an upstream's servers at pick time, indexed like the `servers`
/// slice the balancer was built from.
pub trait Candidates {
    /// Number of servers.
    fn len(&self) -> usize;
    /// Whether there are no servers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Healthy, breaker admits, weight > 0, and not already tried by this request.
    fn available(&self, i: usize) -> bool;
    /// Requests in flight on server `i`.
    fn active(&self, i: usize) -> u64;
    /// Peak-EWMA latency estimate in nanoseconds (peak_ewma only); zero, negative or
    /// non-finite means "no sample yet".
    fn latency_ns(&self, i: usize) -> f64;
    /// Effective weight of server `i` in thousandths of a weight unit, given its
    /// `configured` weight (> 0): the operator's override and the slow-start ramp
    /// apply here. 0 means "do not pick". Consistent hashing ignores it (its table
    /// follows the configured weights).
    fn weight(&self, i: usize, configured: u32) -> u64 {
        let _ = i;
        u64::from(configured) * WEIGHT_UNIT
    }
}

/// One configured weight unit in the units of [`Candidates::weight`].
pub const WEIGHT_UNIT: u64 = 1000;

impl Balancer {
    /// Builds the selector for `servers[i] = (stable key such as "127.0.0.1:3001",
    /// weight)`. Once per snapshot; consistent hashing costs a table of at least
    /// 65537 entries.
    pub fn new(kind: BalanceKind, servers: &[(String, u32)]) -> Balancer {
        let weights: Vec<u32> = servers.iter().map(|(_, w)| *w).collect();
        match kind {
            BalanceKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            BalanceKind::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::new(&weights))
            }
            BalanceKind::RandomTwo => Balancer::RandomTwo(RandomTwo::new(&weights)),
            BalanceKind::PeakEwma => Balancer::PeakEwma(PeakEwma::new(&weights)),
            BalanceKind::ConsistentHash => Balancer::ConsistentHash(Maglev::new(servers)),
        }
    }

    /// Index of the chosen server, or `None` when no candidate is available.
    /// `hash` is the request's key hash (consistent_hash only; `None` behaves like
    /// random_two). `rand` is a fresh random `u64` from the caller.
    pub fn pick<C: Candidates + ?Sized>(
        &self,
        c: &C,
        hash: Option<u64>,
        rand: u64,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(c),
            Balancer::LeastConnections(b) => b.pick(c, rand),
            Balancer::RandomTwo(b) => b.pick(c, rand),
            Balancer::PeakEwma(b) => b.pick(c, rand),
            Balancer::ConsistentHash(b) => b.pick(c, hash, rand),
        }
    }
}

/// Hash of a consistent-hashing key (client IP bytes, header or cookie value):
/// FNV-1a folded through a 64-bit finalizer. Stable across processes and versions, so
/// both HA nodes and restarts map a key to the same server.
pub fn hash_key(bytes: &[u8]) -> u64 {
    hash_seeded(bytes, 0)
}

/// `hash_key` with a seed, for the independent hashes Maglev needs per server.
pub(crate) fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET ^ mix64(seed);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h ^ bytes.len() as u64)
}

/// murmur3's fmix64: spreads FNV's weak high bits over the whole word.
pub(crate) fn mix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// `available`, guarded against indices the view does not have.
fn is_available<C: Candidates + ?Sized>(c: &C, i: usize) -> bool {
    i < c.len() && c.available(i)
}

/// Whether `a` in flight on weight `wa` is less load than `b` on `wb`
/// (`a/wa < b/wb` without floats or overflow).
fn lighter(a: u64, wa: u64, b: u64, wb: u64) -> bool {
    u128::from(a) * u128::from(wb) < u128::from(b) * u128::from(wa)
}

/// The effective weight of server `i` for this pick: 0 when it is unavailable or
/// its configured weight is 0.
fn live_weight<C: Candidates + ?Sized>(c: &C, configured: &[u32], i: usize) -> u64 {
    match configured.get(i) {
        Some(&w) if w > 0 && is_available(c, i) => c.weight(i, w),
        _ => 0,
    }
}

/// The available server with the least `active/weight`. Ties are broken at random in
/// proportion to weight (weighted reservoir sampling over the scan), so at low
/// concurrency, where every server is idle, traffic still follows the weights and a
/// burst does not pile on index 0.
fn least_loaded<C: Candidates + ?Sized>(c: &C, weights: &[u32], rand: u64) -> Option<usize> {
    // (index, its active count, its weight, sum of the weights tied with it so far)
    let mut best: Option<(usize, u64, u64, u64)> = None;
    for i in 0..weights.len() {
        let w = live_weight(c, weights, i);
        if w == 0 {
            continue;
        }
        let active = c.active(i);
        match best {
            Some((b, ba, bw, tied)) => {
                let (x, y) = (
                    u128::from(active) * u128::from(bw),
                    u128::from(ba) * u128::from(w),
                );
                if x < y {
                    best = Some((i, active, w, w));
                } else if x == y {
                    let tied = tied + w;
                    let keep_new = mix64(rand ^ i as u64) % tied < w;
                    best = Some(if keep_new {
                        (i, active, w, tied)
                    } else {
                        (b, ba, bw, tied)
                    });
                }
            }
            None => best = Some((i, active, w, w)),
        }
    }
    best.map(|(i, _, _, _)| i)
}

/// One weighted random draw over the available servers (effective weights), leaving
/// out `skip`; `None` when nothing is left to draw. O(servers): weights change at
/// pick time (slow start, overrides, tiers), so there is no table to search.
fn draw<C: Candidates + ?Sized>(
    c: &C,
    configured: &[u32],
    skip: Option<usize>,
    r: u32,
) -> Option<usize> {
    let weight = |i: usize| {
        if Some(i) == skip {
            0
        } else {
            live_weight(c, configured, i)
        }
    };
    let total: u64 = (0..configured.len()).map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut x = ((u128::from(r) * u128::from(total)) >> 32) as u64;
    for i in 0..configured.len() {
        let w = weight(i);
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    None
}

/// Two weighted draws without replacement (one from each half of `rand`): the second
/// leaves out the first, so with two servers both are always compared. The second is
/// `None` when only one server is available.
fn draw_two<C: Candidates + ?Sized>(
    c: &C,
    configured: &[u32],
    rand: u64,
) -> Option<(usize, Option<usize>)> {
    let a = draw(c, configured, None, rand as u32)?;
    Some((a, draw(c, configured, Some(a), (rand >> 32) as u32)))
}
