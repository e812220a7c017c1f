//! tandem's integration tests: one binary, a module per area.
//!
//! Every test starts the real `tandem` binary on free loopback ports, mostly in
//! front of real Express backends (`examples/express-backend`, `npm ci` first).

// A test crate: panicking on a broken precondition is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod access_log;
mod bgp;
mod cli;
mod events;
mod ha;
mod hostile;
mod http1_codec;
mod http_proxy;
mod lifecycle;
mod operations;
mod queue;
mod regions;
mod resilience;
mod resource_control;
mod tcp_proxy;
mod tls;
mod tls_upstream;
mod upstream_leg;
mod websocket;
