//! The HTTP server (axum): health, readiness and the REST API over the log.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::status::Status;
use crate::storage::Db;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub status: Arc<Status>,
}

/// The application's routes, without a socket (tests call it directly).
pub fn router(state: AppState) -> Router {
    Router::new().route("/health", get(health)).route("/ready", get(ready)).with_state(state)
}

/// Liveness: the process serves HTTP.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

/// Readiness: the database answers and the consumer holds its assignment.
async fn ready(State(state): State<AppState>) -> Response {
    match state.status.readiness() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reasons) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "reasons": reasons }))).into_response()
        }
    }
}
