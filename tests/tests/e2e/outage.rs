//! PostgreSQL stopped under load: the host stays up and in its group, says
//! it is not ready, keeps its memory bounded, and stores every record once
//! the database is back. The test runs a PostgreSQL cluster of its own, so it
//! runs whatever DATABASE_URL points at.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use notification_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn database_outage_under_load_loses_nothing() {
    let postgres = Postgres::start_private();
    let prefix = unique("outage");
    let db_url = postgres.url();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db_url).await.unwrap();
    let topics: Vec<String> = (0..3).map(|i| format!("{prefix}-topic-{i}")).collect();
    for t in &topics {
        Kafka::shared().create_topic(t, 2).await;
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("BATCH_SIZE".into(), "100".into()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let pid = host.child.id();

    let outage = Duration::from_secs(fault_param("FAULT_OUTAGE_SECS", 22));
    // Produce for the outage plus 18 s around it.
    let count = (outage.as_secs() + 18) * 125;
    let producing = tokio::spawn(Kafka::shared().produce_steadily(topics.clone(), count as usize, 125));
    tokio::time::sleep(Duration::from_secs(5)).await;
    postgres.stop();
    let stopped_at = Instant::now();

    // Not ready while the database is down.
    let mut saw_503 = false;
    let mut peak_rss = 0;
    while stopped_at.elapsed() < outage {
        if let Some((503, body)) = http_get(host.http, "/ready") {
            saw_503 = true;
            assert!(body.contains("database"), "{body}");
        }
        peak_rss = peak_rss.max(rss_kib(pid).expect("the host is alive during the outage"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(saw_503, "/ready never reported the outage");
    assert!(host.child.id() == pid && rss_kib(pid).is_some(), "the host died during the outage");
    assert!(peak_rss < 300 * 1024, "host memory reached {peak_rss} KiB during the outage");

    postgres.start();
    host.wait_ready(Duration::from_secs(30));
    let produced: BTreeSet<Coordinates> = producing.await.unwrap().into_iter().collect();
    let rows = wait_for_rows(&pool, &prefix, produced.len(), Duration::from_secs(120)).await;
    let stored_set: BTreeSet<Coordinates> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), stored_set.len(), "duplicate rows");
    assert_eq!(stored_set, produced, "log:\n{}", host.log_text());
    // It stayed in its group: no revocation during the outage.
    assert!(!host.log_text().contains("Partitions revoked."), "the host left its group; log:\n{}", host.log_text());
    eprintln!(
        "FAULTS outage: PostgreSQL down {} s under load, {} records, lost 0, duplicated 0, peak host RSS {peak_rss} KiB",
        outage.as_secs(),
        produced.len()
    );
}
