//! Validated configuration: the plain types the rest of tandem consumes.
//!
//! Everything here has passed validation (`config::validate`): durations are
//! positive, cross-references resolve, names and binds are unique. Defaults are
//! already applied, so consumers never see an `Option` for a setting that has a
//! default. These types carry no YAML positions; errors are the loader's job.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated `proxy.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Worker threads (one current-thread runtime each). `auto` resolves to the
    /// number of cores at validation time.
    pub workers: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub shutdown_timeout: Duration,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    pub ha: Option<Ha>,
    /// `None`: no access log is written.
    pub access_log: Option<AccessLog>,
}

impl Config {
    /// The upstream with this name, if any.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Admin API address; `127.0.0.1:9901` by default.
    pub bind: SocketAddr,
    /// Bearer token guarding POST, PUT and DELETE endpoints, read from `token_file`
    /// (trailing whitespace trimmed). `None` when no `token_file` is set.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Where the operator's runtime server states are kept across restarts
    /// (`admin.state_file`); its directory exists (checked at validation).
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerMode {
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: ListenerMode,
    /// Default upstream (name; validated to exist).
    pub upstream: String,
    /// HTTP only; empty for tcp listeners (validation rejects routes there).
    pub routes: Vec<Route>,
    pub tls: Option<Tls>,
    pub timeouts: ListenerTimeouts,
    /// Connections beyond this wait in the accept backlog. Default 10000.
    pub max_connections: usize,
    /// HTTP/2 limits per client connection.
    pub http2: Http2Limits,
}

/// `listeners[].http2`: what one HTTP/2 client connection may hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams open at once on one connection; default 100.
    pub max_concurrent_streams: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: Option<HostMatch>,
    /// Matched against the request path as a plain string prefix.
    pub path_prefix: Option<String>,
    pub upstream: String,
}

/// A route's `host`: stored lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com` stored as the suffix `.example.com`; matches subdomains only.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// At least one; the first is the default when SNI matches none.
    pub certificates: Vec<CertificatePaths>,
    /// Default `[h2, http/1.1]` for http listeners, empty for tcp.
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListenerTimeouts {
    /// Time to receive request headers; default 10s.
    pub client_header: Duration,
    /// Idle keep-alive / idle tcp connection; default 60s.
    pub client_idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BalanceKind {
    RoundRobin,
    LeastConnections,
    RandomTwo,
    PeakEwma,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    ClientIp,
    /// Header name, lower-case.
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub balance: BalanceKind,
    /// `Some` exactly when `balance` is `ConsistentHash` (default `ClientIp`).
    pub hash_key: Option<HashKey>,
    pub servers: Vec<Server>,
    /// Default 30s.
    pub resolve_interval: Duration,
    pub health_check: Option<HealthCheck>,
    pub circuit_breaker: CircuitBreaker,
    /// Extra attempts on other servers; default 2.
    pub retries: u32,
    pub timeouts: UpstreamTimeouts,
    pub pool: Pool,
    /// How traffic moves to higher tiers; default `AllDown`.
    pub failover: Failover,
    /// Ramp of a (re)joining server's share; `None` = full share at once.
    pub slow_start: Option<Duration>,
    /// In-flight cap per server across the node; 0 = none.
    pub max_requests_per_server: u32,
    /// Requests waiting for a capped server.
    pub queue: Queue,
    /// Executables run on server events.
    pub notify: ServerNotify,
    /// TLS to the servers (and their probes); `None` = plain TCP.
    pub tls: Option<UpstreamTls>,
}

/// `upstreams[].tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// PEM roots; `None` = the system's.
    pub ca: Option<PathBuf>,
    /// Name sent as SNI and checked; `None` = each server's host.
    pub server_name: Option<String>,
    /// Client certificate and key (mTLS).
    pub client: Option<CertificatePaths>,
    /// Default true; false accepts any certificate.
    pub verify: bool,
}

/// `upstreams[].notify`: hooks run on server events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerNotify {
    pub down: Option<PathBuf>,
    pub up: Option<PathBuf>,
    pub breaker_open: Option<PathBuf>,
}

/// `upstreams[].failover`: when higher tiers take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Failover {
    /// A tier takes traffic only when every lower tier has no available server.
    #[default]
    AllDown,
    /// A tier keeps min(1, 1.4 x available / configured weight) of the traffic.
    Gradual,
}

/// `upstreams[].queue`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Queue {
    /// Default 1000.
    pub size: usize,
    /// Default 5s.
    pub timeout: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            size: 1000,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// As written: `IP:PORT` or `HOST:PORT`. This string (with the upstream name)
    /// is the server's identity across reloads.
    pub address: String,
    /// Host part (IP literal or name) and port, split at validation.
    pub host: String,
    pub port: u16,
    /// 0 = drained. Default 1.
    pub weight: u32,
    /// Failover tier 0..=7; default 0 (the primary).
    pub tier: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Defaults: interval 2s, timeout 1s, rise 2, fall 3.
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Tcp,
    Http {
        path: String,
        host: Option<String>,
        /// Inclusive status range; default 200..=399.
        expect_status: (u16, u16),
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    /// Defaults: 5, 30s, 5s, [502, 503, 504].
    pub failure_threshold: u32,
    pub reset_timeout: Duration,
    pub monitor_interval: Duration,
    pub failure_status: Vec<u16>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            monitor_interval: Duration::from_secs(5),
            failure_status: vec![502, 503, 504],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamTimeouts {
    /// Defaults: connect 2s, response 30s, idle 4s.
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
    /// A response body that makes no progress this long is aborted; default 30s.
    pub read: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    /// Default 64.
    pub max_idle_per_server: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ha {
    pub node_id: String,
    pub bind: SocketAddr,
    pub peer: SocketAddr,
    /// 1..=254.
    pub priority: u8,
    /// Default true.
    pub preempt: bool,
    /// Defaults 200ms and 1s; dead_interval > heartbeat_interval.
    pub heartbeat_interval: Duration,
    pub dead_interval: Duration,
    pub secret_file: PathBuf,
    /// The key read from `secret_file` (>= 32 bytes).
    pub secret: Vec<u8>,
    /// `ha.vips`, or the one `ha.vip`; empty without either. At most 16.
    pub vips: Vec<Vip>,
    /// Upstream names; validated to exist.
    pub track_upstreams: Vec<String>,
    pub notify: Notify,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vip {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
    pub interface: String,
    /// Default 3.
    pub gratuitous_arp: u32,
    /// This node's priority for this VIP (`ha.vips[].priority`); `None`: `ha.priority`.
    pub priority: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notify {
    pub master: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    pub fault: Option<PathBuf>,
}

/// `access_log`: one line per HTTP request and per TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: LogTarget,
    /// Default `Json`.
    pub format: AccessLogFormat,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// A file, opened for appending (relative paths resolved against the
    /// config file's directory); SIGUSR1 reopens it.
    File(PathBuf),
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object a line.
    Json,
    /// One `key=value` line (logfmt).
    Text,
}
