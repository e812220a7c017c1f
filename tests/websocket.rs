//! WebSocket through tandem to the real Express `ws` echo server (
//! `Upgrade` requests are tunnelled). The tunnel must start only after the
//! server answered 101; messages of any type and size go both ways; and an
//! established tunnel is not cut by `timeouts.response`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{web_config, Express, Tandem};

fn config(server: &Express) -> String {
    web_config(
        "",
        "    retries: 0\n    timeouts:\n      response: 500ms\n",
        &[server.addr()],
    )
}

async fn ws_url(t: &Tandem, path: &str) -> String {
    format!("ws://{}{path}", t.listener_addr("web").await)
}

/// One masked client frame (RFC 6455 §5.2) with a short payload.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn an_upgrade_the_server_refuses_is_answered_and_not_tunnelled() {
    let server = Express::start("ws-refuse");
    let t = Tandem::start(&config(&server)).await;
    server.control(serde_json::json!({ "status": 503 })).await;

    let mut s = TcpStream::connect(t.listener_addr("web").await)
        .await
        .unwrap();
    s.write_all(UPGRADE).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    // A WebSocket frame now is not relayed to the server as a tunnel: tandem
    // reads it as HTTP (and refuses it), so no echo can come back.
    let _ = s.write_all(&client_text_frame(b"hello-ws")).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("hello-ws"), "frame was tunnelled: {rest:?}");

    // The same through a real client: the handshake fails with the server's answer.
    match tokio_tungstenite::connect_async(ws_url(&t, "/ws").await).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected an HTTP 503 answer, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upgrade_to_a_path_without_websocket_gets_the_servers_404() {
    let server = Express::start("ws-404");
    let t = Tandem::start(&config(&server)).await;
    match tokio_tungstenite::connect_async(ws_url(&t, "/not-ws").await).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected an HTTP 404 answer, got {other:?}"),
    }
}

#[tokio::test]
async fn text_binary_and_a_one_mib_message_echo_through_the_tunnel() {
    let server = Express::start("ws-echo");
    let t = Tandem::start(&config(&server)).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(ws_url(&t, "/ws").await)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);

    ws.send(Message::text("hello through tandem"))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello through tandem")
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));

    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_long_lived_websocket_outlasts_the_response_timeout() {
    let server = Express::start("ws-long");
    let t = Tandem::start(&config(&server)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&t, "/ws").await)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut i = 0;
    // timeouts.response is 500ms: exchange for 2 s, with quiet gaps longer
    // than the response timeout.
    while started.elapsed() < Duration::from_secs(2) {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
        i += 1;
        tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 700 } else { 100 })).await;
    }
    assert!(i >= 4, "only {i} exchanges");
    ws.close(None).await.unwrap();
}
