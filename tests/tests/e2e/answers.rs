//! Answers that stay right under load: a soak of records that arrive late,
//! carry skewed clocks or placeholder ids, and share one hot correlation
//! id, while a client pages the log in stored order and tails it.
//!
//! `SOAK_RECORDS` sets the size (default 200,000).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use notification_e2e::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// Events per order: nine spread over the soak, then the order's last.
const EVENTS_PER_ORDER: usize = 10;

/// What one produced record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    /// Dated up to ten minutes before it is sent: a producer's retry, a
    /// lagging replica.
    Late,
    /// Dated far ahead: a clock in 2099, or microseconds sent as
    /// milliseconds.
    Skewed,
    /// Its order id is a placeholder: it names no order.
    Placeholder,
}

/// A cheap deterministic spread (SplitMix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn kind_of(i: u64) -> Kind {
    match mix(i) % 100 {
        0..=4 => Kind::Late,
        5 => Kind::Skewed,
        6 => Kind::Placeholder,
        _ => Kind::Normal,
    }
}

const PLACEHOLDER_IDS: [&str; 6] = ["unknown", "N/A", "undefined", "0", "none", "-"];

/// Sends every record at once (librdkafka batches them), waiting only when
/// its queue is full, and returns their coordinates in order.
async fn send_all(producer: &FutureProducer, records: &[(String, String, String, i64)]) -> Vec<Coordinates> {
    let mut pending = Vec::with_capacity(records.len());
    for (topic, key, value, ts) in records {
        loop {
            let record = FutureRecord::to(topic).key(key.as_bytes()).payload(value.as_bytes()).timestamp(*ts);
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push((topic.clone(), delivery));
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("cannot produce to {topic}: {e}"),
            }
        }
    }
    let mut coordinates = Vec::with_capacity(pending.len());
    for (topic, delivery) in pending {
        let d = delivery.await.expect("delivery canceled").map_err(|(e, _)| e).expect("delivery failed");
        coordinates.push(Coordinates { topic, partition: d.partition, offset: d.offset });
    }
    coordinates
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn coordinates_of(n: &Value) -> Coordinates {
    Coordinates {
        topic: n["sourceTopic"].as_str().unwrap().to_owned(),
        partition: n["kafkaPartition"].as_i64().unwrap() as i32,
        offset: n["kafkaOffset"].as_i64().unwrap(),
    }
}

/// Pages `GET /notifications?order=stored` from the start and tails it
/// until `want` rows were seen or `deadline` passes; returns every row's
/// coordinates in the order seen.
async fn page_and_tail(client: reqwest::Client, base: String, want: usize, deadline: Instant) -> Vec<Coordinates> {
    let mut seen = Vec::with_capacity(want);
    let mut cursor: Option<String> = None;
    while seen.len() < want && Instant::now() < deadline {
        let url = match &cursor {
            Some(c) => format!("{base}/notifications?order=stored&limit=1000&cursor={c}"),
            None => format!("{base}/notifications?order=stored&limit=1000"),
        };
        let (status, body) = get_json(&client, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        let rows = body["notifications"].as_array().expect("a page of notifications");
        seen.extend(rows.iter().map(coordinates_of));
        cursor = Some(body["next_cursor"].as_str().expect("stored order always says where to resume").to_owned());
        if rows.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    seen
}

/// 200,000 records (5% late by up to ten minutes, 1% with skewed clocks, 1%
/// with placeholder order ids, a twentieth of the orders sharing one
/// correlation id) while a client pages the log to its end and tails it:
/// the client sees every record exactly once, no order's timeline answers
/// 404 or leaves out one of the order's events, and `/latest` of every
/// order is the event produced last.
#[tokio::test(flavor = "multi_thread")]
async fn late_skewed_and_placeholder_records_under_a_tailing_client() {
    let total = fault_param("SOAK_RECORDS", 200_000) as usize;
    let orders = (total / EVENTS_PER_ORDER).max(1);
    let prefix = unique("soak");
    let (db_url, pool) = fresh_database("soak").await;
    let topics: Vec<String> = (0..4).map(|t| format!("{prefix}-events-{t}")).collect();
    Kafka::shared().create_topics(&topics, 3).await;
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));
    let base = format!("http://{}", host.http);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let started = Instant::now();
    let tail = tokio::spawn(page_and_tail(
        client.clone(),
        base.clone(),
        orders * EVENTS_PER_ORDER,
        Instant::now() + Duration::from_secs(900),
    ));

    let hot = format!("{prefix}-hot-session");
    let record = |order: usize, step: usize, kind: Kind, now_ms: i64| {
        let topic = topics[order % topics.len()].clone();
        let order_id = format!("{prefix}-o{order}");
        let saga = if order.is_multiple_of(20) { hot.clone() } else { format!("{prefix}-saga-{order}") };
        let named = match kind {
            Kind::Placeholder => PLACEHOLDER_IDS[order % PLACEHOLDER_IDS.len()].to_owned(),
            _ => order_id.clone(),
        };
        let value = format!(
            r#"{{"type": "order.step_{step}", "correlation_id": "{saga}", "source": "soak-service", "payload": {{"order_id": "{named}", "status": "STEP_{step}"}}}}"#
        );
        let ts = match kind {
            Kind::Late => now_ms - 1_000 - (mix(order as u64 ^ step as u64) % 599_000) as i64,
            Kind::Skewed if order.is_multiple_of(2) => 4_070_908_800_000, // 2099-01-01
            Kind::Skewed => now_ms * 1000,                                // microseconds as milliseconds
            _ => now_ms,
        };
        (topic, order_id, value, ts)
    };

    // Nine events of every order, in rounds, each record of its kind.
    let producer = Kafka::shared().producer();
    let mut produced: Vec<(Coordinates, usize, Kind)> = Vec::new();
    for step in 0..EVENTS_PER_ORDER - 1 {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let kinds: Vec<Kind> = (0..orders).map(|o| kind_of((step * orders + o) as u64)).collect();
        let batch: Vec<_> = (0..orders).map(|o| record(o, step, kinds[o], now_ms)).collect();
        let sent = send_all(&producer, &batch).await;
        produced.extend(sent.into_iter().zip(0..orders).map(|(c, o)| (c, o, kinds[o])));
    }
    // An event whose clock is skewed is stored at the time it arrives; the
    // order's last event is produced after that, so it is the latest.
    let waited = Instant::now();
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await.unwrap();
        if stored as usize >= produced.len() {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(600), "{stored} of {} stored in 600 s", produced.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let batch: Vec<_> = (0..orders).map(|o| record(o, EVENTS_PER_ORDER - 1, Kind::Normal, now_ms)).collect();
    let last: Vec<Coordinates> = send_all(&producer, &batch).await;
    produced.extend(last.iter().cloned().zip(0..orders).map(|(c, o)| (c, o, Kind::Normal)));
    let kinds = |k: Kind| produced.iter().filter(|(_, _, kind)| *kind == k).count();
    println!(
        "produced {} records: {} late, {} skewed, {} placeholder ({:.1} s)",
        produced.len(),
        kinds(Kind::Late),
        kinds(Kind::Skewed),
        kinds(Kind::Placeholder),
        started.elapsed().as_secs_f64()
    );
    assert!(kinds(Kind::Late) > 0 && kinds(Kind::Skewed) > 0 && kinds(Kind::Placeholder) > 0);

    // The client saw every record exactly once.
    let seen = tail.await.unwrap();
    println!("the client paged and tailed {} rows ({:.1} s)", seen.len(), started.elapsed().as_secs_f64());
    let mut twice = BTreeMap::new();
    for c in &seen {
        *twice.entry(c.clone()).or_insert(0) += 1;
    }
    twice.retain(|_, n| *n > 1);
    assert!(twice.is_empty(), "rows seen more than once: {:?}", twice.iter().take(5).collect::<Vec<_>>());
    let seen: BTreeSet<Coordinates> = seen.into_iter().collect();
    let all: BTreeSet<Coordinates> = produced.iter().map(|(c, _, _)| c.clone()).collect();
    let missed: Vec<_> = all.difference(&seen).take(5).collect();
    assert!(missed.is_empty(), "{} records never reached the client, e.g. {missed:?}", all.difference(&seen).count());
    assert_eq!(seen.len(), all.len());

    // Placeholders name no order.
    for placeholder in PLACEHOLDER_IDS {
        let (status, _) = get_json(&client, &format!("{base}/order/{}/latest", urlencode(placeholder))).await;
        assert_eq!(status, 404, "{placeholder:?} is not an order");
    }

    // Every order: its latest is its last event; its timeline answers with
    // every one of its events, the hot saga's orders included.
    let mut own: BTreeMap<usize, BTreeSet<Coordinates>> = BTreeMap::new();
    for (c, o, kind) in &produced {
        if *kind != Kind::Placeholder {
            own.entry(*o).or_default().insert(c.clone());
        }
    }
    let checks: Vec<usize> = (0..orders).collect();
    let mut handles = Vec::new();
    for chunk in checks.chunks(orders.div_ceil(8)) {
        let (client, base, prefix) = (client.clone(), base.clone(), prefix.clone());
        let chunk = chunk.to_vec();
        let expected: Vec<(Coordinates, BTreeSet<Coordinates>)> =
            chunk.iter().map(|o| (last[*o].clone(), own[o].clone())).collect();
        handles.push(tokio::spawn(async move {
            for (o, (last, own)) in chunk.iter().zip(expected) {
                let (status, latest) = get_json(&client, &format!("{base}/order/{prefix}-o{o}/latest")).await;
                assert_eq!(status, 200, "order {o}: {latest}");
                assert_eq!(coordinates_of(&latest), last, "order {o}'s latest is its last event: {latest}");
                let mut direct = BTreeSet::new();
                let mut cursor: Option<String> = None;
                loop {
                    let url = match &cursor {
                        Some(c) => format!("{base}/order/{prefix}-o{o}/timeline?cursor={c}"),
                        None => format!("{base}/order/{prefix}-o{o}/timeline"),
                    };
                    let (status, page) = get_json(&client, &url).await;
                    assert_eq!(status, 200, "order {o}'s timeline: {page}");
                    for e in page["events"].as_array().unwrap() {
                        if e["relation"] == "direct" {
                            direct.insert(coordinates_of(e));
                        }
                    }
                    match page["nextCursor"].as_str() {
                        Some(c) => cursor = Some(c.to_owned()),
                        None => break,
                    }
                }
                assert_eq!(direct, own, "order {o}'s timeline holds exactly its own events");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    println!("checked {orders} orders' latest and timeline ({:.1} s)", started.elapsed().as_secs_f64());
    // The skewed records say what happened to their time.
    let adjusted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE ingest_note LIKE '%ordered by when it was stored%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(adjusted as usize, kinds(Kind::Skewed));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
