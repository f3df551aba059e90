//! The saga learner and its answers against a real PostgreSQL: shapes
//! learned from stored rows, stuck sagas found (overdue, backwards,
//! duplicated) and only those, learning exactly once under two learners,
//! bounded types, and trace links from record headers.

use std::time::Duration;

use chrono::Utc;
use notification_host::config::SagaConfig;
use notification_host::learner::{Run, learn_batch};
use notification_host::metrics::Metrics;
use notification_host::modules::Normalizer;
use notification_host::record::Record;
use notification_host::storage::{Db, StoredRow};
use serde_json::Value;
use sqlx::PgPool;

use crate::support::api::Api;
use crate::support::{RecordExt, record};

/// Stores records through the real ingest path.
async fn store(pool: &PgPool, records: Vec<Record>) {
    let normalized = Normalizer::Builtin.normalize(&records);
    let rows: Vec<StoredRow> = records.into_iter().zip(normalized).map(|(r, n)| StoredRow::from_record(r, n)).collect();
    Db::from_pool(pool.clone()).insert(&rows).await.unwrap();
}

/// One saga event, `ago_ms` before now.
fn event(offset: &mut i64, saga: &str, service: &str, event: &str, status: &str, ago_ms: i64) -> Record {
    *offset += 1;
    let value = format!(
        r#"{{"type": "{event}", "correlation_id": "{saga}", "source": "{service}", "payload": {{"order_id": "order-{saga}", "status": "{status}", "seq": {offset}}}}}"#
    );
    record("shop_events", *offset, value).at(Utc::now().timestamp_millis() - ago_ms)
}

/// The delivery saga: created → paid → picked → delivered, a step every
/// 1 to 3 s (record times).
const STEPS: [(&str, &str, &str); 4] = [
    ("orders", "order.created", "PENDING"),
    ("payments", "payment.captured", "PAID"),
    ("kitchen", "order.picked", "PICKED"),
    ("delivery", "order.delivered", "DELIVERED"),
];

fn healthy(offset: &mut i64, saga: &str, start_ago_ms: i64, seed: i64) -> Vec<Record> {
    let mut at = start_ago_ms;
    STEPS
        .iter()
        .enumerate()
        .map(|(i, (service, name, status))| {
            if i > 0 {
                at -= 1000 + (seed * 37 + i as i64 * 101) % 2000;
            }
            event(offset, saga, service, name, status, at)
        })
        .collect()
}

/// Learns until `rows` rows are learned: a row is learned once every
/// transaction older than it is over, in any database of the cluster (other
/// tests run beside this one), so it may take a few runs.
async fn learn_run(db: &Db, config: &SagaConfig, settle: Duration, metrics: &Metrics, rows: u64) -> Run {
    let start = std::time::Instant::now();
    let mut total = Run::default();
    while total.rows < rows {
        total += notification_host::learner::learn_run(db, config, settle, metrics).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(20), "learned {total:?} of {rows} rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total.rows, rows);
    total
}

fn config(api: &Api) -> notification_host::config::SagaConfig {
    (*api.state.sagas).clone()
}

fn keys(page: &Value) -> Vec<String> {
    page["sagas"].as_array().unwrap().iter().map(|s| s["sagaKey"].as_str().unwrap().to_owned()).collect()
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn stuck_sagas_are_found_and_healthy_ones_are_not(pool: PgPool) {
    let api = Api::new(pool.clone());
    let metrics = Metrics::default();
    let mut offset = 0;
    let mut records = Vec::new();
    // 80 finished sagas over the last hour teach the shape.
    for i in 0..80 {
        records.extend(healthy(&mut offset, &format!("ok-{i}"), 3_600_000 - i * 40_000, i));
    }
    // Stalled at "paid" ten minutes ago (p99 of paid → picked is ~3 s).
    for i in 0..3 {
        records.extend(healthy(&mut offset, &format!("stalled-{i}"), 600_000 + i * 1000, i).into_iter().take(2));
    }
    // In progress: paid a moment ago; not overdue.
    records.extend(healthy(&mut offset, "fresh", 1500, 1).into_iter().take(2));
    // Delivered, then picked again: a status going backwards.
    let mut back = healthy(&mut offset, "backwards", 300_000, 2);
    back.push(event(&mut offset, "backwards", "kitchen", "order.picked", "PICKED", 290_000));
    records.extend(back);
    // The same event stored at two offsets.
    let mut dup = healthy(&mut offset, "twice", 200_000, 3);
    let again = dup[1].clone();
    dup.push(Record { offset: 10_000, ..again });
    records.extend(dup);
    store(&pool, records).await;

    let run =
        learn_run(&Db::from_pool(pool.clone()), &config(&api), Duration::ZERO, &metrics, 80 * 4 + 3 * 2 + 2 + 5 + 5)
            .await;
    assert_eq!(run.taught.flagged, 2, "{run:?}");

    // Just learned: as if a backlog were being consumed, the sagas' next
    // steps may be on their way, so none is overdue yet; the flagged ones are
    // listed at once.
    let (status, page) = api.get("/sagas/stuck").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(keys(&page).len(), 2, "only the flagged: {page}");
    // A minute after the learner saw them, the idle ones are overdue.
    sqlx::query("UPDATE sagas SET learned_at = now() - interval '1 minute'").execute(&pool).await.unwrap();
    let (status, page) = api.get("/sagas/stuck").await;
    assert_eq!(status, 200, "{page}");
    let mut found = keys(&page);
    found.sort();
    assert_eq!(found, ["c:backwards", "c:stalled-0", "c:stalled-1", "c:stalled-2", "c:twice"], "{page:#}");
    let stalled = page["sagas"].as_array().unwrap().iter().find(|s| s["sagaKey"] == "c:stalled-0").unwrap();
    assert_eq!(stalled["reasons"], serde_json::json!(["overdue"]));
    assert_eq!(stalled["lastStep"]["event"], "payment.captured (PAID)");
    assert_eq!(stalled["sagaType"], "order.created (PENDING)");
    assert_eq!(stalled["orderId"], "order-stalled-0");
    assert_eq!(stalled["timeline"], "/order/order-stalled-0/timeline");
    let by = stalled["overdueByP99"].as_f64().unwrap();
    assert!(by > 50.0, "ten minutes over a p99 of seconds: {stalled}");
    let back = page["sagas"].as_array().unwrap().iter().find(|s| s["sagaKey"] == "c:backwards").unwrap();
    // Back at "picked" for minutes: overdue there too.
    assert_eq!(back["reasons"], serde_json::json!(["overdue", "status_regression"]), "{back}");
    let twice = page["sagas"].as_array().unwrap().iter().find(|s| s["sagaKey"] == "c:twice").unwrap();
    assert_eq!(twice["reasons"], serde_json::json!(["duplicate"]), "{twice}");

    // Filters and reasons.
    let (_, only) = api.get("/sagas/stuck?reason=overdue").await;
    assert_eq!(keys(&only).len(), 4, "the stalled ones and the one back at picked: {only}");
    let (_, only) = api.get("/sagas/stuck?reason=duplicate").await;
    assert_eq!(keys(&only), ["c:twice"]);
    let (_, only) = api.get("/sagas/stuck?service=payments&step=payment.captured%20(PAID)").await;
    assert_eq!(keys(&only).len(), 3, "{only}");
    let (_, none) = api.get("/sagas/stuck?type=nothing").await;
    assert_eq!(keys(&none).len(), 0);
    let since = (Utc::now() - chrono::Duration::seconds(400)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, recent) = api.get(&format!("/sagas/stuck?since={since}")).await;
    assert_eq!(keys(&recent).len(), 2, "the stalled ones are older: {recent}");
    for bad in ["limit=0", "limit=501", "reason=sleepy", "since=yesterday", "cursor=abc"] {
        let (status, body) = api.get(&format!("/sagas/stuck?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }

    // Keyset pages: every stuck saga once.
    let mut paged = Vec::new();
    let mut uri = "/sagas/stuck?limit=2".to_owned();
    loop {
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, 200);
        assert!(keys(&page).len() <= 2);
        paged.extend(keys(&page));
        match page["next"].as_str() {
            Some(next) => uri = format!("/sagas/stuck?limit=2&cursor={next}"),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, found);

    // The learned shape.
    let (status, shapes) = api.get("/sagas/types").await;
    assert_eq!(status, 200);
    let t = &shapes["types"][0];
    assert_eq!(t["sagaType"], "order.created (PENDING)");
    let steps: Vec<&str> = t["steps"].as_array().unwrap().iter().map(|s| s["event"].as_str().unwrap()).collect();
    assert_eq!(
        steps[..4],
        ["order.created (PENDING)", "payment.captured (PAID)", "order.picked (PICKED)", "order.delivered (DELIVERED)"]
    );
    let delivered = &t["steps"][3];
    assert_eq!(delivered["ends"], true, "{delivered}");
    assert!(delivered["nextStepP99Ms"].is_null());
    let paid = t["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["from"]["event"] == "payment.captured (PAID)" && x["to"]["event"] == "order.picked (PICKED)")
        .unwrap();
    assert!(paid["count"].as_i64().unwrap() >= 80);
    let p99 = paid["p99Ms"].as_f64().unwrap();
    assert!((2000.0..=3000.0 * 1.25).contains(&p99), "the step takes 1 to 3 s: p99 {p99}");

    // The console: "Stuck now", the type's graph, and the order's banner.
    let (status, _, page) = api.page("/ui/sagas", &[]).await;
    assert_eq!(status, 200);
    let html = scraper::Html::parse_document(&page);
    let rows = scraper::Selector::parse("#stuck tbody tr").unwrap();
    let mut listed: Vec<String> = html.select(&rows).map(|r| r.value().attr("data-key").unwrap().to_owned()).collect();
    listed.sort();
    assert_eq!(listed, found);
    let (status, _, page) = api.page("/ui/sagas/type?name=order.created%20(PENDING)", &[]).await;
    assert_eq!(status, 200, "{page}");
    let html = scraper::Html::parse_document(&page);
    let boxes = scraper::Selector::parse("svg#graph g.step").unwrap();
    let events: Vec<&str> = html.select(&boxes).map(|g| g.value().attr("data-event").unwrap()).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    let edges = scraper::Selector::parse("svg#graph g.transition").unwrap();
    assert!(html.select(&edges).count() >= 3);
    assert!(page.contains("class=\"step ends\""), "delivered ends the saga");
    let (status, _, _) = api.page("/ui/sagas/type?name=nothing", &[]).await;
    assert_eq!(status, 404);
    let (_, _, page) = api.page("/ui/order/order-stalled-0", &[]).await;
    assert!(page.contains("id=\"overdue\"") && page.contains("payment.captured (PAID)"), "{page}");
    let (_, _, page) = api.page("/ui/order/order-ok-3", &[]).await;
    assert!(!page.contains("id=\"overdue\""), "a finished saga has no banner");

    // Metrics: stuck by type and step; step times by transition.
    notification_host::learner::refresh_stuck_metric(&Db::from_pool(pool.clone()), &config(&api), &metrics)
        .await
        .unwrap();
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"notification_sagas_stuck{saga_type="order.created (PENDING)",step="payments/payment.captured (PAID)"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains("notification_saga_step_seconds_count{saga_type=\"order.created (PENDING)\",transition=\"payments/payment.captured (PAID) -> kitchen/order.picked (PICKED)\"}"), "{text}");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn two_learners_learn_every_row_once(pool: PgPool) {
    let api = Api::new(pool.clone());
    let metrics = Metrics::default();
    let mut offset = 0;
    let mut records = Vec::new();
    for i in 0..300 {
        records.extend(healthy(&mut offset, &format!("s-{i}"), 3_600_000 - i * 10_000, i));
    }
    store(&pool, records).await;
    let mut config = config(&api);
    config.saga_learn_batch = 100;
    let (db_a, db_b) = (Db::from_pool(pool.clone()), Db::from_pool(pool.clone()));
    let (mut a, mut b) = (0u64, 0u64);
    let mut busy = 0;
    let start = std::time::Instant::now();
    while a + b < 1200 {
        assert!(start.elapsed() < Duration::from_secs(30), "learned {a} + {b} of 1200");
        let (ra, rb) = tokio::join!(
            learn_batch(&db_a, &config, Duration::ZERO, &metrics),
            learn_batch(&db_b, &config, Duration::ZERO, &metrics)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        busy += usize::from(ra.busy) + usize::from(rb.busy);
        a += ra.rows;
        b += rb.rows;
    }
    assert_eq!(a + b, 1200, "every row learned once");
    assert!(busy > 0, "the two learners met");
    let transitions: i64 =
        sqlx::query_scalar("SELECT sum(count)::int8 FROM saga_transitions").fetch_one(&pool).await.unwrap();
    assert_eq!(transitions, 900);
    let (learned, sagas): (i64, i64) =
        sqlx::query_as("SELECT rows_learned, (SELECT count(*) FROM sagas) FROM saga_learner")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((learned, sagas), (1200, 300));
    // Nothing new: nothing learned.
    assert_eq!(learn_batch(&db_a, &config, Duration::ZERO, &metrics).await.unwrap().rows, 0);
    // Rows stored a moment ago wait for the next run.
    store(&pool, healthy(&mut offset, "young", 10_000, 1)).await;
    assert_eq!(learn_batch(&db_a, &config, Duration::from_secs(60), &metrics).await.unwrap().rows, 0);
    learn_run(&db_a, &config, Duration::ZERO, &metrics, 4).await;
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn types_and_steps_stay_within_their_bounds(pool: PgPool) {
    let api = Api::new(pool.clone());
    let metrics = Metrics::default();
    let mut config = config(&api);
    config.saga_max_types = 3;
    config.saga_max_steps = 4;
    let mut offset = 0;
    let mut records = Vec::new();
    // 10 types, each saga 8 distinct steps; a late row; ids too long to key.
    for i in 0..10 {
        for step in 0..8 {
            records.push(event(
                &mut offset,
                &format!("t-{i}"),
                "svc",
                &format!("type{i}.step{step}"),
                "S",
                100_000 - step * 1000,
            ));
        }
    }
    // One saga type whose four steps come in every order: its transitions
    // stay within twice its steps, plus one to (other) per step.
    for i in 0..30 {
        let order = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1], [0, 2, 1, 3]][i % 5];
        let first = event(&mut offset, &format!("any-{i}"), "svc", "type0.step0", "S", 90_000);
        records.push(first);
        for (k, step) in order.iter().enumerate() {
            records.push(event(
                &mut offset,
                &format!("any-{i}"),
                "svc",
                &format!("type0.step{step}"),
                "S",
                80_000 - k as i64 * 1000,
            ));
        }
    }
    let long = "x".repeat(5000);
    records.push(event(&mut offset, &long, "svc", "long.start", "S", 50_000));
    records.push(event(&mut offset, &long, "svc", "long.next", "S", 49_000));
    store(&pool, records).await;
    let db = Db::from_pool(pool.clone());
    let run = learn_run(&db, &config, Duration::ZERO, &metrics, 82 + 30 * 5).await;
    assert_eq!(run.taught.late, 0);
    // Stored after its saga's later steps were learned: late.
    store(&pool, vec![event(&mut offset, "t-0", "svc", "type0.late", "S", 500_000)]).await;
    let run = learn_run(&db, &config, Duration::ZERO, &metrics, 1).await;
    assert_eq!(run.taught.late, 1);
    let types: Vec<(String, i64)> = sqlx::query_as("SELECT saga_type, count(*) FROM saga_steps GROUP BY 1 ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(types.len() <= 4, "3 types and (other): {types:?}");
    assert!(types.iter().any(|(t, _)| t == "(other)"), "{types:?}");
    assert!(types.iter().all(|(_, steps)| *steps <= 4), "{types:?}");
    let transitions: Vec<(String, i64)> =
        sqlx::query_as("SELECT saga_type, count(*) FROM saga_transitions GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(transitions.iter().all(|(_, n)| *n <= 2 * 4 + 4), "{transitions:?}");
    assert!(transitions.iter().any(|(_, n)| *n > 4), "the check can fail: {transitions:?}");
    let long_key: String = sqlx::query_scalar("SELECT saga_key FROM sagas WHERE length(correlation_id) = 5000")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(long_key.starts_with("c:sha256:") && long_key.len() == 2 + 7 + 64, "{long_key}");
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_trace_id_in_any_header_form_finds_its_records(pool: PgPool) {
    let api = Api::new(pool.clone());
    let t0 = 1_765_000_000_000;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    store(
        &pool,
        vec![
            record("a", 0, r#"{"type": "one"}"#)
                .at(t0)
                .header("TraceParent", format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()).as_bytes()),
            record("a", 1, r#"{"type": "two"}"#)
                .at(t0 + 1)
                .header("b3", format!("{trace}-e457b5a2e4d86bd1-1").as_bytes()),
            record("a", 2, r#"{"type": "three"}"#).at(t0 + 2).header("X-B3-TraceId", trace.as_bytes()),
            record("a", 3, "not json").at(t0 + 3).header("x-b3-traceid", b"a3ce929d0e0e4736"),
            // Not trace ids: stored all the same, found by none.
            record("a", 4, "{}").at(t0 + 4).header("traceparent", &[0xff, 0xfe]),
            record("a", 5, "{}").at(t0 + 5).header("traceparent", "z".repeat(10_000).as_bytes()),
            record("a", 6, "{}")
                .at(t0 + 6)
                .header("traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ],
    )
    .await;
    let (status, rows) = api.get(&format!("/trace/{}", trace.to_uppercase())).await;
    assert_eq!(status, 200, "{rows}");
    let types: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, ["one", "two", "three"]);
    // The console shows the trace and links it: to its records, and to the
    // tracing UI when one is configured.
    let first = rows[0]["notificationId"].as_i64().unwrap();
    let (status, _, page) = api.page(&format!("/ui/record/{first}"), &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("href=\"/trace/{trace}\"")) && !page.contains("tracing UI"), "{page}");
    let linked = Api::with_args(pool.clone(), &["--trace-url-template", "https://jaeger.example/trace/{trace_id}"]);
    let (_, _, page) = linked.page(&format!("/ui/record/{first}"), &[]).await;
    assert!(page.contains(&format!("href=\"https://jaeger.example/trace/{trace}\"")), "{page}");
    let (status, rows) = api.get("/trace/a3ce929d0e0e4736").await;
    assert_eq!(status, 200);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let (status, rows) = api.get(&format!("/trace/{trace}?limit=2")).await;
    assert_eq!((status, rows.as_array().unwrap().len()), (axum::http::StatusCode::OK, 2));
    for bad in ["xyz", "00000000000000000000000000000000", "4bf92f3577b34da6a3ce929d0e0e47361"] {
        let (status, body) = api.get(&format!("/trace/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = api.get("/trace/ffffffffffffffffffffffffffffffff").await;
    assert_eq!(status, 404);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 7);
    // Found through its index among many rows with and without traces.
    sqlx::query(
        "INSERT INTO notifications (created_at, source_topic, kafka_partition, kafka_offset, raw_value, kafka_headers) \
         SELECT timestamptz '2025-12-06' + g * interval '1 s', 'b', 0, g, '\\x00', \
                CASE WHEN g % 2 = 0 THEN jsonb_build_array(jsonb_build_object('key', 'traceparent', \
                     'value', '00-' || lpad(to_hex(g), 32, '0') || '-00f067aa0ba902b7-01')) END \
         FROM generate_series(1, 20000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE notifications").execute(&pool).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT notification_id FROM notifications WHERE notification_trace_id(kafka_headers) = '{trace}' \
         ORDER BY created_at, notification_id LIMIT 10"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("trace_id") && plan.contains("Index") && !plan.contains("Seq Scan"), "{plan}");
    let (status, rows) = api.get("/trace/00000000000000000000000000000400").await;
    assert_eq!((status, rows.as_array().unwrap().len()), (axum::http::StatusCode::OK, 1));
}
