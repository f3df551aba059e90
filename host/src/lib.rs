//! The notification host: an event log for every Kafka topic.
//!
//! # Layout
//!
//! - [`config`]: the one `Config`, parsed once from flags and environment.
//! - [`record`]: the domain types shared by every part (a Kafka record, the
//!   fields a normalizer found); from the `notification-parse` crate.
//! - [`runtime`]: wasmtime only. Loads normalizer components, runs them in a
//!   sandbox with memory and CPU limits.
//! - [`normalize`]: picks the built-in default or a module for a batch and
//!   turns module failures into stored, explained rows.
//! - [`samples`]: the sample-record format of `notification-host normalize`;
//!   from `notification-parse`, which also parses the API's requests, so that
//!   all of it can be fuzzed without the runtime, Kafka or the database.
//! - [`kafka`]: rdkafka only. The consumer group, topic discovery, offsets.
//! - [`storage`]: sqlx only. The pool, migrations and every query.
//! - [`pipeline`]: the only module that uses all three: message →
//!   normalizer → row → stored offset.
//! - [`http`]: axum only. Health, readiness and the REST API.
//! - [`status`]: readiness shared between the pipeline and HTTP.
//! - [`cmd`]: the one-shot commands.

pub mod cmd;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod modules;
pub mod normalize;
pub mod pipeline;
pub mod runtime;
pub mod shutdown;
pub mod status;
pub mod storage;

pub use notification_parse::{record, samples};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::status::Status;
use crate::storage::Db;

/// How long shutdown waits for the consumer to leave its group.
const CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `notification-host migrate`: apply the migrations and exit.
pub async fn migrate(args: &ServeArgs) -> anyhow::Result<()> {
    let db = Db::connect_lazy(args.db.url()?, 1)?;
    db.migrate().await?;
    tracing::info!("Migrations applied.");
    Ok(())
}

/// `notification-host serve`: consume, normalize and store every record, and
/// serve the API, until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let status = Arc::new(Status::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let db = Db::connect_lazy(args.db.url()?, args.db.max_connections)?;
    // An API-only replica has no consumer and is ready when the database is.
    let consumer = if args.role.consumes() {
        Some(Arc::new(kafka::create_consumer(&args.kafka, status.clone(), metrics.clone())?))
    } else {
        status.set_without_consumer();
        None
    };

    let shutdown = CancellationToken::new();
    shutdown::on_signal(shutdown.clone());
    // Fires `shutdown_timeout` after shutdown starts: batches still unwritten
    // then are abandoned (and consumed again on the next start).
    let give_up = CancellationToken::new();
    {
        let (shutdown, give_up, timeout) = (shutdown.clone(), give_up.clone(), args.pipeline.shutdown_timeout);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(timeout).await;
            give_up.cancel();
        });
    }

    let listener = tokio::net::TcpListener::bind(args.http.http_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.http.http_addr))?;
    let bound = listener.local_addr().context("failed to read the HTTP listener's address")?;
    tracing::info!(addr = %bound, "HTTP server listening.");
    let runtime = runtime::Runtime::new(args.modules.limits())?;
    let modules = Arc::new(modules::Modules::new(
        runtime,
        modules::ModulesConfig {
            dir: args.modules.normalizers_dir.clone(),
            quarantine_after: args.modules.module_quarantine_after.max(1),
        },
    ));
    if let Some(dir) = modules.dir() {
        anyhow::ensure!(dir.is_dir(), "NORMALIZERS_DIR {} is not a directory", dir.display());
        let m = modules.clone();
        tokio::task::spawn_blocking(move || m.reload()).await?;
        tokio::spawn(modules::watch(modules.clone(), args.modules.normalizers_poll_interval, shutdown.clone()));
    }
    let app = http::router_for(
        http::AppState {
            db: db.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            modules: modules.clone(),
            api_token: args.http.api_token.as_deref().map(Arc::from),
            max_body_bytes: args.http.max_body_bytes,
            compat: args.http.api_compat,
            cors_allowed_origins: args.http.cors_allowed_origins.clone().into(),
        },
        args.role,
    );
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { http_shutdown.cancelled().await }).await
    });

    if !migrate_when_reachable(&db, &status, &shutdown).await {
        return Ok(());
    }
    tokio::spawn(watch_database(db.clone(), status.clone(), shutdown.clone()));
    tokio::spawn(maintain_partitions(db.clone(), args.db.clone(), shutdown.clone()));

    let Some(consumer) = consumer else {
        tracing::info!(role = ?args.role, "Serving the API only; no consumer.");
        shutdown.cancelled().await;
        return finish_http(server).await;
    };
    let routed = modules.clone();
    let normalize: pipeline::NormalizeFn = Arc::new(move |records: &[record::Record]| routed.normalize(records));
    let pipeline = pipeline::Pipeline {
        consumer: consumer.clone(),
        db,
        normalize,
        status,
        metrics,
        kafka_config: args.kafka,
        config: args.pipeline,
        db_config: args.db.clone(),
    };
    pipeline::run(pipeline, shutdown.clone(), give_up).await?;
    shutdown.cancel();
    // Leaving the group needs the broker; with the broker gone librdkafka's
    // close would wait for it indefinitely. Close on a thread of its own and
    // stop waiting after a bound: the group then times the member out.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = closed_tx.send(());
    });
    if tokio::time::timeout(CONSUMER_CLOSE_TIMEOUT, closed_rx).await.is_err() {
        tracing::warn!("Leaving the consumer group did not finish in time; exiting anyway.");
    }
    finish_http(server).await
}

/// Waits for the HTTP server's graceful shutdown.
async fn finish_http(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "HTTP server failed."),
        Err(error) => tracing::error!(%error, "HTTP server task failed."),
    }
    tracing::info!("Stopped.");
    Ok(())
}

/// Applies the migrations, retrying while the database is unreachable.
/// Returns false when shutdown was requested first.
async fn migrate_when_reachable(db: &Db, status: &Status, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match db.migrate().await {
            Ok(()) => {
                status.set_db_up(true);
                return true;
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "Database not ready; retrying.");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Creates monthly partitions ahead and drops expired ones, at start and
/// every `maintenance_interval`.
async fn maintain_partitions(db: Db, config: config::DbConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.maintenance_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = storage_maintenance(&db, &config, chrono::Utc::now()).await {
            tracing::warn!(error = %format!("{error:#}"), "Partition maintenance failed; retrying at the next interval.");
        }
    }
}

/// One maintenance pass: partitions from the retention start (or the current
/// month) to `partitions_ahead` months ahead, then retention.
pub async fn storage_maintenance(
    db: &Db,
    config: &config::DbConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let today = now.date_naive();
    let cutoff = config.retention_days.map(|d| now - chrono::Duration::days(i64::from(d)));
    let from = cutoff.map_or(today, |c| c.date_naive().max(today - chrono::Duration::days(3660)));
    let to = today.checked_add_months(chrono::Months::new(config.partitions_ahead)).unwrap_or(today);
    let created = db.ensure_partitions(from, to).await?;
    if !created.is_empty() {
        tracing::info!(?created, "Partitions created.");
    }
    if let Some(cutoff) = cutoff {
        let dropped = db.drop_expired(cutoff).await?;
        if !dropped.is_empty() {
            tracing::info!(?dropped, %cutoff, "Expired partitions dropped.");
        }
    }
    Ok(())
}

/// Keeps the readiness flag honest while no batch is being written.
async fn watch_database(db: Db, status: Arc<Status>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => status.set_db_up(db.ping().await),
            () = shutdown.cancelled() => return,
        }
    }
}
