#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
use super::*;

#[test]
fn durations_need_a_unit() {
    assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
    let e = duration("5").unwrap_err();
    assert!(e.contains("\"5\" has no unit"), "{e}");
    assert!(duration("soon").is_err());
    assert!(duration("").is_err());
}

#[test]
fn binds_take_ip_and_port() {
    assert_eq!(bind("0.0.0.0:0"), Ok("0.0.0.0:0".parse().unwrap()));
    assert_eq!(bind("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
    assert!(bind("localhost:80")
        .unwrap_err()
        .contains("not a host name"));
    assert!(bind("1.2.3.4").is_err());
    assert!(bind("1.2.3.4:70000").is_err());
}

#[test]
fn server_addresses_split_host_and_port() {
    assert_eq!(server_address("app-1:3000"), Ok(("app-1".into(), 3000)));
    assert_eq!(server_address("10.0.0.1:80"), Ok(("10.0.0.1".into(), 80)));
    assert_eq!(server_address("[::1]:80"), Ok(("::1".into(), 80)));
    for bad in [
        "app-2:",
        "app",
        ":80",
        "app:0",
        "app:65536",
        "::1:80",
        "-app:80",
        "a_b:80",
        "300.1.1.1:80",
        "[zz]:80",
    ] {
        let e = server_address(bad).unwrap_err();
        assert!(
            e.starts_with(&format!("invalid socket address \"{bad}\"")),
            "{e}"
        );
    }
}

#[test]
fn route_hosts_lowercase_and_wildcard() {
    assert_eq!(
        route_host("API.Example.com"),
        Ok(HostMatch::Exact("api.example.com".into()))
    );
    assert_eq!(
        route_host("*.Example.com"),
        Ok(HostMatch::Suffix(".example.com".into()))
    );
    assert!(route_host("api.*.com").is_err());
    assert!(route_host("*example.com").is_err());
    assert!(route_host("api.example.com:8080")
        .unwrap_err()
        .contains("port"));
}

#[test]
fn hash_keys() {
    assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
    assert_eq!(
        hash_key("header:X-User"),
        Ok(HashKey::Header("x-user".into()))
    );
    assert_eq!(hash_key("cookie:sid"), Ok(HashKey::Cookie("sid".into())));
    assert!(hash_key("header:").is_err());
    assert!(hash_key("query:id").is_err());
    assert!(hash_key("ip").is_err());
}

#[test]
fn status_ranges() {
    assert_eq!(status_range("200-399"), Ok((200, 399)));
    assert_eq!(status_range("204"), Ok((204, 204)));
    assert!(status_range("399-200").is_err());
    assert!(status_range("2xx").is_err());
    assert!(status_range("99").is_err());
}

#[test]
fn vips() {
    assert_eq!(
        vip("10.0.0.100/24"),
        Ok(("10.0.0.100".parse().unwrap(), 24))
    );
    assert!(vip("10.0.0.100").is_err());
    assert!(vip("10.0.0.100/0").is_err());
    assert!(vip("10.0.0.100/33").is_err());
    assert_eq!(vip("fd00::1/64"), Ok(("fd00::1".parse().unwrap(), 64)));
    assert_eq!(vip("fd00::1/128"), Ok(("fd00::1".parse().unwrap(), 128)));
    assert!(vip("fd00::1/129").is_err());
    assert!(vip("::/64").is_err());
    assert!(vip("ff02::1/64").is_err());
}

#[test]
fn workers_auto_or_count() {
    assert_eq!(workers("auto", 8), Ok(8));
    assert_eq!(workers("auto", 0), Ok(1));
    assert_eq!(workers("3", 8), Ok(3));
    assert!(workers("0", 8).is_err());
    assert!(workers("many", 8).is_err());
}

#[test]
fn names() {
    assert!(name("web-1.a_b").is_ok());
    assert!(name("").is_err());
    assert!(name("has space").is_err());
}
