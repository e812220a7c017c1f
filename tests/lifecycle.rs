//! Live operations (docs/operations.md): reloads under load, drain on SIGTERM, the
//! admin API and the metrics exposition.
//!
//! Load tests run real clients — HTTP keep-alive, HTTP with a new connection
//! per request, and raw sockets through a `tcp` listener — in background tasks
//! while the test changes tandem underneath them, then assert that not one
//! request failed. Every test prints its figures (`-- --nocapture`).
//! Synchronisation is by observation (`/status` generation, the reload answer,
//! `eventually`), never by sleeping.

mod admin_api;
mod drain;
mod metrics_doc;
mod metrics_scrape;
mod one_listener;
mod refused;
mod reload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// What one client task saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub failed: Vec<String>,
}

/// How a client reaches tandem.
#[derive(Clone, Copy)]
pub enum Client {
    /// reqwest with its connection pool: requests reuse connections.
    KeepAlive,
    /// reqwest without idle connections: one connection per request.
    NewConnection,
    /// reqwest speaking HTTP/2 with prior knowledge (h2c): one multiplexed
    /// connection.
    H2,
    /// A raw socket per request (`Connection: close`), for `tcp` listeners.
    RawSocket,
}

/// Background clients that run until [`Traffic::finish`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    tasks: Vec<(String, JoinHandle<Tally>)>,
}

impl Traffic {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            served: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        }
    }

    /// Starts `n` clients of `kind` sending GET `url` in a loop.
    pub fn start(&mut self, label: &str, kind: Client, url: &str, n: usize) {
        for i in 0..n {
            let (stop, served) = (self.stop.clone(), self.served.clone());
            let url = url.to_owned();
            let task = tokio::spawn(async move { client_loop(kind, &url, &stop, &served).await });
            self.tasks.push((format!("{label}#{i}"), task));
        }
    }

    /// Waits until the clients completed `n` requests between them, so the
    /// test changes tandem under traffic that is already flowing.
    pub async fn warm_up(&self, n: u64) {
        let served = self.served.clone();
        crate::support::eventually(Duration::from_secs(10), "clients under way", || {
            let served = served.clone();
            async move { served.load(Ordering::Relaxed) >= n }
        })
        .await;
    }

    /// Requests completed so far by every client together.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops the clients and returns their tallies, summed per label prefix.
    pub async fn finish(self) -> Vec<(String, Tally)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out: Vec<(String, Tally)> = Vec::new();
        for (label, task) in self.tasks {
            let t = task.await.expect("client task");
            let kind = label.split('#').next().unwrap_or("").to_owned();
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, sum)) => {
                    sum.ok += t.ok;
                    sum.failed.extend(t.failed);
                }
                None => out.push((kind, t)),
            }
        }
        out
    }
}

/// Prints the figures and asserts that no request failed.
pub fn assert_no_failures(test: &str, tallies: &[(String, Tally)], min_each: u64) {
    let total: u64 = tallies
        .iter()
        .map(|(_, t)| t.ok + t.failed.len() as u64)
        .sum();
    let failed: usize = tallies.iter().map(|(_, t)| t.failed.len()).sum();
    for (kind, t) in tallies {
        println!(
            "{test}: {kind}: {} requests, {} failed",
            t.ok + t.failed.len() as u64,
            t.failed.len()
        );
    }
    println!("{test}: total: {total} requests, {failed} failed");
    for (kind, t) in tallies {
        assert!(
            t.failed.is_empty(),
            "{test}: {kind}: {} failed requests, first: {:?}",
            t.failed.len(),
            t.failed.iter().take(5).collect::<Vec<_>>()
        );
        assert!(
            t.ok >= min_each,
            "{test}: {kind}: only {} requests: load too small to mean anything",
            t.ok
        );
    }
}

async fn client_loop(kind: Client, url: &str, stop: &AtomicBool, served: &AtomicU64) -> Tally {
    let mut tally = Tally::default();
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let http = match kind {
        Client::NewConnection => builder.pool_max_idle_per_host(0),
        Client::H2 => builder.http2_prior_knowledge(),
        _ => builder,
    }
    .build()
    .expect("client");
    while !stop.load(Ordering::Relaxed) {
        let outcome = match kind {
            Client::KeepAlive | Client::NewConnection | Client::H2 => {
                match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("body: {e}")),
                    },
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("{e:?}")),
                }
            }
            Client::RawSocket => raw_get(url).await,
        };
        match outcome {
            Ok(()) => {
                tally.ok += 1;
                served.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.failed.push(e),
        }
    }
    tally
}

/// One `GET /` over a fresh socket to `url` (`http://HOST:PORT/...`).
pub async fn raw_get(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let run = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "answer: {:?}",
                text.lines().next().unwrap_or("<empty>")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| "timeout".to_owned())?
}
