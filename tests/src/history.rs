//! A realistic audit log loaded straight into PostgreSQL, for the API and
//! console benchmarks: orders, customers, runners and sagas shaped like the
//! platform's traffic, spread over the last months in their monthly
//! partitions.

use std::time::Instant;

use notification_host::storage::Db;

/// Distinct orders in the loaded rows.
pub const ORDERS: i64 = 100_000;
/// Distinct customers.
pub const CUSTOMERS: i64 = 20_000;

/// About 70% of rows name their order; the rest (payment, user events) are
/// tied to it only by the saga id. Values are ~500-byte JSON documents.
pub async fn load(db: &Db, rows: i64, months: u32) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(db.pool()).await?;
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
    // Seconds between consecutive rows, so that they end about now.
    let step = ((now - since).num_seconds() / rows.max(1)).max(1);
    let chunk = 200_000;
    let mut from = existing + 1;
    while from <= rows {
        let to = (from + chunk - 1).min(rows);
        sqlx::query(
            "INSERT INTO notifications (customer_id, runner_id, order_id, event, status, created_at, source_topic, \
               event_type, correlation_id, source_service, kafka_partition, kafka_offset, kafka_headers, kafka_timestamp, \
               raw_value, normalizer) \
             SELECT d.customer_id, d.runner_id, d.order_id, d.doc::jsonb, d.status, d.ts, d.topic, d.event_type, \
               d.saga, d.source, (g % 3)::int, g, '[]'::jsonb, d.ts, convert_to(d.doc, 'UTF8'), 'default@1.0.0' \
             FROM generate_series($1::int8, $2::int8) g, LATERAL ( \
               SELECT \
                 CASE WHEN g % 10 < 7 THEN 'order-' || (g % $3) END AS order_id, \
                 CASE WHEN g % 10 < 4 THEN 'cust-' || (g % $4) END AS customer_id, \
                 CASE WHEN g % 10 = 5 THEN 'runner-' || (g % 5000) END AS runner_id, \
                 'saga-' || (g % $3) AS saga, \
                 (ARRAY['order_events','order-events','payment_events','payment_commands','user_events','user_commands','escrow-events','saga-events'])[1 + g % 8] AS topic, \
                 (ARRAY['order.created','order.status_updated','payment.authorized','authorize_payment','user.payment_info_retrieved','get_payment_info','escrow.held','saga.step'])[1 + g % 8] AS event_type, \
                 (ARRAY['order-service','payment-service','user-service',NULL])[1 + g % 4] AS source, \
                 (ARRAY['PENDING','ACCEPTED','COMPLETED',NULL])[1 + g % 4] AS status, \
                 $5::timestamptz + make_interval(secs => g * $6 + (g % 13)) AS ts, \
                 json_build_object('type', 'order.created', 'correlation_id', 'saga-' || (g % $3), 'source', 'order-service', \
                   'timestamp', '2025-04-04T10:00:00.123456', 'payload', json_build_object('order_id', g % $3, \
                   'customer_id', 'cust-' || (g % $4), 'status', 'PENDING', 'saga_id', 'saga-' || (g % $3), \
                   'order_details', json_build_object('foodItems', json_build_array(json_build_object('item_name', 'Iced latte', \
                   'quantity', 2, 'price', 4.5)), 'storeLocation', 'Student Union', 'deliveryLocation', 'Dorm ' || (g % 40), \
                   'note', repeat('x', 120))))::text AS doc \
             ) d",
        )
        .bind(from)
        .bind(to)
        .bind(ORDERS)
        .bind(CUSTOMERS)
        .bind(since)
        .bind(step as f64)
        .execute(db.pool())
        .await?;
        println!("loaded {to} rows ({:.0} s)", started.elapsed().as_secs_f64());
        from = to + 1;
    }
    sqlx::query("ANALYZE notifications").execute(db.pool()).await?;
    Ok(())
}
