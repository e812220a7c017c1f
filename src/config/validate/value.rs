//! Parsers for single configuration values: durations, addresses, host names,
//! hash keys, status ranges, VIPs.
//!
//! Pure functions `&str -> Result<T, message>`; the message is the user-facing text
//! (it says how to fix), the caller adds file, position and key path. Knows nothing
//! about where a value sits in the file or about other values. Tested by the unit
//! tests in `value/tests.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::config::types::{HashKey, HostMatch};

#[cfg(test)]
mod tests;

const DURATION_HINT: &str = "expected a duration like 250ms, 2s, 1m";

pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("{DURATION_HINT}; \"{s}\" has no unit"));
    }
    humantime::parse_duration(s).map_err(|_| format!("{DURATION_HINT}, found \"{s}\""))
}

/// A local address to bind: `IP:PORT` or `[IPv6]:PORT`; port 0 (any) is allowed.
pub fn bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "expected IP:PORT like 0.0.0.0:8080 or [::]:8080";
    match s.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() && host.parse::<IpAddr>().is_err() => Err(format!(
            "{hint}; binds take an IP address, not a host name, found \"{s}\""
        )),
        _ => Err(format!("{hint}, found \"{s}\"")),
    }
}

/// A server address: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`, port 1..=65535.
/// Returns the host (IPv6 without brackets) and the port.
pub fn server_address(s: &str) -> Result<(String, u16), String> {
    let invalid = |why: &str| format!("invalid socket address \"{s}\": {why}");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return Err(invalid("expected [IPv6]:PORT"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("not an IPv6 address inside the brackets"));
        }
        (v6, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(invalid("expected HOST:PORT or IP:PORT"));
        };
        if host.contains(':') {
            return Err(invalid("IPv6 addresses need brackets, like [::1]:3000"));
        }
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        if host.parse::<Ipv4Addr>().is_err() {
            hostname(host).map_err(|why| invalid(&why))?;
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ if port.is_empty() => Err(invalid("the port is missing")),
        _ => Err(invalid("the port must be a number from 1 to 65535")),
    }
}

/// DNS host name syntax: dot-separated labels of letters, digits and `-`.
pub fn hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("a host name has 1 to 253 characters".to_string());
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    for label in s.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!("\"{s}\" is not a valid host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "\"{s}\" is not a valid host name (a label starts or ends with '-')"
            ));
        }
    }
    if s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("\"{s}\" is not a valid IPv4 address"));
    }
    Ok(())
}

/// A route's `host`: exact name or `*.suffix`; lower-cased; no port.
pub fn route_host(s: &str) -> Result<HostMatch, String> {
    let lower = s.to_ascii_lowercase();
    if lower.contains(':') {
        return Err(format!(
            "host \"{s}\" must not carry a port; ports are ignored when matching, remove it"
        ));
    }
    let (name, wildcard) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    if name.contains('*') {
        return Err(format!(
            "host \"{s}\": a wildcard is only allowed as a leading \"*.\", like *.example.com"
        ));
    }
    hostname(name)?;
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// `client_ip`, `header:NAME` or `cookie:NAME`. Header names are lower-cased.
pub fn hash_key(s: &str) -> Result<HashKey, String> {
    let hint = "expected client_ip, header:NAME or cookie:NAME";
    if s == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    let (kind, name) = s
        .split_once(':')
        .ok_or_else(|| format!("{hint}, found \"{s}\""))?;
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(format!("{hint}; \"{name}\" is not a valid {kind} name"));
    }
    match kind {
        "header" => Ok(HashKey::Header(name.to_ascii_lowercase())),
        "cookie" => Ok(HashKey::Cookie(name.to_string())),
        _ => Err(format!("{hint}, found \"{s}\"")),
    }
}

/// RFC 9110 token characters: what header and cookie names are made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `200-399` or a single code like `200`; codes 100..=599.
pub fn status_range(s: &str) -> Result<(u16, u16), String> {
    let hint = "expected a status code like 200 or a range like 200-399";
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo = status(lo.trim()).map_err(|_| format!("{hint}, found \"{s}\""))?;
    let hi = status(hi.trim()).map_err(|_| format!("{hint}, found \"{s}\""))?;
    if lo > hi {
        return Err(format!("range \"{s}\" is empty: {lo} is above {hi}"));
    }
    Ok((lo, hi))
}

pub fn status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(format!(
            "expected an HTTP status code 100-599, found \"{s}\""
        )),
    }
}

/// `IPv4/PREFIX` with a prefix 1..=32.
pub fn vip(s: &str) -> Result<(IpAddr, u8), String> {
    let hint = "expected IP/PREFIX like 10.0.0.100/24";
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{hint}, found \"{s}\" (the prefix length is missing)"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{hint}; \"{ip}\" is not an IP address"))?;
    let max = if ip.is_ipv6() { 128 } else { 32 };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!(
            "\"{ip}\" cannot be a VIP (unspecified, multicast or loopback)"
        ));
    }
    match prefix.parse::<u8>() {
        Ok(p) if (1..=max).contains(&p) => Ok((ip, p)),
        _ => Err(format!(
            "the prefix length must be 1 to {max}, found \"{prefix}\""
        )),
    }
}

/// `auto` (the number of cores, `cores`) or a count 1..=1024.
pub fn workers(s: &str, cores: usize) -> Result<usize, String> {
    if s == "auto" {
        return Ok(cores.max(1));
    }
    match s.parse::<i64>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!("must be auto or between 1 and 1024, found {n}")),
        Err(_) => Err(format!(
            "expected auto or a positive integer, found \"{s}\""
        )),
    }
}

/// Names of listeners and upstreams end up in metric labels and log lines.
pub fn name(s: &str) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if s.is_empty() || s.len() > 64 || !s.bytes().all(ok) {
        return Err(format!(
            "invalid name \"{s}\": use 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}
