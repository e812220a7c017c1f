//! VIP control: adding and removing the floating address on an interface (netlink) and
//! announcing it: gratuitous ARP for IPv4 (`arp`), unsolicited neighbour advertisements
//! for IPv6 (`na`).
//!
//! Owns the OS side effects of holding a VIP. Does not own *when* to hold it (the
//! machine) or the spacing of announcements (the driver). IPv6 VIPs are added with
//! `IFA_F_NODAD`: duplicate address detection would keep a taken-over address tentative
//! (unusable) for a second or more, and the pair itself guarantees the address is not
//! held twice for longer than a heartbeat.
//!
//! Netlink goes through `rtnetlink` (the rust-netlink project's maintained async client,
//! already on tokio), so no `ip` binary is needed at run time and errors come back as
//! errno values rather than text to parse.
//!
//! Invariants: [`VipControl::add`] and [`VipControl::remove`] are idempotent (an address
//! already present, or already absent, is success), so the driver may call them on every
//! transition without tracking what a previous run left behind. Nothing here panics;
//! every failure is returned as a [`VipError`] for the driver to log and count.
//! Tested by the namespace end-to-end tests (`tests/ha.rs`, `tests/ha/resilience.rs` for
//! IPv6) and the byte-exact ARP frame and neighbour advertisement unit tests.

mod arp;
mod na;

use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::config::types::Vip;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("cannot open a netlink socket: {0}")]
    Netlink(std::io::Error),
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    #[error("interface {0:?} has no Ethernet address (gratuitous ARP needs one)")]
    NoMac(String),
    #[error("netlink request failed: {0}")]
    Request(rtnetlink::Error),
    #[error("cannot send gratuitous ARP: {0}")]
    Arp(std::io::Error),
    #[error("cannot send an unsolicited neighbour advertisement: {0}")]
    Na(std::io::Error),
}

/// Adds, removes and announces one VIP on one interface.
#[derive(Clone)]
pub struct VipControl {
    handle: Handle,
    address: IpAddr,
    prefix_len: u8,
    interface: String,
}

const EEXIST: i32 = libc::EEXIST;
const ENOENT_LIKE: [i32; 3] = [libc::ENOENT, libc::EADDRNOTAVAIL, libc::ESRCH];

impl VipControl {
    /// Opens the netlink connection; its task runs on the current tokio runtime.
    pub fn new(vip: &Vip) -> Result<Self, VipError> {
        let address = vip.address;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(VipError::Netlink)?;
        tokio::spawn(conn);
        Ok(VipControl {
            handle,
            address,
            prefix_len: vip.prefix_len,
            interface: vip.interface.clone(),
        })
    }

    /// `address/prefix`, for logs and `/status`.
    pub fn describe(&self) -> String {
        format!("{}/{} on {}", self.address, self.prefix_len, self.interface)
    }

    /// Adds the VIP (`ip addr add`); present already is success.
    pub async fn add(&self) -> Result<(), VipError> {
        let (index, _) = self.link().await?;
        let mut req = self
            .handle
            .address()
            .add(index, self.address, self.prefix_len);
        if self.address.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let res = req.execute().await;
        match res {
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == EEXIST => Ok(()),
            other => other.map_err(VipError::Request),
        }
    }

    /// Removes the VIP with whatever prefix it was added; absent (or no such interface)
    /// is success, because then nothing is held.
    pub async fn remove(&self) -> Result<(), VipError> {
        let index = match self.link().await {
            Ok((index, _)) => index,
            Err(VipError::NoInterface(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let found: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(self.address)
            .execute()
            .try_collect()
            .await
            .map_err(VipError::Request)?;
        for msg in found {
            match self.handle.address().del(msg).execute().await {
                Err(rtnetlink::Error::NetlinkError(e)) if ENOENT_LIKE.contains(&-e.raw_code()) => {}
                other => other.map_err(VipError::Request)?,
            }
        }
        Ok(())
    }

    /// Sends one gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6)
    /// for the VIP from the interface's MAC.
    pub async fn announce(&self) -> Result<(), VipError> {
        let (index, mac) = self.link().await?;
        let mac = mac.ok_or_else(|| VipError::NoMac(self.interface.clone()))?;
        match self.address {
            IpAddr::V4(ip) => arp::send(index, &arp::frame(mac, ip)).map_err(VipError::Arp),
            IpAddr::V6(ip) => na::send(index, mac, ip).map_err(VipError::Na),
        }
    }

    /// The interface's index and, if it is Ethernet-like, its MAC. Looked up each time:
    /// the interface may have been recreated since the last call.
    async fn link(&self) -> Result<(u32, Option<[u8; 6]>), VipError> {
        let res = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute()
            .try_next()
            .await;
        let msg = match res {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(VipError::NoInterface(self.interface.clone())),
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc::ENODEV => {
                return Err(VipError::NoInterface(self.interface.clone()))
            }
            Err(e) => return Err(VipError::Request(e)),
        };
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        Ok((msg.header.index, mac))
    }
}
