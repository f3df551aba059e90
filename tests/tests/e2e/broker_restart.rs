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

/// A broker outage never takes the read API down: while the broker is
/// dead, a client reading orders gets every answer, and `/ready` (what the
/// readiness probe of an `all` or `api` replica asks) stays 200, while
/// `/ready/ingest` says the consumer side is not ready. Before this, a
/// readiness probe on `/ready` removed every replica from the Service about
/// 45 s into a broker outage. Afterwards ingestion resumes.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_api_stays_ready_while_the_broker_is_down() {
    let mut broker = Broker::start_persistent();
    let prefix = unique("brkread");
    let (db_url, pool) = fresh_database("brkread").await;
    let topic = format!("{prefix}-orders");
    broker.kafka().create_topic(&topic, 1).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), broker.bootstrap.clone()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let producer = broker.kafka().unbatched_producer();
    let value = |n: u32| format!(r#"{{"type": "order.updated", "payload": {{"order_id": "{prefix}-o1", "n": {n}}}}}"#);
    produce(&producer, &Out::new(&topic, value(1))).await;
    wait_for_rows(&pool, &prefix, 1, Duration::from_secs(60)).await;
    let latest = format!("/order/{prefix}-o1/latest");

    broker.kill();
    let killed = Instant::now();
    // Read until the host has noticed the outage on its consumer side, and
    // 10 s beyond.
    let (mut reads, mut noticed_after): (u32, Option<Duration>) = (0, None);
    while noticed_after.is_none_or(|t| killed.elapsed() < t + Duration::from_secs(10)) {
        assert!(killed.elapsed() < Duration::from_secs(150), "/ready/ingest never noticed the broker outage");
        let (status, body) = http_get(host.http, &latest).expect("the host answers");
        assert_eq!(status, 200, "{:.1} s into the outage, {latest}: {body}", killed.elapsed().as_secs_f64());
        let (status, body) = http_get(host.http, "/ready").expect("the host answers");
        assert_eq!(status, 200, "{:.1} s into the outage, /ready: {body}", killed.elapsed().as_secs_f64());
        reads += 1;
        if noticed_after.is_none()
            && let Some((503, _)) = http_get(host.http, "/ready/ingest")
        {
            noticed_after = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let noticed_after = noticed_after.unwrap();
    eprintln!(
        "broker down {:.0} s: {reads} reads and /ready all 200; /ready/ingest 503 after {:.1} s",
        killed.elapsed().as_secs_f64(),
        noticed_after.as_secs_f64()
    );

    broker.start();
    produce(&broker.kafka().unbatched_producer(), &Out::new(&topic, value(2))).await;
    wait_for_rows(&pool, &prefix, 2, Duration::from_secs(120)).await;
    let (status, body) = http_get(host.http, &latest).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#""kafkaOffset":1,"#), "the record produced after the outage is the latest: {body}");
}
