//! Rebalances mid-stream: a second host joins the group and later leaves,
//! then the first is killed and restarted. Every record produced meanwhile
//! is stored exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use notification_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn hosts_joining_leaving_and_dying_lose_and_duplicate_nothing() {
    let prefix = unique("reb");
    let (db_url, pool) = fresh_database("rebalance").await;
    let topics: Vec<String> = (0..4).map(|i| format!("{prefix}-t{i}")).collect();
    for t in &topics {
        Kafka::shared().create_topic(t, 3).await;
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("BATCH_SIZE".into(), "100".into()));
    options.env.push(("KAFKA_OPTIONS".into(), "session.timeout.ms=6000;heartbeat.interval.ms=500".into()));
    let mut first = Host::start(&options);
    first.wait_ready(Duration::from_secs(60));

    const RECORDS: usize = 12_000;
    let producing = tokio::spawn(Kafka::shared().produce_steadily(topics.clone(), RECORDS, 500)); // ~24 s
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut second = Host::start(&options);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = stored(&pool, &prefix).await.len();
    // The second one leaves cleanly (SIGTERM: it commits and leaves the group).
    second.terminate(Duration::from_secs(40));
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Then the first dies without warning and comes back.
    first.kill();
    let first = Host::start(&options);
    let produced: BTreeSet<Coordinates> = producing.await.unwrap().into_iter().collect();
    first.wait_ready(Duration::from_secs(60));

    let rows = wait_for_rows(&pool, &prefix, produced.len(), Duration::from_secs(120)).await;
    let stored_set: BTreeSet<Coordinates> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), stored_set.len(), "duplicate rows");
    assert_eq!(stored_set, produced, "log:\n{}", first.log_text());
    // Both hosts really took part.
    assert!(during > 0);
    assert!(
        second.log_text().contains("Partitions assigned."),
        "the second host never got partitions:\n{}",
        second.log_text()
    );
    let second_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE starts_with(source_topic, $1)")
        .bind(&prefix)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(second_rows as usize, RECORDS);
    eprintln!(
        "FAULTS rebalance: {RECORDS} records, a host joined and left, the other was killed and restarted, lost 0, duplicated 0"
    );
}
