//! tandem's integration tests: one binary, a module per area.
//!
//! Every test starts the real `tandem` binary on free loopback ports, mostly in
//! front of real Express backends (`examples/express-backend`, `npm ci` first).

mod support;

mod cli;
mod http_proxy;
mod tcp_proxy;
