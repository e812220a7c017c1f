//! Ends an HTTP/2 stream whose client stops taking its response.
//!
//! On HTTP/1.1 a client that stops reading blocks the connection's writes, and
//! `ClientIo`'s write-stall rule cuts it after `client_idle`. On HTTP/2 the
//! connection keeps moving while one stream's flow-control window stays at 0:
//! hyper then waits for window and never polls that stream's body again, so
//! nothing in the body can notice, and the stream would pin its server
//! connection for as long as the client likes. The same rule applies here per
//! stream: a response that has a frame waiting for the client for
//! `client_idle` without the client taking any is ended, which resets the
//! stream (`RST_STREAM(CANCEL)`, as h2 does for a dropped stream) and closes
//! the server connection.
//!
//! [`StreamExec`] is the HTTP/2 executor: it runs each stream's task inside
//! [`Watched`], which owns the timer and makes the stream's [`Progress`]
//! reachable from the response body (`ProxyBody`) while the stream is polled.
//! The body only flips two cells: "a frame is with hyper" and "hyper asked
//! for the next one"; waits on the *server* are `timeouts.read`'s business,
//! not this rule's. Tested end to end (`tests/resource_control.rs`) and below
//! on a paused clock.
//!
//! Cost per stream (a stream is one request): one task and one `Rc`. The
//! wrapper is a plain struct around hyper's stream future (which is `Unpin`),
//! not an `async fn` plus a task-local: an `async fn` keeps its argument and
//! its pinned copy side by side, which doubled the task, and every task
//! allocation above 1 KiB takes glibc's slow path. The timer is only made the
//! first time a stream waits for its client.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

thread_local! {
    /// The progress cell of the HTTP/2 stream being polled on this thread:
    /// set by [`Watched::poll`] around the stream's own poll, so the body
    /// created inside it ([`Progress::current`]) finds its stream.
    static CURRENT: Cell<Option<Rc<Progress>>> = const { Cell::new(None) };
}

/// Whether a stream's response waits for its client, and how often it moved.
#[derive(Debug, Default)]
pub struct Progress {
    /// A frame (or the head) is with hyper, waiting for the client's window.
    owed: Cell<bool>,
    /// Frames handed out so far: a change re-arms the stall timer.
    frames: Cell<u64>,
}

impl Progress {
    /// The progress cell of the HTTP/2 stream running this code, if any.
    pub fn current() -> Option<Rc<Progress>> {
        CURRENT.with(|c| {
            let p = c.take();
            let out = p.clone();
            c.set(p);
            out
        })
    }

    /// A frame was handed to hyper: it now waits for the client.
    pub fn handed_out(&self) {
        self.owed.set(true);
        self.frames.set(self.frames.get().wrapping_add(1));
    }

    /// hyper asked for the next frame (or the body ended): the client is
    /// keeping up; any wait from here is on the server.
    pub fn taken(&self) {
        self.owed.set(false);
    }
}

/// Runs hyper's HTTP/2 stream tasks on this worker thread, each under the
/// stall rule.
#[derive(Clone, Copy)]
pub struct StreamExec {
    /// The listener's `client_idle`.
    pub idle: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + Unpin + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(Watched::new(fut, Rc::default(), self.idle));
    }
}

/// One stream's task under the stall rule: ends it (drops it) when its
/// response makes no progress for `idle` while the client owes a window.
pub struct Watched<F> {
    fut: F,
    progress: Rc<Progress>,
    idle: Duration,
    /// Allocated the first time the stream waits for its client.
    timer: Option<Pin<Box<Sleep>>>,
    /// `progress.frames` when the timer was last armed.
    armed_at: u64,
}

impl<F> Watched<F> {
    pub fn new(fut: F, progress: Rc<Progress>, idle: Duration) -> Self {
        Self {
            fut,
            progress,
            idle,
            timer: None,
            armed_at: 0,
        }
    }
}

/// Puts back the previous [`CURRENT`] when a stream's poll ends, even by a
/// panic (tokio catches a task's panic and the thread goes on serving).
struct Restore(Option<Rc<Progress>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| c.set(prev));
    }
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let polled = {
            let _restore = Restore(CURRENT.with(|c| c.replace(Some(this.progress.clone()))));
            Pin::new(&mut this.fut).poll(cx)
        };
        if polled.is_ready() {
            return Poll::Ready(());
        }
        if !this.progress.owed.get() {
            return Poll::Pending;
        }
        let frames = this.progress.frames.get();
        let idle = this.idle;
        let timer = match &mut this.timer {
            Some(t) => {
                if this.armed_at != frames {
                    t.as_mut().reset(Instant::now() + idle);
                }
                t
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep(idle))),
        };
        this.armed_at = frames;
        if timer.as_mut().poll(cx).is_ready() {
            // Dropping the stream's task resets the stream and closes the
            // server connection its body held.
            tracing::debug!("HTTP/2 stream made no progress for client_idle: reset");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream task that hands out one frame per `gap`, `n` times, then
    /// finishes; or that hands one out and then waits forever.
    async fn stream(progress: Rc<Progress>, gap: Duration, n: Option<u32>) -> &'static str {
        match n {
            Some(n) => {
                for _ in 0..n {
                    progress.handed_out();
                    tokio::time::sleep(gap).await;
                }
                "finished"
            }
            None => {
                progress.handed_out();
                std::future::pending().await
            }
        }
    }

    async fn run(gap: Duration, n: Option<u32>) -> (bool, Duration) {
        let idle = Duration::from_secs(5);
        let progress = Rc::new(Progress::default());
        let finished = Rc::new(Cell::new(false));
        let f = finished.clone();
        let p = progress.clone();
        let task = async move {
            stream(p, gap, n).await;
            f.set(true);
        };
        let start = Instant::now();
        Watched::new(Box::pin(task), progress, idle).await;
        (finished.get(), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_client_takes_nothing_is_ended_after_idle() {
        let (finished, took) = run(Duration::ZERO, None).await;
        assert!(!finished);
        assert_eq!(took, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_moving_stream_is_never_ended() {
        // 30 frames, 4 s apart: 120 s in all, each wait under `idle`.
        let (finished, took) = run(Duration::from_secs(4), Some(30)).await;
        assert!(finished);
        assert_eq!(took, Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_on_its_server_is_not_this_rules_business() {
        let idle = Duration::from_secs(5);
        let progress = Rc::new(Progress::default());
        let p = progress.clone();
        let task = async move {
            p.handed_out();
            p.taken();
            // The body waits for its server for 60 s (timeouts.read's job).
            tokio::time::sleep(Duration::from_secs(60)).await;
        };
        let start = Instant::now();
        Watched::new(Box::pin(task), progress, idle).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_s_progress_reaches_its_body_and_no_other_code() {
        let progress = Rc::new(Progress::default());
        let p = progress.clone();
        let seen = Rc::new(Cell::new(false));
        let s = seen.clone();
        let stream = async move {
            // Seen across a suspension, as a body made after the server's
            // answer arrived is.
            tokio::task::yield_now().await;
            let current = Progress::current();
            s.set(current.is_some_and(|c| Rc::ptr_eq(&c, &p)));
        };
        Watched::new(Box::pin(stream), progress, Duration::from_secs(5)).await;
        assert!(seen.get());
        assert!(Progress::current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_stream_leaves_no_progress_behind() {
        let local = tokio::task::LocalSet::new();
        let ended = local
            .run_until(tokio::task::spawn_local(Watched::new(
                Box::pin(async { panic!("stream task panicked") }),
                Rc::default(),
                Duration::from_secs(5),
            )))
            .await;
        assert!(ended.is_err_and(|e| e.is_panic()));
        assert!(Progress::current().is_none());
    }
}
