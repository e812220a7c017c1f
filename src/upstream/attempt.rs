//! Classification of one failed attempt to a server.
//!
//! A small `Copy` value decides, in one place, what a failure means for the
//! breaker, for retries, for metrics and for the client's status code. Nobody
//! matches on error strings.
//!
//! Every failure has a [`Side`]: a server failure (refused, reset, silent,
//! invalid, stalled mid-body) counts against that server's breaker and error
//! metric; a client failure (a malformed, aborted or stalled upload) says
//! nothing about the server and is never recorded against it, else one client
//! could open the breaker of every healthy server.

use std::sync::Arc;

use http::StatusCode;
use tokio::time::Instant;

use crate::upstream::ServerState;

/// Why an attempt to a server did not produce a usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host name has not resolved to any address.
    NoAddress,
    /// The server refused or the connect failed outright.
    ConnectError,
    /// No connection within `timeouts.connect`.
    ConnectTimeout,
    /// The TLS handshake with the server failed (certificate not trusted,
    /// wrong name, client certificate refused): a connect error.
    Tls,
    /// The connection broke after the request was (at least partly) sent and
    /// before a response head arrived.
    Reset,
    /// No response head within `timeouts.response`.
    ResponseTimeout,
    /// The server answered something that is not valid HTTP/1.1.
    InvalidResponse,
    /// A response whose status is in `circuit_breaker.failure_status`.
    Status(u16),
    /// A response body made no progress for `timeouts.read`.
    ReadTimeout,
    /// The client's request body failed while it was being sent: the
    /// client's fault, never counted against the server.
    Client(ClientFault),
}

/// How a client's upload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// Malformed framing (an invalid chunk): a hostile or broken client.
    Malformed,
    /// The client went away or reset its stream mid-upload.
    Aborted,
    /// No byte of the body arrived for the listener's `client_idle`.
    Stalled,
}

/// Whose behaviour caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Failure {
    /// True when nothing of the request reached the server, so any method may
    /// be retried elsewhere.
    pub fn before_send(self) -> bool {
        matches!(
            self,
            Failure::NoAddress | Failure::ConnectError | Failure::ConnectTimeout | Failure::Tls
        )
    }

    /// Whose fault this is: only [`Side::Server`] failures reach a server's
    /// breaker and error metric.
    pub fn side(self) -> Side {
        match self {
            Failure::Client(_) => Side::Client,
            _ => Side::Server,
        }
    }

    /// Label for `tandem_upstream_errors_total{kind}` (server failures) and
    /// for logs.
    pub fn kind(self) -> &'static str {
        match self {
            Failure::NoAddress => "resolve",
            Failure::ConnectError => "connect",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Tls => "tls",
            Failure::Reset => "reset",
            Failure::ResponseTimeout => "response_timeout",
            Failure::InvalidResponse => "invalid_response",
            Failure::Status(_) => "status",
            Failure::ReadTimeout => "read_timeout",
            Failure::Client(ClientFault::Malformed) => "client_malformed",
            Failure::Client(ClientFault::Aborted) => "client_aborted",
            Failure::Client(ClientFault::Stalled) => "client_stalled",
        }
    }

    /// The status the client gets when this is the final outcome and no
    /// server response can be passed through.
    pub fn client_status(self) -> StatusCode {
        match self {
            // nginx answers a connect timeout with 504 too: both are "the
            // server did not answer in time".
            Failure::ResponseTimeout | Failure::ConnectTimeout | Failure::ReadTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Failure::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            // Nobody may be left to read it (the client went away), but a
            // client that only half-closed gets a clear answer.
            Failure::Client(ClientFault::Malformed | ClientFault::Aborted) => {
                StatusCode::BAD_REQUEST
            }
            Failure::Client(ClientFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Records a server failure against `server`: its error counter and its
/// breaker. A client failure is ignored here, whoever reports it.
pub fn record_against(server: &Arc<ServerState>, f: Failure, now: Instant) {
    if f.side() == Side::Client {
        return;
    }
    server.metrics.error(f.kind());
    if let Some(t) = server.breaker.record_failure(now) {
        crate::upstream::log_breaker_transition(server, &t);
    }
}

/// Records a success of `server` with its breaker (lock-free in the common
/// case: closed with nothing counted).
pub fn record_success(server: &Arc<ServerState>, now: Instant) {
    if let Some(t) = server.breaker.record_success(now) {
        crate::upstream::log_breaker_transition(server, &t);
    }
}

/// True for methods that may be retried after the request was sent (idempotent, bodyless).
pub fn retryable_after_send(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connect_side_failures_are_before_send() {
        assert!(Failure::ConnectError.before_send());
        assert!(Failure::ConnectTimeout.before_send());
        assert!(Failure::NoAddress.before_send());
        assert!(Failure::Tls.before_send());
        assert_eq!(Failure::Tls.client_status(), 502);
        assert!(!Failure::Reset.before_send());
        assert!(!Failure::ResponseTimeout.before_send());
        assert!(!Failure::Status(503).before_send());
    }

    #[test]
    fn client_status_maps_timeouts_to_504_and_others_to_502() {
        assert_eq!(Failure::ResponseTimeout.client_status(), 504);
        assert_eq!(Failure::ConnectTimeout.client_status(), 504);
        assert_eq!(Failure::Reset.client_status(), 502);
        assert_eq!(Failure::InvalidResponse.client_status(), 502);
        assert_eq!(Failure::Status(503).client_status(), 503);
        assert_eq!(Failure::ReadTimeout.client_status(), 504);
    }

    #[test]
    fn client_failures_are_the_clients_side_and_never_before_send() {
        for (fault, status) in [
            (ClientFault::Malformed, 400),
            (ClientFault::Aborted, 400),
            (ClientFault::Stalled, 408),
        ] {
            let f = Failure::Client(fault);
            assert_eq!(f.side(), Side::Client, "{f:?}");
            assert_eq!(f.client_status(), status, "{f:?}");
            assert!(!f.before_send(), "{f:?}");
        }
        for f in [
            Failure::NoAddress,
            Failure::ConnectError,
            Failure::ConnectTimeout,
            Failure::Reset,
            Failure::ResponseTimeout,
            Failure::InvalidResponse,
            Failure::Status(503),
            Failure::ReadTimeout,
        ] {
            assert_eq!(f.side(), Side::Server, "{f:?}");
        }
        assert_eq!(Failure::ReadTimeout.kind(), "read_timeout");
    }

    #[test]
    fn only_server_failures_reach_the_breaker() {
        use crate::upstream::breaker::{BreakerConfig, Phase};
        use crate::upstream::ServerKey;
        let server = Arc::new(ServerState::new(
            u64::MAX,
            ServerKey {
                upstream: "attempt-test".into(),
                address: "127.0.0.1:1".into(),
            },
            Vec::new(),
            BreakerConfig {
                failure_threshold: 1,
                ..BreakerConfig::default()
            },
            Arc::new(crate::upstream::queue::Waiters::new("attempt-test")),
            Arc::new(crate::upstream::event::EventHooks::new("attempt-test")),
        ));
        let now = Instant::now();
        for fault in [
            ClientFault::Malformed,
            ClientFault::Aborted,
            ClientFault::Stalled,
        ] {
            record_against(&server, Failure::Client(fault), now);
        }
        assert_eq!(server.breaker.phase(now), Phase::Closed);
        record_against(&server, Failure::ReadTimeout, now);
        assert_eq!(server.breaker.phase(now), Phase::Open);
    }

    #[test]
    fn safe_methods_only_are_retried_after_send() {
        assert!(retryable_after_send(&http::Method::GET));
        assert!(retryable_after_send(&http::Method::HEAD));
        assert!(retryable_after_send(&http::Method::OPTIONS));
        assert!(!retryable_after_send(&http::Method::POST));
        assert!(!retryable_after_send(&http::Method::PUT));
    }
}
