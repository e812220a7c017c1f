//! Prometheus metrics: every name defined once here, handles resolved ahead of use.
//!
//! The families live in one process-wide [`Metrics`] registry. Components never
//! call `with_label_values` per request: `ServerMetrics`, `UpstreamMetrics`,
//! `ListenerMetrics` and `RouteMetrics` hold resolved handles and are built when
//! a snapshot is built (or when a listener/server first appears).
//!
//! One exception to "set when built": certificate expiry is exported as seconds
//! left, so the snapshot build records each certificate's `notAfter` and
//! [`Metrics::render`] turns it into seconds left at scrape time (a value
//! computed at build time would stop counting down between reloads).
//!
//! Per-server gauges that change rarely or continuously (in flight, weight,
//! admin state, tier) are refreshed at scrape time
//! (`admin::servers::refresh_gauges`; admin state and tier also when the
//! operator's state is applied), never per request.
//!
//! Every family is rendered, with HELP and TYPE, even before its first sample.
//! `tests/lifecycle/metrics_scrape.rs` checks each family and its type
//! on a real scrape and runs `promtool check metrics` on it.

use std::sync::{Mutex, OnceLock};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub const REQUESTS_TOTAL: &str = "tandem_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "tandem_request_duration_seconds";
pub const CONNECTIONS_ACTIVE: &str = "tandem_connections_active";
pub const CONNECTIONS_TOTAL: &str = "tandem_connections_total";
pub const UPSTREAM_SERVER_UP: &str = "tandem_upstream_server_up";
pub const CIRCUIT_BREAKER_STATE: &str = "tandem_circuit_breaker_state";
pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str = "tandem_circuit_breaker_transitions_total";
pub const HEALTH_CHECKS_TOTAL: &str = "tandem_health_checks_total";
pub const RETRIES_TOTAL: &str = "tandem_retries_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "tandem_upstream_errors_total";
pub const UPSTREAM_QUEUE_LENGTH: &str = "tandem_upstream_queue_length";
pub const UPSTREAM_QUEUE_REJECTED_TOTAL: &str = "tandem_upstream_queue_rejected_total";
pub const CONFIG_RELOADS_TOTAL: &str = "tandem_config_reloads_total";
pub const CONFIG_GENERATION: &str = "tandem_config_generation";
pub const HA_ROLE: &str = "tandem_ha_role";
pub const HA_TRANSITIONS_TOTAL: &str = "tandem_ha_transitions_total";
pub const HA_HEARTBEATS_TOTAL: &str = "tandem_ha_heartbeats_total";
pub const HA_VIP_ERRORS_TOTAL: &str = "tandem_ha_vip_errors_total";
pub const HA_VIP_HELD: &str = "tandem_ha_vip_held";
pub const HA_CONFIG_IN_SYNC: &str = "tandem_ha_config_in_sync";
pub const REJECTED_REQUESTS_TOTAL: &str = "tandem_rejected_requests_total";
pub const TLS_CERTIFICATE_EXPIRY_SECONDS: &str = "tandem_tls_certificate_expiry_seconds";
pub const UPSTREAM_SERVER_REQUESTS_TOTAL: &str = "tandem_upstream_server_requests_total";
pub const UPSTREAM_SERVER_RESPONSE_SECONDS: &str = "tandem_upstream_server_response_seconds";
pub const UPSTREAM_SERVER_IN_FLIGHT: &str = "tandem_upstream_server_in_flight";
pub const UPSTREAM_SERVER_WEIGHT: &str = "tandem_upstream_server_weight";
pub const UPSTREAM_SERVER_ADMIN_STATE: &str = "tandem_upstream_server_admin_state";
pub const UPSTREAM_SERVER_TIER: &str = "tandem_upstream_server_tier";
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "tandem_access_log_dropped_total";

/// The `class` label values of [`UPSTREAM_SERVER_REQUESTS_TOTAL`], indexed by
/// `status / 100 - 2`.
const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Every metric family tandem exports.
pub struct Metrics {
    pub registry: Registry,
    /// Every family's HELP and TYPE, for families without samples.
    declared: Vec<Declared>,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub connections_active: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub server_up: IntGaugeVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub retries: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub queue_length: IntGaugeVec,
    pub queue_rejected: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub ha_role: IntGauge,
    pub ha_transitions: IntCounterVec,
    pub ha_heartbeats: IntCounterVec,
    pub ha_vip_errors: IntCounterVec,
    pub ha_vip_held: IntGaugeVec,
    pub ha_config_in_sync: IntGauge,
    pub rejected_requests: IntCounterVec,
    pub tls_certificate_expiry: IntGaugeVec,
    pub server_requests: IntCounterVec,
    pub server_response: HistogramVec,
    pub server_in_flight: IntGaugeVec,
    /// Fractional: slow start scales a weight by 0.1 .. 1.
    pub server_weight: prometheus::GaugeVec,
    pub server_admin_state: IntGaugeVec,
    pub server_tier: IntGaugeVec,
    /// Access log lines lost because the writer could not keep up (or the
    /// destination failed).
    pub access_log_dropped: IntCounter,
    /// (listener, certificate name, notAfter in Unix seconds) of the current
    /// generation; read at render time. Control plane only, never on a request.
    tls_not_after: Mutex<Vec<(String, String, i64)>>,
}

/// Registers families and remembers each one's HELP and TYPE, so a family
/// without samples yet still shows in the exposition (see [`Metrics::render`]).
struct Families {
    registry: Registry,
    declared: Vec<Declared>,
}

/// A family's name, help text and Prometheus type.
struct Declared {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

impl Families {
    fn counter_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> IntCounterVec {
        let v = IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "counter");
        v
    }

    fn gauge_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> IntGaugeVec {
        let v = IntGaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "gauge");
        v
    }

    fn float_gauge_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> prometheus::GaugeVec {
        let v = prometheus::GaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "gauge");
        v
    }

    fn counter(&mut self, name: &'static str, help: &'static str) -> IntCounter {
        let v = IntCounter::new(name, help)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "counter");
        v
    }

    fn gauge(&mut self, name: &'static str, help: &'static str) -> IntGauge {
        let v = IntGauge::new(name, help)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "gauge");
        v
    }

    fn histogram_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> HistogramVec {
        let v = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(Box::new(v.clone()), name, help, "histogram");
        v
    }

    fn register(
        &mut self,
        c: Box<dyn prometheus::core::Collector>,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) {
        // Names are unique constants above; a duplicate is a programming error that
        // the metrics test catches, so it is only logged here.
        if let Err(e) = self.registry.register(c) {
            tracing::error!(error = %e, "metric registration failed");
        }
        self.declared.push(Declared { name, help, kind });
    }
}

impl Metrics {
    fn new() -> Self {
        let mut r = Families {
            registry: Registry::new(),
            declared: Vec::new(),
        };
        let request_duration = r.histogram_vec(
            REQUEST_DURATION_SECONDS,
            "Time from request received to response complete.",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
            &["listener", "upstream"],
        );
        let m = Self {
            requests_total: r.counter_vec(
                REQUESTS_TOTAL,
                "HTTP requests answered, by status code.",
                &["listener", "upstream", "code"],
            ),
            request_duration,
            connections_active: r.gauge_vec(
                CONNECTIONS_ACTIVE,
                "Client connections open now.",
                &["listener"],
            ),
            connections_total: r.counter_vec(
                CONNECTIONS_TOTAL,
                "Client connections accepted.",
                &["listener"],
            ),
            server_up: r.gauge_vec(
                UPSTREAM_SERVER_UP,
                "1 when the server passes health checks.",
                &["upstream", "server"],
            ),
            breaker_state: r.gauge_vec(
                CIRCUIT_BREAKER_STATE,
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                &["upstream", "server"],
            ),
            breaker_transitions: r.counter_vec(
                CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
                "Circuit breaker state changes, by new state.",
                &["upstream", "server", "to"],
            ),
            health_checks: r.counter_vec(
                HEALTH_CHECKS_TOTAL,
                "Active health probes, by result.",
                &["upstream", "server", "result"],
            ),
            retries: r.counter_vec(
                RETRIES_TOTAL,
                "Extra attempts made on another server.",
                &["upstream"],
            ),
            upstream_errors: r.counter_vec(
                UPSTREAM_ERRORS_TOTAL,
                "Failed attempts to a server, by kind.",
                &["upstream", "server", "kind"],
            ),
            queue_length: r.gauge_vec(
                UPSTREAM_QUEUE_LENGTH,
                "Requests waiting for a server under max_requests_per_server.",
                &["upstream"],
            ),
            queue_rejected: r.counter_vec(
                UPSTREAM_QUEUE_REJECTED_TOTAL,
                "Requests answered 503 by the queue, by reason (full, timeout).",
                &["upstream", "reason"],
            ),
            config_reloads: r.counter_vec(
                CONFIG_RELOADS_TOTAL,
                "Configuration reloads, by result.",
                &["result"],
            ),
            config_generation: r.gauge(CONFIG_GENERATION, "Generation of the config in use."),
            ha_role: r.gauge(HA_ROLE, "HA role: 0 backup, 1 master, 2 fault."),
            ha_transitions: r.counter_vec(
                HA_TRANSITIONS_TOTAL,
                "HA role changes, by new role.",
                &["to"],
            ),
            ha_heartbeats: r.counter_vec(
                HA_HEARTBEATS_TOTAL,
                "HA heartbeats sent and received, by result.",
                &["direction", "result"],
            ),
            ha_vip_errors: r.counter_vec(
                HA_VIP_ERRORS_TOTAL,
                "Failed VIP operations (add, remove, arp), by operation.",
                &["op"],
            ),
            ha_vip_held: r.gauge_vec(
                HA_VIP_HELD,
                "Whether this node holds the VIP (1) or not (0), per VIP.",
                &["vip"],
            ),
            ha_config_in_sync: r.gauge(
                HA_CONFIG_IN_SYNC,
                "1 while the HA peer's traffic configuration hash equals this node's.",
            ),
            rejected_requests: r.counter_vec(
                REJECTED_REQUESTS_TOTAL,
                "Client requests refused by the proxy itself, by reason.",
                &["listener", "reason"],
            ),
            tls_certificate_expiry: r.gauge_vec(
                TLS_CERTIFICATE_EXPIRY_SECONDS,
                "Seconds until the TLS certificate expires (negative once expired).",
                &["listener", "name"],
            ),
            server_requests: r.counter_vec(
                UPSTREAM_SERVER_REQUESTS_TOTAL,
                "Responses received from a server, by status class.",
                &["upstream", "server", "class"],
            ),
            server_response: r.histogram_vec(
                UPSTREAM_SERVER_RESPONSE_SECONDS,
                "Time from sending a request to a server to its response head.",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ],
                &["upstream", "server"],
            ),
            server_in_flight: r.gauge_vec(
                UPSTREAM_SERVER_IN_FLIGHT,
                "Requests in flight to the server from this node.",
                &["upstream", "server"],
            ),
            server_weight: r.float_gauge_vec(
                UPSTREAM_SERVER_WEIGHT,
                "Effective weight of the server (operator override, else configured).",
                &["upstream", "server"],
            ),
            server_admin_state: r.gauge_vec(
                UPSTREAM_SERVER_ADMIN_STATE,
                "Operator's state of the server: 0 ready, 1 drain, 2 maint.",
                &["upstream", "server"],
            ),
            server_tier: r.gauge_vec(
                UPSTREAM_SERVER_TIER,
                "Failover tier of the server (0 = primary).",
                &["upstream", "server"],
            ),
            access_log_dropped: r.counter(
                ACCESS_LOG_DROPPED_TOTAL,
                "Access log lines dropped because the log could not keep up.",
            ),
            tls_not_after: Mutex::new(Vec::new()),
            registry: r.registry,
            declared: r.declared,
        };
        // Both outcomes exist from the start, so `rate()` over failures works
        // before the first failure.
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m
    }

    /// Replaces the certificates whose expiry is exported: series of
    /// certificates no longer configured disappear.
    pub fn set_tls_certificates(&self, certs: Vec<(String, String, i64)>) {
        let mut cur = self
            .tls_not_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (l, n, _) in cur.iter() {
            if !certs.iter().any(|(l2, n2, _)| l2 == l && n2 == n) {
                let _ = self.tls_certificate_expiry.remove_label_values(&[l, n]);
            }
        }
        *cur = certs;
        drop(cur);
        self.refresh_tls_expiry();
    }

    fn refresh_tls_expiry(&self) {
        let now = crate::listener::tls::unix_seconds(std::time::SystemTime::now());
        let cur = self
            .tls_not_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (l, n, not_after) in cur.iter() {
            self.tls_certificate_expiry
                .with_label_values(&[l, n])
                .set(not_after.saturating_sub(now));
        }
    }

    /// The text exposition of every family. The registry leaves out families
    /// without a sample (labelled ones before their first event, the HA ones
    /// without an `ha` section); their HELP and TYPE lines are added so a
    /// dashboard or alert can tell "none yet" from "not exported".
    pub fn render(&self) -> String {
        self.refresh_tls_expiry();
        let families = self.registry.gather();
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for d in &self.declared {
            if !families.iter().any(|f| f.name() == d.name) {
                text.push_str(&format!(
                    "# HELP {} {}\n# TYPE {} {}\n",
                    d.name, d.help, d.name, d.kind
                ));
            }
        }
        text
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Handles for one server of one upstream.
pub struct ServerMetrics {
    pub up: IntGauge,
    pub breaker_state: IntGauge,
    pub checks_pass: IntCounter,
    pub checks_fail: IntCounter,
    /// Responses by class, indexed as [`STATUS_CLASSES`].
    classes: [IntCounter; 4],
    /// Time to the response head.
    response: prometheus::Histogram,
    /// Set when scraped (from the server's in-flight count).
    pub in_flight: IntGauge,
    /// Effective weight, set when scraped (slow start changes it with time).
    pub weight: prometheus::Gauge,
    pub admin_state: IntGauge,
    pub tier: IntGauge,
    upstream: String,
    server: String,
}

impl ServerMetrics {
    pub fn new(upstream: &str, server: &str) -> Self {
        let m = global();
        Self {
            up: m.server_up.with_label_values(&[upstream, server]),
            breaker_state: m.breaker_state.with_label_values(&[upstream, server]),
            checks_pass: m
                .health_checks
                .with_label_values(&[upstream, server, "success"]),
            checks_fail: m
                .health_checks
                .with_label_values(&[upstream, server, "failure"]),
            classes: STATUS_CLASSES.map(|class| {
                m.server_requests
                    .with_label_values(&[upstream, server, class])
            }),
            response: m.server_response.with_label_values(&[upstream, server]),
            in_flight: m.server_in_flight.with_label_values(&[upstream, server]),
            weight: m.server_weight.with_label_values(&[upstream, server]),
            admin_state: m.server_admin_state.with_label_values(&[upstream, server]),
            tier: m.server_tier.with_label_values(&[upstream, server]),
            upstream: upstream.to_owned(),
            server: server.to_owned(),
        }
    }

    /// Records a response head received from this server `elapsed` after the
    /// request was sent: its status class and the time (hot path: resolved
    /// handles only). 1xx heads (a 101 upgrade) have no class and are not counted.
    pub fn response(&self, status: u16, elapsed: std::time::Duration) {
        let class = usize::from(status / 100).wrapping_sub(2);
        if let Some(c) = self.classes.get(class) {
            c.inc();
        }
        self.response.observe(elapsed.as_secs_f64());
    }

    /// Counts an upstream error. Errors are the rare path, so the label look-up
    /// happens here rather than holding a handle per kind.
    pub fn error(&self, kind: &str) {
        global()
            .upstream_errors
            .with_label_values(&[&self.upstream, &self.server, kind])
            .inc();
    }

    /// Records a breaker transition (rare path).
    pub fn breaker_transition(&self, to_label: &str, to_code: i64) {
        self.breaker_state.set(to_code);
        global()
            .breaker_transitions
            .with_label_values(&[&self.upstream, &self.server, to_label])
            .inc();
    }

    /// Removes this server's series when it leaves the configuration.
    pub fn remove(&self) {
        let m = global();
        let l = [self.upstream.as_str(), self.server.as_str()];
        let _ = m.server_up.remove_label_values(&l);
        let _ = m.breaker_state.remove_label_values(&l);
        let _ = m.server_weight.remove_label_values(&l);
        for g in [&m.server_in_flight, &m.server_admin_state, &m.server_tier] {
            let _ = g.remove_label_values(&l);
        }
        let _ = m.server_response.remove_label_values(&l);
        for class in STATUS_CLASSES {
            let _ = m.server_requests.remove_label_values(&[
                self.upstream.as_str(),
                self.server.as_str(),
                class,
            ]);
        }
    }
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    pub retries: IntCounter,
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> Self {
        Self {
            retries: global().retries.with_label_values(&[upstream]),
        }
    }
}

/// Handles for one upstream's queue (kept across reloads with the queue).
pub struct QueueMetrics {
    pub length: IntGauge,
    pub rejected_full: IntCounter,
    pub rejected_timeout: IntCounter,
}

impl QueueMetrics {
    pub fn new(upstream: &str) -> Self {
        let m = global();
        Self {
            length: m.queue_length.with_label_values(&[upstream]),
            rejected_full: m.queue_rejected.with_label_values(&[upstream, "full"]),
            rejected_timeout: m.queue_rejected.with_label_values(&[upstream, "timeout"]),
        }
    }
}

/// Handles for one listener.
pub struct ListenerMetrics {
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
    name: String,
}

impl ListenerMetrics {
    pub fn new(listener: &str) -> Self {
        let m = global();
        Self {
            connections_active: m.connections_active.with_label_values(&[listener]),
            connections_total: m.connections_total.with_label_values(&[listener]),
            name: listener.to_owned(),
        }
    }

    /// Counts a request the proxy refused itself (bad framing, timeouts...).
    pub fn rejected(&self, reason: &str) {
        global()
            .rejected_requests
            .with_label_values(&[&self.name, reason])
            .inc();
    }
}

/// Status codes common enough to hold a resolved counter for.
const COMMON_CODES: [u16; 14] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503,
];

/// Handles for one (listener, upstream) pair: request counts and durations.
pub struct RouteMetrics {
    pub duration: prometheus::Histogram,
    /// Resolved lazily so codes never seen export no zero series.
    common: [OnceLock<IntCounter>; COMMON_CODES.len()],
    listener: String,
    upstream: String,
}

impl RouteMetrics {
    pub fn new(listener: &str, upstream: &str) -> Self {
        let m = global();
        Self {
            duration: m.request_duration.with_label_values(&[listener, upstream]),
            common: Default::default(),
            listener: listener.to_owned(),
            upstream: upstream.to_owned(),
        }
    }

    /// Counts one answered request.
    pub fn count(&self, code: u16) {
        match COMMON_CODES.iter().position(|&c| c == code) {
            Some(i) => {
                if let Some(slot) = self.common.get(i) {
                    slot.get_or_init(|| {
                        global().requests_total.with_label_values(&[
                            &self.listener,
                            &self.upstream,
                            &code.to_string(),
                        ])
                    })
                    .inc();
                }
            }
            None => global()
                .requests_total
                .with_label_values(&[&self.listener, &self.upstream, &code.to_string()])
                .inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_responses_count_by_class_and_ignore_1xx() {
        let m = ServerMetrics::new("metrics-test", "127.0.0.1:1");
        for code in [200, 204, 302, 404, 503, 599, 101] {
            m.response(code, std::time::Duration::from_millis(3));
        }
        let counts: Vec<u64> = m.classes.iter().map(IntCounter::get).collect();
        assert_eq!(counts, vec![2, 1, 1, 2]);
        assert_eq!(m.response.get_sample_count(), 7);
        m.remove();
        let text = global().render();
        let left: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tandem_upstream_server_") && l.contains("metrics-test"))
            .collect();
        assert!(left.is_empty(), "series left after remove: {left:?}");
    }
}
