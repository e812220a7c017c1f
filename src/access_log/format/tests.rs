use std::time::{Duration, SystemTime};

use super::*;

fn record() -> HttpRecord<'static> {
    HttpRecord {
        // 2021-01-01T00:00:00.250Z
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_609_459_200_250),
        listener: "web",
        client: "192.0.2.7:51000".parse().unwrap(),
        method: "GET",
        host: Some(b"example.com"),
        path: "/a?b=c",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_in: 5,
        bytes_out: 38,
        upstream: Some("app"),
        server: Some("127.0.0.1:3001"),
        tier: 0,
        attempts: 2,
        request_id: Some(b"0123abcd"),
        duration: Duration::from_micros(12_345),
        connect: Some(Duration::ZERO),
        response: Some(Duration::from_micros(1_002)),
        tls: None,
        user_agent: Some(b"curl/8.5"),
        complete: true,
    }
}

fn json(r: &HttpRecord<'_>) -> serde_json::Value {
    let mut out = Vec::new();
    http(AccessLogFormat::Json, r, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn json_line_has_every_field_with_its_type() {
    let v = json(&record());
    let expected = serde_json::json!({
        "time": "2021-01-01T00:00:00.250Z",
        "listener": "web",
        "client": "192.0.2.7:51000",
        "method": "GET",
        "host": "example.com",
        "path": "/a?b=c",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes_in": 5,
        "bytes_out": 38,
        "upstream": "app",
        "server": "127.0.0.1:3001",
        "tier": 0,
        "attempts": 2,
        "request_id": "0123abcd",
        "duration_ms": 12.345,
        "connect_ms": 0.0,
        "response_ms": 1.002,
        "tls": null,
        "user_agent": "curl/8.5",
        "complete": true,
    });
    assert_eq!(v, expected);
}

#[test]
fn json_nulls_for_what_did_not_happen() {
    let mut r = record();
    r.server = None;
    r.upstream = None;
    r.connect = None;
    r.response = None;
    r.host = None;
    r.request_id = None;
    r.user_agent = None;
    let v = json(&r);
    for k in [
        "server",
        "upstream",
        "connect_ms",
        "response_ms",
        "host",
        "request_id",
        "user_agent",
    ] {
        assert!(v[k].is_null(), "{k} in {v}");
    }
}

#[test]
fn client_values_cannot_break_a_json_line() {
    let mut r = record();
    r.user_agent = Some(b"evil\"}\n{\"status\":1\\\x01\xff");
    r.path = "/x\ty";
    let v = json(&r);
    assert_eq!(v["user_agent"], "evil\"}\n{\"status\":1\\\u{1}\u{fffd}");
    assert_eq!(v["path"], "/x\ty");
    assert_eq!(v["status"], 200);
}

#[test]
fn text_line_is_logfmt_in_the_same_order() {
    let mut out = Vec::new();
    let mut r = record();
    r.user_agent = Some(b"Mozilla/5.0 (X11)");
    r.server = None;
    http(AccessLogFormat::Text, &r, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert_eq!(
        line,
        "time=2021-01-01T00:00:00.250Z listener=web client=192.0.2.7:51000 method=GET \
         host=example.com path=\"/a?b=c\" protocol=HTTP/1.1 status=200 bytes_in=5 bytes_out=38 \
         upstream=app server=- tier=0 attempts=2 request_id=0123abcd duration_ms=12.345 \
         connect_ms=0.000 response_ms=1.002 tls=- user_agent=\"Mozilla/5.0 (X11)\" \
         complete=true\n"
    );
}

#[test]
fn text_quotes_values_that_would_split_a_field() {
    let mut out = Vec::new();
    let mut r = record();
    r.path = "/a b=c\"\n";
    r.host = Some(b"-");
    http(AccessLogFormat::Text, &r, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(line.contains(" path=\"/a b=c\\\"\\n\" "), "{line}");
    assert!(line.contains(" host=\"-\" "), "{line}");
    assert_eq!(line.matches('\n').count(), 1);
}

fn tcp_record(end: TcpEnd) -> TcpRecord<'static> {
    TcpRecord {
        time: SystemTime::UNIX_EPOCH,
        listener: "db",
        client: "[::1]:4000".parse().unwrap(),
        upstream: "pg",
        server: Some("10.0.0.1:5432"),
        bytes_in: 100,
        bytes_out: 2000,
        duration: Duration::from_millis(1500),
        end,
    }
}

#[test]
fn tcp_json_line() {
    let mut out = Vec::new();
    tcp(
        AccessLogFormat::Json,
        &tcp_record(TcpEnd::ClientClosed),
        &mut out,
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "time": "1970-01-01T00:00:00.000Z",
            "listener": "db",
            "client": "[::1]:4000",
            "upstream": "pg",
            "server": "10.0.0.1:5432",
            "bytes_in": 100,
            "bytes_out": 2000,
            "duration_ms": 1500.0,
            "end": "client_closed",
        })
    );
}

#[test]
fn tcp_end_with_an_error_is_quoted_in_text() {
    let mut out = Vec::new();
    let r = tcp_record(TcpEnd::ServerError(std::io::ErrorKind::ConnectionReset));
    tcp(AccessLogFormat::Text, &r, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(
        line.ends_with(" end=\"server_error: connection reset\"\n"),
        "{line}"
    );
    let mut out = Vec::new();
    let r = tcp_record(TcpEnd::NoServer);
    tcp(AccessLogFormat::Text, &r, &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with(" end=no_server\n"));
}

#[test]
fn numbers_and_times_are_formatted_exactly() {
    for (n, text) in [
        (0u64, "0"),
        (7, "7"),
        (10, "10"),
        (65535, "65535"),
        (u64::MAX, "18446744073709551615"),
    ] {
        let mut out = Vec::new();
        push_u64(n, &mut out);
        assert_eq!(out, text.as_bytes());
    }
    let mut r = record();
    r.duration = Duration::from_micros(5);
    r.connect = Some(Duration::from_micros(1_000_070));
    let v = json(&r);
    assert_eq!(v["duration_ms"], 0.005);
    assert_eq!(v["connect_ms"], 1000.07);
    // Two lines in one second, then the next: each gets its own time.
    for (ms, text) in [
        (1_609_459_200_999u64, "2021-01-01T00:00:00.999Z"),
        (1_609_459_200_001, "2021-01-01T00:00:00.001Z"),
        (1_609_459_201_000, "2021-01-01T00:00:01.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
    ] {
        r.time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(json(&r)["time"], text);
    }
}
