//! A realistic audit log loaded straight into PostgreSQL, for the API and
//! console benchmarks: orders, customers, runners and sagas shaped like the
//! platform's traffic, spread over the last months in their monthly
//! partitions.

use std::time::Instant;

use notification_host::record::{Fields, Normalized, Record};
use notification_host::storage::{Db, StoredRow};

/// Distinct orders in the loaded rows.
pub const ORDERS: i64 = 100_000;
/// Distinct customers.
pub const CUSTOMERS: i64 = 20_000;

/// About 70% of rows name their order; the rest (payment, user events) are
/// tied to it only by the saga id. Values are ~500-byte JSON documents,
/// stored as the host stores them (through its write path, compressed).
pub async fn load(pool: &sqlx::PgPool, rows: i64, months: u32) -> anyhow::Result<()> {
    let db = Db::from_pool(pool.clone());
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(pool).await?;
    if existing >= rows {
        println!("table already holds {existing} rows; not loading");
        return Ok(());
    }
    let started = Instant::now();
    // Every month the rows fall in gets its partition first, as the host's
    // write path does, so the rows land by month, not in the default one.
    let now = chrono::Utc::now();
    let first = now.date_naive().checked_sub_months(chrono::Months::new(months)).unwrap_or(now.date_naive());
    db.ensure_partitions(first, now.date_naive()).await?;
    let since = first.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    // Milliseconds between consecutive rows, so that they end about now.
    let step_ms = ((now - since).num_milliseconds() / rows.max(1)).max(1);
    let chunk = 5000;
    let mut from = existing + 1;
    while from <= rows {
        let to = (from + chunk - 1).min(rows);
        let batch: Vec<StoredRow> =
            (from..=to).map(|g| row(g, since.timestamp_millis() + g * step_ms + g % 13)).collect();
        db.insert(&batch).await?;
        if to % 200_000 == 0 || to == rows {
            println!("loaded {to} rows ({:.0} s)", started.elapsed().as_secs_f64());
        }
        from = to + 1;
    }
    // Vacuumed as well as analysed, as a table that has been live a while
    // is: otherwise autovacuum visits every freshly loaded partition during
    // the first measurement.
    sqlx::query("VACUUM (ANALYZE) notifications").execute(pool).await?;
    Ok(())
}

const TOPICS: [&str; 8] = [
    "order_events",
    "order-events",
    "payment_events",
    "payment_commands",
    "user_events",
    "user_commands",
    "escrow-events",
    "saga-events",
];
const EVENT_TYPES: [&str; 8] = [
    "order.created",
    "order.status_updated",
    "payment.authorized",
    "authorize_payment",
    "user.payment_info_retrieved",
    "get_payment_info",
    "escrow.held",
    "saga.step",
];

/// The `g`th row, at `ts` (ms).
fn row(g: i64, ts: i64) -> StoredRow {
    let order = g % ORDERS;
    let saga = format!("saga-{order}");
    let value = format!(
        r#"{{"type": "order.created", "correlation_id": "{saga}", "source": "order-service", "timestamp": "2025-04-04T10:00:00.123456", "payload": {{"seq": {g}, "order_id": {order}, "customer_id": "cust-{c}", "status": "PENDING", "saga_id": "{saga}", "order_details": {{"foodItems": [{{"item_name": "Iced latte", "quantity": 2, "price": 4.5}}], "storeLocation": "Student Union", "deliveryLocation": "Dorm {dorm}", "note": "{note}"}}}}}}"#,
        c = g % CUSTOMERS,
        dorm = g % 40,
        note = "x".repeat(120)
    );
    let i = g as usize;
    let fields = Fields {
        order_id: (g % 10 < 7).then(|| format!("order-{order}")),
        customer_id: (g % 10 < 4).then(|| format!("cust-{}", g % CUSTOMERS)),
        runner_id: (g % 10 == 5).then(|| format!("runner-{}", g % 5000)),
        correlation_id: Some(saga),
        event_type: Some(EVENT_TYPES[i % 8].to_owned()),
        source_service: ["order-service", "payment-service", "user-service"].get(i % 4).map(|s| (*s).to_owned()),
        status: ["PENDING", "ACCEPTED", "COMPLETED"].get(i % 4).map(|s| (*s).to_owned()),
    };
    let record = Record {
        topic: TOPICS[i % 8].to_owned(),
        partition: (g % 3) as i32,
        offset: g,
        timestamp: Some(ts),
        key: None,
        headers: vec![],
        value: Some(value.into_bytes()),
    };
    let mut row = StoredRow::from_record(
        record,
        Normalized { fields, normalizer: "default@1.0.0".into(), error: None, notes: Vec::new() },
    );
    row.compress_value();
    row
}
