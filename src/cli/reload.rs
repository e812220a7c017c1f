//! `tandem reload`: asks a running tandem to reload through its admin API and
//! turns the answer into an exit status, so `systemctl reload` (and scripts) can
//! see a refused configuration. SIGHUP cannot: it has no answer.
//!
//! Owns: choosing the admin address and token (flags first, else the
//! configuration file), checking that file before anything is sent (as
//! `tandem check` does), one `POST /reload` over plain HTTP/1.1, and reading
//! the JSON answer. Does not own the reload itself (`reload.rs`).
//! Tested by `tests/cli.rs` against a real tandem, and the answer handling by
//! the unit tests below.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;

use crate::upstream::h1::chunked::{Chunk, Decoder};
use crate::upstream::h1::{response, Framing};

/// How long to wait for tandem to answer: a reload resolves server names, reads
/// certificates and binds new listeners, which can take a few seconds; systemd's
/// own limit for `ExecReload` is 90 s by default.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer read; tandem's are a few kilobytes even with many errors.
const MAX_ANSWER: usize = 1 << 20;

/// Why `tandem reload` failed; `Display` is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The local file is invalid: nothing was sent.
    #[error("{0}\nnot reloaded: the configuration file is invalid (nothing was sent)")]
    LocalConfig(crate::config::ConfigErrors),
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the admin API at {addr}: {source} (is tandem running, and is admin.bind {addr}?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {what}")]
    Protocol { addr: SocketAddr, what: String },
    /// tandem refused the new configuration and kept the old one.
    #[error("{}not reloaded: {message}", errors.iter().map(|e| format!("{e}\n")).collect::<String>())]
    Refused {
        message: String,
        errors: Vec<String>,
    },
    /// Any other answer (401 without the right token, 503 while stopping, ...).
    #[error("admin API answered {status}: {message}")]
    Status { status: u16, message: String },
}

/// Where to send the request and with which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Decides the target. `config` is checked first when given (or when no
/// `--admin` is given, `./proxy.yaml`): a file that `tandem check` refuses is
/// never sent, and its errors are returned. Flags win over the file.
pub fn target(
    config: Option<&Path>,
    admin: Option<SocketAddr>,
    token_file: Option<&Path>,
) -> Result<Target, ReloadError> {
    let (addr, file_token) = match (admin, config) {
        (Some(addr), None) => (addr, None),
        (admin, config) => {
            let file = config.unwrap_or(Path::new("proxy.yaml"));
            let c = crate::config::load(file).map_err(ReloadError::LocalConfig)?;
            (admin.unwrap_or(c.admin.bind), c.admin.token)
        }
    };
    let token = match token_file {
        Some(path) => Some(read_token(path)?),
        None => file_token,
    };
    Ok(Target {
        addr: connectable(addr),
        token,
    })
}

fn read_token(path: &Path) -> Result<String, ReloadError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim_end().to_owned())
        .map_err(|source| ReloadError::TokenFile {
            path: path.to_owned(),
            source,
        })
}

/// An admin API bound to all addresses (`0.0.0.0`, `[::]`) is reached on loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Sends `POST /reload` and returns the new generation.
pub fn send(target: &Target) -> Result<u64, ReloadError> {
    let addr = target.addr;
    let connect = |source| ReloadError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(connect)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .map_err(connect)?;
    let auth = target
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n{auth}Connection: close\r\n\r\n"
    );
    let protocol = |what: String| ReloadError::Protocol { addr, what };
    stream
        .write_all(request.as_bytes())
        .map_err(|e| protocol(format!("sending the request: {e}")))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut raw)
        .map_err(|e| protocol(format!("reading the answer: {e}")))?;
    let (status, body) = split_answer(&raw).map_err(protocol)?;
    interpret(status, &body)
}

/// Status code and body of a complete HTTP/1.1 answer.
fn split_answer(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut buf = BytesMut::from(raw);
    let head = match response::parse(&mut buf, false, false) {
        Ok(Some(head)) => head,
        Ok(None) => return Err("the answer ended inside its head".into()),
        Err(e) => return Err(format!("not an HTTP answer ({e:?})")),
    };
    let body = match head.framing {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            buf.get(..n)
                .ok_or("the answer ended inside its body")?
                .to_vec()
        }
        Framing::Close | Framing::Upgrade => buf.to_vec(),
        Framing::Chunked => {
            let mut decoder = Decoder::default();
            let mut body = Vec::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(Chunk::Data(d))) => body.extend_from_slice(&d),
                    Ok(Some(Chunk::End(_))) => break body,
                    Ok(None) => return Err("the answer ended inside its body".into()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    };
    Ok((head.status.as_u16(), body))
}

/// 200 `{"generation": N}` -> N; 400 with `errors` -> `Refused`; else `Status`.
fn interpret(status: u16, body: &[u8]) -> Result<u64, ReloadError> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = json["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    match (status, json["generation"].as_u64()) {
        (200, Some(generation)) => Ok(generation),
        (400, _) => Err(ReloadError::Refused {
            message,
            errors: json["errors"]
                .as_array()
                .map(|errs| {
                    errs.iter()
                        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        _ => Err(ReloadError::Status { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_gives_the_generation() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n{\"generation\":7}";
        let (status, body) = split_answer(raw).unwrap();
        assert_eq!(interpret(status, &body).unwrap(), 7);
    }

    #[test]
    fn a_refusal_keeps_every_located_error() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n\
            52\r\n{\"error\":\"configuration invalid\",\"errors\":[\"p.yaml:1:2: a: x\",\"p.yaml:3:4: b: y\"]}\r\n0\r\n\r\n";
        let (status, body) = split_answer(raw).unwrap();
        let err = interpret(status, &body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:1:2: a: x\np.yaml:3:4: b: y\nnot reloaded: configuration invalid"
        );
    }

    #[test]
    fn other_answers_and_broken_ones_are_errors() {
        let err = interpret(401, b"{\"error\":\"missing or wrong bearer token\"}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "admin API answered 401: missing or wrong bearer token"
        );
        assert!(interpret(200, b"not json").is_err());
        assert!(split_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}").is_err());
        assert!(split_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn a_wildcard_admin_bind_is_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        let v6: SocketAddr = "[::]:9901".parse().unwrap();
        let other: SocketAddr = "10.0.0.1:9901".parse().unwrap();
        assert_eq!(connectable(v4), "127.0.0.1:9901".parse().unwrap());
        assert_eq!(connectable(v6), "[::1]:9901".parse().unwrap());
        assert_eq!(connectable(other), other);
    }
}
