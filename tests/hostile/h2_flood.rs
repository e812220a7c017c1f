//! HTTP/2 rapid reset (CVE-2023-44487) against an h2c listener: a client
//! opens and immediately resets 10,000 streams. tandem must end that
//! connection with GOAWAY while another h2c client on the same listener keeps
//! being served on its existing connection. The attacker also checks the
//! limits tandem advertises in its SETTINGS (100 streams, 64 KiB header list).
//!
//! The attacker writes raw frames: an HTTP/2 client library paces itself by
//! the server's settings, which is exactly what an attacker does not do. The
//! well-behaved bystander uses the `h2` crate.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{eventually, web_config, Express, Tandem};

pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
pub(super) const GOAWAY: u8 = 0x7;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const MAX_HEADER_LIST_SIZE: u16 = 0x6;
const ENHANCE_YOUR_CALM: u32 = 0xb;

pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The whole attack, written at once: SETTINGS, then HEADERS + RST_STREAM
/// for `n` streams. The header block is HPACK static-table indices only:
/// `:method GET`, `:scheme http`, `:path /`.
fn rapid_reset(n: u32) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for i in 0..n {
        let id = 2 * i + 1;
        out.extend(frame(0x1, 0x4 | 0x1, id, &[0x82, 0x86, 0x84]));
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    out
}

/// What the attacker saw before the connection ended.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The server's SETTINGS, (identifier, value).
    pub(super) settings: Vec<(u16, u32)>,
    /// The error code of the GOAWAY, if one came.
    pub(super) goaway: Option<u32>,
}

/// Reads frames until the connection ends.
pub(super) async fn read_until_closed(mut s: tokio::net::tcp::OwnedReadHalf) -> Seen {
    let mut seen = Seen::default();
    let mut head = [0u8; 9];
    loop {
        if s.read_exact(&mut head).await.is_err() {
            return seen;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return seen;
        }
        match head[3] {
            GOAWAY if len >= 8 => {
                seen.goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            SETTINGS if head[4] & 0x1 == 0 => {
                for p in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    seen.settings
                        .push((id, u32::from_be_bytes([p[2], p[3], p[4], p[5]])));
                }
            }
            _ => {}
        }
    }
}

async fn h2_get(send: &mut h2::client::SendRequest<bytes::Bytes>) -> http::StatusCode {
    let req = http::Request::get("http://tandem.test/").body(()).unwrap();
    let (resp, _) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, true)
        .unwrap();
    resp.await.unwrap().status()
}

#[tokio::test]
async fn rapid_reset_gets_goaway_while_other_h2_clients_are_served() {
    let server = Express::start("rapid-reset");
    // At info, where tandem's own (rate-limited) refusal line is visible.
    let t = Tandem::start_logging(&web_config("", "", &[server.addr()]), "info").await;
    let addr = t.listener_addr("web").await;

    // The bystander connects first and proves its connection works.
    let (mut bystander, conn) = h2::client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(h2_get(&mut bystander).await, 200);
    let before = server.requests().await;

    let attacker = TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = attacker.into_split();
    let reader = tokio::spawn(read_until_closed(rd));
    let attack = rapid_reset(10_000);
    let started = std::time::Instant::now();
    // The write fails once tandem has closed the connection: expected.
    let _ = wr.write_all(&attack).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("tandem closes the flooding connection")
        .unwrap();
    let goaway = seen.goaway;
    // The limits tandem advertises (src/listener/http.rs).
    assert!(
        seen.settings.contains(&(MAX_CONCURRENT_STREAMS, 100)),
        "{:?}",
        seen.settings
    );
    assert!(
        seen.settings.contains(&(MAX_HEADER_LIST_SIZE, 64 * 1024)),
        "{:?}",
        seen.settings
    );
    let reached = server.requests().await - before;
    println!(
        "rapid reset: GOAWAY code {goaway:?} after {:?}; {reached} of 10000 streams reached the server",
        started.elapsed()
    );
    assert_eq!(
        goaway,
        Some(ENHANCE_YOUR_CALM),
        "expected GOAWAY ENHANCE_YOUR_CALM"
    );
    assert!(
        reached < 1000,
        "{reached} reset streams were forwarded to the server"
    );

    // The bystander's connection is still up and served.
    for _ in 0..5 {
        assert_eq!(h2_get(&mut bystander).await, 200);
    }
    assert!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "h2_flood")]
        )
        .await
            >= 1.0
    );
    // The refusal is reported once by tandem's rate-limited line; the h2
    // library's own per-connection WARN line stays out of the log.
    eventually(
        Duration::from_secs(5),
        "tandem logs the refusal",
        || async { t.log().contains("h2_flood") },
    )
    .await;
    let log = t.log();
    // (Text logs may colour the target, so no space before it.)
    let h2_lines: Vec<&str> = log.lines().filter(|l| l.contains("h2::proto")).collect();
    assert!(h2_lines.is_empty(), "h2 library lines: {h2_lines:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("refused hostile") && l.contains("h2_flood")),
        "{log}"
    );
}
