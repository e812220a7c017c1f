use super::*;

/// splitmix64: the tests' source of `rand`, seeded so failures reproduce.
pub(super) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
}

/// A hand-set view of the servers.
#[derive(Debug, Clone)]
pub(super) struct Fake {
    pub up: Vec<bool>,
    pub active: Vec<u64>,
    pub latency: Vec<f64>,
    /// Per-mille factor on each configured weight (slow start, say).
    pub scale: Vec<u64>,
}

impl Fake {
    pub fn new(n: usize) -> Self {
        Self {
            up: vec![true; n],
            active: vec![0; n],
            latency: vec![0.0; n],
            scale: vec![1000; n],
        }
    }
}

impl Candidates for Fake {
    fn len(&self) -> usize {
        self.up.len()
    }
    fn available(&self, i: usize) -> bool {
        self.up[i]
    }
    fn active(&self, i: usize) -> u64 {
        self.active[i]
    }
    fn latency_ns(&self, i: usize) -> f64 {
        self.latency[i]
    }
    fn weight(&self, i: usize, configured: u32) -> u64 {
        u64::from(configured) * self.scale[i]
    }
}

pub(super) fn servers(weights: &[u32]) -> Vec<(String, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("127.0.0.1:{}", 3001 + i), *w))
        .collect()
}

const ALL: [BalanceKind; 5] = [
    BalanceKind::RoundRobin,
    BalanceKind::LeastConnections,
    BalanceKind::RandomTwo,
    BalanceKind::PeakEwma,
    BalanceKind::ConsistentHash,
];

/// Picks `n` times with fresh randoms (and fresh hashes for consistent hashing);
/// `settle` lets a pick's load leave again (as in a real proxy, where requests end).
fn counts(b: &Balancer, c: &mut Fake, n: usize, seed: u64, settle: bool) -> Vec<usize> {
    let mut rng = SplitMix(seed);
    let mut out = vec![0; c.len()];
    for _ in 0..n {
        let hash = matches!(b, Balancer::ConsistentHash(_)).then(|| rng.next());
        let i = b.pick(c, hash, rng.next()).expect("a server is available");
        out[i] += 1;
        c.active[i] += 1;
        if settle {
            // Every request ends before the next, except the chosen one occasionally
            // lingers, so load-aware algorithms see ties and small differences.
            c.active[i] -= 1;
        }
    }
    out
}

fn assert_shares(counts: &[usize], weights: &[u32], tolerance: f64, what: &str) {
    let total: usize = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&got, &w)) in counts.iter().zip(weights).enumerate() {
        let share = got as f64 / total as f64;
        let want = f64::from(w) / f64::from(wsum);
        assert!(
            (share - want).abs() <= tolerance,
            "{what}: server {i} got {share:.4}, want {want:.4} ({counts:?})"
        );
    }
}

#[test]
fn weights_are_honoured_by_every_algorithm() {
    let weights = [1, 2, 3];
    for kind in ALL {
        let b = Balancer::new(kind, &servers(&weights));
        let got = counts(&b, &mut Fake::new(3), 60_000, 7, true);
        assert_shares(&got, &weights, 0.03, &format!("{kind:?}"));
    }
}

#[test]
fn weights_hold_under_sustained_load_for_load_aware_algorithms() {
    // Requests never end: the load-aware algorithms must still split by weight.
    let weights = [1, 2, 3];
    for kind in [
        BalanceKind::LeastConnections,
        BalanceKind::RandomTwo,
        BalanceKind::PeakEwma,
    ] {
        let b = Balancer::new(kind, &servers(&weights));
        let mut c = Fake::new(3);
        c.latency = vec![1e6; 3];
        let got = counts(&b, &mut c, 60_000, 11, false);
        assert_shares(&got, &weights, 0.03, &format!("{kind:?}"));
    }
}

#[test]
fn unavailable_and_zero_weight_servers_are_never_picked() {
    let weights = [1, 0, 3, 2];
    for kind in ALL {
        let b = Balancer::new(kind, &servers(&weights));
        let mut c = Fake::new(4);
        c.up[2] = false;
        let got = counts(&b, &mut c, 10_000, 3, true);
        assert_eq!(got[1], 0, "{kind:?} picked weight 0: {got:?}");
        assert_eq!(got[2], 0, "{kind:?} picked unavailable: {got:?}");
        assert!(got[0] > 0 && got[3] > 0, "{kind:?}: {got:?}");
    }
}

#[test]
fn nothing_available_gives_none() {
    for kind in ALL {
        let mut rng = SplitMix(5);
        let b = Balancer::new(kind, &servers(&[1, 2, 3]));
        let mut c = Fake::new(3);
        c.up = vec![false; 3];
        for _ in 0..100 {
            assert_eq!(b.pick(&c, Some(rng.next()), rng.next()), None, "{kind:?}");
            assert_eq!(b.pick(&c, None, rng.next()), None, "{kind:?}");
        }
        for weights in [&[][..], &[0, 0][..]] {
            let b = Balancer::new(kind, &servers(weights));
            let c = Fake::new(weights.len());
            assert_eq!(b.pick(&c, Some(1), 2), None, "{kind:?} {weights:?}");
        }
    }
}

#[test]
fn a_view_shorter_than_the_server_list_does_not_panic() {
    for kind in ALL {
        let b = Balancer::new(kind, &servers(&[1, 1, 1, 1]));
        let c = Fake::new(2);
        let mut rng = SplitMix(9);
        for _ in 0..1000 {
            if let Some(i) = b.pick(&c, Some(rng.next()), rng.next()) {
                assert!(i < 2, "{kind:?}");
            }
        }
    }
}

#[test]
fn round_robin_is_smooth() {
    let rr = RoundRobin::new(&[5, 1, 1]);
    let c = Fake::new(3);
    let picks: Vec<usize> = (0..14).map(|_| rr.pick(&c).unwrap()).collect();
    assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_takes_huge_weights_without_overflow() {
    let rr = RoundRobin::new(&[1_000, 1, 1_000, 0]);
    let c = Fake::new(4);
    let mut got = [0usize; 4];
    for _ in 0..20_010 {
        got[rr.pick(&c).unwrap()] += 1;
    }
    assert_eq!(got[3], 0);
    assert_eq!(got[1], 10, "{got:?}");
    assert!((got[0] as i64 - got[2] as i64).abs() <= 1, "{got:?}");
}

#[test]
fn round_robin_skipping_keeps_the_rest_even() {
    // a a b a c a a with `a` out must alternate b and c, not favour b.
    let rr = RoundRobin::new(&[5, 1, 1]);
    let mut c = Fake::new(3);
    c.up[0] = false;
    let picks: Vec<usize> = (0..6).map(|_| rr.pick(&c).unwrap()).collect();
    assert_eq!(picks, [1, 2, 1, 2, 1, 2]);
}

#[test]
fn effective_weights_are_followed_at_pick_time() {
    // Server 1 is early in a slow start (10 % of its weight): every algorithm but
    // consistent hashing gives it about 0.1 / 2.1 of the traffic, and its full
    // half once the ramp is over.
    for kind in [
        BalanceKind::RoundRobin,
        BalanceKind::LeastConnections,
        BalanceKind::RandomTwo,
        BalanceKind::PeakEwma,
    ] {
        let b = Balancer::new(kind, &servers(&[1, 1]));
        let mut c = Fake::new(2);
        c.scale[1] = 100;
        let got = counts(&b, &mut c, 42_000, 13, true);
        let share = got[1] as f64 / 42_000.0;
        assert!((share - 0.1 / 1.1).abs() < 0.02, "{kind:?}: {got:?}");
        c.scale[1] = 1000;
        let got = counts(&b, &mut c, 20_000, 14, true);
        assert_shares(&got, &[1, 1], 0.03, &format!("{kind:?} after the ramp"));
    }
}

#[test]
fn random_two_compares_two_distinct_servers() {
    // Two equal servers, one loaded: with distinct draws the idle one wins every
    // time (independent draws picked the loaded one about a quarter of the time).
    let b = Balancer::new(BalanceKind::RandomTwo, &servers(&[1, 1]));
    let mut c = Fake::new(2);
    c.active = vec![5, 0];
    let mut rng = SplitMix(21);
    for _ in 0..1_000 {
        assert_eq!(b.pick(&c, None, rng.next()), Some(1));
    }
    // One server left: it is picked, the missing second draw does not matter.
    c.up[1] = false;
    assert_eq!(b.pick(&c, None, rng.next()), Some(0));
}

#[test]
fn least_connections_prefers_the_idle_server_and_spreads_ties() {
    let lc = Balancer::new(BalanceKind::LeastConnections, &servers(&[1, 1, 1]));
    let mut c = Fake::new(3);
    c.active = vec![4, 0, 2];
    let mut rng = SplitMix(1);
    for _ in 0..100 {
        assert_eq!(lc.pick(&c, None, rng.next()), Some(1));
    }
    // Weighted: 4 on weight 4 is lighter than 2 on weight 1.
    let lc = Balancer::new(BalanceKind::LeastConnections, &servers(&[4, 1]));
    c = Fake::new(2);
    c.active = vec![4, 2];
    assert_eq!(lc.pick(&c, None, 0), Some(0));
    // All idle: ties are broken at random, so a burst spreads.
    let lc = Balancer::new(BalanceKind::LeastConnections, &servers(&[1; 8]));
    let c = Fake::new(8);
    let mut seen = [false; 8];
    for _ in 0..200 {
        seen[lc.pick(&c, None, rng.next()).unwrap()] = true;
    }
    assert!(seen.iter().all(|&s| s), "{seen:?}");
}

#[test]
fn random_two_favours_lower_load() {
    let b = Balancer::new(BalanceKind::RandomTwo, &servers(&[1, 1, 1, 1]));
    let mut c = Fake::new(4);
    c.active = vec![50, 0, 50, 50];
    let mut rng = SplitMix(2);
    let mut idle = 0;
    for _ in 0..10_000 {
        if b.pick(&c, None, rng.next()) == Some(1) {
            idle += 1;
        }
    }
    // Draws without replacement: P(server 1 among the two) = 1 - (3/4)(2/3) = 0.5.
    assert!((4_600..5_400).contains(&idle), "{idle}");
}

#[test]
fn peak_ewma_avoids_a_slow_server() {
    let b = Balancer::new(BalanceKind::PeakEwma, &servers(&[1, 1, 1]));
    let mut c = Fake::new(3);
    c.latency = vec![1e6, 50e6, 1e6];
    let got = counts(&b, &mut c, 30_000, 4, true);
    // Picked only when drawn twice: (1/3)^2.
    let slow = got[1] as f64 / 30_000.0;
    assert!(slow < 0.13, "{got:?}");
    // Load still counts: a fast server with 100 in flight loses to a 2x slower idle one.
    c = Fake::new(2);
    c.latency = vec![1e6, 2e6];
    c.active = vec![100, 0];
    let b = Balancer::new(BalanceKind::PeakEwma, &servers(&[1, 1]));
    let mut rng = SplitMix(8);
    for _ in 0..100 {
        let r = rng.next();
        if let Some(i) = b.pick(&c, None, r) {
            let both_drawn = r as u32 >> 31 != (r >> 32) as u32 >> 31;
            if both_drawn {
                assert_eq!(i, 1);
            }
        }
    }
}

#[test]
fn peak_ewma_gives_unsampled_servers_traffic() {
    let b = Balancer::new(BalanceKind::PeakEwma, &servers(&[1, 1, 1]));
    let mut c = Fake::new(3);
    c.latency = vec![5e6, 5e6, 0.0];
    let got = counts(&b, &mut c, 30_000, 6, true);
    assert_shares(&got, &[1, 1, 1], 0.03, "new server at neutral cost");
    // The fallback scan (both draws out) also uses the neutral cost.
    // `rand` 0 draws server 0 twice; it is out, so the scan decides: costs are
    // 5*(1+3)=20, neutral (5+2)/2*(1+1)=7 and 2*(1+3)=8 ms.
    let b = PeakEwma::new(&[1, 1, 1, 1]);
    let mut c = Fake::new(4);
    c.up[0] = false;
    c.latency = vec![1.0, 5e6, 0.0, 2e6];
    c.active = vec![0, 3, 1, 3];
    assert_eq!(b.pick(&c, 0), Some(2));
}

#[test]
fn balancer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Balancer>();
}

#[test]
fn hash_key_is_stable_and_spread() {
    assert_eq!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.1"));
    assert_ne!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.2"));
    assert_ne!(hash_key(b""), hash_key(b"\0"));
    // Pinned: hashes must not change between versions (both HA nodes, restarts).
    assert_eq!(hash_key(b"10.0.0.1"), PINNED_10_0_0_1);
    let mut buckets = [0u32; 16];
    for i in 0..16_000u32 {
        buckets
            [(hash_key(format!("192.168.{}.{}", i / 256, i % 256).as_bytes()) >> 60) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&b| (850..1150).contains(&b)),
        "{buckets:?}"
    );
}

const PINNED_10_0_0_1: u64 = 801_192_361_304_212_195;
