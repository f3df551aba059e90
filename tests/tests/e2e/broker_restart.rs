//! The broker killed and restarted under load: the host rides it out without
//! restarting, and afterwards the rows stored are exactly the records the
//! broker holds, each once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use notification_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn broker_restarts_under_load_lose_nothing() {
    let mut broker = Broker::start_persistent();
    let prefix = unique("brk");
    let (db_url, pool) = fresh_database("brk").await;
    let topics: Vec<String> = (0..3).map(|i| format!("{prefix}-topic-{i}")).collect();
    for t in &topics {
        broker.kafka().create_topic(t, 2).await;
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), broker.bootstrap.clone()));
    options.env.push(("BATCH_SIZE".into(), "100".into()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let pid = host.child.id();

    let restarts = fault_param("FAULT_BROKER_RESTARTS", 2);
    let down = Duration::from_secs(fault_param("FAULT_BROKER_DOWN_SECS", 5));
    let rate = fault_param("FAULT_RATE", 200);
    let seconds = restarts * (down.as_secs() + 6) + 8;
    let producing = tokio::spawn(broker.kafka().produce_steadily(topics.clone(), (seconds * rate) as usize, rate));
    let started = Instant::now();
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_millis(4000 + jitter(2000))).await;
        broker.kill();
        tokio::time::sleep(down).await;
        assert!(host.child.id() == pid && rss_kib(pid).is_some(), "the host died while the broker was down");
        broker.start();
    }
    let acknowledged: BTreeSet<Coordinates> = producing.await.unwrap().into_iter().collect();
    let produced_in = started.elapsed();

    // What the broker holds is the truth: a producer retry across a restart
    // may have written a record twice, at two offsets, and both are records.
    let held: BTreeSet<Coordinates> = broker
        .high_watermarks(&topics)
        .into_iter()
        .flat_map(|(topic, partition, high)| {
            (0..high).map(move |offset| Coordinates { topic: topic.clone(), partition, offset })
        })
        .collect();
    let missing_from_broker: Vec<&Coordinates> = acknowledged.difference(&held).take(5).collect();
    assert!(missing_from_broker.is_empty(), "the broker lost acknowledged records: {missing_from_broker:?}");

    let rows = wait_for_rows(&pool, &prefix, held.len(), Duration::from_secs(120)).await;
    let caught_up = started.elapsed().saturating_sub(produced_in);
    let stored_set: BTreeSet<Coordinates> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), stored_set.len(), "duplicate rows");
    let missing: Vec<&Coordinates> = held.difference(&stored_set).take(5).collect();
    let extra: Vec<&Coordinates> = stored_set.difference(&held).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?} of {}; host log:\n{}",
        held.len(),
        host.log_text()
    );
    assert!(host.child.id() == pid && rss_kib(pid).is_some(), "the host died");
    eprintln!(
        "FAULTS broker: {restarts} broker SIGKILL+restarts ({} s down each) over {} s, {} records held, {} acknowledged, lost 0, duplicated 0, all stored {:.1} s after the last was produced",
        down.as_secs(),
        produced_in.as_secs(),
        held.len(),
        acknowledged.len(),
        caught_up.as_secs_f64()
    );
}
