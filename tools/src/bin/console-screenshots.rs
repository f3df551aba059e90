//! Screenshots of every console page for the book. Run it with
//! `scripts/screenshots`: it starts the host with the example module,
//! publishes the demo saga and a few records the on-call engineer should
//! notice (a record that is not JSON, one a module failed on), opens each
//! page in Chromium and writes `docs/src/images/console/*.png`.
//!
//! Usage: console-screenshots --host-bin PATH --modules DIR --out DIR

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use notification_e2e::browser::Browser;
use notification_e2e::{Host, HostOptions, Kafka, Out, fresh_database, produce, saga, unique, wait_for_rows};

struct Args {
    host_bin: PathBuf,
    modules: PathBuf,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { host_bin: PathBuf::new(), modules: PathBuf::new(), out: PathBuf::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host-bin" => a.host_bin = value.into(),
            "--modules" => a.modules = value.into(),
            "--out" => a.out = value.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.host_bin.as_os_str().is_empty() || a.out.as_os_str().is_empty() {
        bail!("usage: console-screenshots --host-bin PATH --modules DIR --out DIR");
    }
    Ok(a)
}

async fn shoot(browser: &Browser, url: &str, file: PathBuf) -> anyhow::Result<()> {
    browser.client.goto(url).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.client.screenshot().await?;
    std::fs::write(&file, png).with_context(|| format!("writing {}", file.display()))?;
    println!("{}", file.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    std::fs::create_dir_all(&a.out)?;
    let prefix = unique("shot");
    let (db_url, pool) = fresh_database("screenshots").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = saga::TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
    kafka.create_topics(&topics, 3).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.binary = Some(a.host_bin.clone());
    options.env = vec![("NORMALIZERS_DIR".into(), a.modules.display().to_string())];
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let producer = kafka.producer();
    let mut records = saga::records(4242, &prefix);
    // Things the engineer should see flagged: a value that is not JSON.
    records.push(Out {
        timestamp: Some(1_743_761_400_000),
        ..Out::new(&format!("{prefix}order_events"), "order 4242: courier app crashed (stack trace follows)")
    });
    for out in &records {
        produce(&producer, out).await;
    }
    wait_for_rows(&pool, &prefix, records.len(), Duration::from_secs(30)).await;
    let base = format!("http://{}", host.http);
    let browser = Browser::start_sized(1400, 900).await;
    let record: i64 =
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE event_type = 'payment.authorized'")
            .fetch_one(&pool)
            .await?;
    shoot(&browser, &format!("{base}/ui"), a.out.join("landing.png")).await?;
    shoot(&browser, &format!("{base}/ui/order/4242"), a.out.join("order.png")).await?;
    shoot(&browser, &format!("{base}/ui/correlation/{}", saga::saga_id(4242)), a.out.join("saga.png")).await?;
    shoot(&browser, &format!("{base}/ui/record/{record}"), a.out.join("record.png")).await?;
    shoot(&browser, &format!("{base}/ui/normalizers"), a.out.join("normalizers.png")).await?;
    // The live tail, with records arriving.
    browser.client.goto(&format!("{base}/ui/live")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for out in saga::records(4243, &prefix) {
        produce(&producer, &out).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let png = browser.client.screenshot().await?;
    std::fs::write(a.out.join("live.png"), png)?;
    println!("{}", a.out.join("live.png").display());
    browser.close().await;
    Ok(())
}
