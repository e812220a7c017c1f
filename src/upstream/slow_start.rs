//! Slow start: the share of a server that just became available ramps up.
//!
//! Owns the pure ramp: a server available since `since_ns` gets `10 % -> 100 %` of
//! its weight linearly over the window, in per-mille so balancers stay in integers.
//! Does not own when a server "becomes available" (the transitions are recorded in
//! [`super::ServerState`]: health up, breaker closed after its trial, added by a
//! reload, weight raised from 0, admin state back to ready). Tested with explicit
//! nanosecond clocks below.

use std::time::Duration;

/// Full weight, in per-mille.
pub const FULL: u64 = 1000;
/// Where the ramp starts, in per-mille (10 %).
pub const START: u64 = 100;

/// The weight factor in per-mille (`START..=FULL`) of a server available since
/// `since_ns`, at `now_ns`, with a ramp of `window`. `since_ns == 0` means "since
/// before anyone counted" (the server was there at start): full weight.
pub fn factor(since_ns: u64, now_ns: u64, window: Option<Duration>) -> u64 {
    let Some(window) = window else {
        return FULL;
    };
    let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    if since_ns == 0 || window_ns == 0 {
        return FULL;
    }
    let elapsed = now_ns.saturating_sub(since_ns);
    if elapsed >= window_ns {
        return FULL;
    }
    let ramp = u128::from(FULL - START) * u128::from(elapsed) / u128::from(window_ns);
    START + u64::try_from(ramp).unwrap_or(FULL - START)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn ramps_linearly_from_ten_percent_to_full() {
        let w = Some(Duration::from_secs(10));
        let since = 5 * S;
        assert_eq!(factor(since, since, w), 100);
        assert_eq!(factor(since, since + S, w), 190);
        assert_eq!(factor(since, since + 5 * S, w), 550);
        assert_eq!(factor(since, since + 10 * S - 1, w), 999);
        assert_eq!(factor(since, since + 10 * S, w), 1000);
        assert_eq!(factor(since, since + 3600 * S, w), 1000);
    }

    #[test]
    fn off_or_never_returned_is_full_weight() {
        assert_eq!(factor(5 * S, 5 * S, None), FULL);
        assert_eq!(factor(0, 5 * S, Some(Duration::from_secs(30))), FULL);
    }

    #[test]
    fn a_clock_behind_the_mark_does_not_underflow() {
        let w = Some(Duration::from_secs(10));
        assert_eq!(factor(9 * S, 2 * S, w), START);
    }
}
