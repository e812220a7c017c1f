//! A process-wide time origin so instants can live in atomics as nanoseconds.
//!
//! Shared runtime state (breaker deadlines, EWMA stamps) is stored in `AtomicU64`
//! as nanoseconds since [`origin`]. Everything uses `tokio::time::Instant`, so a
//! paused tokio clock in tests drives these values too.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The instant all atomic timestamps count from, fixed at first use.
pub fn origin() -> Instant {
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds from [`origin`] to `at` (0 if `at` is earlier).
pub fn nanos_since_origin(at: Instant) -> u64 {
    let d = at.saturating_duration_since(origin());
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds from [`origin`] to now.
pub fn now_ns() -> u64 {
    nanos_since_origin(Instant::now())
}

/// The instant `ns` nanoseconds after [`origin`].
pub fn instant_at(ns: u64) -> Instant {
    origin() + Duration::from_nanos(ns)
}
