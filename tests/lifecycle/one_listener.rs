//! What a reload changes for a connection that stays open. A connection keeps
//! the listener it was accepted on (timeouts, TLS, HTTP/2 limits: tested in
//! `tests/tls.rs`, where a reload lands between accept and handshake); routes
//! are per request, so a kept-alive connection's next request follows the new
//! routes and reaches the new upstreams.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, web_config, Express, Tandem};

async fn reload(t: &Tandem) {
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// Routes are per request: a kept-alive connection's next request after a
/// reload follows the new routes (and reaches the new upstreams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_changed_by_a_reload_apply_to_the_next_request_of_an_open_connection() {
    let (app, api) = (Express::start("route-app"), Express::start("route-api"));
    let config = |route: bool| {
        let routes = if route {
            "    routes:\n      - path_prefix: /api\n        upstream: api\n"
        } else {
            ""
        };
        format!(
            "{}  - name: api\n    servers:\n      - address: {}\n",
            web_config(routes, "", &[app.addr()]),
            api.addr()
        )
    };
    let t = Tandem::start(&config(false)).await;
    let addr = t.listener_addr("web").await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let first = get_api(&mut conn).await;
    assert!(first.contains("\"instance\":\"route-app\""), "{first}");

    t.write_config(&config(true));
    reload(&t).await;
    let second = get_api(&mut conn).await;
    assert!(second.contains("\"instance\":\"route-api\""), "{second}");
}

/// `GET /api/x` on an open connection; the whole answer.
async fn get_api(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_head_and_body(conn).await
}

/// One response with a `Content-Length` body, read whole.
async fn read_head_and_body(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
    }
}
