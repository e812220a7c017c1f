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
//! The streams of a connection run in the connection's own task
//! ([`Streams`]), not one tokio task each: each time that task runs it polls
//! the connection, then the streams that were woken (see [`Alongside`] for
//! why in that order), and a stream costs one allocation (its slot in a
//! `FuturesUnordered`) instead of a task (a 128-byte-aligned allocation,
//! which glibc serves on its slow path, plus the scheduler's bookkeeping and
//! a wake-up of the connection's task per response). The
//! wrapper is a plain struct around hyper's stream future (which is
//! `Unpin`), not an `async fn` plus a task-local: an `async fn` keeps its
//! argument and its pinned copy side by side. The timer is only made the
//! first time a stream waits for its client. Streams still running when the
//! connection ends are driven to their end by [`Streams::drain`]; a task
//! hyper hands over from inside a stream (an upgraded CONNECT stream's pump)
//! is spawned as a task of its own.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
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

/// Runs hyper's HTTP/2 stream tasks of one connection, each under the stall
/// rule, in the connection's task (see [`Streams`]).
#[derive(Clone)]
pub struct StreamExec {
    /// The listener's `client_idle`.
    idle: Duration,
    /// Weak: hyper keeps a copy of the executor in every stream, and the
    /// streams live in the set, which must not keep itself alive.
    streams: Weak<Shared>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + Unpin + 'static,
{
    fn execute(&self, fut: F) {
        let task = Watched::new(fut, Rc::default(), self.idle);
        let Some(shared) = self.streams.upgrade() else {
            tokio::task::spawn_local(task);
            return;
        };
        // Busy only when the call comes from inside a stream being polled.
        let Ok(mut slot) = shared.set.try_borrow_mut() else {
            tokio::task::spawn_local(task);
            return;
        };
        let set = slot.get_or_insert_with(|| Box::new(Set::<F>(FuturesUnordered::new())));
        match set.as_any().downcast_mut::<Set<F>>() {
            Some(set) => set.0.push(task),
            // A task of another kind than the connection's streams.
            None => {
                tokio::task::spawn_local(task);
            }
        }
    }
}

/// The stream tasks of one HTTP/2 connection, owned by the connection's
/// task: [`Streams::alongside`] runs them with the connection, and
/// [`Streams::drain`] runs the ones left once the connection has ended.
/// Dropping it drops the streams still in it.
pub struct Streams {
    shared: Rc<Shared>,
}

struct Shared {
    /// Made at the first stream (its type is hyper's, known only there).
    set: RefCell<Option<Box<dyn StreamSet>>>,
}

/// A set of stream tasks of one type, behind a type-erased box.
trait StreamSet {
    /// Polls every stream that was woken; true when no stream is left.
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool;
    fn as_any(&mut self) -> &mut dyn Any;
}

struct Set<F>(FuturesUnordered<Watched<F>>);

impl<F: Future + Unpin + 'static> StreamSet for Set<F> {
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match self.0.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) => return true,
                Poll::Pending => return false,
            }
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

impl Streams {
    /// An empty set, and the executor that fills it for hyper's builder.
    pub fn new(idle: Duration) -> (Streams, StreamExec) {
        let shared = Rc::new(Shared {
            set: RefCell::new(None),
        });
        let exec = StreamExec {
            idle,
            streams: Rc::downgrade(&shared),
        };
        (Streams { shared }, exec)
    }

    /// Runs `conn` (hyper's connection future) and the streams it starts,
    /// until `conn` ends; the streams left then are [`Streams::drain`]'s.
    pub fn alongside<C: Future + Unpin>(&self, conn: C) -> Alongside<'_, C> {
        Alongside {
            streams: self,
            conn,
        }
    }

    /// Runs the streams left until each has ended.
    pub async fn drain(&self) {
        poll_fn(|cx| {
            if self.poll_streams(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Polls the streams that were woken; true when none is left.
    fn poll_streams(&self, cx: &mut Context<'_>) -> bool {
        // Never busy: the set is borrowed only here and in `execute`, which
        // hyper calls from the connection's poll, not from inside this one.
        match self.shared.set.try_borrow_mut() {
            Ok(mut set) => set.as_mut().is_none_or(|s| s.poll_streams(cx)),
            Err(_) => false,
        }
    }
}

/// A connection and its streams, polled in one task: the connection first
/// (it reads requests, starts their streams and writes what is queued), then
/// the streams, so new requests go out to servers in the same turn. A
/// response a stream produces wakes this task again, at the back of the
/// worker's queue: other streams woken by the same round of events answer
/// first, and one write carries all their frames. (Polling the streams
/// first wrote each response sooner, in more writes: 0.37 client writes per
/// request instead of 0.27 under h2load -m4, and more CPU in all.)
pub struct Alongside<'a, C> {
    streams: &'a Streams,
    conn: C,
}

impl<C: Future + Unpin> Future for Alongside<'_, C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        let conn = Pin::new(&mut this.conn).poll(cx);
        this.streams.poll_streams(cx);
        conn
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
            .run_until(async {
                tokio::task::spawn_local(Watched::new(
                    Box::pin(async { panic!("stream task panicked") }),
                    Rc::default(),
                    Duration::from_secs(5),
                ))
                .await
            })
            .await;
        assert!(ended.is_err_and(|e| e.is_panic()));
        assert!(Progress::current().is_none());
    }

    /// Counts how many times it ran to its end.
    fn counted(ends: &Rc<Cell<u32>>, wait: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        let ends = ends.clone();
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            ends.set(ends.get() + 1);
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_s_streams_run_alongside_it_and_are_drained_after_it() {
        use hyper::rt::Executor;
        let (streams, exec) = Streams::new(Duration::from_secs(5));
        let ends = Rc::new(Cell::new(0));
        // The "connection" starts one quick stream and one that outlives it.
        let conn = {
            let (ends, exec) = (ends.clone(), exec.clone());
            Box::pin(async move {
                exec.execute(counted(&ends, Duration::from_secs(1)));
                exec.execute(counted(&ends, Duration::from_secs(30)));
                tokio::time::sleep(Duration::from_secs(10)).await;
            })
        };
        let start = Instant::now();
        streams.alongside(conn).await;
        assert_eq!(
            ends.get(),
            1,
            "the quick stream ran while the connection did"
        );
        streams.drain().await;
        assert_eq!(ends.get(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_handed_over_from_inside_a_stream_runs_on_its_own() {
        use hyper::rt::Executor;
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (streams, exec) = Streams::new(Duration::from_secs(5));
                let ends = Rc::new(Cell::new(0));
                let inner = exec.clone();
                let e = ends.clone();
                // hyper hands over an upgraded stream's pump like this.
                exec.execute(Box::pin(async move {
                    inner.execute(counted(&e, Duration::from_secs(2)));
                }));
                streams.drain().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                assert_eq!(ends.get(), 1);
            })
            .await;
    }
}
