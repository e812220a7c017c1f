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
//! [`watched`], which owns the timer, and makes the stream's [`Progress`]
//! reachable from the response body (`ProxyBody`) through a task-local. The
//! body only flips two cells: "a frame is with hyper" and "hyper asked for
//! the next one"; waits on the *server* are `timeouts.read`'s business, not
//! this rule's. Tested end to end (`tests/resource_control.rs`) and below on a
//! paused clock.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static STREAM: Rc<Progress>;
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
        STREAM.try_with(Rc::clone).ok()
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
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        let progress = Rc::new(Progress::default());
        let fut = STREAM.scope(progress.clone(), fut);
        tokio::task::spawn_local(watched(fut, progress, self.idle));
    }
}

/// Runs one stream's task, and ends it (drops it) when its response makes no
/// progress for `idle` while the client owes a window.
pub async fn watched<F: Future>(fut: F, progress: Rc<Progress>, idle: Duration) {
    // Pinned in this future's own state: no allocation beyond the task's.
    let mut fut = pin!(fut);
    let mut watch = Watch {
        progress,
        idle,
        timer: None,
        armed_at: 0,
    };
    poll_fn(|cx| watch.poll(fut.as_mut(), cx)).await;
}

/// The stall timer of one stream.
struct Watch {
    progress: Rc<Progress>,
    idle: Duration,
    /// Allocated the first time the stream waits for its client.
    timer: Option<Pin<Box<Sleep>>>,
    /// `progress.frames` when the timer was last armed.
    armed_at: u64,
}

impl Watch {
    fn poll<F: Future>(&mut self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<()> {
        if fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !self.progress.owed.get() {
            return Poll::Pending;
        }
        let frames = self.progress.frames.get();
        let idle = self.idle;
        let timer = match &mut self.timer {
            Some(t) => {
                if self.armed_at != frames {
                    t.as_mut().reset(Instant::now() + idle);
                }
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep(idle))),
        };
        self.armed_at = frames;
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
        watched(task, progress, idle).await;
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
        watched(task, progress, idle).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_local_reaches_the_body() {
        let progress = Rc::new(Progress::default());
        let seen = STREAM
            .scope(progress.clone(), async { Progress::current().is_some() })
            .await;
        assert!(seen);
        assert!(Progress::current().is_none());
    }
}
