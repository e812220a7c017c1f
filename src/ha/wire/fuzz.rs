//! Property tests of the heartbeat decoder: fuzzing on stable with proptest,
//! beside the seeded fuzz in `tests.rs`.
//!
//! Properties: `decode` never panics on arbitrary datagrams; every heartbeat
//! with a valid node id round-trips; and a valid packet with any non-empty set
//! of byte edits (flips, truncation, extension) is never accepted, and never
//! under another key. Cases default to 2,000 per property;
//! `PROPTEST_CASES=100000 cargo test ha::wire::fuzz` runs longer.

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn key() -> Key {
    Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        "[a-zA-Z0-9._-]{1,64}",
        any::<u8>(),
        prop_oneof![
            Just(WireRole::Backup),
            Just(WireRole::Master),
            Just(WireRole::Fault)
        ],
        0u8..8,
        any::<u64>(),
        any::<u64>(),
        1usize..=MAX_VIPS,
    )
        .prop_map(
            |(node_id, priority, role, flags, epoch, seq, n)| Heartbeat {
                node_id,
                leaving: flags & 1 != 0,
                faulty: flags & 2 != 0,
                maintenance: flags & 4 != 0,
                config_hash: epoch ^ seq,
                vips: vec![VipState { priority, role }; n],
                epoch,
                seq,
            },
        )
}

#[derive(Debug, Clone)]
enum Edit {
    /// XOR a byte with a non-zero mask.
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, m)| Edit::Flip(at, m)),
        any::<usize>().prop_map(Edit::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Edit::Append),
    ]
}

fn apply(mut packet: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Flip(at, mask) => {
                let len = packet.len().max(1);
                if let Some(b) = packet.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Edit::Truncate(at) => {
                let len = packet.len().max(1);
                packet.truncate(at % len);
            }
            Edit::Append(tail) => packet.extend_from_slice(tail),
        }
    }
    packet
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_datagrams_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&buf, &key());
    }

    #[test]
    fn valid_heartbeats_round_trip(hb in heartbeat()) {
        prop_assert_eq!(decode(&encode(&hb, &key()), &key()), Ok(Message::Heartbeat(hb)));
    }

    #[test]
    fn a_mutated_packet_is_never_accepted(
        hb in heartbeat(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let good = encode(&hb, &key());
        let bad = apply(good.clone(), &edits);
        // Edits can cancel out (flip twice); only a changed packet must fail.
        prop_assume!(bad != good);
        prop_assert!(decode(&bad, &key()).is_err(), "accepted after {:?}", edits);
    }

    #[test]
    fn a_packet_under_another_key_is_never_accepted(hb in heartbeat(), other in proptest::collection::vec(any::<u8>(), 32..64)) {
        let other = Key::new(&other).unwrap();
        let packet = encode(&hb, &other);
        prop_assume!(other_differs(&packet, &hb));
        prop_assert_eq!(decode(&packet, &key()), Err(Reject::BadAuth));
    }
}

/// True unless the random key happens to be the test key (then the packets match).
fn other_differs(packet: &[u8], hb: &Heartbeat) -> bool {
    packet != encode(hb, &key()).as_slice()
}
