//! The original service's database, as a cut-over finds it: its two tables
//! (`tests/fixtures/original-service.sql`, its DDL) and rows written the way
//! it wrote them, for the cut-over's end-to-end test and the import's
//! measurement.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use sqlx::PgPool;

/// The original's DDL.
pub const ORIGINAL_DDL: &str = include_str!("../fixtures/original-service.sql");

/// Creates the original's tables in `pool`'s database and fills
/// `notifications` with `rows` rows as it wrote them, seven to an order
/// (every tenth row created through its API; `''`, `'unknown'` and
/// `'unavailable'` where it had no value; a few orders whose last two rows
/// share an insert time; a few rows without an order), with ids that are
/// the same on every run.
pub async fn original_database(pool: &PgPool, rows: u32) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(ORIGINAL_DDL)).execute(pool).await.unwrap();
    sqlx::query(
        r#"INSERT INTO notifications
        SELECT md5('row-' || i)::uuid::text,
               CASE WHEN i % 3 = 0 THEN '' ELSE 'user_' || (i % 97) END,
               CASE WHEN i % 5 = 0 THEN 'runner_' || (i % 13) END,
               CASE WHEN i % 500 = 499 THEN '' ELSE 'order-' || (i / 7) END,
               CASE WHEN i % 10 = 9
                 THEN '{"message": "Votre commande n\u00b0' || (i / 7) || ' est en route \ud83d\ude80"}'
                 ELSE '{"topic": "' || topic || '", "event_type": "' || etype || '", "correlation_id": "saga-' || i
                      || '", "source_service": "order-service", "timestamp": "'
                      || to_char(at + interval '3 ms', 'YYYY-MM-DD"T"HH24:MI:SS.US')
                      || '", "payload": {"order_id": "order-' || (i / 7) || '", "status": "ACCEPTED", "amount": '
                      || (i % 1000) || ', "items": [{"item_name": "caf\u00e9", "quantity": 2}]}}'
               END,
               CASE WHEN i % 10 = 9 THEN 'sent' WHEN i % 4 = 0 THEN 'unknown' WHEN i % 11 = 0 THEN 'unavailable'
                    ELSE 'ACCEPTED' END,
               at,
               CASE WHEN i % 10 = 9 THEN 'api' ELSE topic END,
               CASE WHEN i % 10 = 9 THEN 'notification.manual' ELSE etype END,
               CASE WHEN i % 10 = 9 THEN md5('saga-' || i)::uuid::text ELSE 'saga-' || i END,
               CASE WHEN i % 10 = 9 THEN 'notification-service-api' ELSE 'order-service' END
        FROM (
          SELECT i,
                 (ARRAY['order_events', 'payment_events', 'user_events', 'order-events'])[i % 4 + 1] AS topic,
                 (ARRAY['order.created', 'order.status_updated', 'payment.authorized'])[i % 3 + 1] AS etype,
                 -- Insert times a little over a second apart, microseconds
                 -- and all; in every fiftieth order the last two rows tie.
                 timestamp '2025-01-06 08:00:00' + (i - CASE WHEN i % 7 = 6 AND (i / 7) % 50 = 0 THEN 1 ELSE 0 END)
                   * interval '1.000123 seconds' AS at
          FROM generate_series(0, $1 - 1) AS i
        ) g"#,
    )
    .bind(i64::from(rows))
    .execute(pool)
    .await
    .unwrap();
}

/// Records the positions the original reached, as it kept them.
pub async fn original_offsets(pool: &PgPool, positions: &[(&str, i32, i64)]) {
    for (topic, partition, offset) in positions {
        sqlx::query("INSERT INTO kafka_offsets VALUES ($1, $2, $3, now() AT TIME ZONE 'utc')")
            .bind(topic)
            .bind(partition)
            .bind(offset)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The original's rows by order: every id, and the ids of its latest rows
/// (several when their insert times tie).
pub async fn original_orders(pool: &PgPool) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT order_id, notification_id, created_at = max(created_at) OVER (PARTITION BY order_id) \
         FROM notifications WHERE order_id <> ''",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut orders: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (order, id, latest) in rows {
        let entry = orders.entry(order).or_default();
        if latest {
            entry.1.insert(id.clone());
        }
        entry.0.insert(id);
    }
    orders
}

/// Everything in the original's two tables, as one text: what must not
/// change.
pub async fn original_snapshot(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(coalesce((SELECT string_agg(n::text, E'\\n' ORDER BY notification_id) FROM public.notifications n), '') \
         || coalesce((SELECT string_agg(o::text, E'\\n' ORDER BY topic, partition) FROM public.kafka_offsets o), ''))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs a `notification-host` command (the binary [`crate::host_binary`])
/// with only `env` and PATH in its environment.
pub fn host_command(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(crate::host_binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A command's standard output and error, for assertions and failures.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The (partition, offset) of the host's rows of `topic` (in its own schema
/// beside the original's tables), once at least `count` are there (or after
/// a minute), and how many rows it holds 2 s later: a record read twice, or
/// from the start, would show up meanwhile.
pub async fn host_rows_of(pool: &PgPool, topic: &str, count: usize) -> (BTreeSet<(i32, i64)>, i64) {
    let start = std::time::Instant::now();
    let rows = loop {
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT kafka_partition, kafka_offset FROM notification_host.notifications WHERE source_topic = $1",
        )
        .bind(topic)
        .fetch_all(pool)
        .await
        .unwrap();
        if rows.len() >= count || start.elapsed() > std::time::Duration::from_secs(60) {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notification_host.notifications WHERE source_topic = $1")
        .bind(topic)
        .fetch_one(pool)
        .await
        .unwrap();
    (rows.into_iter().collect(), n)
}
