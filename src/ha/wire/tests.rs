use super::*;
use crate::ha::testrng::SplitMix64;

fn key() -> Key {
    Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn hb() -> Heartbeat {
    Heartbeat {
        node_id: "lb-a".to_owned(),
        leaving: false,
        faulty: false,
        maintenance: false,
        config_hash: 0x0123_4567_89ab_cdef,
        vips: vec![VipState {
            priority: 200,
            role: WireRole::Master,
        }],
        epoch: 1_700_000_000_000_000_000,
        seq: 42,
    }
}

fn ok(h: Heartbeat) -> Result<Message, Reject> {
    Ok(Message::Heartbeat(h))
}

fn state() -> StatePacket {
    StatePacket {
        node_id: "lb-a".to_owned(),
        full: true,
        payload: b"[{\"upstream\":\"app\"}]".to_vec(),
        epoch: 7,
        seq: 9,
    }
}

#[test]
fn round_trip_every_role_and_flag() {
    for role in [WireRole::Backup, WireRole::Master, WireRole::Fault] {
        for flags in 0..8 {
            let h = Heartbeat {
                vips: vec![VipState { priority: 1, role }],
                leaving: flags & 1 != 0,
                faulty: flags & 2 != 0,
                maintenance: flags & 4 != 0,
                node_id: "ü-node-é".to_owned(),
                ..hb()
            };
            assert_eq!(decode(&encode(&h, &key()), &key()), ok(h));
        }
    }
    let long = Heartbeat {
        node_id: "x".repeat(MAX_NODE_ID_LEN),
        epoch: u64::MAX,
        seq: u64::MAX,
        config_hash: u64::MAX,
        vips: (0..MAX_VIPS as u8)
            .map(|i| VipState {
                priority: i,
                role: WireRole::Backup,
            })
            .collect(),
        ..hb()
    };
    let bytes = encode(&long, &key());
    assert_eq!(bytes.len(), 33 + MAX_NODE_ID_LEN + 2 * MAX_VIPS + 32);
    assert_eq!(decode(&bytes, &key()), ok(long));
    let big = StatePacket {
        node_id: "x".repeat(MAX_NODE_ID_LEN),
        payload: vec![b'x'; MAX_STATE_PAYLOAD],
        ..state()
    };
    let bytes = encode_state(&big, &key());
    assert_eq!(bytes.len(), MAX_PACKET_LEN);
    assert_eq!(decode(&bytes, &key()), Ok(Message::State(big)));
    let small = StatePacket {
        full: false,
        payload: Vec::new(),
        ..state()
    };
    let bytes = encode_state(&small, &key());
    assert_eq!(decode(&bytes, &key()), Ok(Message::State(small)));
}

#[test]
fn oversized_state_payload_or_no_vip_is_never_accepted() {
    let big = StatePacket {
        payload: vec![b'x'; MAX_STATE_PAYLOAD + 1],
        ..state()
    };
    assert_eq!(
        decode(&encode_state(&big, &key()), &key()),
        Err(Reject::Malformed)
    );
    let none = Heartbeat {
        vips: Vec::new(),
        ..hb()
    };
    assert_eq!(
        decode(&encode(&none, &key()), &key()),
        Err(Reject::Malformed)
    );
}

#[test]
fn view_per_vip_and_a_vip_the_peer_does_not_list() {
    let h = Heartbeat {
        faulty: true,
        ..hb()
    };
    let v = h.view(0);
    assert_eq!(
        (v.priority, v.role, v.faulty, v.maintenance),
        (200, Role::Master, true, false)
    );
    let missing = h.view(1);
    assert_eq!((missing.role, missing.maintenance), (Role::Fault, true));
}

#[test]
fn layout_is_stable() {
    let h = Heartbeat {
        faulty: true,
        ..hb()
    };
    let bytes = encode(&h, &key());
    assert_eq!(&bytes[..4], b"TNDM");
    assert_eq!(bytes[4..8], [2, 1, 0b10, 1]);
    assert_eq!(bytes[8..16], hb().epoch.to_be_bytes());
    assert_eq!(bytes[16..24], 42u64.to_be_bytes());
    assert_eq!(bytes[24..32], 0x0123_4567_89ab_cdefu64.to_be_bytes());
    assert_eq!(bytes[32], 4);
    assert_eq!(&bytes[33..37], b"lb-a");
    assert_eq!(bytes[37..39], [200, 1]);
    assert_eq!(bytes.len(), 39 + 32);
    let st = encode_state(&state(), &key());
    assert_eq!(st[4..8], [2, 2, 1, 0]);
    assert_eq!(st[24..32], [0; 8]);
    assert_eq!(st[37..39], 20u16.to_be_bytes());
}

#[test]
fn wrong_key_is_bad_auth() {
    let bytes = encode(&hb(), &key());
    let other = Key::new(b"another key of the same length!!").unwrap();
    assert_eq!(decode(&bytes, &other), Err(Reject::BadAuth));
    let longer = Key::new(b"0123456789abcdef0123456789abcdef+").unwrap();
    assert_eq!(decode(&bytes, &longer), Err(Reject::BadAuth));
}

#[test]
fn short_keys_are_refused() {
    assert_eq!(Key::new(&[7; 31]).unwrap_err(), KeyTooShort { len: 31 });
    assert_eq!(Key::new(b"").unwrap_err(), KeyTooShort { len: 0 });
    assert!(Key::new(&[7; 32]).is_ok());
}

#[test]
fn bad_magic_or_short_is_malformed() {
    let mut bytes = encode(&hb(), &key());
    bytes[0] = b'X';
    assert_eq!(decode(&bytes, &key()), Err(Reject::Malformed));
    assert_eq!(decode(&[], &key()), Err(Reject::Malformed));
    assert_eq!(decode(b"TNDM", &key()), Err(Reject::Malformed));
}

#[test]
fn other_version_is_bad_version() {
    let mut bytes = encode(&hb(), &key());
    bytes[4] = 1;
    assert_eq!(decode(&bytes, &key()), Err(Reject::BadVersion));
    assert_eq!(decode(b"TNDM\x00", &key()), Err(Reject::BadVersion));
}

/// Re-signs a hand-edited packet, to reach the checks that run after authentication.
fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() - TAG_LEN);
    let mut mac = key().0;
    mac.update(&bytes);
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    bytes
}

#[test]
fn authenticated_but_invalid_fields_are_malformed() {
    let good = encode(&hb(), &key());
    let mut role = good.clone();
    role[38] = 3;
    assert_eq!(decode(&resign(role), &key()), Err(Reject::Malformed));
    let mut flags = good.clone();
    flags[6] = 0b1000;
    assert_eq!(decode(&resign(flags), &key()), Err(Reject::Malformed));
    let mut utf8 = good.clone();
    utf8[33] = 0xff;
    assert_eq!(decode(&resign(utf8), &key()), Err(Reject::Malformed));
    let mut kind = good.clone();
    kind[5] = 3;
    assert_eq!(decode(&resign(kind), &key()), Err(Reject::Malformed));
    let st = encode_state(&state(), &key());
    let mut flags = st.clone();
    flags[6] = 0b10;
    assert_eq!(decode(&resign(flags), &key()), Err(Reject::Malformed));
    let mut hash = st.clone();
    hash[31] = 1;
    assert_eq!(decode(&resign(hash), &key()), Err(Reject::Malformed));
}

#[test]
fn id_length_must_match_packet_length() {
    let good = encode(&hb(), &key());
    for id_len in [0u8, 3, 5, 65, 255] {
        let mut b = good.clone();
        b[32] = id_len;
        assert_eq!(
            decode(&b, &key()),
            Err(Reject::Malformed),
            "id_len {id_len}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing, &key()), Err(Reject::Malformed));
}

#[test]
fn invalid_node_id_is_never_sent_as_another_id() {
    for id in [String::new(), "y".repeat(MAX_NODE_ID_LEN + 1)] {
        let h = Heartbeat {
            node_id: id.clone(),
            ..hb()
        };
        assert_eq!(decode(&encode(&h, &key()), &key()), Err(Reject::Malformed));
        let st = StatePacket {
            node_id: id,
            ..state()
        };
        assert_eq!(
            decode(&encode_state(&st, &key()), &key()),
            Err(Reject::Malformed)
        );
    }
}

#[test]
fn every_bit_flip_is_rejected() {
    let k = key();
    for good in [encode(&hb(), &k), encode_state(&state(), &k)] {
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b, &k).is_err(), "byte {i} bit {bit} accepted");
            }
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    let k = key();
    for good in [encode(&hb(), &k), encode_state(&state(), &k)] {
        for len in 0..good.len() {
            assert!(
                decode(&good[..len], &k).is_err(),
                "prefix of {len} accepted"
            );
        }
    }
}

#[test]
fn filter_rejects_unknown_node() {
    let mut f = PeerFilter::new("lb-b");
    assert_eq!(f.accept(&hb()), Err(Reject::UnknownNode));
    // The refused packet must not have advanced the replay state.
    let peer = Heartbeat {
        node_id: "lb-b".to_owned(),
        ..hb()
    };
    assert_eq!(f.accept(&peer), Ok(()));
}

#[test]
fn filter_replay_rule() {
    let at = |epoch, seq| Heartbeat { epoch, seq, ..hb() };
    let mut f = PeerFilter::new("lb-a");
    assert_eq!(f.accept(&at(10, 5)), Ok(()));
    assert_eq!(f.accept(&at(10, 5)), Err(Reject::Replay), "duplicate");
    assert_eq!(f.accept(&at(10, 4)), Err(Reject::Replay), "older seq");
    assert_eq!(f.accept(&at(9, 100)), Err(Reject::Replay), "older epoch");
    assert_eq!(f.accept(&at(10, 6)), Ok(()));
    assert_eq!(f.accept(&at(11, 0)), Ok(()), "restart resets seq");
    assert_eq!(f.accept(&at(10, 7)), Err(Reject::Replay), "previous epoch");
    // State messages have their own order: an older heartbeat seq does not refuse them.
    let st = |epoch, seq| StatePacket {
        epoch,
        seq,
        ..state()
    };
    assert_eq!(f.accept_state(&st(11, 0)), Ok(()));
    assert_eq!(f.accept_state(&st(11, 0)), Err(Reject::Replay));
    assert_eq!(f.accept_state(&st(11, 1)), Ok(()));
    let mut g = PeerFilter::new("lb-b");
    assert_eq!(g.accept_state(&st(11, 2)), Err(Reject::UnknownNode));
}

#[test]
fn labels() {
    let all = [
        (Reject::Malformed, "malformed"),
        (Reject::BadVersion, "bad_version"),
        (Reject::BadAuth, "bad_auth"),
        (Reject::UnknownNode, "unknown_node"),
        (Reject::Replay, "replay"),
    ];
    for (r, l) in all {
        assert_eq!(r.label(), l);
    }
}

fn mutate(rng: &mut SplitMix64, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(3) {
        match rng.below(4) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len() as u64 + 1) as usize;
                b.insert(i, rng.byte());
            }
            2 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b.remove(i);
            }
            _ => {
                let len = rng.below(b.len() as u64 + 1) as usize;
                b.truncate(len);
            }
        }
    }
    b
}

#[test]
fn fuzz_random_and_mutated_packets() {
    let mut rng = SplitMix64::new(0x7a4d_e41c);
    let k = key();
    for _ in 0..200_000 {
        let len = rng.below(MAX_PACKET_LEN as u64 + 16) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Half of them get a valid prefix so that the later checks are exercised too.
        if rng.chance(0.5) && len >= 6 {
            buf[..4].copy_from_slice(&MAGIC);
            buf[4] = VERSION;
            buf[5] = 1 + rng.below(2) as u8;
            if len > 32 {
                buf[32] = (len.saturating_sub(HEADER_LEN + TAG_LEN + 2)).min(64) as u8;
            }
        }
        assert!(decode(&buf, &k).is_err(), "random buffer accepted: {buf:?}");
    }
    let mut accepted_identical = 0;
    for i in 0..200_000u64 {
        let id_len = 1 + rng.below(MAX_NODE_ID_LEN as u64) as usize;
        let original = Heartbeat {
            node_id: (0..id_len)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect(),
            vips: (0..=rng.below(3))
                .map(|_| VipState {
                    priority: rng.byte(),
                    role: [WireRole::Backup, WireRole::Master, WireRole::Fault]
                        [rng.below(3) as usize],
                })
                .collect(),
            leaving: rng.chance(0.5),
            faulty: rng.chance(0.5),
            maintenance: rng.chance(0.5),
            config_hash: rng.next_u64(),
            epoch: rng.next_u64(),
            seq: i,
        };
        let good = encode(&original, &k);
        let bad = mutate(&mut rng, good.clone());
        match decode(&bad, &k) {
            Ok(h) if bad == good => {
                assert_eq!(h, Message::Heartbeat(original.clone()));
                accepted_identical += 1;
            }
            Ok(h) => panic!("mutated packet accepted: {bad:?} as {h:?}"),
            Err(_) => {}
        }
    }
    // Mutations that cancel out (e.g. insert then delete the same byte) are the only
    // acceptable acceptances; they must stay rare or the mutator is broken.
    assert!(accepted_identical < 20_000, "{accepted_identical}");
}
