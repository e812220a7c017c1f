//! Tunnels for upgraded connections (WebSocket and other `Upgrade` requests).
//!
//! The tunnel starts only after the server answered 101: both sides' upgraded
//! IO are joined and bytes are copied both ways until either side closes. The
//! request's [`Completion`] is held for the tunnel's life, so the access log
//! line and the in-flight count cover the whole session. The response timeout
//! does not apply to an established tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::Completion;

pub fn spawn_tunnel(client: OnUpgrade, server: OnUpgrade, mut done: Completion) {
    tokio::task::spawn_local(async move {
        let (client, server) = match tokio::try_join!(client, server) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((up, down)) => {
                done.bytes = down;
                done.complete = true;
                tracing::debug!(up, down, "upgraded tunnel closed");
            }
            Err(e) => tracing::debug!(error = %e, "upgraded tunnel ended with error"),
        }
        // Accounting happens here, when the tunnel is over.
        drop(done);
    });
}
