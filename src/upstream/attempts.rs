//! The attempts of one request (or one relayed connection) to an upstream:
//! which server next, and what each outcome means.
//!
//! [`Attempts`] owns the decision that spans selection, the breaker, the
//! metrics and the client's answer: the tried set, the retry budget
//! (`retries`), failure classification (a [`Failure`] and its side), breaker
//! recording, the EWMA update (peak_ewma only) and the replay rules. The
//! caller owns only the IO: it sends to the [`Selected`] server and reports
//! what happened.
//!
//! Replay rules: a failure before anything was sent (connect, TLS, no
//! address) moves to another server for any method; after the request was
//! sent, only a *replayable* request (GET/HEAD/OPTIONS without a body, no
//! byte of a response passed to the client) is sent again; a pooled
//! connection the server closed before the request was written is not a
//! failure at all ([`may_resend`]). A client-side failure (its upload broke)
//! never reaches the server's breaker or error count.
//!
//! No allocation and no lock: the state is a few words on the caller's stack.
//! A half-open breaker trial that ends without a verdict (the caller's future
//! was dropped, or the client's upload failed) gives its slot back when the
//! `Attempts` drops. Tested by table tests without sockets (`attempts/tests.rs`).

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::attempt::{self, Failure, Side};
use super::h1::Replay;
use super::{NoServer, Selected, Tried, Upstream};
use crate::config::types::BalanceKind;

/// What one attempt produced, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status, `elapsed` after the request began.
    Response { status: u16, elapsed: Duration },
    /// A relay's connection to the server is up (no HTTP answer to judge).
    Connected,
    /// The attempt failed.
    Failed(Failure),
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the response (or the connection) on to the client.
    Respond,
    /// Ask [`Attempts::next`] for another server; the request body to send is
    /// the one that came back (failure before send) or none (replayable).
    Retry,
    /// The client's own upload failed: answer it with this failure's status;
    /// nothing was recorded against the server.
    Client(Failure),
    /// Give up with this status (a failure after send that may not be
    /// replayed).
    Fail(StatusCode),
}

/// The attempts of one request. See the module documentation.
pub struct Attempts<'u> {
    upstream: &'u Upstream,
    hash: Option<u64>,
    /// The request may be sent again after it reached a server.
    replayable: bool,
    tried: Tried,
    /// Attempts started so far.
    started: u32,
    /// The first attempt's server, from the queue ([`Self::queued`]).
    first: Option<Result<Selected, NoServer>>,
    /// The last failure, for the final status.
    last: Option<Failure>,
    /// Index of a half-open trial server whose verdict is not reported yet.
    trial: Option<usize>,
}

impl Upstream {
    /// The attempts of one request with consistent-hash key `hash`;
    /// `replayable` when it may be sent again after it reached a server.
    pub fn attempts(&self, hash: Option<u64>, replayable: bool) -> Attempts<'_> {
        Attempts {
            upstream: self,
            hash,
            replayable,
            tried: Tried::default(),
            started: 0,
            first: None,
            last: None,
            trial: None,
        }
    }
}

impl<'u> Attempts<'u> {
    /// Hands in the first attempt's server as [`Upstream::acquire`] found it
    /// (possibly after waiting in the queue under `max_requests_per_server`).
    /// Without it, the first attempt selects like any retry.
    pub fn queued(&mut self, first: Result<Selected, NoServer>) {
        self.first = Some(first);
    }

    /// The server for the next attempt, or `None` when the budget is spent or
    /// no server is available (then [`Self::status`] is the answer).
    // Not an `Iterator`: every `next` is followed by a `report` on the same
    // object, which a `for` loop's borrow would not allow.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Selected> {
        if self.started > self.upstream.config.retries {
            return None;
        }
        let sel = match self.first.take() {
            Some(first) if self.started == 0 => first.ok()?,
            _ => self.upstream.select(&self.tried, self.hash)?,
        };
        if self.started > 0 {
            self.upstream.metrics.retries.inc();
        }
        self.started += 1;
        self.tried.insert(sel.index);
        self.trial = sel.trial.then_some(sel.index);
        Some(sel)
    }

    /// Records `outcome` of the attempt to `sel` (breaker, metrics, EWMA)
    /// and says what to do next.
    pub fn report(&mut self, sel: &Selected, outcome: Outcome, now: Instant) -> Verdict {
        let up = self.upstream;
        match outcome {
            Outcome::Connected => {
                self.trial = None;
                attempt::record_success(&sel.server, now);
                Verdict::Respond
            }
            Outcome::Response { status, elapsed } => {
                sel.server.metrics.response(status, elapsed);
                if up.config.balance == BalanceKind::PeakEwma {
                    // Only peak_ewma reads the estimate; the update costs an exp().
                    sel.server
                        .ewma
                        .observe(elapsed, crate::clock::nanos_since_origin(now));
                }
                self.trial = None;
                if up.config.circuit_breaker.failure_status.contains(&status) {
                    let f = Failure::Status(status);
                    self.record_failure(sel, f, now);
                    if self.replayable && self.has_budget() && self.has_other() {
                        self.last = Some(f);
                        return Verdict::Retry;
                    }
                } else if sel.trial {
                    // A half-open trial's verdict is its head: the slot must
                    // not wait for a long body. Other successes are recorded
                    // when the body has ended.
                    attempt::record_success(&sel.server, now);
                }
                Verdict::Respond
            }
            Outcome::Failed(f) if f.side() == Side::Client => {
                // Nothing was learnt about the server: the trial slot goes
                // back, the breaker and the error count hear nothing.
                self.abandon_trial();
                Verdict::Client(f)
            }
            Outcome::Failed(f) => {
                self.trial = None;
                self.record_failure(sel, f, now);
                self.last = Some(f);
                if f.before_send() || self.replayable {
                    Verdict::Retry
                } else {
                    Verdict::Fail(f.client_status())
                }
            }
        }
    }

    /// The answer when [`Self::next`] found no server: the last failure's
    /// status, or 503 when no attempt was made.
    pub fn status(&self) -> StatusCode {
        self.last
            .map_or(StatusCode::SERVICE_UNAVAILABLE, Failure::client_status)
    }

    fn has_budget(&self) -> bool {
        self.started <= self.upstream.config.retries
    }

    /// Some server would take a retry now.
    fn has_other(&self) -> bool {
        self.upstream.select(&self.tried, self.hash).is_some()
    }

    fn record_failure(&self, sel: &Selected, f: Failure, now: Instant) {
        tracing::debug!(
            upstream = %self.upstream.config.name,
            server = %sel.server.key.address,
            kind = f.kind(),
            "attempt failed"
        );
        attempt::record_against(&sel.server, f, now);
    }

    fn abandon_trial(&mut self) {
        if let Some(i) = self.trial.take() {
            if let Some(server) = self.upstream.servers.get(i) {
                server.breaker.on_trial_abandoned();
            }
        }
    }
}

impl Drop for Attempts<'_> {
    fn drop(&mut self) {
        // The caller went away mid-attempt (the client disconnected).
        self.abandon_trial();
    }
}

/// Whether a request whose send on a pooled connection ended with `replay`
/// goes out again on the next connection: always when nothing was sent; after
/// the head was written and the server closed without a byte of answer (the
/// keep-alive race), only when the request is replayable. Neither case is a
/// failure of the server.
pub fn may_resend(replay: Replay, replayable: bool) -> bool {
    match replay {
        Replay::Unsent => true,
        Replay::Unanswered => replayable,
        Replay::No => false,
    }
}

#[cfg(test)]
mod tests;
