//! Gratuitous ARP: the 42-byte Ethernet frame and sending it on a raw `AF_PACKET` socket.
//!
//! Owns the frame layout and the one `unsafe` block tandem needs for HA (building a
//! `sockaddr_ll`, which socket2 has no safe constructor for). Does not own when or how
//! often to announce (the driver) or finding the interface (`vip`).
//!
//! The frame is an ARP *request* with sender = target = VIP, sent to the broadcast
//! address: the form Linux, switches and most hosts accept to refresh a neighbour
//! entry (RFC 5227 "ARP announcement"). Tested by a byte-exact unit test of the
//! frame; sending is covered by the namespace tests (`tests/ha.rs`).

use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// Length of an Ethernet + ARP-over-IPv4 frame without padding.
pub const FRAME_LEN: usize = 42;

/// An ARP announcement of `ip` at `mac`.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    let ip = ip.octets();
    f[0..6].copy_from_slice(&[0xff; 6]); // Ethernet destination: broadcast
    f[6..12].copy_from_slice(&mac); // Ethernet source
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[28..32].copy_from_slice(&ip); // sender protocol address
                                    // 32..38 target hardware address: zero (unknown) in an announcement
    f[38..42].copy_from_slice(&ip); // target protocol address
    f
}

/// Sends `frame` out of interface `ifindex`.
pub fn send(ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
    let proto = Protocol::from(i32::from(ETH_P_ARP.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
    let addr = link_addr(ifindex)?;
    socket.send_to(frame, &addr)?;
    Ok(())
}

/// The `sockaddr_ll` naming interface `ifindex` for a broadcast ARP frame.
#[allow(unsafe_code)]
fn link_addr(ifindex: u32) -> std::io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| std::io::Error::other("interface index out of range"))?;
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::sa_family_t,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    // SAFETY: `try_init` hands us a zeroed `sockaddr_storage` (128 bytes, 8-aligned),
    // large and aligned enough for a `sockaddr_ll` (20 bytes, 4-aligned). We write one
    // whole `sockaddr_ll` whose family is AF_PACKET and report its exact size as the
    // length, which is what `try_init` requires.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            storage.cast::<libc::sockaddr_ll>().write(ll);
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_frame_is_byte_exact() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let f = frame(mac, Ipv4Addr::new(10, 99, 0, 100));
        let expected: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 99,
            0, 100, 0, 0, 0, 0, 0, 0, 10, 99, 0, 100,
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn link_addr_is_af_packet() {
        let a = link_addr(3).unwrap();
        assert_eq!(i32::from(a.family()), libc::AF_PACKET);
        assert_eq!(a.len() as usize, std::mem::size_of::<libc::sockaddr_ll>());
    }
}
