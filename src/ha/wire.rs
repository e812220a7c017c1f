//! The heartbeat wire format: a versioned, length-checked binary packet authenticated
//! with HMAC-SHA-256 under the pair's shared key, and the per-peer replay filter.
//!
//! Owns encoding, decoding, authentication and the (epoch, sequence) replay rule. It does
//! not own the socket, reading the key file ([`Key::new`] checks its length), validating
//! the node id in config ([`valid_node_id`]) or what a heartbeat means (`machine`).
//!
//! Layout (integers big-endian), 57..=120 bytes:
//!
//! ```text
//! 0   magic "TNDM"     4
//! 4   version          1   (= 1)
//! 5   role             1   0 backup, 1 master, 2 fault
//! 6   flags            1   bit 0 leaving; other bits must be zero
//! 7   priority         1
//! 8   boot epoch       8   chosen by the sender at process start (wall-clock nanos)
//! 16  sequence         8   monotonic within an epoch
//! 24  node id length   1   1..=64
//! 25  node id          n   UTF-8
//! 25+n tag            32   HMAC-SHA-256 over bytes 0..25+n
//! ```
//!
//! Invariants: `decode` never panics and indexes nothing unchecked; the total length must
//! equal exactly what the id length announces, so trailing bytes are rejected; the tag is
//! checked in constant time (`verify_slice`) before any field is interpreted, so a packet
//! that fails authentication is never reported as anything but `BadAuth` / `Malformed` /
//! `BadVersion`. Every bit of an accepted packet is covered by the tag, so any mutation of
//! a valid packet is rejected.
//!
//! Tested in `wire/tests.rs`: round trips, each reject kind, every single-bit flip, every
//! truncation, and a seeded fuzz of random and mutated packets; property tests
//! (proptest) in `wire/fuzz.rs`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::machine::{PeerView, Role};

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every heartbeat; lets a stray packet fail cheaply as `Malformed`.
pub const MAGIC: [u8; 4] = *b"TNDM";
/// The only version this build speaks. A mixed-version pair fails loudly as `BadVersion`.
pub const VERSION: u8 = 1;
/// Longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;
const HEADER_LEN: usize = 25;
const TAG_LEN: usize = 32;
/// Longest valid packet; the driver's receive buffer should be larger so that an
/// oversized datagram is seen whole and rejected rather than silently truncated.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_NODE_ID_LEN + TAG_LEN;
const FLAG_LEAVING: u8 = 0b1;

/// The role a node advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireRole {
    Backup,
    Master,
    Fault,
}

impl WireRole {
    fn to_byte(self) -> u8 {
        match self {
            WireRole::Backup => 0,
            WireRole::Master => 1,
            WireRole::Fault => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(WireRole::Backup),
            1 => Some(WireRole::Master),
            2 => Some(WireRole::Fault),
            _ => None,
        }
    }
}

impl From<Role> for WireRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Backup => WireRole::Backup,
            Role::Master => WireRole::Master,
            Role::Fault => WireRole::Fault,
        }
    }
}

impl From<WireRole> for Role {
    fn from(r: WireRole) -> Self {
        match r {
            WireRole::Backup => Role::Backup,
            WireRole::Master => Role::Master,
            WireRole::Fault => Role::Fault,
        }
    }
}

/// One decoded (and authenticated) heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: String,
    pub priority: u8,
    pub role: WireRole,
    /// The sender is shutting down and yields the VIP now.
    pub leaving: bool,
    pub epoch: u64,
    pub seq: u64,
}

impl Heartbeat {
    /// What the machine needs; feed it only after [`PeerFilter::accept`] passed.
    pub fn view(&self) -> PeerView {
        PeerView {
            node_id: self.node_id.clone(),
            priority: self.priority,
            role: self.role.into(),
            leaving: self.leaving,
        }
    }
}

/// Why a datagram was dropped. Each kind is counted separately
/// (`tandem_ha_heartbeats_total{direction="rx",result=label}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("malformed heartbeat")]
    Malformed,
    #[error("unsupported heartbeat version (expected {VERSION})")]
    BadVersion,
    #[error("heartbeat failed authentication (wrong or missing shared key?)")]
    BadAuth,
    #[error("heartbeat from an unknown node id")]
    UnknownNode,
    #[error("replayed or out-of-order heartbeat")]
    Replay,
}

impl Reject {
    /// Stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadVersion => "bad_version",
            Reject::BadAuth => "bad_auth",
            Reject::UnknownNode => "unknown_node",
            Reject::Replay => "replay",
        }
    }
}

/// Whether `id` can be carried in a heartbeat: 1..=64 bytes of UTF-8. The config loader
/// should reject other ids, because [`encode`] cannot report an error.
pub fn valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len())
}

/// Shortest shared key accepted (`ha.secret_file`, >= 32 bytes).
pub const MIN_KEY_LEN: usize = 32;

/// The pair's shared key, checked once and pre-keyed so that each packet costs only the
/// message hashing.
#[derive(Clone)]
pub struct Key(HmacSha256);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the HA shared key is {len} bytes; it must be at least {MIN_KEY_LEN} (e.g. `head -c 32 /dev/urandom`)")]
pub struct KeyTooShort {
    pub len: usize,
}

impl Key {
    pub fn new(secret: &[u8]) -> Result<Key, KeyTooShort> {
        let too_short = KeyTooShort { len: secret.len() };
        if secret.len() < MIN_KEY_LEN {
            return Err(too_short);
        }
        // HMAC takes keys of any length, so the hmac crate's error cannot happen here.
        HmacSha256::new_from_slice(secret)
            .map(Key)
            .map_err(|_| too_short)
    }
}

/// Encodes and signs `hb`. An id that fails [`valid_node_id`] is written with length 0,
/// which every receiver rejects as `Malformed`: a bad id is never sent as another id.
pub fn encode(hb: &Heartbeat, key: &Key) -> Vec<u8> {
    let id: &[u8] = if valid_node_id(&hb.node_id) {
        hb.node_id.as_bytes()
    } else {
        &[]
    };
    let mut out = Vec::with_capacity(HEADER_LEN + id.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(hb.role.to_byte());
    out.push(if hb.leaving { FLAG_LEAVING } else { 0 });
    out.push(hb.priority);
    out.extend_from_slice(&hb.epoch.to_be_bytes());
    out.extend_from_slice(&hb.seq.to_be_bytes());
    // `id.len() <= 64` here, so the cast is exact.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    let mut mac = key.0.clone();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Decodes and authenticates one datagram. Does not check who sent it or replay; that is
/// [`PeerFilter::accept`].
pub fn decode(buf: &[u8], key: &Key) -> Result<Heartbeat, Reject> {
    if buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Reject::Malformed);
    }
    match buf.get(4) {
        None => return Err(Reject::Malformed),
        Some(&VERSION) => {}
        Some(_) => return Err(Reject::BadVersion),
    }
    let id_len = usize::from(*buf.get(HEADER_LEN - 1).ok_or(Reject::Malformed)?);
    if !(1..=MAX_NODE_ID_LEN).contains(&id_len) || buf.len() != HEADER_LEN + id_len + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let (signed, tag) = buf.split_at(HEADER_LEN + id_len);
    let mut mac = key.0.clone();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| Reject::BadAuth)?;

    // Authenticated from here on; the remaining checks catch a peer running a build that
    // sets bits this one does not know.
    let role = signed
        .get(5)
        .copied()
        .and_then(WireRole::from_byte)
        .ok_or(Reject::Malformed)?;
    let flags = *signed.get(6).ok_or(Reject::Malformed)?;
    if flags & !FLAG_LEAVING != 0 {
        return Err(Reject::Malformed);
    }
    let priority = *signed.get(7).ok_or(Reject::Malformed)?;
    let epoch = u64_at(signed, 8).ok_or(Reject::Malformed)?;
    let seq = u64_at(signed, 16).ok_or(Reject::Malformed)?;
    let id = signed.get(HEADER_LEN..).ok_or(Reject::Malformed)?;
    let node_id = std::str::from_utf8(id).map_err(|_| Reject::Malformed)?;
    Ok(Heartbeat {
        node_id: node_id.to_owned(),
        priority,
        role,
        leaving: flags & FLAG_LEAVING != 0,
        epoch,
        seq,
    })
}

/// Admits heartbeats only from the expected peer and only in (epoch, sequence) order.
///
/// A restarted peer picks a higher epoch, which resets its sequence. A lower epoch is
/// always a replay: a peer whose wall clock stepped back across a restart is refused
/// until this node restarts too (it looks dead, so this node takes or keeps the VIP).
#[derive(Debug, Clone)]
pub struct PeerFilter {
    expected_peer: String,
    last: Option<(u64, u64)>,
}

impl PeerFilter {
    pub fn new(expected_peer: &str) -> Self {
        PeerFilter {
            expected_peer: expected_peer.to_owned(),
            last: None,
        }
    }

    /// Checks `hb` (already authenticated by [`decode`]) and, if it passes, records its
    /// (epoch, seq) so that this packet and older ones are refused from now on.
    pub fn accept(&mut self, hb: &Heartbeat) -> Result<(), Reject> {
        if hb.node_id != self.expected_peer {
            return Err(Reject::UnknownNode);
        }
        if let Some((epoch, seq)) = self.last {
            let newer = hb.epoch > epoch || (hb.epoch == epoch && hb.seq > seq);
            if !newer {
                return Err(Reject::Replay);
            }
        }
        self.last = Some((hb.epoch, hb.seq));
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
