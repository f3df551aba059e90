//! Access to what the log holds. The log keeps customer data, so with
//! `READ_TOKEN` set every read (the query API, `GET /normalizers`, whose
//! shadow samples hold ids, and the console) needs that token: as
//! `Authorization: Bearer <token>`, or as the console's cookie, which the
//! console's sign-in sets once. Health, readiness, metrics and the API
//! reference stay open for probes and scrapers; writes keep their own
//! tokens (`API_TOKEN`, `ADMIN_TOKEN`).
//!
//! The cookie holds a digest of the token, not the token: it is `HttpOnly`
//! (no script reads it) and `SameSite=Strict` (no other site's page can
//! make the browser send it).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;

/// The console's cookie.
pub const COOKIE: &str = "nh_read";

/// How long a console sign-in lasts.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

/// The read token, when one is configured.
#[derive(Clone)]
pub struct ReadToken {
    token: Vec<u8>,
    /// The cookie value that stands for the token.
    cookie: String,
}

impl std::fmt::Debug for ReadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadToken(..)")
    }
}

impl ReadToken {
    /// None for an unset or blank token (an unset value in a template is no
    /// token).
    pub fn new(token: Option<&str>) -> Option<ReadToken> {
        let token = token.filter(|t| !t.trim().is_empty())?;
        let digest = Sha256::new().chain_update(b"notification-host console cookie\0").chain_update(token).finalize();
        let cookie = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(ReadToken { token: token.as_bytes().to_vec(), cookie })
    }

    /// Whether `given` is the token (in constant time).
    pub fn matches(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(&self.token))
    }

    /// Whether the request carries the token, as a bearer token or as the
    /// console's cookie.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.matches(t));
        bearer
            || cookies(headers)
                .any(|(name, value)| name == COOKIE && bool::from(value.as_bytes().ct_eq(self.cookie.as_bytes())))
    }

    /// The `Set-Cookie` value that signs the browser in. `Secure` when the
    /// request came over HTTPS (directly or through a proxy that says so).
    pub fn sign_in_cookie(&self, headers: &HeaderMap) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
            self.cookie,
            secure(headers)
        )
    }
}

/// The `Set-Cookie` value that signs the browser out.
pub fn sign_out_cookie(headers: &HeaderMap) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", secure(headers))
}

fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

/// The request's cookies as (name, value) pairs.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Middleware of the read API: without the token (when one is set), 401
/// with the API's JSON error.
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match &state.read_token {
        Some(token) if !token.allows(request.headers()) => unauthorized(),
        _ => next.run(request).await,
    }
}

/// The API's answer to a read without the token.
pub fn unauthorized() -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": "A valid read token is required." }))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_or_cookie_and_nothing_else() {
        assert!(ReadToken::new(None).is_none());
        assert!(ReadToken::new(Some("  ")).is_none());
        let t = ReadToken::new(Some("s3cret")).unwrap();
        assert!(t.allows(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(!t.allows(&headers(&[("authorization", "Bearer s3cre")])));
        assert!(!t.allows(&headers(&[("authorization", "s3cret")])));
        let set = t.sign_in_cookie(&HeaderMap::new());
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"));
        assert!(!set.contains("s3cret"), "the cookie holds a digest, not the token");
        let value = set.split(';').next().unwrap();
        assert!(t.allows(&headers(&[("cookie", &format!("a=b; {value}"))])));
        assert!(!t.allows(&headers(&[("cookie", &format!("{COOKIE}=s3cret"))])));
        assert!(!t.allows(&headers(&[("cookie", "nh_read=")])));
        assert!(t.sign_in_cookie(&headers(&[("x-forwarded-proto", "https")])).ends_with("; Secure"));
    }
}
