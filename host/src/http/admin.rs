//! `POST /admin/modules`: pushing a module version to the store over HTTP,
//! with its own token (`ADMIN_TOKEN`). The version is judged exactly as a
//! replica will load it before anything is stored; a refused push changes
//! nothing.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::modules;
use crate::storage::module_store::StoreError;

/// A module version to store.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The manifest's TOML text.
    pub manifest: String,
    /// The component's bytes, base64.
    pub component: String,
    /// The golden samples' text (JSON lines), if the manifest names any.
    pub samples: Option<String>,
    /// Who pushes, for the history.
    pub by: Option<String>,
}

/// A stored, live version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pushed {
    pub name: String,
    pub version: String,
    pub hash: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Stores a module version and makes it live on every replica. Requires
/// `Authorization: Bearer <ADMIN_TOKEN>`.
#[utoipa::path(
    post,
    path = "/admin/modules",
    tag = "operations",
    request_body = PushBody,
    responses(
        (status = 201, body = Pushed, description = "Stored and live; every replica loads it within a second"),
        (status = 400, description = "The body is not a push"),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 403, description = "No ADMIN_TOKEN is configured: pushes over HTTP are off"),
        (status = 409, description = "This name and version is stored with other content"),
        (status = 413, description = "The body is over ADMIN_MAX_BODY_BYTES"),
        (status = 422, description = "Refused: the reasons a replica would refuse it"),
    )
)]
pub async fn push_module(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let Some(expected) = &state.admin_token else {
        return error(StatusCode::FORBIDDEN, "Pushing modules over HTTP is off: set ADMIN_TOKEN.");
    };
    if !expected.in_bearer(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Missing or wrong admin token.");
    }
    let limit = state.admin_max_body_bytes;
    let body = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("The body is over {limit} bytes, or was cut off."));
        }
    };
    let push: PushBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Not a push: {e}.")),
    };
    let component = match base64::engine::general_purpose::STANDARD.decode(push.component.as_bytes()) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("\"component\" is not base64: {e}.")),
    };
    let settings = state.module_settings.clone();
    let (manifest, samples) = (push.manifest, push.samples);
    let judged =
        tokio::task::spawn_blocking(move || modules::validate_for_store(&settings, manifest, component, samples)).await;
    let module = match judged {
        Ok(Ok(m)) => m,
        Ok(Err(reason)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("Refused, nothing stored: {reason}"));
        }
        Err(e) => {
            tracing::error!(error = %e, "Judging a pushed module failed.");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Judging the module failed.");
        }
    };
    let by = push.by.unwrap_or_else(|| "http".into());
    match state.db.push_module(&module, &by).await {
        Ok(()) => (StatusCode::CREATED, Json(Pushed { name: module.name, version: module.version, hash: module.hash }))
            .into_response(),
        Err(refused @ StoreError::VersionExists { .. }) => error(StatusCode::CONFLICT, refused.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "Storing a pushed module failed.");
            error(StatusCode::SERVICE_UNAVAILABLE, "The module store is unavailable.")
        }
    }
}
