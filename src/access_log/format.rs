//! Access log lines as bytes: JSON (one object a line) or text (logfmt).
//!
//! Pure functions that append one line, newline included, to a buffer the
//! caller reuses; nothing here allocates. Field order is fixed and the same in
//! both formats. Values that came from the client (host, path, user agent,
//! request id) are escaped so a line can never be split or forged: JSON
//! escapes quotes, backslashes and control bytes; text quotes any value with
//! a space, quote, `=` or control byte and escapes it the same way. Bytes
//! that are not UTF-8 are replaced with U+FFFD. Tested by the unit tests below.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use super::record::{HttpRecord, TcpEnd, TcpRecord};
use crate::config::types::AccessLogFormat;

/// Appends the line for one HTTP request.
pub fn http(format: AccessLogFormat, r: &HttpRecord<'_>, out: &mut Vec<u8>) {
    let mut l = Line::new(format, out);
    l.time(r.time);
    l.str("listener", r.listener);
    l.addr("client", &r.client);
    l.str("method", r.method);
    l.bytes_or_null("host", r.host);
    l.str("path", r.path);
    l.str("protocol", r.protocol);
    l.num("status", u64::from(r.status));
    l.num("bytes_in", r.bytes_in);
    l.num("bytes_out", r.bytes_out);
    l.str_or_null("upstream", r.upstream);
    l.str_or_null("server", r.server);
    l.num("tier", u64::from(r.tier));
    l.num("attempts", u64::from(r.attempts));
    l.bytes_or_null("request_id", r.request_id);
    l.millis("duration_ms", Some(r.duration));
    l.millis("connect_ms", r.connect);
    l.millis("response_ms", r.response);
    l.str_or_null("tls", r.tls);
    l.bytes_or_null("user_agent", r.user_agent);
    l.bool("complete", r.complete);
    l.end();
}

/// Appends the line for one TCP connection.
pub fn tcp(format: AccessLogFormat, r: &TcpRecord<'_>, out: &mut Vec<u8>) {
    let mut l = Line::new(format, out);
    l.time(r.time);
    l.str("listener", r.listener);
    l.addr("client", &r.client);
    l.str("upstream", r.upstream);
    l.str_or_null("server", r.server);
    l.num("bytes_in", r.bytes_in);
    l.num("bytes_out", r.bytes_out);
    l.millis("duration_ms", Some(r.duration));
    l.display("end", &EndText(r.end));
    l.end();
}

/// `end` as logged: `client_closed`, `server_closed`, `idle_timeout`,
/// `no_server`, or `client_error: <reason>` / `server_error: <reason>`.
struct EndText(TcpEnd);

impl std::fmt::Display for EndText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            TcpEnd::ClientClosed => f.write_str("client_closed"),
            TcpEnd::ServerClosed => f.write_str("server_closed"),
            TcpEnd::IdleTimeout => f.write_str("idle_timeout"),
            TcpEnd::NoServer => f.write_str("no_server"),
            TcpEnd::ClientError(k) => write!(f, "client_error: {k}"),
            TcpEnd::ServerError(k) => write!(f, "server_error: {k}"),
        }
    }
}

/// One line being written.
struct Line<'a> {
    json: bool,
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    fn new(format: AccessLogFormat, out: &'a mut Vec<u8>) -> Self {
        let json = format == AccessLogFormat::Json;
        if json {
            out.push(b'{');
        }
        Self {
            json,
            out,
            first: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(if self.json { b',' } else { b' ' });
        }
        self.first = false;
        if self.json {
            self.out.push(b'"');
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"\":");
        } else {
            self.out.extend_from_slice(key.as_bytes());
            self.out.push(b'=');
        }
    }

    fn time(&mut self, t: SystemTime) {
        self.key("time");
        let q = self.json;
        if q {
            self.out.push(b'"');
        }
        // RFC 3339 in UTC with milliseconds; never needs escaping.
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        push_second(since.as_secs(), self.out);
        let ms = since.subsec_millis();
        self.out.push(b'.');
        push_digits3(ms, self.out);
        self.out.push(b'Z');
        if q {
            self.out.push(b'"');
        }
    }

    fn str(&mut self, key: &str, v: &str) {
        self.key(key);
        self.value(v);
    }

    fn bytes_or_null(&mut self, key: &str, v: Option<&[u8]>) {
        match v {
            Some(b) => {
                self.key(key);
                self.value(&String::from_utf8_lossy(b));
            }
            None => self.null(key),
        }
    }

    fn str_or_null(&mut self, key: &str, v: Option<&str>) {
        match v {
            Some(s) => self.str(key, s),
            None => self.null(key),
        }
    }

    /// A value made by `Display` (addresses, `end`): plain text that needs
    /// no escaping except in text format when it holds a space.
    fn display(&mut self, key: &str, v: &dyn std::fmt::Display) {
        self.key(key);
        let start = self.out.len();
        let _ = write!(self.out, "{v}");
        let plain = self.out.get(start..).is_some_and(|s| !needs_quotes(s));
        if self.json || !plain {
            // Rare (only `end` with an error reason in text): re-escape.
            let written = self.out.split_off(start);
            self.value(&String::from_utf8_lossy(&written));
        }
    }

    fn num(&mut self, key: &str, n: u64) {
        self.key(key);
        push_u64(n, self.out);
    }

    /// An address; IPv4 (the common case) without `fmt`.
    fn addr(&mut self, key: &str, a: &std::net::SocketAddr) {
        let std::net::SocketAddr::V4(v4) = a else {
            return self.display(key, a);
        };
        self.key(key);
        if self.json {
            self.out.push(b'"');
        }
        for (i, o) in v4.ip().octets().iter().enumerate() {
            if i > 0 {
                self.out.push(b'.');
            }
            push_u64(u64::from(*o), self.out);
        }
        self.out.push(b':');
        push_u64(u64::from(v4.port()), self.out);
        if self.json {
            self.out.push(b'"');
        }
    }

    fn bool(&mut self, key: &str, b: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if b { b"true" } else { b"false" });
    }

    /// Milliseconds with microsecond precision (`12.345`), or null.
    fn millis(&mut self, key: &str, d: Option<Duration>) {
        let Some(d) = d else {
            return self.null(key);
        };
        self.key(key);
        let us = d.as_micros();
        push_u64(u64::try_from(us / 1000).unwrap_or(u64::MAX), self.out);
        self.out.push(b'.');
        // `us % 1000` is below 1000, so the cast is exact.
        push_digits3((us % 1000) as u32, self.out);
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out
            .extend_from_slice(if self.json { b"null" } else { b"-" });
    }

    /// A string value: always quoted in JSON; in text only when it must be.
    fn value(&mut self, v: &str) {
        let quote = self.json || needs_quotes(v.as_bytes());
        if !quote {
            self.out.extend_from_slice(v.as_bytes());
            return;
        }
        self.out.push(b'"');
        escape(v, self.out);
        self.out.push(b'"');
    }

    fn end(self) {
        if self.json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }
}

/// Decimal digits of `n`, without `fmt` (this runs for every number of every line).
fn push_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Exactly three digits (`007`) of `n` < 1000.
fn push_digits3(n: u32, out: &mut Vec<u8>) {
    let n = n.min(999);
    out.extend_from_slice(&[
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

thread_local! {
    /// The date-time text (`2026-12-07T08:15:02`) of the last second
    /// formatted on this thread: lines come in bursts within one second.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` since the Unix epoch.
fn push_second(secs: u64, out: &mut Vec<u8>) {
    let cached = SECOND.try_with(std::cell::Cell::get).ok();
    if let Some((_, text)) = cached.filter(|(s, _)| *s == secs) {
        out.extend_from_slice(&text);
        return;
    }
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let mut text = [0u8; 19];
    let full = humantime::format_rfc3339_seconds(t).to_string();
    if let Some(prefix) = full.as_bytes().get(..19) {
        text.copy_from_slice(prefix);
    }
    let _ = SECOND.try_with(|c| c.set((secs, text)));
    out.extend_from_slice(&text);
}

/// Text format: a value needs quotes when it is empty or is `-` (which
/// stands for null) or holds a byte that would end or confuse the field.
fn needs_quotes(v: &[u8]) -> bool {
    v.is_empty()
        || v == b"-"
        || v.iter()
            .any(|&b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
}

/// JSON string escaping (also used inside quoted text values).
fn escape(v: &str, out: &mut Vec<u8>) {
    let bytes = v.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(plain_from..i).unwrap_or_default());
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(esc);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(bytes.get(plain_from..).unwrap_or_default());
}

#[cfg(test)]
mod tests;
