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

/// The fewest bytes a token may have: a guessable token is no protection.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Values that stand for "put the real token here" in templates and
/// examples; a token that contains one of them (ignoring case) is refused.
const PLACEHOLDERS: [&str; 10] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "placeholder",
    "example",
    "secret",
    "password",
    "xxxxxxxx",
];

/// Why a configured token was refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{name} is {len} bytes; use a random token of at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)")]
    TooShort { name: &'static str, len: usize },
    #[error("{name} looks like a template's placeholder ({placeholder:?}); set a real random token")]
    Placeholder { name: &'static str, placeholder: &'static str },
}

/// A bearer token the host checks requests against (`API_TOKEN`,
/// `READ_TOKEN`, `ADMIN_TOKEN`), compared in constant time. The console
/// also accepts the read token as a cookie holding a digest of it.
#[derive(Clone)]
pub struct Token {
    token: std::sync::Arc<[u8]>,
    /// The cookie value that stands for the token.
    cookie: std::sync::Arc<str>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token configured as `name`: None when unset or blank (an unset
    /// value in a template is no token); an error when it is too short or a
    /// placeholder, so that a template's `change-me` never works as a real
    /// token.
    pub fn configured(name: &'static str, value: Option<&str>) -> Result<Option<Token>, TokenError> {
        let Some(token) = value.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
        let lower = token.to_ascii_lowercase();
        if let Some(placeholder) = PLACEHOLDERS.iter().find(|p| lower.contains(*p)) {
            return Err(TokenError::Placeholder { name, placeholder });
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { name, len: token.len() });
        }
        Ok(Some(Token::new(token)))
    }

    fn new(token: &str) -> Token {
        let digest = Sha256::new().chain_update(b"notification-host console cookie\0").chain_update(token).finalize();
        let cookie: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Token { token: token.as_bytes().into(), cookie: cookie.into() }
    }

    /// Whether `given` is the token (in constant time).
    pub fn matches(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(&self.token))
    }

    /// Whether the request carries the token as `Authorization: Bearer`.
    pub fn in_bearer(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.matches(t))
    }

    /// Whether the request carries the token, as a bearer token or as the
    /// console's cookie.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        self.in_bearer(headers)
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

    const TOKEN: &str = "r4nd0m-t0ken-0f-32-bytes-xyzw123";

    #[test]
    fn bearer_or_cookie_and_nothing_else() {
        assert!(Token::configured("READ_TOKEN", None).unwrap().is_none());
        assert!(Token::configured("READ_TOKEN", Some("  ")).unwrap().is_none());
        let t = Token::configured("READ_TOKEN", Some(TOKEN)).unwrap().unwrap();
        assert!(t.allows(&headers(&[("authorization", &format!("Bearer {TOKEN}"))])));
        assert!(!t.allows(&headers(&[("authorization", &format!("Bearer {}", &TOKEN[1..]))])));
        assert!(!t.allows(&headers(&[("authorization", TOKEN)])));
        let set = t.sign_in_cookie(&HeaderMap::new());
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"));
        assert!(!set.contains(TOKEN), "the cookie holds a digest, not the token");
        let value = set.split(';').next().unwrap();
        assert!(t.allows(&headers(&[("cookie", &format!("a=b; {value}"))])));
        assert!(!t.allows(&headers(&[("cookie", &format!("{COOKIE}={TOKEN}"))])));
        assert!(!t.allows(&headers(&[("cookie", "nh_read=")])));
        assert!(t.sign_in_cookie(&headers(&[("x-forwarded-proto", "https")])).ends_with("; Secure"));
    }

    #[test]
    fn placeholders_and_short_tokens_are_refused() {
        for placeholder in ["change-me", "change-me-too", "CHANGEME-0123456789abcdef", "my-secret-token-for-prod"] {
            assert!(
                matches!(Token::configured("API_TOKEN", Some(placeholder)), Err(TokenError::Placeholder { .. })),
                "{placeholder}"
            );
        }
        assert_eq!(
            Token::configured("ADMIN_TOKEN", Some("0123456789abcde")).unwrap_err(),
            TokenError::TooShort { name: "ADMIN_TOKEN", len: 15 }
        );
        assert!(Token::configured("ADMIN_TOKEN", Some("0123456789abcdef")).unwrap().is_some());
    }
}
