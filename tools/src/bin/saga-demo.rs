//! Publishes one realistic create-order saga, as the delivery platform's
//! services do (see the README and `notification_e2e::saga`).
//!
//! Usage: saga-demo [ORDER_ID] [--stop-after N]   (reads KAFKA_BOOTSTRAP_SERVERS)
//!
//! The records are dated the last seconds before now, a second apart, so
//! the host learns the saga's shape from them; `--stop-after N` publishes
//! only the first N events: a saga stopped halfway, which the console
//! shows under "Stuck now" once a few whole ones were learned.

use std::time::Duration;

use anyhow::Context as _;
use notification_e2e::saga;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "localhost:9092".into());
    let mut order_id: u64 = 4242;
    let mut stop_after = usize::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--stop-after" {
            stop_after =
                args.next().context("--stop-after needs a number")?.parse().context("--stop-after N: a number")?;
        } else {
            order_id = a.parse().context("ORDER_ID must be a number")?;
        }
    }
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &servers).create().context("cannot reach the broker")?;
    let new: Vec<NewTopic<'_>> = saga::TOPICS.iter().map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1))).collect();
    // Topics that exist already are fine.
    let _ = admin.create_topics(&new, &AdminOptions::new()).await;

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &servers).create()?;
    let count = saga::EVENT_TYPES.len();
    let base_ms = chrono::Utc::now().timestamp_millis() - count as i64 * 1000;
    let mut records = saga::records_at(order_id, "", base_ms);
    records.truncate(stop_after);
    for (record, kind) in records.iter().zip(saga::EVENT_TYPES) {
        let value = record.value.as_deref().unwrap_or_default();
        let mut out: FutureRecord<'_, (), [u8]> = FutureRecord::to(&record.topic).payload(value);
        if let Some(ts) = record.timestamp {
            out = out.timestamp(ts);
        }
        let delivery =
            producer.send(out, Duration::from_secs(30)).await.map_err(|(e, _)| e).context("produce failed")?;
        println!("{:<17} {}/{:<5} {kind}", record.topic, delivery.partition, delivery.offset);
    }
    let stopped = if records.len() < count { " (stopped halfway)" } else { "" };
    println!(
        "published a saga of {} events for order {order_id} (saga {}){stopped}",
        records.len(),
        saga::saga_id(order_id)
    );
    Ok(())
}
