//! API errors. Internal causes are logged, never sent: a client only sees a
//! status and a short message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::storage::DbError;

/// Errors of the query endpoints: `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database error: {0}")]
    Database(#[from] DbError),
    /// Every answer slot stayed taken for as long as a read may wait.
    #[error("every answer slot is taken")]
    Busy,
}

impl From<notification_parse::request::Invalid> for ApiError {
    fn from(e: notification_parse::request::Invalid) -> Self {
        ApiError::Invalid(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, (*m).to_owned()),
            ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.".to_owned()),
            ApiError::Database(e) => database_failure(e),
            ApiError::Busy => {
                (StatusCode::SERVICE_UNAVAILABLE, "Too many reads are being answered; try again later.".to_owned())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// Errors of `POST /send-notification`: `{"success": false, "message": "..."}`,
/// as the original service answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Invalid(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("database error: {0}")]
    Database(DbError),
}

impl From<notification_parse::request::Invalid> for SendError {
    fn from(e: notification_parse::request::Invalid) -> Self {
        SendError::Invalid(e.0)
    }
}

impl SendError {
    /// A value PostgreSQL refuses (`\u0000` in the document, nesting too
    /// deep for JSONB) is the client's fault, and nothing was stored.
    pub fn from_db(e: DbError) -> SendError {
        match e {
            DbError::Refused(_) => SendError::Invalid(
                "The event cannot be stored: it contains \\u0000 or is nested too deeply for PostgreSQL's JSONB."
                    .into(),
            ),
            e => SendError::Database(e),
        }
    }
}

impl IntoResponse for SendError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            SendError::Invalid(m) => (StatusCode::BAD_REQUEST, m.clone()),
            SendError::Unauthorized => (StatusCode::UNAUTHORIZED, "A valid bearer token is required.".to_owned()),
            SendError::TooLarge(limit) => (StatusCode::PAYLOAD_TOO_LARGE, format!("The body exceeds {limit} bytes.")),
            SendError::Database(e) => database_failure(e),
        };
        let mut response = (status, Json(json!({ "success": false, "message": message }))).into_response();
        if matches!(self, SendError::Unauthorized) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Logs the cause; answers 503 when the database is unreachable (retrying
/// later helps) or the query ran past its time limit, and 500 otherwise,
/// with a generic message either way.
fn database_failure(e: &DbError) -> (StatusCode, String) {
    tracing::error!(error = %e, "Database query failed.");
    match e {
        DbError::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again later.".to_owned())
        }
        DbError::TimedOut(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The query ran past its time limit; narrow it (a shorter time range, or an id).".to_owned(),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error.".to_owned()),
    }
}
