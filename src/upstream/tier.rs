//! Failover tiers: which tier of an upstream's servers takes a request.
//!
//! Owns the pure decision from per-tier capacity to a tier (no IO, no clock, no
//! randomness of its own: the caller passes `rand`). Does not own which servers are
//! available (the caller sums their weights) nor the pick inside the tier (the
//! balancer, restricted to the chosen tier).
//!
//! `all_down` (HAProxy's and nginx's `backup`): the lowest tier with any available
//! weight takes everything. `gradual` (Envoy's priority levels): each tier's health is
//! `min(1, 1.4 x available / configured)`; tier 0 keeps its health as its share, the
//! rest spills to tier 1 up to that tier's health, and so on; when the healths add up
//! to less than 1 the shares are scaled up to sum to 1 (the traffic has to go
//! somewhere). Tested by the table tests below.

use crate::config::types::Failover;

/// Tiers `0..TIERS` (`servers[].tier` is validated to 0..=7).
pub const TIERS: usize = 8;

/// Envoy's overprovisioning factor: a tier at 1/1.4 (~71 %) of its weight still
/// takes all of its traffic.
pub const OVERPROVISIONING: f64 = 1.4;

/// Weight sums of one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierWeight {
    /// Weight of the tier's servers that could take a request now.
    pub available: u64,
    /// Weight the tier is configured with (its full capacity).
    pub configured: u64,
}

/// The share of traffic each tier takes; all zero when no tier has available weight.
pub fn shares(tiers: &[TierWeight; TIERS], failover: Failover) -> [f64; TIERS] {
    let mut out = [0.0; TIERS];
    match failover {
        Failover::AllDown => {
            if let Some(t) = tiers.iter().position(|t| t.available > 0) {
                out[t] = 1.0;
            }
        }
        Failover::Gradual => {
            let mut left = 1.0_f64;
            for (share, t) in out.iter_mut().zip(tiers) {
                *share = health(t).min(left);
                left -= *share;
            }
            let total: f64 = out.iter().sum();
            if total > 0.0 {
                for s in &mut out {
                    *s /= total;
                }
            }
        }
    }
    out
}

/// The tier for one request: `rand` spread over [`shares`]. `None` when no tier has
/// available weight.
pub fn choose(tiers: &[TierWeight; TIERS], failover: Failover, rand: u64) -> Option<usize> {
    let shares = shares(tiers, failover);
    // 53 random bits as a fraction in [0, 1).
    let x = (rand >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    let mut last = None;
    for (t, s) in shares.iter().enumerate() {
        if *s <= 0.0 {
            continue;
        }
        acc += s;
        last = Some(t);
        if x < acc {
            return Some(t);
        }
    }
    // Rounding left `acc` a hair below 1: the last tier with a share takes it.
    last
}

/// `tandem check` warnings: an upstream with no server in tier 0 works (its lowest
/// tier acts as the primary) but is most likely a typo.
pub fn warnings(config: &crate::config::types::Config) -> Vec<String> {
    config
        .upstreams
        .iter()
        .filter(|u| !u.servers.is_empty() && u.servers.iter().all(|s| s.tier > 0))
        .map(|u| {
            format!(
                "upstreams.{}: no server is in tier 0; its lowest tier acts as the primary",
                u.name
            )
        })
        .collect()
}

fn health(t: &TierWeight) -> f64 {
    if t.configured == 0 || t.available == 0 {
        return 0.0;
    }
    (OVERPROVISIONING * t.available as f64 / t.configured as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(list: &[(u64, u64)]) -> [TierWeight; TIERS] {
        let mut out = [TierWeight::default(); TIERS];
        for (i, (available, configured)) in list.iter().enumerate() {
            out[i] = TierWeight {
                available: *available,
                configured: *configured,
            };
        }
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn all_down_sends_everything_to_the_lowest_tier_with_capacity() {
        for (primaries_up, expect) in [(4, 0), (3, 0), (1, 0), (0, 1)] {
            let t = tiers(&[(primaries_up, 4), (2, 2)]);
            let s = shares(&t, Failover::AllDown);
            assert!(close(s[expect], 1.0), "{primaries_up} up: {s:?}");
            assert_eq!(choose(&t, Failover::AllDown, u64::MAX), Some(expect));
        }
    }

    #[test]
    fn gradual_follows_envoy_for_four_primaries() {
        // (primaries down, tier-0 share): min(1, 1.4 * up / 4).
        for (down, tier0) in [(0, 1.0), (1, 1.0), (2, 0.7), (3, 0.35), (4, 0.0)] {
            let t = tiers(&[(4 - down, 4), (2, 2)]);
            let s = shares(&t, Failover::Gradual);
            assert!(close(s[0], tier0), "{down} down: {s:?}");
            assert!(close(s[1], 1.0 - tier0), "{down} down: {s:?}");
        }
    }

    #[test]
    fn gradual_spills_across_three_tiers_and_scales_up_a_short_total() {
        // Tier 0 at 50 % -> 0.7; tier 1 at 1/4 -> 0.35 but only 0.3 is left.
        let s = shares(&tiers(&[(2, 4), (1, 4), (4, 4)]), Failover::Gradual);
        assert!(
            close(s[0], 0.7) && close(s[1], 0.3) && close(s[2], 0.0),
            "{s:?}"
        );
        // Healths 0.35 and 0.35 add up to 0.7: each gets half.
        let s = shares(&tiers(&[(1, 4), (1, 4)]), Failover::Gradual);
        assert!(close(s[0], 0.5) && close(s[1], 0.5), "{s:?}");
    }

    #[test]
    fn no_capacity_anywhere_chooses_nothing() {
        for f in [Failover::AllDown, Failover::Gradual] {
            let t = tiers(&[(0, 4), (0, 2)]);
            assert_eq!(choose(&t, f, 12345), None);
            assert_eq!(choose(&tiers(&[]), f, 0), None);
        }
    }

    #[test]
    fn choose_spreads_rand_over_the_shares() {
        let t = tiers(&[(2, 4), (2, 2)]);
        let n = 10_000u64;
        let tier0 = (0..n)
            .filter(|i| {
                choose(&t, Failover::Gradual, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) == Some(0)
            })
            .count();
        let share = tier0 as f64 / n as f64;
        assert!((share - 0.7).abs() < 0.02, "tier-0 share {share}");
        // The extremes of rand land on a tier with a share, never past the end.
        assert_eq!(choose(&t, Failover::Gradual, 0), Some(0));
        assert_eq!(choose(&t, Failover::Gradual, u64::MAX), Some(1));
    }
}
