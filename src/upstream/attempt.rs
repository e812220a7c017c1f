//! Classification of one failed attempt to a server.
//!
//! A small `Copy` value decides, in one place, what a failure means for the
//! breaker, for retries, for metrics and for the client's status code. Nobody
//! matches on error strings.

use http::StatusCode;

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
    /// The client's request body failed while it was being sent (malformed
    /// chunked framing, or the client went away): the client's fault, never
    /// counted against the server.
    ClientBody,
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

    /// Label for `tandem_upstream_errors_total{kind}`.
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
            Failure::ClientBody => "client_body",
        }
    }

    /// The status the client gets when this is the final outcome and no
    /// server response can be passed through.
    pub fn client_status(self) -> StatusCode {
        match self {
            // nginx answers a connect timeout with 504 too: both are "the
            // server did not answer in time".
            Failure::ResponseTimeout | Failure::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            Failure::ClientBody => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// True for methods that may be retried after the request was sent (SPEC §3).
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
        assert_eq!(Failure::ClientBody.client_status(), 400);
        assert!(!Failure::ClientBody.before_send());
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
