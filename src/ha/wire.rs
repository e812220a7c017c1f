//! The pair's wire format: versioned, length-checked binary packets authenticated with
//! HMAC-SHA-256 under the pair's shared key (heartbeats, and runtime-state messages on
//! the same socket), and the per-peer replay filter.
//!
//! Owns encoding, decoding, authentication and the (epoch, sequence) replay rule. It does
//! not own the socket, reading the key file ([`Key::new`] checks its length), validating
//! the node id in config ([`valid_node_id`]), what a heartbeat means (`machine`) or what
//! a state payload holds (`driver::replicate`, JSON runtime entries).
//!
//! Layout (integers big-endian), version 2:
//!
//! ```text
//! 0   magic "TNDM"     4
//! 4   version          1   (= 2)
//! 5   kind             1   1 heartbeat, 2 runtime state
//! 6   flags            1   heartbeat: bit 0 leaving, bit 1 faulty, bit 2 maintenance;
//!                          state: bit 0 full sync; other bits must be zero
//! 7   VIP count        1   heartbeat: 1..=16; state: 0
//! 8   boot epoch       8   chosen by the sender at process start (wall-clock nanos)
//! 16  sequence         8   monotonic within an epoch (one counter for both kinds)
//! 24  config hash      8   heartbeat: hash of the traffic configuration; state: 0
//! 32  node id length   1   1..=64
//! 33  node id          n   UTF-8
//!     heartbeat: per VIP, in configuration order: priority 1, role 1
//!                (0 backup, 1 master, 2 fault)
//!     state: payload length 2 (<= 1200), payload
//!     tag             32   HMAC-SHA-256 over every byte before it
//! ```
//!
//! Version 1 (one VIP, no kind) is not spoken: a packet of another version is
//! `BadVersion`, counted and logged by the driver, and never changes a role.
//!
//! Invariants: `decode` never panics and indexes nothing unchecked; the total length must
//! equal exactly what the length fields announce, so trailing bytes are rejected; the tag
//! is checked in constant time (`verify_slice`) before any field is interpreted, so a
//! packet that fails authentication is never reported as anything but `BadAuth` /
//! `Malformed` / `BadVersion`. Every bit of an accepted packet is covered by the tag, so
//! any mutation of a valid packet is rejected.
//!
//! Tested in `wire/tests.rs`: round trips, each reject kind, every single-bit flip, every
//! truncation, and a seeded fuzz of random and mutated packets; property tests
//! (proptest) in `wire/fuzz.rs`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::machine::{PeerView, Role};

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every packet; lets a stray packet fail cheaply as `Malformed`.
pub const MAGIC: [u8; 4] = *b"TNDM";
/// The only version this build speaks. A mixed-version pair fails loudly as `BadVersion`.
pub const VERSION: u8 = 2;
/// Longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Most VIPs one heartbeat carries (and `ha.vips` accepts).
pub const MAX_VIPS: usize = 16;
/// Largest runtime-state payload: with the header, the id and the tag a state packet
/// stays below a 1500-byte MTU, so it is never IP-fragmented.
pub const MAX_STATE_PAYLOAD: usize = 1200;
const HEADER_LEN: usize = 33;
const TAG_LEN: usize = 32;
/// Longest valid packet; the driver's receive buffer should be larger so that an
/// oversized datagram is seen whole and rejected rather than silently truncated.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_NODE_ID_LEN + 2 + MAX_STATE_PAYLOAD + TAG_LEN;
const KIND_HEARTBEAT: u8 = 1;
const KIND_STATE: u8 = 2;
const FLAG_LEAVING: u8 = 0b1;
const FLAG_FAULTY: u8 = 0b10;
const FLAG_MAINTENANCE: u8 = 0b100;
const FLAG_FULL: u8 = 0b1;

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

/// One VIP's election state as the sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipState {
    pub priority: u8,
    pub role: WireRole,
}

/// One decoded (and authenticated) heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: String,
    /// The sender is shutting down and yields every VIP now.
    pub leaving: bool,
    /// A tracked upstream of the sender has no healthy server.
    pub faulty: bool,
    pub maintenance: bool,
    /// Hash of the sender's traffic configuration (drift detection).
    pub config_hash: u64,
    /// Per VIP, in configuration order; 1..=[`MAX_VIPS`].
    pub vips: Vec<VipState>,
    pub epoch: u64,
    pub seq: u64,
}

impl Heartbeat {
    /// What the machine of VIP `vip` needs; feed it only after [`PeerFilter::accept`]
    /// passed. A VIP the peer does not list (a shorter `vips` list there) is one it does
    /// not contend for: it is shown as a peer in maintenance for that VIP, so this node
    /// holds it whatever its own health.
    pub fn view(&self, vip: usize) -> PeerView {
        let listed = self.vips.get(vip).copied();
        let v = listed.unwrap_or(VipState {
            priority: 0,
            role: WireRole::Fault,
        });
        PeerView {
            node_id: self.node_id.clone(),
            priority: v.priority,
            role: v.role.into(),
            leaving: self.leaving,
            faulty: self.faulty,
            maintenance: self.maintenance || listed.is_none(),
        }
    }
}

/// A runtime-state message: an opaque payload (JSON runtime entries) of at most
/// [`MAX_STATE_PAYLOAD`] bytes. Each message is self-contained; a full sync is several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePacket {
    pub node_id: String,
    /// Part of a full sync (rather than changes as they happen).
    pub full: bool,
    pub payload: Vec<u8>,
    pub epoch: u64,
    pub seq: u64,
}

/// A decoded, authenticated packet of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Heartbeat(Heartbeat),
    State(StatePacket),
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

/// Writes the common header and the node id. An id that fails [`valid_node_id`] is
/// written with length 0, which every receiver rejects as `Malformed`: a bad id is never
/// sent as another id.
#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    kind: u8,
    flags: u8,
    count: u8,
    epoch: u64,
    seq: u64,
    hash: u64,
    id: &str,
) {
    let id: &[u8] = if valid_node_id(id) {
        id.as_bytes()
    } else {
        &[]
    };
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.push(flags);
    out.push(count);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hash.to_be_bytes());
    // `id.len() <= 64` here, so the cast is exact.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

fn sign(mut out: Vec<u8>, key: &Key) -> Vec<u8> {
    let mut mac = key.0.clone();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Encodes and signs `hb`. VIPs past [`MAX_VIPS`] are not sent; a heartbeat with none is
/// sent with count 0, which receivers reject as `Malformed`.
pub fn encode(hb: &Heartbeat, key: &Key) -> Vec<u8> {
    let vips = hb
        .vips
        .get(..hb.vips.len().min(MAX_VIPS))
        .unwrap_or_default();
    let mut flags = 0;
    for (on, bit) in [
        (hb.leaving, FLAG_LEAVING),
        (hb.faulty, FLAG_FAULTY),
        (hb.maintenance, FLAG_MAINTENANCE),
    ] {
        if on {
            flags |= bit;
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + MAX_NODE_ID_LEN + 2 * vips.len() + TAG_LEN);
    // `vips.len() <= 16`, so the cast is exact.
    let count = vips.len() as u8;
    header(
        &mut out,
        KIND_HEARTBEAT,
        flags,
        count,
        hb.epoch,
        hb.seq,
        hb.config_hash,
        &hb.node_id,
    );
    for v in vips {
        out.push(v.priority);
        out.push(v.role.to_byte());
    }
    sign(out, key)
}

/// Encodes and signs a state message. A payload over [`MAX_STATE_PAYLOAD`] is sent
/// empty-handed as length 0xffff, which receivers reject as `Malformed`; callers split
/// their entries so that this never happens.
pub fn encode_state(st: &StatePacket, key: &Key) -> Vec<u8> {
    let flags = if st.full { FLAG_FULL } else { 0 };
    let mut out = Vec::with_capacity(HEADER_LEN + MAX_NODE_ID_LEN + 2 + st.payload.len() + TAG_LEN);
    header(
        &mut out,
        KIND_STATE,
        flags,
        0,
        st.epoch,
        st.seq,
        0,
        &st.node_id,
    );
    if st.payload.len() <= MAX_STATE_PAYLOAD {
        // Checked just above: fits in u16.
        out.extend_from_slice(&(st.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&st.payload);
    } else {
        out.extend_from_slice(&u16::MAX.to_be_bytes());
    }
    sign(out, key)
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The length the body after the node id must have, from the header alone.
fn body_len(buf: &[u8], id_end: usize) -> Result<usize, Reject> {
    match buf.get(5) {
        Some(&KIND_HEARTBEAT) => {
            let count = usize::from(*buf.get(7).ok_or(Reject::Malformed)?);
            if !(1..=MAX_VIPS).contains(&count) {
                return Err(Reject::Malformed);
            }
            Ok(2 * count)
        }
        Some(&KIND_STATE) => {
            let len: [u8; 2] = buf
                .get(id_end..id_end + 2)
                .and_then(|b| b.try_into().ok())
                .ok_or(Reject::Malformed)?;
            let len = usize::from(u16::from_be_bytes(len));
            if len > MAX_STATE_PAYLOAD {
                return Err(Reject::Malformed);
            }
            Ok(2 + len)
        }
        _ => Err(Reject::Malformed),
    }
}

/// Decodes and authenticates one datagram. Does not check who sent it or replay; that is
/// [`PeerFilter::accept`].
pub fn decode(buf: &[u8], key: &Key) -> Result<Message, Reject> {
    if buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Reject::Malformed);
    }
    match buf.get(4) {
        None => return Err(Reject::Malformed),
        Some(&VERSION) => {}
        Some(_) => return Err(Reject::BadVersion),
    }
    let id_len = usize::from(*buf.get(HEADER_LEN - 1).ok_or(Reject::Malformed)?);
    if !(1..=MAX_NODE_ID_LEN).contains(&id_len) {
        return Err(Reject::Malformed);
    }
    let id_end = HEADER_LEN + id_len;
    let body = body_len(buf, id_end)?;
    if buf.len() != id_end + body + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let (signed, tag) = buf.split_at(id_end + body);
    let mut mac = key.0.clone();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| Reject::BadAuth)?;

    // Authenticated from here on; the remaining checks catch a peer running a build that
    // sets bits this one does not know.
    let kind = *signed.get(5).ok_or(Reject::Malformed)?;
    let flags = *signed.get(6).ok_or(Reject::Malformed)?;
    let epoch = u64_at(signed, 8).ok_or(Reject::Malformed)?;
    let seq = u64_at(signed, 16).ok_or(Reject::Malformed)?;
    let config_hash = u64_at(signed, 24).ok_or(Reject::Malformed)?;
    let id = signed.get(HEADER_LEN..id_end).ok_or(Reject::Malformed)?;
    let node_id = std::str::from_utf8(id)
        .map_err(|_| Reject::Malformed)?
        .to_owned();
    let rest = signed.get(id_end..).ok_or(Reject::Malformed)?;
    if kind == KIND_STATE {
        if flags & !FLAG_FULL != 0 || signed.get(7) != Some(&0) || config_hash != 0 {
            return Err(Reject::Malformed);
        }
        return Ok(Message::State(StatePacket {
            node_id,
            full: flags & FLAG_FULL != 0,
            payload: rest.get(2..).ok_or(Reject::Malformed)?.to_vec(),
            epoch,
            seq,
        }));
    }
    if flags & !(FLAG_LEAVING | FLAG_FAULTY | FLAG_MAINTENANCE) != 0 {
        return Err(Reject::Malformed);
    }
    let vips = rest
        .chunks_exact(2)
        .map(|c| {
            let role = WireRole::from_byte(c[1]).ok_or(Reject::Malformed)?;
            Ok(VipState {
                priority: c[0],
                role,
            })
        })
        .collect::<Result<Vec<_>, Reject>>()?;
    Ok(Message::Heartbeat(Heartbeat {
        node_id,
        leaving: flags & FLAG_LEAVING != 0,
        faulty: flags & FLAG_FAULTY != 0,
        maintenance: flags & FLAG_MAINTENANCE != 0,
        config_hash,
        vips,
        epoch,
        seq,
    }))
}

/// Admits packets only from the expected peer and only in (epoch, sequence) order,
/// heartbeats and state messages each in their own order (a state burst and a heartbeat
/// may cross on the wire without one kind refusing the other).
///
/// A restarted peer picks a higher epoch, which resets its sequence. A lower epoch is
/// always a replay: a peer whose wall clock stepped back across a restart is refused
/// until this node restarts too (it looks dead, so this node takes or keeps the VIP).
#[derive(Debug, Clone)]
pub struct PeerFilter {
    expected_peer: String,
    last: Option<(u64, u64)>,
    last_state: Option<(u64, u64)>,
}

impl PeerFilter {
    pub fn new(expected_peer: &str) -> Self {
        PeerFilter {
            expected_peer: expected_peer.to_owned(),
            last: None,
            last_state: None,
        }
    }

    /// Checks `hb` (already authenticated by [`decode`]) and, if it passes, records its
    /// (epoch, seq) so that this packet and older ones are refused from now on.
    pub fn accept(&mut self, hb: &Heartbeat) -> Result<(), Reject> {
        Self::check(
            &self.expected_peer,
            &mut self.last,
            &hb.node_id,
            hb.epoch,
            hb.seq,
        )
    }

    /// [`Self::accept`] for a state message.
    pub fn accept_state(&mut self, st: &StatePacket) -> Result<(), Reject> {
        Self::check(
            &self.expected_peer,
            &mut self.last_state,
            &st.node_id,
            st.epoch,
            st.seq,
        )
    }

    fn check(
        expected: &str,
        last: &mut Option<(u64, u64)>,
        id: &str,
        e: u64,
        s: u64,
    ) -> Result<(), Reject> {
        if id != expected {
            return Err(Reject::UnknownNode);
        }
        if let Some((epoch, seq)) = *last {
            let newer = e > epoch || (e == epoch && s > seq);
            if !newer {
                return Err(Reject::Replay);
            }
        }
        *last = Some((e, s));
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
