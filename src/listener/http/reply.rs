//! Responses the proxy makes itself: short plain-text bodies (400, 408, 431, 502, 503, 504).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{Completion, ProxyBody};

/// A local error response, accounted through `done` when given.
pub fn error(status: StatusCode, done: Option<Completion>, close: bool) -> Response<ProxyBody> {
    let text = match status {
        StatusCode::BAD_REQUEST => "bad request\n",
        StatusCode::REQUEST_TIMEOUT => "request timeout\n",
        StatusCode::BAD_GATEWAY => {
            "bad gateway: the server refused, reset or sent an invalid response\n"
        }
        StatusCode::SERVICE_UNAVAILABLE => "service unavailable: no server available\n",
        StatusCode::GATEWAY_TIMEOUT => "gateway timeout: no response from the server in time\n",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let mut done = done;
    if let Some(d) = done.as_mut() {
        d.status = status.as_u16();
    }
    let mut resp = Response::new(ProxyBody::Local {
        data: Some(Bytes::from_static(text.as_bytes())),
        done,
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
