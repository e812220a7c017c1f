//! The composition root: startup, the control loop, and shutdown.
//!
//! `run` validates the config (a failed start prints every problem), starts the
//! control runtime, binds the admin API and the listeners, starts the workers,
//! starts the HA driver when `ha` is set, and then waits for signals: SIGHUP (and
//! `POST /reload`) reload (and point the access log at its new destination);
//! SIGUSR1 reopens the access log file; SIGTERM or SIGINT hand the VIP over (HA), stop
//! accepting, let in-flight requests finish for up to `shutdown_timeout`, and
//! return. During that drain the admin API keeps answering (`/healthz` 200,
//! `/readyz` 503, `POST /reload` 503) and stops only once the workers are done.
//!
//! Tested end to end by `tests/lifecycle` (reload loop under load, drain) and
//! `tests/ha.rs` (HA hand-over on SIGTERM).

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::admin::{self, AdminContext};
use crate::audit::Source;
use crate::config;
use crate::reload::Generations;
use crate::snapshot::SnapshotHandle;
use crate::state_file;
use crate::upstream::runtime::RuntimeStore;

/// Serves with the config at `path` until SIGTERM/SIGINT.
pub fn run(path: PathBuf) -> anyhow::Result<()> {
    raise_nofile_limit();
    let config = config::load(&path)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tandem-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    rt.block_on(serve(path, config))
}

/// Raises the soft open-files limit to the hard limit: every client and server
/// connection is a descriptor, and services often start with a soft limit of
/// 1024, far below `max_connections`' default of 10,000.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => tracing::debug!(soft, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

async fn serve(path: PathBuf, config: config::types::Config) -> anyhow::Result<()> {
    let admin_listener = admin::bind(config.admin.bind)
        .await
        .with_context(|| format!("admin.bind: cannot bind {}", config.admin.bind))?;
    let ha_config = config.ha.clone();
    crate::access_log::configure(config.access_log.as_ref())
        .context("starting the access log writer")?;
    // The operator's server states: restored before the first generation is
    // built, so a drained server gets no request after a restart either.
    let runtime = RuntimeStore::new();
    if let Some(file) = &config.admin.state_file {
        state_file::restore(&runtime, file);
    }
    let mut gens = Generations::start(path.clone(), config, runtime.clone()).await?;
    let runtime_tasks = [
        tokio::spawn(state_file::keep_written(
            runtime.clone(),
            gens.snapshot.clone(),
        )),
        tokio::spawn(apply_runtime_changes(
            runtime.clone(),
            gens.snapshot.clone(),
        )),
        tokio::spawn(crate::memory::keep_trimmed()),
    ];
    // After the listeners are bound (a node that cannot serve must not claim the VIP).
    let ha = match &ha_config {
        Some(h) => Some(
            crate::ha::driver::start(h, gens.snapshot.clone(), runtime.clone())
                .await
                .context("starting high availability")?,
        ),
        None => {
            // Without an ha section the node is always the active one, and alone it
            // cannot drift from a peer.
            crate::metrics::global().ha_role.set(1);
            crate::metrics::global().ha_config_in_sync.set(1);
            None
        }
    };
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let (reload_tx, mut reload_rx) = mpsc::channel::<admin::ReloadRequest>(8);
    let ctx = AdminContext {
        snapshot: gens.snapshot.clone(),
        status: gens.status.clone(),
        reload: reload_tx,
        ha: ha.as_ref().map(|d| d.handle()),
        config_path: path.display().to_string(),
        runtime,
    };
    let admin_task = tokio::spawn(admin::serve(admin_listener, ctx));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                if gens.reload(Source::Signal).await.is_ok() {
                    configure_access_log(&gens);
                }
            }
            Some(req) = reload_rx.recv() => {
                let r = gens.reload(req.source).await;
                if r.is_ok() {
                    configure_access_log(&gens);
                }
                let _ = req.reply.send(r);
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                crate::access_log::reopen();
            }
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    // No reload during the drain: closing the channel makes `POST /reload`
    // answer 503 at once instead of waiting for a loop that is gone.
    drop(reload_rx);
    // The admin API keeps answering during the drain (`/healthz` 200,
    // `/readyz` 503), so it stops only after the workers are done.
    gens.status
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Hand the VIP over before draining, so new connections go to the peer at once.
    if let Some(ha) = ha {
        ha.shutdown().await;
    }
    // The limit in force is the current generation's (it is reloadable).
    let deadline = tokio::time::Instant::now() + gens.current().config.shutdown_timeout;
    gens.shutdown(deadline).await;
    // The workers have handed over their last lines; write them out.
    let flushed = tokio::task::spawn_blocking(|| {
        crate::access_log::shutdown(std::time::Duration::from_secs(2));
    });
    let _ = flushed.await;
    admin_task.abort();
    for t in runtime_tasks {
        t.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies the runtime store to the current generation's servers after every
/// change, whoever made it (the admin API applies its own changes at once too;
/// this covers entries merged from the HA peer).
async fn apply_runtime_changes(runtime: RuntimeStore, snapshot: SnapshotHandle) {
    let mut changes = runtime.subscribe();
    while changes.changed().await.is_ok() {
        runtime.apply(&snapshot.load().upstreams);
    }
}

/// Points the access log at the destination of the generation just published.
fn configure_access_log(gens: &Generations) {
    if let Err(e) = crate::access_log::configure(gens.current().config.access_log.as_ref()) {
        tracing::error!(error = %e, "access log: cannot start the writer thread");
    }
}
