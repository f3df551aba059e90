//! `notification-host serve` (the default command) and `migrate`: wire
//! Kafka, the normalizers, storage and HTTP together, and run until SIGTERM
//! or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::ServeArgs;
use crate::status::Status;
use crate::storage::maintain_partitions;
use crate::storage::{Connections, Db};
use crate::{http, kafka, metrics, modules, pipeline, shutdown};

/// How long shutdown waits for the consumer to leave its group.
const CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `notification-host migrate`: apply the migrations and exit.
pub async fn migrate(args: &ServeArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.db, Connections::for_command())?;
    db.migrate().await?;
    tracing::info!("Migrations applied.");
    Ok(())
}

/// `notification-host serve`: consume, normalize and store every record, and
/// serve the API, until SIGTERM or Ctrl-C.
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let status = Arc::new(Status::default());
    let metrics = Arc::new(metrics::Metrics::with_max_topics(args.metrics_max_topics));
    let budget = Budget::of(&args);
    tracing::info!(
        limit = ?budget.limit,
        batch_max_bytes = budget.batch_max_bytes,
        kafka_queue_bytes = budget.kafka_queue_bytes,
        answer_max_bytes = budget.answer_max_bytes,
        "Memory budget."
    );
    metrics.memory_limit_bytes.set(budget.limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)));
    // What was derived is what runs.
    args.pipeline.batch_max_bytes = Some(budget.batch_max_bytes);
    args.http.answer_max_bytes = Some(budget.answer_max_bytes);
    let db = Db::connect(
        &args.db,
        Connections {
            reads: args.db.max_connections,
            writers: args.pipeline.writers,
            read_timeout: args.db.read_timeout,
        },
    )?;
    // An API-only replica has no consumer and is ready when the database is.
    let consumer = if args.role.consumes() {
        Some(Arc::new(kafka::create_consumer(&args.kafka, budget.kafka_queue_bytes, status.clone(), metrics.clone())?))
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
    let modules = modules::Modules::load(&args.modules, true, metrics.clone()).await?;
    if modules.dir().is_some() {
        tokio::spawn(modules::watch(modules.clone(), args.modules.normalizers_poll_interval, shutdown.clone()));
    }
    let state =
        http::AppState::new(&args, db.clone(), status.clone(), metrics.clone(), modules.clone(), shutdown.clone())
            .context("refusing to start")?;
    if state.read_token.is_none() && args.role.serves_api() {
        tracing::warn!(
            "READ_TOKEN is not set: anyone who reaches this port can read every stored record (the query API and the console)."
        );
    }
    let app = http::router_for(state, args.role);
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { http_shutdown.cancelled().await }).await
    });

    if !migrate_when_reachable(&db, &status, &shutdown).await {
        return Ok(());
    }
    // The module store's live versions, before the first record.
    if let Err(error) = modules::refresh_store(&db, &modules).await {
        tracing::warn!(error = %format!("{error:#}"), "Cannot read the module store yet; following it.");
    }
    tokio::spawn(modules::watch_store(
        db.clone(),
        modules.clone(),
        args.modules.module_store_poll_interval,
        shutdown.clone(),
    ));
    tokio::spawn(watch_database(db.clone(), status.clone(), shutdown.clone()));
    tokio::spawn(maintain_partitions(db.clone(), args.db.clone(), metrics.clone(), shutdown.clone()));
    tokio::spawn(crate::learner::learn(db.clone(), args.sagas.clone(), metrics.clone(), shutdown.clone()));

    let Some(consumer) = consumer else {
        tracing::info!(role = ?args.role, "Serving the API only; no consumer.");
        shutdown.cancelled().await;
        return finish_http(server).await;
    };
    let pipeline = pipeline::Pipeline {
        consumer: consumer.clone(),
        db,
        modules,
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
