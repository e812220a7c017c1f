//! TCP listeners end to end: relay, half-close, refused servers.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Express, Tandem};

fn tcp_config(servers: &[String]) -> String {
    let list: String = servers
        .iter()
        .map(|s| format!("      - address: {s}\n"))
        .collect();
    format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: raw
    bind: 127.0.0.1:0
    mode: tcp
    upstream: app
upstreams:
  - name: app
    servers:
{list}"#
    )
}

#[tokio::test]
async fn tcp_relay_honours_half_close_and_skips_a_refusing_server() {
    let a = Express::start("tcp-a");
    let mut dead = Express::start("tcp-dead");
    let dead_addr = dead.addr();
    dead.kill();
    let t = Tandem::start(&tcp_config(&[dead_addr, a.addr()])).await;
    let addr = t.listener_addr("raw").await;
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: tcp\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        // Half-close: our write side ends, the response must still arrive.
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("\"instance\":\"tcp-a\""), "{out}");
    }
}

#[tokio::test]
async fn tcp_relay_carries_a_large_stream() {
    let a = Express::start("tcp-big");
    let t = Tandem::start(&tcp_config(&[a.addr()])).await;
    let addr = t.listener_addr("raw").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /bytes/20971520 HTTP/1.1\r\nHost: tcp\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(out.len() - head_end, 20_971_520);
}
