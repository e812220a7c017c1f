//! Tunnels for upgraded connections (WebSocket and other `Upgrade` requests).
//!
//! The tunnel starts only after the server answered 101: the client's upgraded
//! IO (from hyper's server) and the server's socket are joined and bytes are
//! copied both ways until either side closes. Bytes the server sent right
//! behind its 101 head (already in our read buffer) go to the client first.
//! The request's [`Completion`] is held for the tunnel's life, so the access
//! log line and the in-flight count cover the whole session. The response
//! timeout does not apply to an established tunnel.

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::Completion;
use crate::upstream::tls::ServerStream;

pub fn spawn_tunnel(client: OnUpgrade, server: (ServerStream, Bytes), mut done: Completion) {
    tokio::task::spawn_local(async move {
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut server, early) = server;
        let mut client = TokioIo::new(client);
        if !early.is_empty() {
            if let Err(e) = client.write_all(&early).await {
                tracing::debug!(error = %e, "upgraded tunnel ended with error");
                return;
            }
        }
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((up, down)) => {
                done.bytes = down + early.len() as u64;
                if let Some(sent) = done.body_counter() {
                    sent.set(sent.get() + up);
                }
                done.complete = true;
                tracing::debug!(up, down, "upgraded tunnel closed");
            }
            Err(e) => tracing::debug!(error = %e, "upgraded tunnel ended with error"),
        }
        // Accounting happens here, when the tunnel is over.
        drop(done);
    });
}
