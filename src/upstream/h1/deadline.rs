//! Who an exchange with a server is waiting for, and until when.
//!
//! One request to a server waits on three parties in turn: the server to take
//! the bytes written to it, the client to send the next piece of its upload,
//! and finally the server to answer. Each wait has its own limit and its own
//! culprit: a server that takes no bytes or sends no answer for
//! `timeouts.response` fails the attempt (a server failure, 504), a client that
//! sends nothing of its upload for the listener's `client_idle` ends it as a
//! client failure (408) that never reaches the server's breaker. So the
//! response timer starts only once the request has been sent in full, and a
//! slow upload is never mistaken for a slow server (as HAProxy's
//! `timeout server` and `timeout client`, nginx's `proxy_read_timeout` and
//! `client_body_timeout`).
//!
//! [`Deadline`] is the plain state (cells written by the exchange as it moves
//! from one wait to the next, no timer of its own); [`timed`] drives one
//! future under it with a single `Sleep` that is re-armed lazily: moving the
//! deadline later is a store, and the timer is moved only when it fires early
//! or when the deadline moves earlier. Tested on a paused clock below.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::upstream::attempt::{ClientFault, Failure};

/// The limits of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The server's limit: to take a piece of the request, and to answer
    /// once the request has been sent (`timeouts.response`).
    pub response: Duration,
    /// The client's limit between two pieces of its upload (`client_idle`).
    pub client_idle: Duration,
}

/// Who the exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The server to take request bytes.
    ServerWrite,
    /// The client to send more of its body.
    Client,
    /// The server to answer (the request was sent in full, or could not be).
    Response,
}

/// The current wait and its deadline.
#[derive(Debug)]
pub struct Deadline {
    limits: Limits,
    at: Cell<Instant>,
    wait: Cell<Wait>,
}

impl Deadline {
    /// Starts with the server's turn (the request head is written first).
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            at: Cell::new(now + limits.response),
            wait: Cell::new(Wait::ServerWrite),
        }
    }

    /// From now on the exchange waits for `wait`, for at most its limit.
    pub fn wait(&self, wait: Wait, now: Instant) {
        let limit = match wait {
            Wait::Client => self.limits.client_idle,
            Wait::ServerWrite | Wait::Response => self.limits.response,
        };
        self.at.set(now + limit);
        self.wait.set(wait);
    }

    pub fn at(&self) -> Instant {
        self.at.get()
    }

    /// The failure when the current wait has run out at `now`.
    pub fn expired(&self, now: Instant) -> Option<Failure> {
        if now < self.at.get() {
            return None;
        }
        Some(match self.wait.get() {
            Wait::Client => Failure::Client(ClientFault::Stalled),
            Wait::ServerWrite | Wait::Response => Failure::ResponseTimeout,
        })
    }
}

/// Runs `fut` until it completes or the deadline's current wait runs out.
/// `timer` is reused (the connection keeps it across requests).
pub async fn timed<F: Future>(
    deadline: &Deadline,
    timer: &mut Pin<Box<Sleep>>,
    fut: F,
) -> Result<F::Output, Failure> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            let at = deadline.at();
            if at < timer.deadline() {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(failure) = deadline.expired(Instant::now()) {
                return Poll::Ready(Err(failure));
            }
            // Fired for an older, earlier deadline: move on to the current one.
            timer.as_mut().reset(deadline.at());
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        response: Duration::from_secs(1),
        client_idle: Duration::from_secs(10),
    };

    fn timer() -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(Duration::from_secs(3600)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_upload_is_not_a_response_timeout() {
        let d = Deadline::new(LIMITS, Instant::now());
        let mut t = timer();
        // Twenty client pieces, each 5 s apart: 100 s, far past `response`.
        let upload = async {
            for _ in 0..20 {
                d.wait(Wait::Client, Instant::now());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            d.wait(Wait::Response, Instant::now());
            tokio::time::sleep(Duration::from_millis(900)).await;
            "answered"
        };
        assert_eq!(timed(&d, &mut t, upload).await, Ok("answered"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_client_is_the_clients_failure() {
        let d = Deadline::new(LIMITS, Instant::now());
        let mut t = timer();
        let start = Instant::now();
        let upload = async {
            d.wait(Wait::Client, Instant::now());
            std::future::pending::<()>().await;
        };
        let r = timed(&d, &mut t, upload).await;
        assert_eq!(r, Err(Failure::Client(ClientFault::Stalled)));
        assert_eq!(start.elapsed(), LIMITS.client_idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_timer_starts_when_the_body_is_sent() {
        let d = Deadline::new(LIMITS, Instant::now());
        let mut t = timer();
        let start = Instant::now();
        let exchange = async {
            d.wait(Wait::Client, Instant::now());
            tokio::time::sleep(Duration::from_secs(8)).await;
            // The deadline moves earlier (10 s -> 1 s): the timer must follow.
            d.wait(Wait::Response, Instant::now());
            std::future::pending::<()>().await;
        };
        let r = timed(&d, &mut t, exchange).await;
        assert_eq!(r, Err(Failure::ResponseTimeout));
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_takes_no_bytes_times_out() {
        let d = Deadline::new(LIMITS, Instant::now());
        let mut t = timer();
        let r = timed(&d, &mut t, std::future::pending::<()>()).await;
        assert_eq!(r, Err(Failure::ResponseTimeout));
    }
}
