//! Producers gone silent, against a real PostgreSQL: the learner counts each
//! (source service, event type) into its rates, and the API, the console
//! and the metric name the one whose rate fell under a tenth of its
//! baseline, not a steady one, not a rare one, and keep at most
//! `SAGA_MAX_PRODUCERS`.

use std::time::Duration;

use chrono::Utc;
use notification_host::learner::{learn_run, refresh_stuck_metric};
use notification_host::metrics::Metrics;
use notification_host::modules::Normalizer;
use notification_host::record::Record;
use notification_host::storage::{Db, StoredRow};
use sqlx::PgPool;

use crate::support::api::Api;
use crate::support::{RecordExt, record};

/// One record every `every_s` seconds from `from_min` to `to_min` minutes
/// ago (no order or correlation id: a producer need not be in a saga).
fn producer(offset: &mut i64, service: &str, event: &str, every_s: i64, from_min: i64, to_min: i64) -> Vec<Record> {
    let now = Utc::now().timestamp_millis();
    (0..)
        .map(|i| from_min * 60_000 - i * every_s * 1000)
        .take_while(|ago| *ago >= to_min * 60_000)
        .map(|ago| {
            *offset += 1;
            let value = format!(r#"{{"type": "{event}", "source": "{service}", "seq": {offset}}}"#);
            record("shop_events", *offset, value).at(now - ago)
        })
        .collect()
}

async fn store_and_learn(pool: &PgPool, api: &Api, metrics: &Metrics, records: Vec<Record>) -> u64 {
    let n = records.len() as u64;
    let normalized = Normalizer::Builtin.normalize(&records);
    let rows: Vec<StoredRow> = records.into_iter().zip(normalized).map(|(r, n)| StoredRow::from_record(r, n)).collect();
    let db = Db::from_pool(pool.clone());
    db.insert(&rows).await.unwrap();
    let (mut learned, mut untracked) = (0, 0);
    let start = std::time::Instant::now();
    while learned < n {
        let run = learn_run(&db, &api.state.sagas, Duration::ZERO, metrics).await.unwrap();
        learned += run.rows;
        untracked += run.producers.untracked_rows;
        assert!(start.elapsed() < Duration::from_secs(20), "learned {learned} of {n} rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(learned, n);
    untracked
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_producer_gone_silent_is_named_and_steady_or_rare_ones_are_not(pool: PgPool) {
    let mut api = Api::new(pool.clone());
    let mut config = (*api.state.sagas).clone();
    config.saga_max_producers = 3;
    api.state.sagas = std::sync::Arc::new(config);
    let metrics = Metrics::default();
    let mut offset = 0;
    let mut records = Vec::new();
    // Every 10 s for the last two hours, up to now: steady.
    records.extend(producer(&mut offset, "orders", "order.created", 10, 120, 0));
    // Every 10 s, then nothing for the last 30 minutes: silent.
    records.extend(producer(&mut offset, "payments", "payment.captured", 10, 120, 30));
    // Every 2 minutes, stopped 30 minutes ago too: too rare for its
    // absence to mean anything (2.5 expected in a 5-minute window).
    records.extend(producer(&mut offset, "audit", "audit.tick", 120, 120, 30));
    assert_eq!(store_and_learn(&pool, &api, &metrics, records).await, 0);

    let (status, body) = api.get("/sagas/silent").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["producers"], 3, "{body:#}");
    let silent = body["silent"].as_array().unwrap();
    assert_eq!(silent.len(), 1, "{body:#}");
    let p = &silent[0];
    assert_eq!((p["service"].as_str(), p["event"].as_str()), (Some("payments"), Some("payment.captured")));
    let (usually, now) = (p["baselinePerMinute"].as_f64().unwrap(), p["recentPerMinute"].as_f64().unwrap());
    assert!((4.0..6.0).contains(&usually) && now < usually / 10.0, "{p}");
    let quiet = p["silentForSeconds"].as_f64().unwrap();
    assert!((1790.0..1830.0).contains(&quiet), "silent for 30 minutes of the log's time: {p}");
    assert_eq!(p["events"], 541);

    // The console and the metric say the same.
    let (status, _, page) = api.page("/ui/sagas", &[]).await;
    assert_eq!(status, 200);
    let table = page.split("id=\"silent\"").nth(1).expect("a silent table").split("</table>").next().unwrap();
    assert!(table.contains("payments") && table.contains("payment.captured"), "{table}");
    assert!(!table.contains("audit") && !table.contains("orders"), "{table}");
    refresh_stuck_metric(&Db::from_pool(pool.clone()), &api.state.sagas, &metrics).await.unwrap();
    let text = metrics.encode();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("notification_producers_silent{")).collect();
    assert_eq!(lines, [r#"notification_producers_silent{service="payments",event="payment.captured"} 1"#], "{text}");

    // A fourth producer is past SAGA_MAX_PRODUCERS: its records are counted
    // as untracked, nothing else changes.
    let extra = producer(&mut offset, "newcomer", "thing.happened", 10, 5, 0);
    let n = extra.len() as u64;
    assert_eq!(store_and_learn(&pool, &api, &metrics, extra).await, n);
    let (_, body) = api.get("/sagas/silent").await;
    assert_eq!(body["producers"], 3, "{body:#}");

    // Payments resumes: within a window it is no longer silent.
    let resumed = producer(&mut offset, "payments", "payment.captured", 10, 3, 0);
    store_and_learn(&pool, &api, &metrics, resumed).await;
    let (_, body) = api.get("/sagas/silent").await;
    assert_eq!(body["silent"].as_array().unwrap().len(), 0, "{body:#}");
}
