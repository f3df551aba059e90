//! The cut-over from the original service on a real PostgreSQL: where the
//! host puts its tables in a database that holds the original's, and what
//! `import-legacy` makes of the original's rows.

use notification_host::cmd::import_legacy;
use notification_host::config::{Cli, Command};
use notification_host::storage::{Connections, Db, HOST_SCHEMA, SchemaReason};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::support::api::Api;

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

async fn import(args: &[&str]) -> (std::process::ExitCode, String) {
    let cli = <Cli as clap::Parser>::try_parse_from(
        ["notification-host", "import-legacy"].iter().copied().chain(args.iter().copied()),
    )
    .unwrap();
    let Some(Command::ImportLegacy(args)) = cli.command else { panic!("not import-legacy") };
    let mut out = Vec::new();
    let code = import_legacy::run(&args, &mut out).await.unwrap();
    (code, String::from_utf8(out).unwrap())
}

/// A pool whose sessions find the host's own schema first, as the host's do.
async fn host_pool(url: &str) -> PgPool {
    let options: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new().max_connections(2).connect_with(options.options([("search_path", HOST_SCHEMA)])).await.unwrap()
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

#[sqlx::test(migrations = false)]
async fn imported_rows_keep_their_ids_and_answer_as_the_original_did(pool: PgPool) {
    original_database(&pool).await;
    let before = original_snapshot(&pool).await;
    let url = url_of(&pool).await;

    let (code, out) = import(&["--from", &url, "--database-url", &url, "--batch-size", "3"]).await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(out.contains("read 4, imported 4, already present 0"), "{out}");
    let (_, out) = import(&["--from", &url, "--database-url", &url]).await;
    assert!(out.contains("read 4, imported 0, already present 4"), "{out}");
    assert_eq!(original_snapshot(&pool).await, before, "the original's tables are untouched");

    let host = host_pool(&url).await;
    #[derive(sqlx::FromRow, Debug)]
    struct Row {
        legacy_id: Option<String>,
        customer_id: Option<String>,
        runner_id: Option<String>,
        status: Option<String>,
        source_topic: String,
        kafka_partition: Option<i32>,
        kafka_offset: Option<i64>,
        event: Option<String>,
        raw_value: Option<Vec<u8>>,
        created_at: chrono::DateTime<chrono::Utc>,
        ingest_note: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT legacy_id, customer_id, runner_id, status, source_topic, kafka_partition, kafka_offset, \
         event::text AS event, raw_value, created_at, ingest_note FROM notifications ORDER BY legacy_id",
    )
    .fetch_all(&host)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let [kafka, api, failed, odd] = &rows[..] else { unreachable!() };
    assert_eq!(kafka.legacy_id.as_deref(), Some("6f1c1d2e-0000-4000-8000-000000000001"));
    assert_eq!((kafka.kafka_partition, kafka.kafka_offset), (None, None), "no Kafka coordinates");
    assert_eq!(kafka.customer_id, None, "'' is absent");
    assert!(kafka.event.as_deref().unwrap().contains(r#""payload": {"status": "PENDING""#), "{kafka:?}");
    assert_eq!(kafka.created_at.to_rfc3339(), "2025-04-04T10:00:00.123456+00:00");
    assert_eq!(api.source_topic, "api", "an API row stays one");
    assert_eq!(api.runner_id, None, "'None' is absent");
    assert_eq!(api.status.as_deref(), Some("sent"));
    assert_eq!(failed.status, None, "'unknown' is absent");
    assert!(failed.ingest_note.as_deref().unwrap().contains(r#"status "unknown""#), "{failed:?}");
    assert_eq!(odd.event, None);
    assert_eq!(odd.raw_value.as_deref(), Some(&b"not json {"[..]), "an event that is not JSON is kept as text");
    assert_eq!(odd.created_at, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
    assert_eq!(odd.status, None);

    // GET /order/{id} answers the original's ids with API_COMPAT=original,
    // the row ids with the current shape.
    let original = Api::with_args(host.clone(), &["--api-compat", "original"]);
    let (status, body) = original.get("/order/4242").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body.as_array().unwrap().iter().map(|n| n["notificationId"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "6f1c1d2e-0000-4000-8000-000000000001",
            "6f1c1d2e-0000-4000-8000-000000000003",
            "6f1c1d2e-0000-4000-8000-000000000002"
        ],
        "in insert-time order"
    );
    let first = &body[0];
    assert_eq!(first["createdAt"], "2025-04-04T10:00:00.123456");
    assert_eq!(first["event"]["payload"]["status"], "PENDING", "the original's wrapper, as it answered");
    assert_eq!(first["event"]["timestamp"], "2025-04-04T10:00:00.200000");
    assert_eq!(body[2]["event"], serde_json::json!({"message": "Your order is on its way"}));
    let (_, latest) = original.get("/order/4242/latest").await;
    assert_eq!(latest["notificationId"], "6f1c1d2e-0000-4000-8000-000000000002");

    let current = Api::with_args(host.clone(), &[]);
    let (_, body) = current.get("/order/4242").await;
    assert!(body[0]["notificationId"].is_i64(), "{body}");
    assert_eq!(body[0]["legacyId"], "6f1c1d2e-0000-4000-8000-000000000001");
    let (_, fresh) = current
        .post(
            "/send-notification",
            Some("application/json"),
            None,
            r#"{"customerId": "c", "orderId": "4242", "event": "hi"}"#,
        )
        .await;
    assert_eq!(fresh["notification"].get("legacyId"), None, "rows the host stores have none: {fresh}");
    let (_, again) = original.get("/order/4242").await;
    let last = again.as_array().unwrap().last().unwrap();
    assert!(last["notificationId"].as_str().unwrap().parse::<i64>().is_ok(), "{last}");
    assert_eq!(last.get("legacyId"), None::<&Value>);
}

#[sqlx::test(migrations = false)]
async fn an_import_refuses_where_the_host_already_stored_what_the_original_read(pool: PgPool) {
    original_database(&pool).await;
    let url = url_of(&pool).await;
    let db = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    db.migrate().await.unwrap();
    let host = host_pool(&url).await;
    // The host consumed order_events from the start: offset 3 is a record
    // the original, which stopped at 17, stored too.
    crate::support::api::ingest(&host, vec![("order_events", 0, 3, 1_743_760_800_000, r#"{"order_id": "4242"}"#)])
        .await;
    let cli = <Cli as clap::Parser>::try_parse_from([
        "notification-host",
        "import-legacy",
        "--from",
        &url,
        "--database-url",
        &url,
    ])
    .unwrap();
    let Some(Command::ImportLegacy(args)) = cli.command else { unreachable!() };
    let error = import_legacy::run(&args, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(error.contains("order_events[0] before offset 17") && error.contains("--only-api"), "{error}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&host).await.unwrap();
    assert_eq!(n, 1, "nothing imported");

    // The API's rows exist only in the original: those can come.
    let (code, out) = import(&["--from", &url, "--database-url", &url, "--only-api"]).await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(out.contains("read 1, imported 1, already present 0"), "{out}");
}
