//! Hundreds of topics: the topic list is refreshed beside the poll loop, so
//! consumption never pauses while it refreshes, and a topic created among
//! them is picked up within the refresh interval.

use std::time::{Duration, Instant};

use notification_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn polling_does_not_pause_while_hundreds_of_topics_refresh() {
    let prefix = unique("many");
    let (db_url, pool) = fresh_database("many").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = (0..300).map(|i| format!("{prefix}-t{i:03}")).collect();
    kafka.create_topics(&topics, 1).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    // Refresh often: a refresh that blocked polling would show at every tick.
    options.env.push(("TOPIC_REFRESH_INTERVAL".into(), "500ms".into()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(90));

    let steady = topics[0].clone();
    let producing = tokio::spawn(kafka.clone().produce_steadily(vec![steady.clone()], 1500, 100));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = format!("{prefix}-late");
    kafka.create_topic(&late, 1).await;
    let created = Instant::now();
    produce(&kafka.producer(), &Out::new(&late, r#"{"type": "late"}"#)).await;
    while stored(&pool, &late).await.is_empty() {
        assert!(
            created.elapsed() < Duration::from_secs(15),
            "the new topic was not picked up; log:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let picked_up = created.elapsed();
    let produced = producing.await.unwrap().len();
    let rows = wait_for_rows(&pool, &steady, produced, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), produced);

    // The longest wait between two consecutive rows of the steady stream
    // (100 records/s), while the list of 300 topics was refreshed every
    // 500 ms. The new topic's rebalance falls in this window too.
    let gap: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(d))::float8 FROM (SELECT stored_at - lag(stored_at) OVER (ORDER BY stored_at) AS d \
         FROM notifications WHERE source_topic = $1) g",
    )
    .bind(&steady)
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!(
        "many topics: 300 topics refreshed every 500 ms; longest gap between stored rows {gap:.2} s; a new topic picked up in {picked_up:?}"
    );
    assert!(gap < 1.5, "consumption paused for {gap:.2} s");
    assert!(!host.log_text().contains("Could not refresh the topic list"), "{}", host.log_text());
}
