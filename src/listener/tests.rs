//! What an idle client connection costs in its task: the futures a
//! connection's task holds while it waits stay small, and a connection that
//! sent nothing holds no buffer (`bench/harness/idle.py` measures the whole
//! cost in RSS; these keep the part that is ours from creeping up).

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::context::Worker;
use super::{plain_http, ConnGuard};
use crate::snapshot::{self, SnapshotHandle};
use crate::upstream::ServerRegistry;

fn worker() -> Rc<Worker> {
    let text = "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    servers:\n      - address: 127.0.0.1:2\n";
    let config = Arc::new(crate::config::parse(text, "t.yaml", Path::new(".")).unwrap());
    let snap = snapshot::build(config, 1, None, &ServerRegistry::default()).unwrap();
    Rc::new(Worker::new(0, SnapshotHandle::new(snap)))
}

async fn accepted(server: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = server.accept().await.unwrap();
    (client, stream)
}

/// The plain HTTP connection's future is what a silent connection's task
/// holds (debug build sizes, which are larger than release ones).
#[tokio::test]
async fn a_connection_waiting_for_its_first_byte_holds_a_small_future() {
    let worker = worker();
    let snapshot = worker.snapshot.load();
    let listener = snapshot.listeners[0].clone();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_client, stream) = accepted(&server).await;
    let peer = stream.peer_addr().unwrap();
    let (_tx, stop) = watch::channel(false);
    let guard = ConnGuard {
        state: listener.state.clone(),
        worker: worker.clone(),
    };
    let whole = plain_http(
        worker.clone(),
        listener,
        stream,
        peer,
        Instant::now(),
        stop,
        guard,
    );
    let size = std::mem::size_of_val(&whole);
    eprintln!("connection future: {size} bytes");
    // Never polled: forgotten rather than dropped, so the guard does not
    // release a slot that was never taken.
    std::mem::forget(whole);
    assert!(size <= 1024, "connection future: {size} bytes");
}

/// A fresh socket reports readable before its client sent anything: the
/// wait must not take that for bytes (and hold a buffer and the HTTP state).
#[tokio::test]
async fn a_silent_connection_holds_no_buffer() {
    let worker = worker();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, stream) = accepted(&server).await;
    let (_tx, stop) = watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        super::http::first_bytes(&worker, &stream, deadline, &stop),
    )
    .await;
    assert!(
        waited.is_err(),
        "a connection that sent nothing counted as readable"
    );
    drop(client);
}
