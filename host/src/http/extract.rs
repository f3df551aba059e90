//! axum's `Path` with its rejection turned into the API's JSON error (axum's
//! own answer is plain text). Query strings are parsed by
//! `notification_parse::request`.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A path parameter; a value that cannot be decoded (not UTF-8, say) is a 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(_) => Err(ApiError::Invalid("The path is not valid (percent-encoded UTF-8 expected).".into())),
        }
    }
}
