//! Our own HTTP/1.1 client for the proxy -> server leg.
//!
//! hyper's client connection runs as a separate task fed through channels:
//! per request a message send, a oneshot reply, a body channel and wake-ups
//! across two tasks. Profiling showed that leg at about a third of the proxy's
//! instructions per small request. A proxy needs much less from a client: it
//! writes a head it has already rewritten, streams the client's body, reads one
//! response head and hands the body through. This module does exactly that,
//! inline in the request's task, on a plain `TcpStream`:
//!
//! - [`response`] parses a response head (httparse) into `http` types and
//!   decides the body's framing and the connection's reuse (RFC 9112 §6.3);
//!   hop-by-hop headers are dropped while the head is built.
//! - [`chunked`] decodes a chunked body incrementally.
//! - [`client_body`] counts the client's body bytes for the access log.
//! - [`conn`] owns one connection: writes a request, reads the answer head.
//! - [`deadline`] says who an exchange waits for (server or client) and
//!   until when, so a slow upload is never taken for a slow server.
//! - [`body`] streams a response body off the connection and gives the
//!   connection back once the body has ended cleanly.
//!
//! The client side (requests from users) stays on hyper's server.

pub mod body;
pub mod chunked;
pub mod client_body;
pub mod conn;
pub mod deadline;
pub mod response;

pub use body::ResponseBody;
pub use client_body::ClientBody;
pub use conn::{Conn, Replay, ReqBody, SendError};
pub use deadline::Limits;
pub use response::{Framing, Head};

/// Largest response head accepted from a server.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;
