//! Tunnels for upgraded connections (WebSocket and other `Upgrade` requests).
//!
//! The tunnel starts only after the server answered 101 and the client's
//! connection loop wrote that answer: the loop then hands over the client's
//! stream ([`Upgraded`], through the [`ClientUpgrade`] channel made with the
//! request) and the tunnel joins it with the server's socket, copying bytes
//! both ways until either side closes. Bytes either side sent right behind its
//! head (already in a read buffer) go across first. The request's
//! [`Completion`] is held for the tunnel's life, so the access log line and
//! the in-flight count cover the whole session. The response timeout does not
//! apply to an established tunnel.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::body::Completion;
use crate::upstream::tls::ServerStream;

/// A client stream of any kind (plain or TLS).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> ClientIo for T {}

/// The client's side of a switched connection.
pub struct Upgraded {
    pub io: Box<dyn ClientIo>,
    /// Bytes the client sent behind its request head.
    pub early: Bytes,
}

/// Where the client's stream arrives once the 101 is written.
pub type ClientUpgrade = oneshot::Receiver<Upgraded>;

pub fn spawn_tunnel(client: ClientUpgrade, server: (ServerStream, Bytes), mut done: Completion) {
    tokio::task::spawn_local(async move {
        let Ok(Upgraded {
            io: mut client,
            early: client_early,
        }) = client.await
        else {
            tracing::debug!("upgrade failed: the client connection ended first");
            return;
        };
        let (mut server, early) = server;
        if !early.is_empty() {
            if let Err(e) = client.write_all(&early).await {
                tracing::debug!(error = %e, "upgraded tunnel ended with error");
                return;
            }
        }
        if !client_early.is_empty() {
            if let Err(e) = server.write_all(&client_early).await {
                tracing::debug!(error = %e, "upgraded tunnel ended with error");
                return;
            }
        }
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((up, down)) => {
                done.bytes = down + early.len() as u64;
                if let Some(sent) = done.body_counter() {
                    sent.set(sent.get() + up + client_early.len() as u64);
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
