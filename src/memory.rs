//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps memory that a burst of connections freed (slow
//! readers' relay buffers, thousands of short-lived connections) in its arenas,
//! one per worker thread, and returns only what sits at the top of the main
//! heap. An RSS that stays at its peak after the clients left looks like a leak
//! to an operator and is memory other processes cannot use. `malloc_trim(0)`
//! releases every arena's free pages. It is cheap next to serving (it walks the
//! free lists once) and runs on the control thread, off the request path, every
//! [`TRIM_EVERY`]; HAProxy trims the same way after releasing pools.
//!
//! Other allocators (musl's) return memory on their own: there the task is a
//! no-op. Tested end to end by `hostile::slow_clients` (RSS after slow readers
//! leave).

use std::time::Duration;

/// How often freed memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Hands freed heap pages back to the system, every [`TRIM_EVERY`], until the
/// task is dropped.
pub async fn keep_trimmed() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim();
    }
}

/// Releases free memory at the top of the heap and inside every arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only reorganises the
    // allocator's own free lists under its own locks; it is safe to call from
    // any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
