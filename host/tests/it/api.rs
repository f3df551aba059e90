//! The REST API on the real router against a real PostgreSQL: every
//! endpoint, status code and error case, and the JSON shape the original
//! service's clients depend on.

use crate::support::api::{Api, ingest};

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use notification_host::config::{ApiCompat, Role};
use notification_host::http::{AppState, router, router_for};
use notification_host::modules::Normalizer;
use notification_host::record::Record;
use notification_host::storage::{Db, StoredRow};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

const T0: i64 = 1_743_760_800_000; // 2025-04-04T10:00:00Z

/// A cursor's text as a client would send it.
fn base64_url(raw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn saga_events() -> Vec<(&'static str, i32, i64, i64, &'static str)> {
    vec![
        (
            "order_commands",
            0,
            0,
            T0,
            r#"{"type": "create_order", "correlation_id": "saga-1", "payload": {"customer_id": "cust-1", "saga_id": "saga-1"}}"#,
        ),
        (
            "order_events",
            0,
            0,
            T0 + 1000,
            r#"{"type": "order.created", "correlation_id": "saga-1", "source": "order-service", "payload": {"order_id": 42, "customer_id": "cust-1", "status": "PENDING", "saga_id": "saga-1"}}"#,
        ),
        (
            "user_events",
            1,
            0,
            T0 + 2000,
            r#"{"type": "user.payment_info_retrieved", "correlation_id": "saga-1", "source": "user-service", "payload": {"payment_info": {}}}"#,
        ),
        (
            "payment_events",
            0,
            0,
            T0 + 3000,
            r#"{"type": "payment.authorized", "correlation_id": "saga-1", "source": "payment-service", "payload": {"payment_id": "pi", "order_id": 42, "status": "requires_capture"}}"#,
        ),
        (
            "order-events",
            2,
            0,
            T0 + 5000,
            r#"{"type": "ORDER_ACCEPTED", "correlation_id": "order-20250404-aa", "source": "order-service", "payload": {"customerId": "cust-1", "runnerId": "run-9", "orderId": 42, "status": "ACCEPTED", "event": "{}"}}"#,
        ),
        // Same record time as the previous one: the tie goes to the row
        // written later.
        (
            "payment_events",
            1,
            0,
            T0 + 5000,
            r#"{"type": "payment.noted", "correlation_id": "saga-1", "source": "payment-service", "payload": {"order_id": 42, "status": "NOTED"}}"#,
        ),
        // Another saga, another order.
        (
            "order_events",
            0,
            1,
            T0 + 6000,
            r#"{"type": "order.created", "correlation_id": "saga-2", "source": "order-service", "payload": {"order_id": 43, "customer_id": "cust-2", "status": "PENDING"}}"#,
        ),
        (
            "user_events",
            1,
            1,
            T0 + 7000,
            r#"{"type": "user.payment_info_failed", "correlation_id": "saga-2", "source": "user-service", "payload": {"error": "x"}}"#,
        ),
        ("bad", 0, 0, T0 + 8000, "not json"),
    ]
}

const KEYS: [&str; 11] = [
    "notificationId",
    "customerId",
    "runnerId",
    "orderId",
    "event",
    "status",
    "createdAt",
    "sourceTopic",
    "eventType",
    "correlationId",
    "sourceService",
];

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn health_and_ready(pool: PgPool) {
    let api = Api::new(pool);
    assert_eq!(api.get("/health").await, (StatusCode::OK, json!({"status": "healthy"})));
    assert_eq!(api.get("/ready").await.0, StatusCode::OK);
    assert_eq!(api.get("/ready/ingest").await.0, StatusCode::OK);
    // The broker is gone: ingestion is not ready, reads still are.
    api.state.status.set_revoked();
    let (status, body) = api.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ingest"]["status"], "not ready", "{body}");
    let (status, body) = api.get("/ready/ingest").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reasons"][0].as_str().unwrap().contains("no assignment"), "{body}");
    // The database is gone: neither.
    api.state.status.set_db_up(false);
    let (status, body) = api.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reasons"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["ingest"]["reasons"].as_array().unwrap().len(), 2, "{body}");
}

/// The original answered 500 with the database's error text when its
/// database was gone; here every route answers 503 (retrying later helps)
/// and says nothing of the cause. The database is really unreachable: the
/// pool points at a port nothing listens on.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_database_that_does_not_answer_is_503_without_internals(_pool: PgPool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gone = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .unwrap();
    let api = Api::new(gone);
    for uri in ["/order/42/latest", "/order/42", "/order/42/timeline", "/correlation/c1", "/notifications?limit=5"] {
        let (status, body) = api.get(uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(body, json!({"error": "The database is unavailable; try again later."}), "{uri}");
    }
    let (status, body) = api
        .post(
            "/send-notification",
            Some("application/json"),
            None,
            r#"{"customerId": "c", "orderId": "42", "event": {"type": "X"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["success"], false, "{body}");
    let text = body.to_string().to_lowercase();
    assert!(!text.contains("refused") && !text.contains("sqlx") && !text.contains("127.0.0.1"), "{body}");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn latest_keeps_the_original_shape(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool);
    let (status, body) = api.get("/order/42/latest").await;
    assert_eq!(status, StatusCode::OK);
    for key in KEYS {
        assert!(body.get(key).is_some(), "missing {key} in {body}");
    }
    // Two events at T0+5s; the tie goes to the row written later.
    assert_eq!(body["sourceTopic"], "payment_events");
    assert_eq!(body["eventType"], "payment.noted");
    assert_eq!(body["orderId"], "42");
    assert_eq!(body["createdAt"], "2025-04-04T10:00:05+00:00");
    assert_eq!(body["event"]["payload"]["status"], "NOTED", "event is the JSON document itself");
    assert_eq!(body["kafkaPartition"], 1);
    assert_eq!(body["normalizer"], "default@1.1.0");
    assert!(body.get("relation").is_none());
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn unknown_order_is_404_with_the_original_message(pool: PgPool) {
    let api = Api::new(pool);
    let expected = (StatusCode::NOT_FOUND, json!({"error": "No notifications found for this order."}));
    assert_eq!(api.get("/order/nope/latest").await, expected);
    assert_eq!(api.get("/order/nope").await, expected);
    assert_eq!(api.get("/order/nope/timeline").await, expected);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn order_history_is_oldest_first(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool);
    let (status, body) = api.get("/order/42").await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = body.as_array().unwrap().iter().map(|n| n["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, ["order.created", "payment.authorized", "ORDER_ACCEPTED", "payment.noted"]);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn timeline_joins_the_saga(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool);
    let (status, body) = api.get("/order/42/timeline").await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<(String, String)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["eventType"].as_str().unwrap().to_owned(), e["relation"].as_str().unwrap().to_owned()))
        .collect();
    let expect = [
        ("create_order", "correlated"),
        ("order.created", "direct"),
        ("user.payment_info_retrieved", "correlated"),
        ("payment.authorized", "direct"),
        ("ORDER_ACCEPTED", "direct"),
        ("payment.noted", "direct"),
    ];
    let expect: Vec<(String, String)> = expect.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    assert_eq!(events, expect);
    assert_eq!(body["correlationIds"], json!(["order-20250404-aa", "saga-1"]));
    assert_eq!(body["truncated"], false);
}

/// A correlation id reused by thousands of other orders (a session id)
/// never crowds an order out of its own timeline: 6,000 rows of other
/// orders precede the order's first event in the same saga, and the
/// timeline (and the console's order page) still holds every event of the
/// order, pages on with a cursor, and takes at most a bounded number of the
/// saga's rows.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_hot_saga_never_crowds_an_order_out_of_its_timeline(pool: PgPool) {
    let others: Vec<String> = (0..6000)
        .map(|i| {
            format!(
                r#"{{"type": "session.step", "correlation_id": "session-1", "payload": {{"order_id": "other-{i}"}}}}"#
            )
        })
        .collect();
    ingest(&pool, others.iter().enumerate().map(|(i, v)| ("s", 0, i as i64, T0 + i as i64, v.as_str())).collect())
        .await;
    let own: Vec<String> = (0..3)
        .map(|i| {
            format!(r#"{{"type": "order.step_{i}", "correlation_id": "session-1", "payload": {{"order_id": "mine"}}}}"#)
        })
        .collect();
    ingest(
        &pool,
        own.iter().enumerate().map(|(i, v)| ("o", 0, i as i64, T0 + 10_000 + i as i64, v.as_str())).collect(),
    )
    .await;
    let api = Api::new(pool);
    let (status, body) = api.get("/order/mine/timeline").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    let direct: Vec<&str> =
        events.iter().filter(|e| e["relation"] == "direct").map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(direct, ["order.step_0", "order.step_1", "order.step_2"]);
    let correlated = events.len() - direct.len();
    assert!(correlated > 0 && correlated <= 1000, "{correlated} rows of the saga");
    // Paged by the order's own events.
    let (_, first) = api.get("/order/mine/timeline?limit=2").await;
    let mine = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["relation"] == "direct")
            .map(|e| e["eventType"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(mine(&first), ["order.step_0", "order.step_1"]);
    assert_eq!(first["truncated"], true);
    let cursor = first["nextCursor"].as_str().expect("a cursor to the rest");
    let (status, second) = api.get(&format!("/order/mine/timeline?limit=2&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(mine(&second), ["order.step_2"]);
    assert_eq!(second["nextCursor"], Value::Null);
    // The console's order page shows the order too.
    let (status, _, html) = api.page("/ui/order/mine", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("order.step_2"), "the order page shows the order's last event");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn correlation_lists_one_saga(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool);
    let (status, body) = api.get("/correlation/saga-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(api.get("/correlation/none").await.0, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn non_json_values_come_back_as_text(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool);
    let (_, body) =
        api.get("/notifications?source_topic=bad&since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z").await;
    let n = &body["notifications"][0];
    assert_eq!(n["event"], "not json");
    assert!(n["ingestNote"].as_str().unwrap().contains("not JSON"));
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn list_filters_and_pages_without_gaps_or_repeats(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool.clone());
    let (status, body) = api.get("/notifications?customer_id=cust-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notifications"].as_array().unwrap().len(), 3);
    assert_eq!(body["next_cursor"], Value::Null);
    let (_, body) = api.get("/notifications?correlation_id=saga-1&source_service=payment-service").await;
    assert_eq!(body["notifications"].as_array().unwrap().len(), 2);
    let (_, body) =
        api.get("/notifications?event_type=order.created&since=2025-04-04T10:00:05Z&until=2025-04-05T00:00:00Z").await;
    assert_eq!(body["notifications"].as_array().unwrap().len(), 1);
    let (_, body) = api.get("/notifications?until=2025-04-04T10:00:01%2B00:00").await;
    assert_eq!(body["notifications"].as_array().unwrap().len(), 1);

    // Page through everything two at a time while rows keep arriving.
    for order in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut uri = format!("/notifications?limit=2&order={order}");
        let mut extra_offset = 100 + if order == "asc" { 0 } else { 50 };
        loop {
            let (status, body) = api.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for n in body["notifications"].as_array().unwrap() {
                seen.push(n["notificationId"].as_i64().unwrap());
            }
            // A concurrent insert between pages, dated in the middle.
            ingest(&pool, vec![("late", 0, extra_offset, T0 + 2500, r#"{"type": "late"}"#)]).await;
            extra_offset += 1;
            match body["next_cursor"].as_str() {
                Some(c) => uri = format!("/notifications?limit=2&order={order}&cursor={c}"),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a row was repeated: {seen:?}");
        assert!(seen.len() >= 9, "the 9 original rows were all seen: {seen:?}");
    }
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn invalid_queries_are_400_json(pool: PgPool) {
    let api = Api::new(pool);
    // One byte over the longest id a request may carry (MAX_ID_BYTES).
    let long = "x".repeat(32_769);
    for uri in [
        "/notifications?limit=0".to_owned(),
        "/notifications?limit=1001".to_owned(),
        "/notifications?limit=abc".to_owned(),
        "/notifications?since=yesterday".to_owned(),
        "/notifications?until=2025-13-45".to_owned(),
        "/notifications?cursor=garbage".to_owned(),
        "/notifications?order=sideways".to_owned(),
        "/notifications?event_type=order.created".to_owned(),
        "/notifications?source_topic=order_events&since=2025-04-04T10:00:00Z".to_owned(),
        format!("/notifications?cursor={}", base64_url("v1.-1000000000000000000.1.a")),
        format!("/order/1?cursor={}", base64_url("v1.9223372036854775807.1.a")),
        format!("/notifications?order_id={long}"),
        format!("/order/{long}/latest"),
        "/order/%FF%FE/latest".to_owned(),
        "/order/a%00b".to_owned(),
        "/correlation/%C3%28".to_owned(),
    ] {
        let (status, body) = api.get(&uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"].is_string(), "{uri}: {body}");
    }
    let (status, body) = api.get("/no/such/route").await;
    assert_eq!((status, body["error"].is_string()), (StatusCode::NOT_FOUND, true));
    let (status, body) = api.call(Request::delete("/order/1").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["error"].is_string()), (StatusCode::METHOD_NOT_ALLOWED, true));
    // Injection strings are just values.
    let (status, _) = api.get("/order/1'%20OR%20'1'='1/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Every table row as text, to prove a request changed nothing.
async fn snapshot(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT coalesce(string_agg(n::text, E'\\n' ORDER BY notification_id), '') FROM notifications n")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn hostile_requests_are_4xx_json_and_change_nothing(pool: PgPool) {
    ingest(&pool, vec![("orders", 0, 1, 1_743_760_800_000, r#"{"order_id": "o-1", "customer_id": "c-1"}"#)]).await;
    let before = snapshot(&pool).await;
    assert!(before.contains("o-1"), "{before}");
    let api = Api::with_token(pool.clone(), Some("t0k3n-0123456789abcdef"));
    // Percent-encoded: SQL and JSON injection, NUL, overlong and invalid
    // UTF-8, path tricks, format strings, an overlong value.
    let long = "y".repeat(5000);
    let hostile = [
        "%27%3B%20DROP%20TABLE%20notifications%3B--",
        "1%27%20OR%20%271%27%3D%271",
        "%22%7D%2C%7B%22a%22%3A1",
        "%00",
        "a%00b",
        "%C0%AF",
        "%ED%A0%80",
        "%FF",
        "..%2F..%2Fetc%2Fpasswd",
        "%25s%25n%25x",
        "%E2%80%AE%F0%9F%92%A5",
        "%20",
        long.as_str(),
    ];
    let params = [
        "customer_id",
        "runner_id",
        "order_id",
        "correlation_id",
        "event_type",
        "source_topic",
        "source_service",
        "since",
        "until",
        "limit",
        "order",
        "cursor",
    ];
    let mut uris = Vec::new();
    for h in hostile {
        uris.push(format!("/order/{h}/latest"));
        uris.push(format!("/order/{h}"));
        uris.push(format!("/order/{h}/timeline"));
        uris.push(format!("/correlation/{h}"));
        for p in params {
            uris.push(format!("/notifications?{p}={h}"));
        }
        uris.push(format!("/notifications?{h}=1"));
    }
    for uri in &uris {
        let (status, body) = api.get(uri).await;
        assert!(status.is_success() || status.is_client_error(), "{uri}: {status} {body}");
        if status.is_client_error() {
            assert!(body["error"].is_string(), "{uri}: {body}");
        }
    }
    // Writes with the wrong token, content type or body, and reads with bodies.
    let bodies = ["", "{", "[]", "null", "\"\"", "{\"customerId\": \"c\", \"orderId\": \"o\", \"event\": \"E\"}"];
    for body in bodies {
        for (ct, auth) in [
            (Some("application/json"), None),
            (Some("application/json"), Some("Bearer wrong")),
            (Some("text/plain"), Some("Bearer t0k3n-0123456789abcdef")),
            (Some("application/x-www-form-urlencoded"), Some("Bearer t0k3n-0123456789abcdef")),
            (None, Some("Bearer t0k3n-0123456789abcdef")),
        ] {
            let (status, answer) = api.post("/send-notification", ct, auth, body).await;
            assert!(status.is_client_error(), "{ct:?} {auth:?} {body}: {status} {answer}");
            assert_eq!(answer["success"], false, "{answer}");
        }
        let (status, answer) = api.post("/order/o-1/latest", Some("application/json"), None, body).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{answer}");
    }
    let (status, _) = api
        .post("/send-notification", Some("application/json"), Some("Bearer t0k3n-0123456789abcdef"), vec![0xff, 0xfe])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(snapshot(&pool).await, before, "a hostile request changed the table");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn send_notification_stores_an_api_row(pool: PgPool) {
    let api = Api::new(pool);
    let body = json!({"customerId": "cust-9", "orderId": "o-9", "event": {"type": "ORDER_CREATED", "total": 12}, "runnerId": "r-1"});
    let (status, answer) = api.post("/send-notification", Some("application/json"), None, body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["message"], "Notification created successfully");
    let n = &answer["notification"];
    for key in KEYS {
        assert!(n.get(key).is_some(), "missing {key} in {n}");
    }
    // What the original service stored for a manual notification.
    assert_eq!(n["sourceTopic"], "api");
    assert_eq!(n["eventType"], "notification.manual");
    assert_eq!(n["status"], "sent");
    assert_eq!(n["sourceService"], "notification-service-api");
    assert_eq!(n["event"], json!({"message": {"type": "ORDER_CREATED", "total": 12}}));
    assert_eq!(n["runnerId"], "r-1");
    let correlation = n["correlationId"].as_str().unwrap();
    assert_eq!(correlation.len(), 36, "a UUID: {correlation}");
    assert_eq!(&correlation[14..15], "4", "a version-4 UUID: {correlation}");
    let created: DateTime<Utc> = n["createdAt"].as_str().unwrap().parse().unwrap();
    assert!((Utc::now() - created).num_seconds().abs() < 60);
    let (status, latest) = api.get("/order/o-9/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["notificationId"], n["notificationId"]);
    // Any JSON media type, as the original accepted (Flask's `is_json`).
    let body = json!({"customerId": "cust-9", "orderId": "o-10", "event": {"type": "X"}});
    let (status, answer) =
        api.post("/send-notification", Some("application/vnd.api+json; charset=utf-8"), None, body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(api.get("/order/o-10/latest").await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn send_notification_rejects_bad_requests_without_storing(pool: PgPool) {
    let api = Api::new(pool.clone());
    let good = json!({"customerId": "c", "orderId": "o", "event": "E"}).to_string();
    let cases: Vec<(Option<&str>, String, StatusCode)> = vec![
        (Some("text/plain"), good.clone(), StatusCode::BAD_REQUEST),
        (None, good.clone(), StatusCode::BAD_REQUEST),
        (Some("application/json"), "[1, 2]".into(), StatusCode::BAD_REQUEST),
        (Some("application/json"), "{not json".into(), StatusCode::BAD_REQUEST),
        (Some("application/json"), json!({"orderId": "o", "event": "E"}).to_string(), StatusCode::BAD_REQUEST),
        (
            Some("application/json"),
            json!({"customerId": "", "orderId": "o", "event": "E"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (Some("application/json"), json!({"customerId": "c", "orderId": "o"}).to_string(), StatusCode::BAD_REQUEST),
        (
            Some("application/json"),
            json!({"customerId": "c", "orderId": "o", "event": "nul\u{0}"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Some("application/json"),
            format!(r#"{{"customerId": "c", "orderId": "o", "event": "{}"}}"#, "x".repeat(2 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (ct, body, expected) in cases {
        let (status, answer) = api.post("/send-notification", ct, None, body.clone()).await;
        assert_eq!(status, expected, "{ct:?} {}: {answer}", &body[..body.len().min(80)]);
        assert_eq!(answer["success"], false, "{answer}");
        assert!(answer["message"].is_string());
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 0, "nothing was stored");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn send_notification_requires_the_token_when_set(pool: PgPool) {
    let api = Api::with_token(pool, Some("t0k3n-0123456789abcdef"));
    let body = json!({"customerId": "c", "orderId": "o", "event": "E"}).to_string();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("t0k3n-0123456789abcdef"),
        Some("Basic czNjcmV0"),
        Some("Bearer t0k3n-0123456789abcdef2"),
    ] {
        let (status, answer) = api.post("/send-notification", Some("application/json"), auth, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(answer["success"], false);
    }
    let (status, _) =
        api.post("/send-notification", Some("application/json"), Some("Bearer t0k3n-0123456789abcdef"), body).await;
    assert_eq!(status, StatusCode::CREATED);
    // Reads stay open.
    assert_eq!(api.get("/order/o/latest").await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn metrics_count_requests_by_route(pool: PgPool) {
    let api = Api::new(pool);
    api.get("/order/x/latest").await;
    api.get("/order/y/latest").await;
    let response =
        router(api.state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains(
            r#"notification_http_requests_total{route="/order/{order_id}/latest",method="GET",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains("notification_database_up 1"), "{text}");
}

/// Every path and method in /openapi.json is served by the router (never a
/// 404 "No such endpoint" or 405), and every route the router serves is in the
/// document.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn openapi_matches_the_real_routes(pool: PgPool) {
    let api = Api::new(pool);
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let uri = path
                .replace("{order_id}", "42")
                .replace("{correlation_id}", "saga-1")
                .replace("{notification_id}", "1");
            let request =
                Request::builder().method(method.to_uppercase().as_str()).uri(&uri).body(Body::empty()).unwrap();
            let (status, body) = api.call(request).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                body.get("error") != Some(&json!("No such endpoint.")),
                "{method} {path} is documented but not routed"
            );
        }
    }
    documented.sort();
    let served = [
        "GET /correlation/{correlation_id}",
        "GET /health",
        "GET /metrics",
        "GET /normalizers",
        "GET /notifications",
        "GET /notifications/{notification_id}",
        "GET /order/{order_id}",
        "GET /order/{order_id}/latest",
        "GET /order/{order_id}/timeline",
        "GET /ready",
        "GET /ready/ingest",
        "GET /sagas/silent",
        "GET /sagas/stuck",
        "GET /sagas/types",
        "GET /trace/{trace_id}",
        "POST /admin/modules",
        "POST /send-notification",
    ];
    assert_eq!(documented, served);
}

/// Every API and console query is served by an index once the table is big
/// enough for the planner to care (the benchmark checks the same at
/// 1,000,000 rows), with the rows in their monthly partitions as the host
/// writes them: a full scan of a partition that holds rows fails, one of an
/// empty month ahead does not.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn every_api_query_uses_an_index(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let first = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    db.ensure_partitions(first, chrono::NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()).await.unwrap();
    sqlx::query(
        "INSERT INTO notifications (customer_id, order_id, correlation_id, event_type, created_at, source_topic, \
         kafka_partition, kafka_offset, raw_value) \
         SELECT 'cust-' || (g % 2000), CASE WHEN g % 10 < 7 THEN 'order-' || (g % 10000) END, 'saga-' || (g % 10000), \
         (ARRAY['order.created','payment.authorized','user.x'])[1 + g % 3], timestamptz '2025-01-01' + g * interval '3 min', \
         'topic-' || (g % 8), g % 3, g, '\\x00' FROM generate_series(1, 50000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE notifications").execute(&pool).await.unwrap();
    let holding = db.partitions_holding_rows().await.unwrap();
    assert!(holding.len() >= 3 && !holding.contains(&"notifications_default".to_owned()), "{holding:?}");
    let day = |d: &str| chrono::DateTime::parse_from_rfc3339(d).unwrap().with_timezone(&chrono::Utc);
    let sample = notification_host::storage::QuerySample {
        order_id: "order-17".into(),
        correlation_id: "saga-17".into(),
        customer_id: "cust-17".into(),
        runner_id: "runner-17".into(),
        event_type: "order.created".into(),
        since: day("2025-02-10T00:00:00Z"),
        until: day("2025-02-11T00:00:00Z"),
    };
    let mut plans = db.explain_api_queries(&sample).await.unwrap();
    plans.extend(db.explain_console_queries("order-17", "cust-17").await.unwrap());
    assert_eq!(plans.len(), 4 + 3 * sample.filters().len() + 5);
    for (name, plan) in plans {
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
        let scans = notification_host::storage::full_scans_of_rows(&plan, &holding);
        assert!(scans.is_empty(), "{name} scans partitions that hold rows: {scans:?}\n{plan}");
    }
    // The check can fail: a query on an unindexed column does scan them.
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN SELECT * FROM notifications WHERE status = 'x'").fetch_all(&pool).await.unwrap();
    assert!(!notification_host::storage::full_scans_of_rows(&plan.join("\n"), &holding).is_empty());
}

/// An id of any length is stored whole and found by its full value: a
/// 5,000-character correlation id (a token pasted into the wrong field) and a
/// 9,000-character order id, through every read endpoint.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn ids_thousands_of_characters_long_are_found_whole(pool: PgPool) {
    let (saga, order) = (crate::support::incompressible(5000, 7), crate::support::incompressible(9000, 11));
    let first =
        format!(r#"{{"type": "order.created", "correlation_id": "{saga}", "payload": {{"order_id": "{order}"}}}}"#);
    let second = format!(r#"{{"type": "payment.authorized", "correlation_id": "{saga}", "payload": {{}}}}"#);
    // Same prefix, another id: the exact comparison must tell them apart.
    let near = format!(r#"{{"type": "x", "correlation_id": "{}0"}}"#, &saga[..4999]);
    ingest(&pool, vec![("t", 0, 0, T0, &first), ("t", 0, 1, T0 + 1, &second), ("t", 0, 2, T0 + 2, &near)]).await;
    let api = Api::new(pool);

    let (status, body) = api.get(&format!("/correlation/{saga}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["correlationId"] == json!(saga)));

    let (status, body) = api.get(&format!("/order/{order}/latest")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["orderId"], json!(order));
    let (status, body) = api.get(&format!("/order/{order}/timeline")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"].as_array().unwrap().len(), 2, "the order's event and its correlated payment");
    let (status, body) = api.get(&format!("/notifications?correlation_id={saga}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notifications"].as_array().map(Vec::len), Some(2), "{body}");
}

/// The original's rules for an optional `runnerId`: absent, null, `""`,
/// `"None"` and `"null"` are all stored as NULL; the original's 400 texts.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn send_notification_treats_optional_fields_as_the_original(pool: PgPool) {
    let api = Api::new(pool.clone());
    let runners = [None, Some(json!(null)), Some(json!("")), Some(json!("None")), Some(json!("null"))];
    for (i, runner) in runners.iter().enumerate() {
        let mut body = json!({"customerId": "c", "orderId": format!("opt-{i}"), "event": "ORDER_CREATED"});
        if let Some(r) = runner {
            body["runnerId"] = r.clone();
        }
        let (status, answer) = api.post("/send-notification", Some("application/json"), None, body.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{runner:?}: {answer}");
        assert_eq!(answer["notification"]["runnerId"], Value::Null, "{runner:?}");
        let stored: Option<String> = sqlx::query_scalar("SELECT runner_id FROM notifications WHERE order_id = $1")
            .bind(format!("opt-{i}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, None, "{runner:?} is stored as NULL");
    }
    // Integer ids, as the platform's services sent them, are stored as text.
    let body = json!({"customerId": 7, "orderId": 42, "event": {"a": 1}, "runnerId": 9});
    let (status, answer) = api.post("/send-notification", Some("application/json"), None, body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!((&answer["notification"]["orderId"], &answer["notification"]["runnerId"]), (&json!("42"), &json!("9")));

    let cases = [
        ("", "No data provided"),
        ("null", "No data provided"),
        ("{}", "No data provided"),
        (r#"{"orderId": "o", "event": "e"}"#, "Missing required fields"),
        (r#"{"customerId": "", "orderId": "o", "event": "e"}"#, "Missing required fields"),
        (r#"{"customerId": "c", "orderId": "o", "event": ""}"#, "Missing required fields"),
        (r#"{"customerId": "c", "orderId": null, "event": "e"}"#, "Missing required fields"),
    ];
    for (body, message) in cases {
        let (status, answer) = api.post("/send-notification", Some("application/json"), None, body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::BAD_REQUEST, json!({"success": false, "message": message})),
            "{body}"
        );
    }
}

/// The notification's JSON types and formats, in both shapes: what a client
/// of the original parses.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn notification_types_and_formats_in_both_shapes(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let api = Api::new(pool.clone());
    let (_, n) = api.get("/order/42/latest").await;
    assert!(n["notificationId"].is_i64(), "{n}");
    for key in
        ["customerId", "runnerId", "orderId", "status", "sourceTopic", "eventType", "correlationId", "sourceService"]
    {
        assert!(n[key].is_string() || n[key].is_null(), "{key}: {n}");
    }
    assert!(n["event"].is_object());
    let created = n["createdAt"].as_str().unwrap();
    assert!(DateTime::parse_from_rfc3339(created).is_ok(), "{created}");

    let mut original = Api::new(pool);
    original.state.compat = ApiCompat::Original;
    let (_, n) = original.get("/order/42/latest").await;
    let id = n["notificationId"].as_str().expect("a string, as the original's UUID was");
    assert!(id.parse::<i64>().is_ok());
    assert_eq!(n["createdAt"], "2025-04-04T10:00:05", "naive UTC isoformat, no offset");
    let event = &n["event"];
    assert_eq!(event["topic"], "payment_events");
    assert_eq!(event["event_type"], "payment.noted");
    assert_eq!(event["correlation_id"], "saga-1");
    assert_eq!(event["source_service"], "payment-service");
    assert_eq!(event["payload"], json!({"order_id": 42, "status": "NOTED"}));
    let stamp = event["timestamp"].as_str().unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.f").is_ok(), "{stamp}");
    let (_, list) = original.get("/order/42").await;
    assert!(list.as_array().unwrap().iter().all(|n| n["notificationId"].is_string()));
}

/// `GET /order/{id}` and `GET /correlation/{id}` are bounded: the body keeps
/// the original's shape (an array), and `Link`/`X-Next-Cursor` lead to the
/// rest, without gaps or repeats.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn order_and_correlation_answers_are_bounded_and_page(pool: PgPool) {
    let values: Vec<String> = (0..7)
        .map(|i| format!(r#"{{"type": "e{i}", "correlation_id": "hot", "payload": {{"order_id": "big"}}}}"#))
        .collect();
    ingest(
        &pool,
        values.iter().enumerate().map(|(i, v)| ("t", 0, i as i64, T0 + (i as i64 % 3), v.as_str())).collect(),
    )
    .await;
    let api = Api::new(pool);
    for base in ["/order/big", "/correlation/hot"] {
        let (status, all) = api.get(base).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(all.as_array().unwrap().len(), 7, "under the default cap, the full answer");
        let mut seen = Vec::new();
        let mut uri = format!("{base}?limit=3");
        loop {
            let response =
                router(api.state.clone()).oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let link = response.headers().get(header::LINK).map(|v| v.to_str().unwrap().to_owned());
            let cursor = response.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_owned());
            let page: Value =
                serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
            let page = page.as_array().unwrap().clone();
            assert!(page.len() <= 3);
            seen.extend(page.iter().map(|n| n["eventType"].as_str().unwrap().to_owned()));
            match (link, cursor) {
                (Some(link), Some(cursor)) => {
                    assert_eq!(link, format!("<{base}?cursor={cursor}&limit=3>; rel=\"next\""));
                    uri = format!("{base}?cursor={cursor}&limit=3");
                }
                (None, None) => break,
                other => panic!("Link and X-Next-Cursor come together: {other:?}"),
            }
        }
        let everything: Vec<String> =
            all.as_array().unwrap().iter().map(|n| n["eventType"].as_str().unwrap().to_owned()).collect();
        assert_eq!(seen, everything, "{base}: pages join to the full answer");
        for bad in ["limit=0", "limit=10001", "cursor=nope"] {
            assert_eq!(api.get(&format!("{base}?{bad}")).await.0, StatusCode::BAD_REQUEST, "{base}?{bad}");
        }
        // A parameter the endpoint does not know (a cache-buster) is ignored,
        // as the original service ignored it, and named in a header.
        let response = router(api.state.clone())
            .oneshot(Request::get(format!("{base}?_=12345&page=2")).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{base}");
        assert_eq!(response.headers()["x-ignored-parameters"], "_, page");
    }
}

/// An answer stops at the byte budget (at the last whole row that fits) and
/// gives the cursor of the rest: 300 records of ~900 KB under one order can
/// never make one answer of 270 MB.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn answers_stop_at_their_byte_budget_and_page_on(pool: PgPool) {
    let big = format!(r#"{{"order_id": "heavy", "blob": "{}"}}"#, crate::support::incompressible(200_000, 7));
    ingest(&pool, (0..12).map(|i| ("t", 0, i, T0 + i, big.as_str())).collect()).await;
    let mut api = Api::new(pool.clone());
    api.state.answer_max_bytes = 1 << 20;
    let mut seen = 0;
    let mut uri = "/order/heavy?limit=10000".to_owned();
    let mut pages = 0;
    loop {
        let response =
            router(api.state.clone()).oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cursor = response.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.len() <= 1 << 20, "an answer of {} bytes", bytes.len());
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        let rows = page.as_array().unwrap().len();
        assert!(rows >= 1, "every answer carries at least one row");
        seen += rows;
        pages += 1;
        match cursor {
            Some(c) => uri = format!("/order/heavy?limit=10000&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, 12, "the pages join to every row");
    assert!(pages >= 3, "{pages} pages: the budget cut the answer");
    // The list's page is cut the same way, with its cursor in the body.
    let (_, page) = api.get("/notifications?order_id=heavy&limit=1000").await;
    let rows = page["notifications"].as_array().unwrap().len();
    assert!((1..12).contains(&rows) && page["next_cursor"].is_string(), "{rows} rows");

    // The timeline reads no more than its budget from the database, the
    // order's rows and its saga's alike: a page holds about 1 MiB of values,
    // and the pages join to every row of the order and of its saga.
    let saga_row =
        format!(r#"{{"correlation_id": "heavy-saga", "blob": "{}"}}"#, crate::support::incompressible(200_000, 9));
    let heavy_in_saga = format!(
        r#"{{"order_id": "heavy", "correlation_id": "heavy-saga", "blob": "{}"}}"#,
        crate::support::incompressible(200_000, 11)
    );
    let mut more_rows: Vec<(&str, i32, i64, i64, &str)> =
        (0..8).map(|i| ("s", 0, i, T0 + 20 + i, saga_row.as_str())).collect();
    more_rows.push(("t", 0, 12, T0 + 19, heavy_in_saga.as_str()));
    ingest(&pool, more_rows).await;
    let page = api.state.db.timeline("heavy", None, 1000, 1 << 20).await.unwrap();
    let held: usize =
        page.direct.iter().chain(&page.correlated).map(|n| n.raw_value.as_ref().map_or(0, Vec::len)).sum();
    assert!(held <= (1 << 20) + 210_000, "one timeline page read {held} bytes");
    assert!(page.more && page.direct.len() < 13, "{} direct rows", page.direct.len());
    let (mut direct, mut correlated, mut uri) = (0, 0, "/order/heavy/timeline".to_owned());
    let mut last_truncated = false;
    for _ in 0..40 {
        let (status, body) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for e in body["events"].as_array().unwrap() {
            if e["relation"] == "direct" { direct += 1 } else { correlated += 1 }
        }
        last_truncated = body["truncated"] == true;
        match body["nextCursor"].as_str() {
            Some(c) => uri = format!("/order/heavy/timeline?cursor={c}"),
            None => break,
        }
    }
    // Every row of the order; of the saga after its last row, what fits,
    // and the page says the rest was left out (it is at /correlation/).
    assert_eq!(direct, 13, "the timeline's pages join to every row of the order");
    assert!((1..8).contains(&correlated) && last_truncated, "{correlated} saga rows, truncated {last_truncated}");
}

/// CORS for the configured origins only; none without the setting.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn cors_allows_the_configured_origins(pool: PgPool) {
    let mut api = Api::new(pool);
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/order/1")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = |state: &AppState, origin: &'static str| {
        let state = state.clone();
        async move {
            let r = router(state).oneshot(preflight(origin)).await.unwrap();
            r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(allowed(&api.state, "http://localhost:5173").await, None, "no CORS without the setting");
    api.state.cors_allowed_origins = Arc::from(vec!["http://localhost:5173".to_owned()]);
    assert_eq!(allowed(&api.state, "http://localhost:5173").await.as_deref(), Some("http://localhost:5173"));
    assert_eq!(allowed(&api.state, "http://evil.example").await, None);
    let response = router(api.state.clone())
        .oneshot(Request::get("/order/1").header(header::ORIGIN, "http://localhost:5173").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:5173");
}

/// An ingest-only replica serves operations, not the API.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn an_ingest_replica_serves_operations_only(pool: PgPool) {
    let api = Api::new(pool);
    let status_of = |uri: &'static str| {
        let app = router_for(api.state.clone(), Role::Ingest);
        async move { app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap().status() }
    };
    assert_eq!(status_of("/health").await, StatusCode::OK);
    assert_eq!(status_of("/metrics").await, StatusCode::OK);
    assert_eq!(status_of("/order/1/latest").await, StatusCode::NOT_FOUND);
    assert_eq!(status_of("/notifications").await, StatusCode::NOT_FOUND);
}

/// The served OpenAPI document passes a standard OpenAPI validator
/// (openapi-spec-validator, installed by scripts/test), and `/apidocs/`
/// renders a reference of every operation from it, with no external asset.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn openapi_is_valid_and_apidocs_render_it(pool: PgPool) {
    let api = Api::new(pool);
    let (_, doc) = api.get("/openapi.json").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid (or openapi-spec-validator is missing: scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let response =
        router(api.state.clone()).oneshot(Request::get("/apidocs/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(html.contains(&format!("id=\"{method}-{path}\"")), "{method} {path} missing from /apidocs/");
        }
    }
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "no external asset");
}

/// A record's key and headers come back faithfully: text as text, other bytes
/// in base64, headers in order with repeats and nulls.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn key_and_headers_are_shown_faithfully(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let record = |offset: i64, key: &[u8]| Record {
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp: Some(T0 + offset),
        key: Some(key.to_vec()),
        headers: vec![
            notification_host::record::Header::new("h", Some(b"v".to_vec())),
            notification_host::record::Header::new("h", None),
            notification_host::record::Header::new("bin", Some(vec![0xff, 0])),
        ],
        value: Some(br#"{"payload": {"order_id": "kh"}}"#.to_vec()),
    };
    let records = vec![record(0, b"order-1"), record(1, &[0xff, 0x00, b'k'])];
    let normalized = Normalizer::Builtin.normalize(&records);
    let rows: Vec<StoredRow> = records.into_iter().zip(normalized).map(|(r, n)| StoredRow::from_record(r, n)).collect();
    db.insert(&rows).await.unwrap();
    let (status, body) = Api::new(pool).get("/order/kh").await;
    assert_eq!(status, StatusCode::OK);
    let (text, binary) = (&body[0], &body[1]);
    assert_eq!((&text["kafkaKey"], text.get("kafkaKeyB64")), (&json!("order-1"), None));
    assert_eq!((binary.get("kafkaKey"), &binary["kafkaKeyB64"]), (None, &json!("/wBr")));
    assert_eq!(
        text["kafkaHeaders"],
        json!([{"key": "h", "value": "v"}, {"key": "h", "value": null}, {"key": "bin", "value_b64": "/wA="}])
    );
}

/// A client that pages `GET /notifications?order=stored` to the end and then
/// tails it sees every row once, however late a record's own time and in
/// whatever order concurrent writers commit: a row that commits after a
/// page was read sorts after it, never before.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_tail_in_stored_order_never_skips_a_late_record_or_a_late_commit(pool: PgPool) {
    let api = Api::new(pool.clone());
    // A client that starts before the first row is stored gets where to
    // resume all the same: the start.
    let (status, body) = api.get("/notifications?order=stored").await;
    assert_eq!((status, &body["notifications"]), (StatusCode::OK, &json!([])));
    let mut cursor: Option<String> = Some(body["next_cursor"].as_str().expect("a cursor before any row").to_owned());
    ingest(&pool, saga_events()).await;
    let mut seen: Vec<i64> = Vec::new();
    let page = |cursor: &mut Option<String>| {
        let uri = match cursor {
            Some(c) => format!("/notifications?order=stored&limit=2&cursor={c}"),
            None => "/notifications?order=stored&limit=2".to_owned(),
        };
        let api = &api;
        async move {
            let (status, body) = api.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (body["notifications"].as_array().unwrap().clone(), body["next_cursor"].as_str().map(str::to_owned))
        }
    };
    // Page to the end: the last page still gives where to resume.
    loop {
        let (rows, next) = page(&mut cursor).await;
        seen.extend(rows.iter().map(|n| n["notificationId"].as_i64().unwrap()));
        cursor = Some(next.expect("stored order always gives a cursor"));
        if rows.len() < 2 {
            break;
        }
    }
    // A writer begins, stores a row dated long ago and does not commit yet;
    // another stores and commits a row after it.
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO notifications (created_at, source_topic, kafka_partition, kafka_offset, raw_value) VALUES ('2001-01-01', 'late', 0, 1, 'x')")
        .execute(&mut *slow)
        .await
        .unwrap();
    ingest(&pool, vec![("fast", 0, 1, T0 + 60_000, r#"{"order_id": "fast"}"#)]).await;
    // (Rows of the first ingest may show up only now: a transaction of
    // another test in this cluster can hold the tail back, as any running
    // writer does.)
    let (rows, next) = page(&mut cursor).await;
    assert!(
        rows.iter().all(|n| n["sourceTopic"] != "fast"),
        "a commit behind a running transaction waits for it: {rows:?}"
    );
    seen.extend(rows.iter().map(|n| n["notificationId"].as_i64().unwrap()));
    cursor = Some(next.expect("stored order always gives a cursor"));
    slow.commit().await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (rows, next) = page(&mut cursor).await;
        seen.extend(rows.iter().map(|n| n["notificationId"].as_i64().unwrap()));
        cursor = Some(next.expect("stored order always gives a cursor"));
        if rows.is_empty() {
            if seen.len() as i64 >= total || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let mut stored: Vec<i64> =
        sqlx::query_scalar("SELECT notification_id FROM notifications").fetch_all(&pool).await.unwrap();
    stored.sort();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, stored, "every row, the late one too");
    assert_eq!(unique.len(), seen.len(), "no row twice");
}

/// The original merged records sharing (correlation id, event type, topic)
/// into one row; here two such records are two rows, each answered.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn distinct_records_sharing_saga_type_and_topic_stay_distinct(pool: PgPool) {
    let value =
        r#"{"type": "order.status_updated", "correlation_id": "saga-twice", "payload": {"order_id": "o-twice"}}"#;
    ingest(&pool, vec![("order_events", 0, 7, T0, value), ("order_events", 0, 8, T0 + 1000, value)]).await;
    let api = Api::new(pool);
    let (status, body) = api.get("/correlation/saga-twice").await;
    assert_eq!(status, StatusCode::OK);
    let offsets: Vec<i64> = body.as_array().unwrap().iter().map(|n| n["kafkaOffset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [7, 8], "{body}");
    let (_, body) = api.get("/order/o-twice").await;
    assert_eq!(body.as_array().unwrap().len(), 2, "{body}");
}

/// Reads are answered in a bounded number of slots (one per read
/// connection), held until the answer's body is sent: a reader that does
/// not read its answer holds its slot, the next read waits for a slot as
/// long as a read may take and then answers 503, and the slot is free again
/// once the first body is gone.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn answers_wait_for_a_slot_and_a_slow_reader_holds_only_its_own(pool: PgPool) {
    ingest(&pool, saga_events()).await;
    let mut api = Api::new(pool);
    api.state.answer_slots = notification_host::http::AnswerSlots::new(1, std::time::Duration::from_millis(300));
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let held = router(api.state.clone()).oneshot(get("/order/42")).await.unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(api.state.answer_slots.free(), 0, "the unread answer holds its slot");
    let started = std::time::Instant::now();
    let (status, body) = api.get("/order/42/latest").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"error": "Too many reads are being answered; try again later."}));
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "it waited for a slot");
    // Health and readiness take no slot.
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    let rows = held.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&rows).unwrap().as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(api.state.answer_slots.free(), 1, "a sent answer gives its slot back");
    assert_eq!(api.get("/order/42/latest").await.0, StatusCode::OK);
}
