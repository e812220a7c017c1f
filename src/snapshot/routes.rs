//! A listener's routes compiled for look-ups whose cost does not grow with the
//! number of routes.
//!
//! Owns: turning the ordered route list of one listener into [`RouteTable`] when
//! a snapshot is built, and answering "which upstream" per request. The answer is
//! exactly the plain scan's: the first route (in file order) whose host and path
//! prefix both match, else the listener's default upstream.
//!
//! How: routes are grouped by their host condition — exact host (a hash map),
//! wildcard suffix (a hash map keyed by `.example.com`, probed once per dot of
//! the request host), and no host. Inside a group, path prefixes are kept in a
//! hash map from prefix to the first route index that has it, plus the sorted
//! list of distinct prefix lengths: a request probes one entry per length, never
//! one per route. The winner is the smallest route index over the (at most
//! three kinds of) matching groups, which is what first-match-wins means.
//!
//! Up to [`SCAN_LIMIT`] routes are scanned in order instead: for a handful of
//! routes a few string comparisons beat hashing the host and path.
//!
//! Hosts are compared case-insensitively: route hosts are stored lower-case and
//! the request host is lower-cased into a stack buffer only when it has an
//! upper-case byte. The maps use std's keyed hasher: request hosts and paths are
//! client input, so a fixed hash would invite collision floods.
//!
//! Tests: a property test checks the table against the plain scan on random
//! route tables and requests (`tests` below).

use std::collections::HashMap;

use crate::config::types::HostMatch;

/// One route as written, resolved to an upstream index.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub upstream: usize,
}

/// The compiled routes of one listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The routes as written, in file order.
    routes: Vec<Route>,
    /// Few routes: scan `routes` rather than probe the maps.
    scan: bool,
    exact: HashMap<Box<str>, PathGroup>,
    suffix: HashMap<Box<str>, PathGroup>,
    any_host: Option<PathGroup>,
}

/// The routes that share one host condition, by path prefix.
#[derive(Debug, Default)]
struct PathGroup {
    /// The first route index without a path prefix (matches every path).
    catch_all: Option<u32>,
    /// Prefix -> the first route index with exactly that prefix.
    prefixes: HashMap<Box<[u8]>, u32>,
    /// Distinct prefix lengths, ascending.
    lengths: Vec<usize>,
}

impl PathGroup {
    fn add(&mut self, index: u32, prefix: Option<&str>) {
        match prefix {
            None => {
                self.catch_all.get_or_insert(index);
            }
            Some(p) => {
                let bytes: Box<[u8]> = p.as_bytes().into();
                if let Err(pos) = self.lengths.binary_search(&bytes.len()) {
                    self.lengths.insert(pos, bytes.len());
                }
                self.prefixes.entry(bytes).or_insert(index);
            }
        }
    }

    /// The first route index of this group that matches `path`.
    fn first_match(&self, path: &[u8]) -> Option<u32> {
        let mut best = self.catch_all;
        for &len in &self.lengths {
            let Some(head) = path.get(..len) else { break };
            if let Some(&i) = self.prefixes.get(head) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        best
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Tables up to this many routes are scanned in order.
pub const SCAN_LIMIT: usize = 16;

/// Longest request host lower-cased on the stack; longer ones (beyond any valid
/// DNS name) are lower-cased on the heap.
const HOST_BUF: usize = 256;

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let scan = routes.len() <= SCAN_LIMIT;
        Self::build(routes, scan)
    }

    fn build(routes: Vec<Route>, scan: bool) -> Self {
        let mut t = RouteTable {
            routes: Vec::new(),
            scan,
            exact: HashMap::new(),
            suffix: HashMap::new(),
            any_host: None,
        };
        for (i, r) in routes.iter().enumerate().filter(|_| !scan) {
            // Routes beyond u32::MAX cannot come from a config file that fits
            // in memory; saturating keeps the order for any that did.
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let prefix = r.path_prefix.as_deref();
            match &r.host {
                None => t
                    .any_host
                    .get_or_insert_with(PathGroup::default)
                    .add(index, prefix),
                Some(HostMatch::Exact(h)) => t
                    .exact
                    .entry(h.to_ascii_lowercase().into())
                    .or_default()
                    .add(index, prefix),
                Some(HostMatch::Suffix(s)) => t
                    .suffix
                    .entry(s.to_ascii_lowercase().into())
                    .or_default()
                    .add(index, prefix),
            }
        }
        t.routes = routes;
        t
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The upstream of the first matching route, if any. `host` is without
    /// port.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if self.scan {
            return scan(&self.routes, host, path);
        }
        let path = path.as_bytes();
        let mut best = self.any_host.as_ref().and_then(|g| g.first_match(path));
        if let Some(host) = host {
            if !self.exact.is_empty() || !self.suffix.is_empty() {
                let mut buf = [0u8; HOST_BUF];
                let heap;
                let lower: &str = if !host.bytes().any(|b| b.is_ascii_uppercase()) {
                    host
                } else if let Some(dst) = buf.get_mut(..host.len()) {
                    dst.copy_from_slice(host.as_bytes());
                    dst.make_ascii_lowercase();
                    // ASCII lower-casing keeps UTF-8 valid; the fallback is unreachable.
                    std::str::from_utf8(dst).unwrap_or(host)
                } else {
                    heap = host.to_ascii_lowercase();
                    &heap
                };
                best = min_opt(best, self.host_match(lower, path));
            }
        }
        best.and_then(|i| self.routes.get(i as usize))
            .map(|r| r.upstream)
    }

    fn host_match(&self, host: &str, path: &[u8]) -> Option<u32> {
        let mut best = self.exact.get(host).and_then(|g| g.first_match(path));
        if !self.suffix.is_empty() {
            // `*.example.com` matches subdomains only: every suffix that starts
            // at a dot after the first byte.
            for (pos, _) in host.match_indices('.').filter(|&(p, _)| p > 0) {
                let Some(sfx) = host.get(pos..) else { continue };
                if let Some(g) = self.suffix.get(sfx) {
                    best = min_opt(best, g.first_match(path));
                }
            }
        }
        best
    }
}

/// First match in file order: the definition the compiled maps agree with.
fn scan(routes: &[Route], host: Option<&str>, path: &str) -> Option<usize> {
    routes.iter().find_map(|r| {
        let host_ok = match (&r.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostMatch::Exact(h)), Some(req)) => h.eq_ignore_ascii_case(req),
            (Some(HostMatch::Suffix(sfx)), Some(req)) => {
                req.len() > sfx.len()
                    && req
                        .get(req.len() - sfx.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(sfx))
            }
        };
        (host_ok && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p)))
            .then_some(r.upstream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(host: Option<HostMatch>, prefix: Option<&str>, upstream: usize) -> Route {
        Route {
            host,
            path_prefix: prefix.map(str::to_owned),
            upstream,
        }
    }

    #[test]
    fn first_match_wins_across_host_kinds() {
        let routes = vec![
            route(
                Some(HostMatch::Suffix(".example.com".into())),
                Some("/api"),
                1,
            ),
            route(Some(HostMatch::Exact("a.example.com".into())), None, 2),
            route(None, Some("/static"), 3),
            route(
                Some(HostMatch::Exact("a.example.com".into())),
                Some("/api/v2"),
                4,
            ),
        ];
        let t = RouteTable::build(routes.clone(), false);
        assert_eq!(
            RouteTable::build(routes, true).lookup(Some("A.Example.COM"), "/api/v2/x"),
            Some(1)
        );
        assert_eq!(t.lookup(Some("A.Example.COM"), "/api/v2/x"), Some(1));
        assert_eq!(t.lookup(Some("a.example.com"), "/static/x"), Some(2));
        assert_eq!(t.lookup(Some("b.example.com"), "/static/x"), Some(3));
        assert_eq!(t.lookup(None, "/api"), None);
        // A wildcard matches subdomains only, never the bare domain.
        assert_eq!(t.lookup(Some("example.com"), "/api"), None);
        assert_eq!(t.lookup(Some(".example.com"), "/api"), None);
        assert_eq!(t.lookup(Some("x.y.example.com"), "/api"), Some(1));
    }

    #[test]
    fn empty_table_matches_nothing() {
        assert_eq!(RouteTable::new(Vec::new()).lookup(Some("a"), "/"), None);
        assert_eq!(
            RouteTable::build(Vec::new(), false).lookup(Some("a"), "/"),
            None
        );
    }

    #[test]
    fn small_tables_are_scanned_and_large_ones_compiled() {
        let mk = |n: usize| {
            (0..n)
                .map(|i| route(None, Some("/x"), i))
                .collect::<Vec<_>>()
        };
        assert!(RouteTable::new(mk(SCAN_LIMIT)).scan);
        let big = RouteTable::new(mk(SCAN_LIMIT + 1));
        assert!(!big.scan);
        assert_eq!(big.lookup(None, "/x/y"), Some(0));
    }

    #[test]
    fn long_and_non_ascii_hosts_are_handled() {
        let long = format!("{}.example.com", "A".repeat(400));
        let t = RouteTable::build(
            vec![route(
                Some(HostMatch::Suffix(".example.com".into())),
                None,
                7,
            )],
            false,
        );
        assert_eq!(t.lookup(Some(&long), "/"), Some(7));
        assert_eq!(t.lookup(Some("É.example.com"), "/"), Some(7));
    }

    fn host_strategy() -> impl Strategy<Value = String> {
        // A small alphabet so random requests hit random routes often.
        prop::sample::select(vec![
            "a.x", "b.x", "A.X", "c.a.x", "x", "a.y", "b.a.x", ".x", "é.x",
        ])
        .prop_map(str::to_owned)
    }

    fn route_strategy() -> impl Strategy<Value = Route> {
        let host = prop_oneof![
            Just(None),
            host_strategy().prop_map(|h| Some(HostMatch::Exact(h.to_ascii_lowercase()))),
            prop::sample::select(vec![".x", ".a.x", ".y", ".X"])
                .prop_map(|s| Some(HostMatch::Suffix(s.to_ascii_lowercase()))),
        ];
        let prefix = prop_oneof![
            Just(None),
            prop::sample::select(vec!["/", "/a", "/ab", "/a/b", "/b", "/é", ""])
                .prop_map(|p| Some(p.to_owned())),
        ];
        (host, prefix, 0usize..6).prop_map(|(host, path_prefix, upstream)| Route {
            host,
            path_prefix,
            upstream,
        })
    }

    proptest! {
        #[test]
        fn compiled_table_agrees_with_the_plain_scan(
            routes in prop::collection::vec(route_strategy(), 0..24),
            requests in prop::collection::vec(
                (prop::option::of(host_strategy()),
                 prop::sample::select(vec!["/", "/a", "/ab", "/abc", "/a/b/c", "/b", "", "/é", "/c"])),
                1..16),
        ) {
            let table = RouteTable::build(routes.clone(), false);
            for (host, path) in requests {
                prop_assert_eq!(
                    table.lookup(host.as_deref(), path),
                    scan(&routes, host.as_deref(), path),
                    "host {:?} path {:?}", host, path
                );
            }
        }
    }
}
