//! The queue on a real `Upstream` (cap 1, one server), on a paused tokio clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Rejected;
use crate::upstream::{NoServer, ServerRegistry, Upstream};

fn capped(size: usize) -> Arc<Upstream> {
    let text = format!(
        "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    max_requests_per_server: 1\n    queue:\n      size: {size}\n      timeout: 5s\n    servers:\n      - address: 127.0.0.1:3001\n"
    );
    let config = crate::config::parse(&text, "t.yaml", Path::new(".")).unwrap();
    Arc::new(ServerRegistry::default().build_upstream(&config.upstreams[0], &HashMap::new()))
}

/// Spawns a request that waits for a slot and holds it until told to finish.
fn waiter(
    up: &Arc<Upstream>,
    order: &Arc<std::sync::Mutex<Vec<&'static str>>>,
    name: &'static str,
) -> (
    tokio::task::JoinHandle<Result<(), NoServer>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (up, order) = (up.clone(), order.clone());
    let task = tokio::spawn(async move {
        let mut sel = up.acquire(None).await?;
        let _active = sel.begin();
        order.lock().unwrap().push(name);
        let _ = done_rx.await;
        Ok(())
    });
    (task, done_tx)
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_to_the_oldest_waiter_and_a_full_queue_refuses_at_once() {
    let up = capped(2);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (first, first_done) = waiter(&up, &order, "first");
    settle().await;
    let (a, a_done) = waiter(&up, &order, "a");
    settle().await;
    let (b, b_done) = waiter(&up, &order, "b");
    settle().await;
    assert_eq!(up.waiters.len(), 2);
    assert_eq!(up.servers[0].active(), 1, "the cap holds");
    assert_eq!(
        up.acquire(None).await.err(),
        Some(NoServer::Queue(Rejected::Full))
    );

    first_done.send(()).unwrap();
    first.await.unwrap().unwrap();
    settle().await;
    assert_eq!(*order.lock().unwrap(), ["first", "a"]);
    assert_eq!(up.servers[0].active(), 1, "handed over, not released");
    a_done.send(()).unwrap();
    a.await.unwrap().unwrap();
    settle().await;
    assert_eq!(*order.lock().unwrap(), ["first", "a", "b"]);
    b_done.send(()).unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(up.servers[0].active(), 0);
    assert_eq!(up.waiters.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_times_out_and_one_that_goes_away_leaves_the_queue() {
    let up = capped(10);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (holder, holder_done) = waiter(&up, &order, "holder");
    settle().await;
    // Gone before a slot frees: its place is removed, no slot is ever taken.
    let (gone, _gone_done) = waiter(&up, &order, "gone");
    settle().await;
    assert_eq!(up.waiters.len(), 1);
    gone.abort();
    settle().await;
    assert_eq!(up.waiters.len(), 0);

    let started = tokio::time::Instant::now();
    let err = up.acquire(None).await.err();
    assert_eq!(err, Some(NoServer::Queue(Rejected::Timeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(up.waiters.len(), 0);

    holder_done.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(up.servers[0].active(), 0, "no slot leaked");
    assert_eq!(*order.lock().unwrap(), ["holder"]);
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_to_a_waiter_that_is_dropped_moves_on() {
    let up = capped(10);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (holder, holder_done) = waiter(&up, &order, "holder");
    settle().await;
    let (late, _late_done) = waiter(&up, &order, "late");
    settle().await;
    let (next, next_done) = waiter(&up, &order, "next");
    settle().await;
    // The slot is handed to `late` and, before `late` runs, `late` is dropped.
    holder_done.send(()).unwrap();
    late.abort();
    holder.await.unwrap().unwrap();
    settle().await;
    assert_eq!(*order.lock().unwrap(), ["holder", "next"]);
    next_done.send(()).unwrap();
    next.await.unwrap().unwrap();
    assert_eq!(up.servers[0].active(), 0);
}

#[tokio::test]
async fn without_a_cap_nothing_queues() {
    let text = "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    servers:\n      - address: 127.0.0.1:3001\n";
    let config = crate::config::parse(text, "t.yaml", Path::new(".")).unwrap();
    let up = ServerRegistry::default().build_upstream(&config.upstreams[0], &HashMap::new());
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(up.acquire(None).await.unwrap().begin());
    }
    assert_eq!(up.servers[0].active(), 100);
    drop(held);
    assert_eq!(up.servers[0].active(), 0);
}
