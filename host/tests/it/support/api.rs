//! The host's router on a real PostgreSQL, without a socket: the state
//! every API and console test builds, and records stored through the real
//! ingest path.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use notification_host::config::Cli;
use notification_host::http::{AppState, router};
use notification_host::metrics::Metrics;
use notification_host::modules::{Modules, ModulesConfig, Normalizer};
use notification_host::record::Record;
use notification_host::runtime::Runtime;
use notification_host::status::Status;
use notification_host::storage::{Db, StoredRow};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The router over a real database, with the state `serve` builds.
pub struct Api {
    pub state: AppState,
}

impl Api {
    pub fn new(pool: PgPool) -> Api {
        Api::with_token(pool, None)
    }

    /// The state `serve` builds, with `args` as its flags (e.g.
    /// `["--api-token", "..."]`).
    pub fn with_args(pool: PgPool, args: &[&str]) -> Api {
        let status = Arc::new(Status::default());
        status.set_db_up(true);
        status.set_subscribed(1);
        status.set_assigned(3);
        let cli = <Cli as clap::Parser>::parse_from(std::iter::once("notification-host").chain(args.iter().copied()));
        let modules = Arc::new(Modules::new(
            Runtime::new(Default::default()).unwrap(),
            ModulesConfig {
                dir: None,
                quarantine_after: 10,
                quarantine_cooldown: std::time::Duration::from_secs(30),
                maxima: Default::default(),
            },
        ));
        let state = AppState::new(
            &cli.serve,
            Db::from_pool(pool),
            status,
            Arc::new(Metrics::default()),
            modules,
            CancellationToken::new(),
        )
        .unwrap();
        Api { state }
    }

    pub fn with_token(pool: PgPool, token: Option<&str>) -> Api {
        match token {
            Some(token) => Api::with_args(pool, &["--api-token", token]),
            None => Api::with_args(pool, &[]),
        }
    }

    pub async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, body)
    }

    /// A GET with `headers`: the status, the headers and the body as text.
    pub async fn page(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut r = Request::get(uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = router(self.state.clone()).oneshot(r.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn post(
        &self,
        uri: &str,
        content_type: Option<&str>,
        auth: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut r = Request::post(uri);
        if let Some(ct) = content_type {
            r = r.header(header::CONTENT_TYPE, ct);
        }
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        self.call(r.body(body.into()).unwrap()).await
    }
}

/// Stores records through the real ingest path (normalizer + StoredRow).
pub async fn ingest(pool: &PgPool, records: Vec<(&str, i32, i64, i64, &str)>) {
    let db = Db::from_pool(pool.clone());
    let records: Vec<Record> = records
        .into_iter()
        .map(|(topic, partition, offset, ts, value)| Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp: Some(ts),
            key: None,
            headers: vec![],
            value: Some(value.as_bytes().to_vec()),
        })
        .collect();
    let normalized = Normalizer::Builtin.normalize(&records);
    let rows: Vec<StoredRow> = records.into_iter().zip(normalized).map(|(r, n)| StoredRow::from_record(r, n)).collect();
    db.insert(&rows).await.unwrap();
}
