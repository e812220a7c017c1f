//! Our own HTTP/1.1 server for client connections (plain and TLS).
//!
//! hyper's HTTP/1 server kept an 8 KiB read and write buffer and a header map
//! per connection for its whole life, ran every request through its
//! dispatcher, and accepted framing tandem must refuse (so a second parser
//! watched the bytes beside it). This codec is strict by construction and
//! holds nothing while a connection waits:
//!
//! - [`head`] parses and checks request heads (httparse underneath): every
//!   ambiguous framing is refused with 400, oversized heads with 431;
//! - [`decode`] follows a request body (length or chunked) in the read buffer;
//! - [`wire`] shares the client stream between the loop and the request body
//!   that reads from it (and sends `100 Continue` when the body is wanted);
//! - [`encode`] frames and writes response heads;
//! - [`conn`] is the connection loop: timers, pipelining in order, responses
//!   streamed (chunked when the length is unknown), early answers, upgrades
//!   handed to the tunnel, refusals answered and counted, and the read buffer
//!   given back to the worker's pool between requests.
//!
//! HTTP/2 (h2c and over TLS) stays on hyper (`listener::http`).

pub mod conn;
pub mod decode;
pub mod encode;
pub mod head;
pub mod wire;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::listener::context::Worker;
use crate::listener::http::proxy::ConnInfo;
use wire::{ClientStream, Wire};

/// Serves HTTP/1.1 on `io`; `first` holds bytes already read (possibly
/// none), `started` is the accept time (the first head's `client_header`
/// budget runs from it).
pub async fn serve<S: ClientStream>(
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    io: S,
    first: BytesMut,
    started: Instant,
    stop: watch::Receiver<bool>,
) {
    let header = info.listener.config.timeouts.client_header;
    let wire = Rc::new(RefCell::new(Wire::new(io, first)));
    let conn = conn::Conn::new(worker, info, wire, stop, started + header);
    conn.run(started).await;
}
