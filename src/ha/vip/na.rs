//! Unsolicited neighbour advertisement (RFC 4861 §7.2.6): the IPv6 counterpart of a
//! gratuitous ARP, telling the link that the VIP now lives at this interface's MAC.
//!
//! Owns the ICMPv6 message layout and sending it on a raw ICMPv6 socket: to the
//! all-nodes group `ff02::1` on the VIP's interface, hop limit 255 (receivers drop
//! neighbour discovery packets with any other), from the VIP itself, with the override
//! flag set so that neighbours replace the old MAC, and the target link-layer address
//! option carrying ours. The kernel fills in the ICMPv6 checksum (it always does on raw
//! ICMPv6 sockets). Does not own when or how often to announce (the driver).
//!
//! Linux neighbours update an existing entry on such an advertisement (to STALE with
//! the new address) and do not create one. Tested by a byte-exact unit test of the
//! message; sending by the IPv6 namespace test (`tests/ha.rs`).

use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};

/// Length of a neighbour advertisement with one target link-layer address option.
pub const MESSAGE_LEN: usize = 32;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Flags byte: override (0x20); neither router (0x80) nor solicited (0x40).
const FLAG_OVERRIDE: u8 = 0x20;
const OPTION_TARGET_LINK_ADDRESS: u8 = 2;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The advertisement of `target` at `mac`, checksum left zero for the kernel.
pub fn message(mac: [u8; 6], target: Ipv6Addr) -> [u8; MESSAGE_LEN] {
    let mut m = [0u8; MESSAGE_LEN];
    m[0] = NEIGHBOR_ADVERTISEMENT;
    // 1: code 0; 2..4: checksum (kernel)
    m[4] = FLAG_OVERRIDE; // 5..8 reserved
    m[8..24].copy_from_slice(&target.octets());
    m[24] = OPTION_TARGET_LINK_ADDRESS;
    m[25] = 1; // option length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// Sends one advertisement of `vip` out of interface `ifindex`.
pub fn send(ifindex: u32, mac: [u8; 6], vip: Ipv6Addr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.set_multicast_loop_v6(false)?;
    // From the VIP itself (added without DAD, so it is usable at once).
    socket.bind(&SocketAddrV6::new(vip, 0, 0, ifindex).into())?;
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex);
    socket.send_to(&message(mac, vip), &to.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_is_byte_exact() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let target: Ipv6Addr = "fd00:99::100".parse().unwrap();
        let m = message(mac, target);
        let expected: [u8; MESSAGE_LEN] = [
            136, 0, 0, 0, 0x20, 0, 0, 0, 0xfd, 0x00, 0x00, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x00, 2, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
        ];
        assert_eq!(m, expected);
    }
}
