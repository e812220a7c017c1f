//! HTTP/2 from clients: the per-connection limits, and the answer to a
//! plain-text connection whose HTTP/2 preface is broken.
//!
//! Owns what one HTTP/2 connection may cost. The streams a client may open
//! at once come from `listeners[].http2.max_concurrent_streams`; each
//! stream may hold at most [`STREAM_SEND_BUFFER`] of response data the client
//! has not taken yet, and hyper polls a response body only while its stream
//! has room, so a client that stops reading makes tandem stop reading from
//! the server (the body is read off the server socket in bounded frames, see
//! `upstream::h1::ResponseBody`). What a client may push at tandem is bounded
//! by the receive windows tandem advertises.
//!
//! Not owned here: the write-stall timeout (`listener::io`), the serving
//! loop (`listener::http`). The preface check is pure and unit-tested below;
//! the limits are tested end to end in `tests/hostile/h2_memory.rs`.

use hyper::server::conn::http2::Builder;
use hyper_util::rt::TokioTimer;

use crate::config::types::Http2Limits;

/// Response bytes one stream may hold that the client has not taken yet
/// (hyper's default is 400 KB, which with 256 streams let one connection
/// hold hundreds of MB).
pub const STREAM_SEND_BUFFER: usize = 64 * 1024;
/// Request body bytes one stream may send ahead of the server reading them.
const STREAM_RECV_WINDOW: u32 = 256 * 1024;
/// The same for all streams of a connection together.
const CONN_RECV_WINDOW: u32 = 1024 * 1024;

/// The first line of the HTTP/2 connection preface: a client that sends it
/// means HTTP/2, whatever follows.
const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";
/// The whole client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Applies the connection limits to hyper's HTTP/2 server builder.
pub fn configure<E>(builder: &mut Builder<E>, limits: Http2Limits, max_header_list: u32) {
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_send_buf_size(STREAM_SEND_BUFFER)
        .initial_stream_window_size(STREAM_RECV_WINDOW)
        .initial_connection_window_size(CONN_RECV_WINDOW)
        .adaptive_window(false)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .max_header_list_size(max_header_list);
}

/// True when the first bytes of a plain-text connection start the HTTP/2
/// preface's request line but are not the preface: HTTP/2 requires a
/// connection error (GOAWAY with PROTOCOL_ERROR), not an HTTP/1.1 answer.
pub fn is_bad_preface(first: &[u8]) -> bool {
    first.starts_with(PREFACE_LINE) && !first.starts_with(PREFACE)
}

/// What a connection with a broken preface gets: the server preface (an
/// empty SETTINGS frame) and GOAWAY(last stream 0, PROTOCOL_ERROR).
pub fn bad_preface_answer() -> Vec<u8> {
    const DEBUG: &[u8] = b"invalid connection preface";
    let mut out = Vec::with_capacity(9 + 9 + 8 + DEBUG.len());
    push_frame_head(&mut out, 0, 0x4);
    push_frame_head(&mut out, 8 + DEBUG.len(), 0x7);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&u32::from(h2::Reason::PROTOCOL_ERROR).to_be_bytes());
    out.extend_from_slice(DEBUG);
    out
}

/// A frame header on stream 0 without flags.
fn push_frame_head(out: &mut Vec<u8>, len: usize, kind: u8) {
    let len = u32::try_from(len).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(len.get(1..).unwrap_or_default());
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_preface_is_told_from_http1_and_from_the_real_one() {
        assert!(is_bad_preface(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"));
        assert!(is_bad_preface(b"PRI * HTTP/2.0\r\n\r\n"));
        assert!(is_bad_preface(b"PRI * HTTP/2.0 junk"));
        assert!(!is_bad_preface(PREFACE));
        assert!(!is_bad_preface(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04"
        ));
        assert!(!is_bad_preface(b"PRI * HTTP/1.1\r\n\r\n"));
        assert!(!is_bad_preface(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!is_bad_preface(b"PRI * HT"));
    }

    #[test]
    fn the_answer_is_settings_then_goaway_protocol_error() {
        let a = bad_preface_answer();
        // SETTINGS: length 0, type 4, no flags, stream 0.
        assert_eq!(&a[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let len = u32::from_be_bytes([0, a[9], a[10], a[11]]) as usize;
        assert_eq!(a[12], 7, "GOAWAY");
        assert_eq!(&a[13..18], &[0, 0, 0, 0, 0]);
        assert_eq!(a.len(), 18 + len);
        assert_eq!(&a[18..22], &[0, 0, 0, 0], "last stream id");
        assert_eq!(&a[22..26], &[0, 0, 0, 1], "PROTOCOL_ERROR");
    }
}
