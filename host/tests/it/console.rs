//! The console's pages on the real router against a real PostgreSQL: what
//! they show, how search resolves an id, the read token, and that every page
//! complies with its own Content-Security-Policy (no inline script or
//! style) and escapes what records hold. The browser tests in
//! `tests/tests/console.rs` drive the same pages in Chromium.

use crate::support::api::{Api, ingest};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use notification_host::http::console::CONTENT_SECURITY_POLICY;
use notification_host::http::router;
use sqlx::PgPool;
use tower::ServiceExt;

const T0: i64 = 1_743_760_800_000; // 2025-04-04T10:00:00Z

/// A saga of five events: two name order 42, the others only its saga id;
/// one is stored with a normalizer-independent ingest note (not JSON), and
/// the last comes after a two-hour gap.
fn saga() -> Vec<(&'static str, i32, i64, i64, &'static str)> {
    vec![
        (
            "order_commands",
            0,
            0,
            T0,
            r#"{"type": "create_order", "correlation_id": "saga-42", "payload": {"customer_id": "cust-7", "saga_id": "saga-42"}}"#,
        ),
        (
            "order_events",
            0,
            0,
            T0 + 200,
            r#"{"type": "order.created", "correlation_id": "saga-42", "source": "order-service", "payload": {"order_id": 42, "customer_id": "cust-7", "status": "PENDING"}}"#,
        ),
        (
            "payment_events",
            0,
            0,
            T0 + 900,
            r#"{"type": "payment.authorized", "correlation_id": "saga-42", "source": "payment-service", "payload": {"payment_id": "pi_1", "status": "AUTHORIZED"}}"#,
        ),
        (
            "order_events",
            0,
            1,
            T0 + 1500,
            r#"{"type": "order.status_updated", "correlation_id": "saga-42", "source": "order-service", "payload": {"order_id": 42, "status": "ACCEPTED", "runner_id": "runner-9"}}"#,
        ),
        (
            "payment_events",
            0,
            1,
            T0 + 7_201_500,
            r#"{"type": "payment.released", "correlation_id": "saga-42", "source": "payment-service", "payload": {"payment_id": "pi_1", "runner_id": "runner-9", "status": "SUCCEEDED"}}"#,
        ),
    ]
}

/// Fails when a page would break its own policy or reach outside the
/// host, judged on the parsed document as a browser builds it: a script
/// without `src`, a `<style>` element, a `style` or event-handler
/// attribute (the policy blocks each, so the page would not work), or a
/// link, source or form that leaves the host. Returns the page's text.
fn assert_policy_safe(uri: &str, html: &str) -> String {
    let document = scraper::Html::parse_document(html);
    for node in document.root_element().descendants() {
        let Some(element) = node.value().as_element() else { continue };
        let name = element.name();
        assert!(name != "style", "{uri}: a <style> element");
        if name == "script" {
            assert!(element.attr("src").is_some(), "{uri}: an inline <script>");
        }
        for (attr, value) in element.attrs() {
            assert!(!attr.starts_with("on"), "{uri}: an event handler {attr}={value:?} on <{name}>");
            assert_ne!(attr, "style", "{uri}: a style attribute on <{name}>");
            if ["href", "src", "action", "formaction"].contains(&attr) {
                assert!(
                    value.starts_with('/') && !value.starts_with("//"),
                    "{uri}: <{name} {attr}={value:?}> leaves the host"
                );
            }
        }
    }
    document.root_element().text().collect()
}

async fn record_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT notification_id FROM notifications ORDER BY notification_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn every_page_carries_the_policy_and_keeps_to_it(pool: PgPool) {
    ingest(&pool, saga()).await;
    let api = Api::new(pool.clone());
    let first = record_ids(&pool).await[0];
    let pages = [
        "/ui".to_owned(),
        "/ui/".to_owned(),
        "/ui/order/42".to_owned(),
        "/ui/correlation/saga-42".to_owned(),
        "/ui/customer/cust-7".to_owned(),
        "/ui/runner/runner-9".to_owned(),
        format!("/ui/record/{first}"),
        "/ui/live?topic=order_events".to_owned(),
        "/ui/normalizers".to_owned(),
        "/ui/search?q=nothing-here".to_owned(),
        "/ui/no-such-page".to_owned(),
        "/ui/order/no-such-order".to_owned(),
        "/ui/record/not-a-number".to_owned(),
    ];
    for uri in &pages {
        let (status, headers, html) = api.page(uri, &[]).await;
        assert!(status == StatusCode::OK || status.is_client_error(), "{uri}: {status}");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{uri}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{uri}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{uri}");
        assert!(html.starts_with("<!DOCTYPE html>"), "{uri}: {html:.200}");
        assert_policy_safe(uri, &html);
    }
    let (status, _, _) = api.page("/ui/no-such-page", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.page("/ui/record/not-a-number", &[]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.page("/ui/record/999999", &[]).await.0, StatusCode::NOT_FOUND);

    // The script and the stylesheet the pages name are served, with their
    // types, and cached for good (their names change with their content).
    let (_, _, landing) = api.page("/ui", &[]).await;
    for (attr, kind) in [("src=\"/ui/assets/", "text/javascript"), ("href=\"/ui/assets/", "text/css")] {
        let start = landing.find(attr).unwrap() + attr.len() - "/ui/assets/".len();
        let path = &landing[start..start + landing[start..].find('"').unwrap()];
        let (status, headers, body) = api.page(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
        assert!(headers[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"), "{path}");
        assert!(body.len() > 500, "{path}");
    }
    assert_eq!(api.page("/ui/assets/console-000000.js", &[]).await.0, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn the_order_page_tells_where_the_saga_stopped(pool: PgPool) {
    ingest(&pool, saga()).await;
    let api = Api::new(pool.clone());
    let (status, _, html) = api.page("/ui/order/42", &[]).await;
    assert_eq!(status, StatusCode::OK);
    // All five events, oldest first: two name the order, three share its saga.
    let order: Vec<usize> =
        ["create_order", "order.created", "payment.authorized", "order.status_updated", "payment.released"]
            .iter()
            .map(|t| html.find(&format!("data-type=\"{t}\"")).unwrap_or_else(|| panic!("{t} missing")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "events out of order: {order:?}");
    assert!(html.contains("5 events (2 naming the order, 3 correlated through its sagas) across 3 services"), "{html}");
    // One lane per service, the record without a service in its own.
    for lane in ["(no service)", "order-service", "payment-service"] {
        assert!(html.contains(&format!("<th>{lane} <small>")), "lane {lane}");
    }
    // Where it stopped, and the status it reached.
    assert!(
        html.contains("Stopped at <strong>payment.released</strong> from <strong>payment-service</strong>"),
        "{html}"
    );
    assert!(html.contains("Status now: <span class=\"status\">SUCCEEDED</span>"), "{html}");
    // Status changes are marked with what they changed from.
    assert!(html.contains("PENDING → AUTHORIZED"), "{html}");
    assert!(html.contains("AUTHORIZED → ACCEPTED"), "{html}");
    // The two-hour gap is collapsed into one line.
    assert!(html.contains("⋯ 2 h 0 min without events ⋯"), "{html}");
    assert_eq!(html.matches("class=\"gap\"").count(), 1);
    // The saga is one click away, and so is the JSON.
    assert!(html.contains("href=\"/ui/correlation/saga-42\""));
    assert!(html.contains("href=\"/order/42/timeline\""));

    let (_, _, saga_page) = api.page("/ui/correlation/saga-42", &[]).await;
    assert!(saga_page.contains("Saga <code"), "{saga_page}");
    assert!(saga_page.contains("5 events across 3 services"));

    let (_, _, landing) = api.page("/ui", &[]).await;
    assert!(landing.contains("href=\"/ui/order/42\""), "recent orders list order 42: {landing}");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn search_goes_to_the_page_of_the_kind_of_id(pool: PgPool) {
    ingest(&pool, saga()).await;
    // An id that is both an order and a customer.
    ingest(
        &pool,
        vec![("order_events", 1, 0, T0, r#"{"type": "x", "payload": {"order_id": "both", "customer_id": "both"}}"#)],
    )
    .await;
    let api = Api::new(pool);
    for (q, to) in [
        ("42", "/ui/order/42"),
        ("saga-42", "/ui/correlation/saga-42"),
        ("cust-7", "/ui/customer/cust-7"),
        ("runner-9", "/ui/runner/runner-9"),
        ("%20cust-7%0A", "/ui/customer/cust-7"),
    ] {
        let (status, headers, _) = api.page(&format!("/ui/search?q={q}"), &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{q}");
        assert_eq!(headers[header::LOCATION], to, "{q}");
    }
    let (status, _, html) = api.page("/ui/search?q=both", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("href=\"/ui/order/both\"") && html.contains("href=\"/ui/customer/both\""), "{html}");
    let (status, _, html) = api.page("/ui/search?q=nobody", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("No record names “nobody”"), "{html}");
    assert_eq!(api.page("/ui/search?q=", &[]).await.0, StatusCode::BAD_REQUEST);
    // A byte that is not UTF-8 is read as U+FFFD (form decoding), found nowhere.
    assert_eq!(api.page("/ui/search?q=%FF", &[]).await.0, StatusCode::NOT_FOUND);
}

/// Values a hostile producer might send, in every field a page shows.
const HOSTILE: [&str; 6] = [
    r#"<script>alert("x")</script>"#,
    r#""><img src=x onerror=alert(1)>"#,
    "javascript:alert(1)",
    "</pre></td></table><iframe src=//evil.example>",
    "' onmouseover='alert(1)",
    "<style>body{display:none}</style>",
];

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn what_records_hold_is_shown_as_text(pool: PgPool) {
    let values: Vec<String> = HOSTILE
        .iter()
        .map(|h| {
            serde_json::json!({"type": h, "correlation_id": h, "source": h,
                "payload": {"order_id": HOSTILE[0], "customer_id": h, "runner_id": h, "status": h}})
            .to_string()
        })
        .collect();
    let records: Vec<(&str, i32, i64, i64, &str)> =
        values.iter().enumerate().map(|(i, v)| ("t", 0, i as i64, T0 + i as i64, v.as_str())).collect();
    ingest(&pool, records).await;
    let api = Api::new(pool.clone());
    let encoded = notification_host::http::console::path_segment(HOSTILE[0]);
    let mut uris = vec![
        "/ui".to_owned(),
        format!("/ui/order/{encoded}"),
        format!("/ui/correlation/{}", notification_host::http::console::path_segment(HOSTILE[1])),
        format!("/ui/customer/{}", notification_host::http::console::path_segment(HOSTILE[2])),
    ];
    uris.extend(record_ids(&pool).await.into_iter().map(|id| format!("/ui/record/{id}")));
    for uri in &uris {
        let (status, _, html) = api.page(uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let text = assert_policy_safe(uri, &html);
        // Inert, and still readable: the values are there as text.
        assert!(text.contains(HOSTILE[0]), "{uri}: the order id is shown as text");
        for h in HOSTILE.iter().filter(|h| h.contains('<')) {
            assert!(!html.contains(*h), "{uri} holds {h:?} as markup");
        }
    }
    let (_, _, order) = api.page(&format!("/ui/order/{encoded}"), &[]).await;
    assert!(order.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"), "readable as text");
    assert!(order.contains("href=\"/ui/customer/javascript%3Aalert%281%29\""), "an id link stays a path");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_megabyte_value_is_cut_with_a_link_to_all_of_it(pool: PgPool) {
    let big = format!(r#"{{"type": "big", "payload": {{"order_id": "o-big", "blob": "{}"}}}}"#, "x".repeat(1_000_000));
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    ingest(&pool, vec![("t", 0, 0, T0, big.as_str())]).await;
    let db = notification_host::storage::Db::from_pool(pool.clone());
    let record = notification_host::record::Record {
        topic: "t".into(),
        partition: 0,
        offset: 1,
        timestamp: Some(T0),
        key: Some(vec![0xff, 0x00, 0x41]),
        headers: vec![],
        value: Some(binary.clone()),
    };
    let normalized = notification_host::modules::Normalizer::Builtin.normalize(std::slice::from_ref(&record));
    let row = notification_host::storage::StoredRow::from_record(record, normalized.into_iter().next().unwrap());
    db.insert(&[row]).await.unwrap();
    let ids = record_ids(&pool).await;
    let api = Api::new(pool);

    let (status, _, html) = api.page(&format!("/ui/record/{}", ids[0]), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.len() < 250_000, "the page is cut, not 2 MB: {} bytes", html.len());
    assert!(html.contains("is cut here") && html.contains("the first 65536 are shown"), "says it was cut");
    assert!(html.contains(&format!("href=\"/ui/record/{}/value\"", ids[0])));
    assert!(html.contains(&format!("href=\"/notifications/{}\"", ids[0])));

    let (status, _, html) = api.page(&format!("/ui/record/{}", ids[1]), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Not UTF-8 text; as hex:") && html.contains("00000000  80 81 82"), "hex dump");
    assert!(html.contains("hex: </span><code>ff 00 41</code>"), "the key as hex: {html}");

    // The download is the exact bytes, never rendered.
    let response = router(api.state.clone())
        .oneshot(Request::get(format!("/ui/record/{}/value", ids[1])).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/octet-stream");
    assert!(response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment"));
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes().as_ref(), binary.as_slice());
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn one_notification_by_its_id_over_the_api(pool: PgPool) {
    ingest(&pool, saga()).await;
    let id = record_ids(&pool).await[1];
    let api = Api::new(pool);
    let (status, body) = api.get(&format!("/notifications/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notificationId"], id);
    assert_eq!(body["eventType"], "order.created");
    assert_eq!(api.get("/notifications/987654321").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/notifications/abc").await.0, StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn with_a_read_token_every_read_needs_it(pool: PgPool) {
    ingest(&pool, saga()).await;
    let api = Api::with_args(pool, &["--read-token", "t0k3n-0123456789abcdef"]);

    // Every documented GET but the probes and the metrics is a read.
    let doc = notification_host::http::openapi();
    let open = ["/health", "/ready", "/ready/ingest", "/metrics"];
    let mut reads = 0;
    for (path, item) in &doc.paths.paths {
        if item.get.is_none() || open.contains(&path.as_str()) {
            continue;
        }
        let uri =
            path.replace("{order_id}", "42").replace("{correlation_id}", "saga-42").replace("{notification_id}", "1");
        let (status, headers, body) = api.page(&uri, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(body.contains("A valid read token is required."), "{uri}: {body}");
        let (status, _, _) = api.page(&uri, &[("authorization", "Bearer t0k3n-0123456789abcdef")]).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri} with the token");
        assert_eq!(api.page(&uri, &[("authorization", "Bearer wrong")]).await.0, StatusCode::UNAUTHORIZED, "{uri}");
        reads += 1;
    }
    assert!(reads >= 7, "the read routes were found: {reads}");
    for uri in open.iter().chain(&["/openapi.json", "/apidocs/"]) {
        assert_eq!(api.page(uri, &[]).await.0, StatusCode::OK, "{uri} stays open");
    }

    // The console asks for the token, then keeps it in a cookie.
    let (status, headers, _) = api.page("/ui/order/42?x=1", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/login?next=%2Fui%2Forder%2F42%3Fx%3D1");
    assert_eq!(api.page("/ui/live/events", &[]).await.0, StatusCode::UNAUTHORIZED);
    // A link followed from another site reloads itself, so that the
    // browser sends the SameSite=Strict cookie it holds.
    let (status, _, html) = api.page("/ui/order/42", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<meta http-equiv="refresh" content="0">"#));
    let (status, _, html) = api.page("/ui/login?next=%2Fui%2Forder%2F42", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"name="next" value="/ui/order/42""#), "{html}");

    let login = |body: &'static str| {
        let state = api.state.clone();
        async move {
            router(state)
                .oneshot(
                    Request::post("/ui/login")
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    };
    let wrong = login("token=nope&next=%2Fui%2Forder%2F42").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let right = login("token=t0k3n-0123456789abcdef&next=%2Fui%2Forder%2F42").await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()[header::LOCATION], "/ui/order/42");
    let cookie = right.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("t0k3n-0123456789abcdef"));
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, _, html) = api.page("/ui/order/42", &[("cookie", &pair)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Sign out"));
    // The cookie reads the API too (the record page links to it).
    assert_eq!(api.page("/order/42", &[("cookie", &pair)]).await.0, StatusCode::OK);
    // A sign-in never sends the browser to another site.
    let elsewhere = login("token=t0k3n-0123456789abcdef&next=%2F%2Fevil.example%2F").await;
    assert_eq!(elsewhere.headers()[header::LOCATION], "/ui");
}
