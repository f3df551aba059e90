//! The cut-over from the original service on a real PostgreSQL: where the
//! host puts its tables in a database that holds the original's.

use notification_host::config::Cli;
use notification_host::storage::{Connections, Db, HOST_SCHEMA, SchemaReason};
use sqlx::PgPool;

/// The original service's tables (its DDL, as its ORM created them).
const ORIGINAL_DDL: &str = include_str!("../../../tests/fixtures/original-service.sql");

/// The URL of the test's own database.
async fn url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/test sets it)");
    format!("{}/{name}", url.rsplit_once('/').unwrap().0)
}

async fn original_database(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(ORIGINAL_DDL)).execute(pool).await.unwrap();
    // Rows as the original wrote them: a Kafka record's wrapper, an API
    // row, placeholders, a row without an insert time.
    sqlx::raw_sql(
        r#"INSERT INTO notifications VALUES
        ('6f1c1d2e-0000-4000-8000-000000000001', '', NULL, '4242',
         '{"topic": "order_events", "event_type": "order.created", "correlation_id": "saga-1", "source_service": "order-service", "timestamp": "2025-04-04T10:00:00.200000", "payload": {"order_id": "4242", "status": "PENDING"}}',
         'PENDING', '2025-04-04 10:00:00.123456', 'order_events', 'order.created', 'saga-1', 'order-service'),
        ('6f1c1d2e-0000-4000-8000-000000000002', 'user_2abc', 'None', '4242', '{"message": "Your order is on its way"}',
         'sent', '2025-04-04 10:05:00', 'api', 'notification.manual', '1d5e0c0a-9d7e-4f5e-9a55-2f6a0e0c7b11', 'notification-service-api'),
        ('6f1c1d2e-0000-4000-8000-000000000003', '', NULL, '4242',
         '{"topic": "payment_events", "event_type": "payment.failed", "correlation_id": "saga-1", "source_service": "payment-service", "timestamp": "2025-04-04T10:01:00", "payload": {"error": "card declined"}}',
         'unknown', '2025-04-04 10:01:00.5', 'payment_events', 'payment.failed', 'saga-1', 'payment-service'),
        ('6f1c1d2e-0000-4000-8000-000000000004', 'unknown', NULL, '', 'not json {', 'unavailable', NULL,
         'user_events', 'user.payment_info_failed', 'saga-2', 'user-service');
        INSERT INTO kafka_offsets VALUES ('order_events', 0, 17, '2025-04-04 10:06:00'), ('payment_events', 0, 9, '2025-04-04 10:06:00');"#,
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Everything in the original's tables, as text.
async fn original_snapshot(pool: &PgPool) -> (String, String) {
    let rows: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(n::text, E'\\n' ORDER BY notification_id), '') FROM public.notifications n",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let offsets: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(o::text, E'\\n' ORDER BY topic, partition), '') FROM public.kafka_offsets o",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (rows, offsets)
}

#[sqlx::test(migrations = false)]
async fn the_host_keeps_its_tables_apart_from_the_originals_and_stays_there(pool: PgPool) {
    original_database(&pool).await;
    let before = original_snapshot(&pool).await;
    let url = url_of(&pool).await;

    let db = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    db.migrate().await.expect("migrating beside the original's tables");
    let schema = db.schema().await.unwrap();
    assert_eq!(schema.name, HOST_SCHEMA);
    assert!(matches!(schema.reason, SchemaReason::BesideOriginal { ref schema } if schema == "public"), "{schema:?}");
    for (pool_name, path) in db.session_setting("search_path").await.unwrap() {
        assert_eq!(path, "notification_host", "{pool_name}");
    }
    let kind: String = sqlx::query_scalar(
        "SELECT relkind::text FROM pg_class WHERE oid = 'notification_host.notifications'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kind, "p", "the host's notifications is its partitioned table");
    assert_eq!(original_snapshot(&pool).await, before, "the original's tables are untouched");

    // The next start finds its migrations there, also once the original's
    // tables are gone.
    let again = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    again.migrate().await.unwrap();
    assert_eq!(again.schema().await.unwrap().reason, SchemaReason::HoldsMigrations);
    sqlx::query("DROP TABLE public.notifications, public.kafka_offsets").execute(&pool).await.unwrap();
    let after_drop = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    let schema = after_drop.schema().await.unwrap();
    assert_eq!((schema.name.as_str(), schema.reason), (HOST_SCHEMA, SchemaReason::HoldsMigrations));
    assert_eq!(after_drop.partitions_holding_rows().await.unwrap(), Vec::<String>::new());
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn an_existing_deployment_keeps_its_tables_and_search_path(pool: PgPool) {
    let url = url_of(&pool).await;
    let db = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    db.migrate().await.unwrap();
    let schema = db.schema().await.unwrap();
    assert_eq!((schema.name.as_str(), schema.reason), ("public", SchemaReason::SessionDefault));
    for (pool_name, path) in db.session_setting("search_path").await.unwrap() {
        assert_eq!(path, "\"$user\", public", "{pool_name}: the session's own path, untouched");
    }
    let own: bool =
        sqlx::query_scalar("SELECT to_regnamespace('notification_host') IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert!(!own, "no schema of the host's is created");
}

#[sqlx::test(migrations = false)]
async fn database_schema_puts_the_tables_where_it_says(pool: PgPool) {
    let url = url_of(&pool).await;
    let cli = <Cli as clap::Parser>::try_parse_from(["notification-host", "--database-schema", "audit_log"]).unwrap();
    assert_eq!(cli.serve.db.schema.as_deref(), Some("audit_log"));
    for bad in ["Audit", "pg_x", "1x", "a-b", ""] {
        assert!(
            <Cli as clap::Parser>::try_parse_from(["notification-host", "--database-schema", bad]).is_err(),
            "{bad}"
        );
    }
    let db = Db::connect_lazy_in(&url, Connections::for_command(), Some("audit_log".into())).unwrap();
    db.migrate().await.unwrap();
    assert_eq!(db.schema().await.unwrap().reason, SchemaReason::Configured);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log.notifications").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
    let public: bool =
        sqlx::query_scalar("SELECT to_regclass('public.notifications') IS NULL").fetch_one(&pool).await.unwrap();
    assert!(public, "nothing in public");
}
