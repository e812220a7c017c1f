//! What an idle client connection costs in its task: the size of the futures
//! a connection's task holds while it waits (`bench/harness/idle.py` measures
//! the whole cost in RSS; this keeps the part that is ours from creeping up).

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::context::Worker;
use super::{connection, Resolved};
use crate::snapshot::{self, SnapshotHandle};
use crate::upstream::ServerRegistry;

#[tokio::test]
async fn a_connection_task_holds_small_futures() {
    let text = "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    servers:\n      - address: 127.0.0.1:2\n";
    let config = Arc::new(crate::config::parse(text, "t.yaml", Path::new(".")).unwrap());
    let snap = snapshot::build(config, 1, None, &ServerRegistry::default()).unwrap();
    let handle = SnapshotHandle::new(snap);
    let snapshot = handle.load();
    let listener = snapshot.listeners[0].clone();
    let worker = Rc::new(Worker::new(0, handle));
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, peer) = server.accept().await.unwrap();
    let (_tx, stop) = watch::channel(false);
    let (stream2, peer2) = {
        let _c = TcpStream::connect(server.local_addr().unwrap())
            .await
            .unwrap();
        server.accept().await.unwrap()
    };
    let serve = super::http::serve(
        worker.clone(),
        listener.clone(),
        stream2,
        peer2,
        tokio::time::Instant::now(),
        stop.clone(),
    );
    eprintln!(
        "http::serve future: {} bytes",
        std::mem::size_of_val(&serve)
    );
    drop(serve);
    let whole = connection(
        worker.clone(),
        Resolved {
            snapshot,
            listener: listener.clone(),
        },
        stream,
        peer,
        stop.clone(),
    );
    let size = std::mem::size_of_val(&whole);
    eprintln!("connection future: {size} bytes");
    drop(whole);
}
