//! Publishes one realistic create-order saga, as the delivery platform's
//! services do (see the README and `notification_e2e::saga`).
//!
//! Usage: saga-demo [ORDER_ID]   (reads KAFKA_BOOTSTRAP_SERVERS)

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
    let order_id: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().context("ORDER_ID must be a number")?,
        None => 4242,
    };
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &servers).create().context("cannot reach the broker")?;
    let new: Vec<NewTopic<'_>> = saga::TOPICS.iter().map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1))).collect();
    // Topics that exist already are fine.
    let _ = admin.create_topics(&new, &AdminOptions::new()).await;

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &servers).create()?;
    let records = saga::records(order_id, "");
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
    println!("published a saga of {} events for order {order_id} (saga {})", records.len(), saga::saga_id(order_id));
    Ok(())
}
