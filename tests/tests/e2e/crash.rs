//! SIGKILL the host repeatedly while records are produced: after a final
//! restart every produced record is stored exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use notification_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    let prefix = unique("crash");
    let (db_url, pool) = fresh_database("crash").await;
    let topics: Vec<String> = [
        "order_events",
        "order-events",
        "order_commands",
        "payment-events",
        "payment_commands",
        "user_events",
        "user_commands",
        "escrow-events",
    ]
    .iter()
    .map(|t| format!("{prefix}_{t}"))
    .collect();
    for t in &topics {
        Kafka::shared().create_topic(t, 3).await;
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("BATCH_SIZE".into(), "200".into()));
    // A killed member keeps its partitions until its session times out; a
    // short session lets the restarted host take them over quickly.
    options.env.push(("KAFKA_OPTIONS".into(), "session.timeout.ms=6000;heartbeat.interval.ms=500".into()));
    let mut host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));

    let records = fault_param("FAULT_RECORDS", 15_000) as usize;
    let max_kills = fault_param("FAULT_KILLS", 5);
    let rate = fault_param("FAULT_RATE", 500);
    let started = std::time::Instant::now();
    let producing = tokio::spawn(Kafka::shared().produce_steadily(topics.clone(), records, rate));
    let mut kills = 0;
    let mut last_count = 0;
    // Records the hosts received again (their own counter, read just before
    // each kill): what the unique key hides. A SIGKILL loses at most the
    // offsets stored since the last commit (librdkafka commits every 5 s)
    // and the batch in flight.
    let mut redelivered = Vec::new();
    while !producing.is_finished() && kills < max_kills {
        // Kill only a host that is writing: wait for the new one to take
        // over the partitions and store something, then strike at a random
        // moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stored(&pool, &prefix).await.len() <= last_count && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(jitter(1500))).await;
        redelivered.push(host.redelivered());
        host.kill();
        kills += 1;
        last_count = stored(&pool, &prefix).await.len();
        eprintln!("kill {kills}: {last_count} rows stored when killed");
        host = Host::start(&options);
    }
    let produced: BTreeSet<Coordinates> = producing.await.unwrap().into_iter().collect();
    assert!(kills >= max_kills.min(3), "only {kills} kills happened while producing");
    host.kill();
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));

    let rows = wait_for_rows(&pool, &prefix, produced.len(), Duration::from_secs(120)).await;
    redelivered.push(host.redelivered());
    // A host receives again what the hosts before it stored but had not yet
    // committed (offsets are committed every second, so after a kill that is
    // the last second or two, and the backlog a short-lived host drained
    // before its first commit). A host that never committed would receive
    // everything again: the final host alone all `records`.
    let bound = records as u64 / 2;
    assert!(
        redelivered.iter().all(|&r| r <= bound),
        "redelivered per host {redelivered:?}, bound {bound}: offsets are not being committed"
    );
    let stored_set: BTreeSet<Coordinates> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), stored_set.len(), "duplicate rows");
    let missing: Vec<_> = produced.difference(&stored_set).take(5).collect();
    let extra: Vec<_> = stored_set.difference(&produced).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}; log:\n{}",
        host.log_text()
    );
    assert_eq!(stored_set.len(), records);
    eprintln!(
        "FAULTS crash: produced {records} records on {} topics x 3 partitions, {kills} SIGKILLs, lost {}, duplicated {}, redelivered {} (per host {redelivered:?}), {:.0} s",
        topics.len(),
        produced.difference(&stored_set).count(),
        rows.len() - stored_set.len(),
        redelivered.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
}
