//! tandem — a high-availability TCP/HTTP load balancer.
//!
//! # Architecture
//!
//! ```text
//!            control thread (multi-purpose tokio runtime)
//!   ┌───────────────────────────────────────────────────────────────┐
//!   │ app: startup, signals, reload, shutdown                       │
//!   │ admin API + /metrics      health probes      HA driver + VIP  │
//!   │ DNS re-resolution         SnapshotHandle (one ArcSwap)        │
//!   └──────────────┬───────────────────────────────┬────────────────┘
//!                  │ Arc<Snapshot> (load per request / connection)
//!   ┌──────────────▼─────────────┐   ┌─────────────▼──────────────┐
//!   │ worker 0: current-thread   │   │ worker 1: current-thread   │
//!   │ SO_REUSEPORT listeners,    │   │ runtime, same shape        │
//!   │ hyper h1/h2 server conns,  │   │                            │
//!   │ own h1 client + per-thread │   │                            │
//!   │ server connection pool     │   │                            │
//!   └────────────────────────────┘   └────────────────────────────┘
//! ```
//!
//! - [`config`]: YAML → validated [`config::Config`], with located errors.
//! - [`snapshot`]: everything derived from a config, swapped atomically on reload.
//! - [`upstream`]: servers, their shared atomic state (health, breaker, load),
//!   failover tiers, slow start, the per-server cap and its queue, TLS to
//!   servers, server event hooks, balancers, probes, our HTTP/1.1 client leg
//!   (`upstream::h1`) and the per-thread connection pool.
//! - [`listener`]: accept loops, the L7 proxy and the L4 relay, TLS termination.
//! - [`cert`]: PEM certificates and keys, their names and expiry (below both
//!   config validation and serving).
//! - [`worker`]: one thread + current-thread runtime per core; the context its
//!   tasks share (`listener::context::Worker`) sits below the accept loops.
//! - [`admin`], [`metrics`], [`telemetry`], [`access_log`]: the operator's view;
//!   [`audit`]: who changed what; [`state_file`]: the operator's server states
//!   across restarts.
//! - [`ha`]: active/standby pairing: wire format, pure role machine, driver, VIP.
//! - [`hook`]: running an operator's executable (HA notify and server event hooks).
//! - [`app`]: the composition root that owns startup, reload and shutdown.
//!
//! The hot path holds no locks: a request loads the snapshot once, reads server
//! state from atomics and uses its own thread's connection pool (the one lock, the
//! upstream's wait queue, is taken only while requests wait for a capped server).

pub mod access_log;
pub mod admin;
pub mod app;
pub mod audit;
pub mod bufpool;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ha;
pub mod hook;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod reload;
pub mod snapshot;
pub mod state_file;
pub mod telemetry;
pub mod upstream;
pub mod worker;
