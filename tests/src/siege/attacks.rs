//! The siege's attacks. Each runs for about `Size::attack` while the steady
//! load goes on, and reports its requests' answers and whether it really
//! took place.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use notification_host::modules::Manifest;
use serde_json::Value;
use sqlx::Connection as _;

use super::client::{self, Conn, request_bytes};
use super::{Ctx, Outcome, STALL_AFTER, Tally};

/// The campus-delivery module's manifest, serving `topics`.
pub fn campus_manifest(topics: &[String]) -> String {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut m = Manifest::new("campus-delivery", "1.0.0", "campus-delivery.wasm", &topics);
    m.samples = Some("campus-delivery.samples.jsonl".into());
    m.fallback = true;
    m.to_toml().unwrap()
}

/// The live modules' names on `/normalizers`.
pub fn live_names(n: &Value) -> Vec<String> {
    n["modules"]
        .as_array()
        .map_or_else(Vec::new, |m| m.iter().filter_map(|m| m["name"].as_str().map(str::to_owned)).collect())
}

fn live<'a>(n: &'a Value, name: &str) -> Option<&'a Value> {
    n["modules"].as_array()?.iter().find(|m| m["name"] == name)
}

/// (manifest, reason) of each rejection on `/normalizers`.
fn rejections(n: &Value) -> Vec<(String, String)> {
    n["rejected"].as_array().map_or_else(Vec::new, |r| {
        r.iter()
            .map(|r| (r["manifest"].as_str().unwrap_or("").to_owned(), r["reason"].as_str().unwrap_or("").to_owned()))
            .collect()
    })
}

/// Waits until `/normalizers` satisfies `ok`; returns it.
pub async fn wait_for_modules(ctx: &Ctx, ok: impl Fn(&Value) -> bool, timeout: Duration) -> Result<Value, String> {
    let started = Instant::now();
    let mut last = Err("not asked yet".to_owned());
    while started.elapsed() < timeout {
        last = ctx.normalizers().await;
        if let Ok(n) = &last
            && ok(n)
        {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "after {timeout:?}: {}",
        match last {
            Ok(n) => n.to_string(),
            Err(e) => e,
        }
    ))
}

fn get(path: &str) -> Vec<u8> {
    request_bytes("GET", path, &[], b"", false)
}

/// The steady load alone: the baseline the attacks compare with.
pub async fn idle(ctx: &Ctx) -> Outcome {
    tokio::time::sleep(ctx.size.attack).await;
    Outcome::default()
}

/// A module that sleeps (and waits for the clocks), one that spins, one
/// that grows its memory without bound, and one of 240 MiB of memories over
/// several instances, each live on a topic of its own and fed hostile
/// records at `hostile_rate`.
pub async fn modules(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let placed = Instant::now();
    for (file, fixture, name) in [
        ("sleepy", "fixture_sleepy", "sleepy"),
        ("spin", "fixture_spin", "spin"),
        ("hog", "fixture_memory_hog", "memory-hog"),
    ] {
        ctx.put(&format!("{file}.wasm"), &ctx.fixture(fixture));
        let topic = ctx.attack_topic(file);
        let manifest = Manifest::new(name, "0.1.0", format!("{file}.wasm"), &[topic.as_str()]);
        ctx.put(&format!("{file}.toml"), manifest.to_toml().unwrap().as_bytes());
    }
    let memories = wat::parse_str(crate::fixtures::many_memories_wat()).unwrap();
    ctx.put("memories.wasm", &memories);
    let topic = ctx.attack_topic("memories");
    let manifest = Manifest::new("many-memories", "0.1.0", "memories.wasm", &[topic.as_str()]);
    ctx.put("memories.toml", manifest.to_toml().unwrap().as_bytes());

    // Hostile records from the start: the sleepy module gets records that
    // sleep, spin on the monotonic clock and spin on the wall clock, in
    // turn (a success between failures: its breaker never trips).
    let producer = ctx.kafka.unbatched_producer();
    let ledger = ctx.ledger();
    let (sleepy, spin, hog, mem) = (
        ctx.topic_index(&ctx.attack_topic("sleepy")),
        ctx.topic_index(&ctx.attack_topic("spin")),
        ctx.topic_index(&ctx.attack_topic("hog")),
        ctx.topic_index(&ctx.attack_topic("memories")),
    );
    let sleepy_values: [&[u8]; 3] = [b"sleep", b"clock", b"wall"];
    let rate = ctx.size.hostile_rate.max(1);
    let start = tokio::time::Instant::now();
    let mut live_after = None;
    let mut i = 0u64;
    while start.elapsed() < ctx.size.attack {
        tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate)).await;
        let other = format!(r#"{{"order_id": "hostile-{i}"}}"#);
        tokio::join!(
            ledger.send(&producer, sleepy, sleepy_values[(i % 3) as usize]),
            ledger.send(&producer, spin, other.as_bytes()),
            ledger.send(&producer, hog, other.as_bytes()),
            ledger.send(&producer, mem, other.as_bytes()),
        );
        if live_after.is_none()
            && i.is_multiple_of(rate)
            && let Ok(n) = ctx.normalizers().await
            && ["sleepy", "spin", "memory-hog"].iter().all(|m| live(&n, m).is_some())
        {
            live_after = Some(placed.elapsed());
        }
        i += 1;
    }
    // What the host made of them.
    let n = match wait_for_modules(
        ctx,
        |n| ["sleepy", "spin", "memory-hog"].iter().all(|m| live(n, m).is_some_and(|m| m["errors"].as_u64() > Some(0))),
        Duration::from_secs(60),
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            out.failures.push(format!("the hostile modules did not all go live and fail: {e}"));
            ctx.normalizers().await.unwrap_or_default()
        }
    };
    match live_after {
        Some(t) => out.notes.push(format!("hostile modules live {:.1} s after their files", t.as_secs_f64())),
        None => out.notes.push("hostile modules not all live within the attack".into()),
    }
    for name in ["sleepy", "spin", "memory-hog"] {
        if let Some(m) = live(&n, name) {
            out.notes.push(format!(
                "{name}: {} calls, {} errors, quarantined {}, last error {}",
                m["calls"],
                m["errors"],
                m["quarantined"],
                m["lastError"].as_str().unwrap_or("none").chars().take(80).collect::<String>()
            ));
        }
    }
    match rejections(&n).into_iter().find(|(manifest, _)| manifest.ends_with("memories.toml")) {
        Some((_, reason)) if reason.contains("memory limit") => {
            out.notes.push(format!("many-memories refused: {}", reason.chars().take(120).collect::<String>()))
        }
        Some((_, reason)) => out.failures.push(format!("many-memories refused for another reason: {reason}")),
        None if live(&n, "many-memories").is_some() => {
            out.failures.push("many-memories (240 MiB over several instances) went live under a 64 MiB limit".into())
        }
        None => out.failures.push(format!("many-memories is neither live nor refused: {n}")),
    }
    // Done: the modules go, so that the next attacks measure only themselves.
    for file in ["sleepy", "spin", "hog", "memories"] {
        let _ = std::fs::remove_file(ctx.modules_dir.join(format!("{file}.toml")));
    }
    if let Err(e) = wait_for_modules(ctx, |n| live_names(n) == ["campus-delivery"], Duration::from_secs(30)).await {
        out.failures.push(format!("the hostile modules did not go away: {e}"));
    }
    out
}

/// 50 readers at once: the hot order's large values page by page, its
/// timeline, unindexed filters over the widest range, a value no row has
/// (a walk that runs into `READ_TIMEOUT`), newest first, and clients that
/// hang up in the middle of an answer. `/ready` must answer 200 throughout.
pub async fn reads(ctx: &Ctx) -> Outcome {
    let mut out = Outcome { allowed_5xx: vec![503], ..Outcome::default() };
    let addr = ctx.addr();
    let end = Instant::now() + ctx.size.attack;
    let hot = ctx.hot_order.clone();
    let steady0 = ctx.topics[0].clone();
    let readers = ctx.size.readers;
    // The timeline has no byte budget of its own: a few readers, not a
    // sixth of them, so that the siege measures it without taking the
    // machine down with it.
    let timeline_readers = crate::fault_param("SIEGE_TIMELINE_READERS", (readers as u64 / 25).max(1)) as usize;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let kind = if r < timeline_readers { 5 } else { r % 5 };
        let (hot, steady0) = (hot.clone(), steady0.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut largest = 0usize;
            let mut conn = Conn::new(addr);
            let mut cursor: Option<String> = None;
            let wide = "since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z";
            let mut j = 0usize;
            while Instant::now() < end {
                j += 1;
                match kind {
                    0 => {
                        // The hot order, all of it, page by page.
                        let path = match cursor.take() {
                            Some(c) => format!("/order/{hot}?limit=10000&cursor={c}"),
                            None => format!("/order/{hot}?limit=10000"),
                        };
                        let a = conn.send(&get(&path), Duration::from_secs(60)).await;
                        if let Ok(a) = &a {
                            largest = largest.max(a.body_len);
                            cursor = a.header("x-next-cursor").map(str::to_owned);
                        }
                        tally.count(&path, &a);
                    }
                    1 => {
                        // Unindexed filters over every partition, paged.
                        let filter = match j % 3 {
                            0 => "event_type=order.status_updated".to_owned(),
                            1 => format!("source_topic={steady0}"),
                            _ => "source_service=order-service".to_owned(),
                        };
                        let path = match cursor.take() {
                            Some(c) => format!("/notifications?{filter}&{wide}&limit=1000&cursor={c}"),
                            None => format!("/notifications?{filter}&{wide}&limit=1000"),
                        };
                        let a = conn.send(&get(&path), Duration::from_secs(60)).await;
                        if let Ok(a) = &a {
                            largest = largest.max(a.body_len);
                            cursor = a.page_cursor();
                        }
                        tally.count(&path, &a);
                    }
                    2 => {
                        // Hang up after the first 64 KB.
                        let path = if j.is_multiple_of(2) {
                            format!("/order/{hot}?limit=10000")
                        } else {
                            format!("/notifications?event_type=order.paid&{wide}&limit=1000&order=desc")
                        };
                        let status = client::hang_up_after(addr, &get(&path), 64 << 10, Duration::from_secs(60)).await;
                        tally.status(&path, status);
                    }
                    3 => {
                        // A value no row has: the walk finds nothing until READ_TIMEOUT.
                        let path = format!("/notifications?event_type=no-such-type-{j}&{wide}");
                        let a = conn.send(&get(&path), Duration::from_secs(60)).await;
                        tally.count(&path, &a);
                    }
                    4 => {
                        let path = match j % 4 {
                            0 => "/notifications?order=desc&limit=1000".to_owned(),
                            1 => format!("/notifications?order_id={hot}&limit=1000"),
                            2 => "/correlation/hot-saga-1?limit=10000".to_owned(),
                            _ => format!("/order/{hot}/latest"),
                        };
                        let a = conn.send(&get(&path), Duration::from_secs(60)).await;
                        if let Ok(a) = &a {
                            largest = largest.max(a.body_len);
                        }
                        tally.count(&path, &a);
                    }
                    _ => {
                        let path = format!("/order/{hot}/timeline");
                        let a = conn.send(&get(&path), Duration::from_secs(120)).await;
                        if let Ok(a) = &a {
                            largest = largest.max(a.body_len);
                        }
                        tally.count(&path, &a);
                    }
                }
            }
            (kind, tally, largest)
        }));
    }
    // /ready all along.
    let prober = tokio::spawn(async move {
        let request = request_bytes("GET", "/ready", &[], b"", true);
        let (mut answers, mut not_ok, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
        while Instant::now() < end {
            let asked = Instant::now();
            let a = client::once(addr, &request, Duration::from_secs(2)).await;
            slowest = slowest.max(asked.elapsed());
            answers += 1;
            match a {
                Ok(a) if a.status == 200 => {}
                Ok(a) => not_ok.push(format!("{} {}", a.status, a.text().unwrap_or_default())),
                Err(e) => not_ok.push(format!("no answer within 2 s ({e})")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (answers, not_ok, slowest)
    });
    let mut by_kind: std::collections::BTreeMap<usize, (Tally, usize)> = Default::default();
    for t in tasks {
        let (kind, tally, largest) = t.await.unwrap();
        let entry = by_kind.entry(kind).or_default();
        entry.0.merge(tally);
        entry.1 = entry.1.max(largest);
    }
    let names = ["hot order pages", "unindexed filters", "hang-ups", "rare value", "newest and by id", "timeline"];
    for (kind, (tally, largest)) in &by_kind {
        out.notes.push(format!(
            "{}: {} ({:.0} MB read, largest answer {:.1} MB)",
            names[*kind],
            tally.summary(),
            tally.bytes as f64 / 1e6,
            *largest as f64 / 1e6
        ));
    }
    for (_, (tally, _)) in by_kind {
        out.tally.merge(tally);
    }
    let (answers, not_ok, slowest) = prober.await.unwrap();
    if !not_ok.is_empty() {
        out.failures.push(format!(
            "/ready failed {} of {answers} times while reads were hammered: {}",
            not_ok.len(),
            not_ok[0]
        ));
    }
    out.notes.push(format!(
        "/ready 200 {} of {answers} times, slowest {:.2} s",
        answers - not_ok.len() as u64,
        slowest.as_secs_f64()
    ));
    out
}

/// A retention run behind a long read: a transaction that has read the
/// table stays open while retention finds an expired month to drop and
/// expired rows in the default partition to delete.
pub async fn retention(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let before = ctx.metric("notification_maintenance_lock_timeouts_total").await;
    let month = (chrono::Utc::now() - chrono::Duration::days(420)).date_naive();
    let lo =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&month), chrono::Datelike::month(&month), 1).unwrap();
    let hi = lo.checked_add_months(chrono::Months::new(1)).unwrap();
    let name = format!("notifications_{}", lo.format("%Y_%m"));
    // The long read takes the table first, so that every maintenance run
    // from now on meets it.
    let mut reader = sqlx::PgConnection::connect(&ctx.db_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("LOCK TABLE ONLY notifications IN ACCESS SHARE MODE").execute(&mut reader).await.unwrap();
    let n = ctx.size.expired_rows as i64;
    let columns = "order_id, source_topic, created_at, stored_at, kafka_partition, kafka_offset, raw_value, normalizer";
    for sql in [
        format!("CREATE TABLE {name} (LIKE notifications INCLUDING DEFAULTS INCLUDING STORAGE)"),
        format!(
            "INSERT INTO {name} ({columns}) SELECT 'old-' || i, 'expired', '{lo}'::timestamptz + i * interval '1 second', \
             '{lo}'::timestamptz + i * interval '1 second', 0, i, '\\x7b7d'::bytea, 'old' FROM generate_series(1, {n}) i"
        ),
        format!("ALTER TABLE notifications ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"),
        format!(
            "INSERT INTO notifications ({columns}) SELECT 'old-' || i, 'expired', '1990-01-01'::timestamptz + i * interval '1 second', \
             '1990-01-01'::timestamptz + i * interval '1 second', 1, i, '\\x7b7d'::bytea, 'old' FROM generate_series(1, {}) i",
            n / 2
        ),
    ] {
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&ctx.pool).await {
            out.failures.push(format!("preparing expired rows ({sql}): {e}"));
            return out;
        }
    }
    // The read goes on over every partition, the expired month's too, for
    // long enough that a maintenance run (every 3 s) meets it and gives
    // up on each of its attempts (5, half a second apart).
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&mut reader).await.unwrap();
    tokio::time::sleep(ctx.size.attack.max(Duration::from_secs(10))).await;
    let exists = |pool: sqlx::PgPool, name: String| async move {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(&pool).await
    };
    let during = exists(ctx.pool.clone(), name.clone()).await;
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    drop(reader);
    match during {
        Ok(true) => out.notes.push(format!("{name} kept while the read ({counted} rows) was open")),
        Ok(false) => out.failures.push(format!("{name} was dropped although a read held it")),
        Err(e) => out.failures.push(format!("looking for {name}: {e}")),
    }
    // Once the read ends, a later run drops the month (and the run that
    // met the read has finished and counted its lock timeouts).
    let started = Instant::now();
    loop {
        match exists(ctx.pool.clone(), name.clone()).await {
            Ok(false) => {
                out.notes.push(format!("{name} dropped {:.1} s after the read ended", started.elapsed().as_secs_f64()));
                break;
            }
            Ok(true) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(true) => {
                out.failures.push(format!("{name} was still there 30 s after the read ended"));
                break;
            }
            Err(e) => {
                out.failures.push(format!("looking for {name}: {e}"));
                break;
            }
        }
    }
    match (before, ctx.metric("notification_maintenance_lock_timeouts_total").await) {
        (Ok(b), Ok(a)) if a > b => out.notes.push(format!("{} maintenance steps gave up waiting for a lock", a - b)),
        (Ok(_), Ok(_)) => out.failures.push("retention never met the long read (no maintenance lock timeout)".into()),
        (b, a) => out.failures.push(format!("reading the lock timeouts: {b:?} {a:?}")),
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ONLY notifications_default WHERE source_topic = 'expired'")
        .fetch_one(&ctx.pool)
        .await
    {
        Ok(0) => out.notes.push(format!("the {} expired rows of the default partition deleted", n / 2)),
        Ok(left) => {
            out.failures.push(format!("{left} of {} expired default-partition rows left after the read", n / 2))
        }
        Err(e) => out.failures.push(format!("counting expired rows: {e}")),
    }
    out
}

/// The `method` label values of `notification_http_requests_total`.
async fn method_labels(ctx: &Ctx) -> Result<(std::collections::BTreeSet<String>, usize), String> {
    let text = ctx.get_text("/metrics").await?;
    let mut methods = std::collections::BTreeSet::new();
    let mut series = 0;
    for l in text.lines().filter(|l| l.starts_with("notification_http_requests_total{")) {
        series += 1;
        let at = l.find("method=\"").ok_or_else(|| format!("no method label: {l}"))? + "method=\"".len();
        let end = l[at..].find('"').ok_or_else(|| format!("bad line: {l}"))?;
        methods.insert(l[at..at + end].to_owned());
    }
    Ok((methods, series))
}

/// Requests with made-up methods on every kind of route; then the metrics'
/// `method` label still holds only the standard methods and `other`.
pub async fn methods(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let before = method_labels(ctx).await;
    let addr = ctx.addr();
    let n = ctx.size.methods;
    let connections = 16;
    let paths =
        ["/notifications", "/health", "/order/o-1", "/no/such/path", "/metrics", "/admin/modules", "/ui", "/ready"];
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = Conn::new(addr);
            let mut i = c;
            while i < n {
                let method = match i % 4 {
                    0 => format!("SIEGE{i}"),
                    1 => format!("get{i}"),
                    2 => format!("X-{i}-~!"),
                    _ => format!("M{}", "Q".repeat(1 + i % 200)),
                };
                let path = paths[i % paths.len()];
                let a = conn.send(&request_bytes(&method, path, &[], b"", false), Duration::from_secs(10)).await;
                tally.count(&format!("{method} {path}"), &a);
                i += connections;
            }
            tally
        }));
    }
    for t in tasks {
        out.tally.merge(t.await.unwrap());
    }
    out.notes.push(format!("answers {}", out.tally.summary()));
    // Fill the rest of the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let allowed: Vec<&str> =
        notification_host::metrics::HTTP_METHODS.iter().copied().chain(std::iter::once("other")).collect();
    match (before, method_labels(ctx).await) {
        (Ok((_, series_before)), Ok((methods, series))) => {
            let unknown: Vec<&String> = methods.iter().filter(|m| !allowed.contains(&m.as_str())).collect();
            if unknown.is_empty() {
                out.notes.push(format!(
                    "method labels {:?}, request series {series_before} → {series}",
                    methods.iter().collect::<Vec<_>>()
                ));
            } else {
                out.failures.push(format!(
                    "{} made-up method label values in /metrics: {:?}",
                    unknown.len(),
                    &unknown[..unknown.len().min(5)]
                ));
            }
        }
        (b, a) => out.failures.push(format!("reading the method labels: {:?} {:?}", b.err(), a.err())),
    }
    out
}

/// Requests that are the client's error: crafted cursors, limits, times,
/// ids, bodies and tokens. Each must get an answer, and never a 5xx.
pub async fn bad_requests(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let hot = &ctx.hot_order;
    let mut cursors: Vec<String> = [
        "v1.-1000000000000000000.1.a",
        "v1.9223372036854775807.1.a",
        "v1.-9223372036854775808.1.a",
        "v1.99999999999999999999.1.a",
        "v1.9224318015999999999.1.a",
        "v1.-210866803200000001.1.a",
        "v1.0.-1.a",
        "v1.0.99999999999999999999.a",
        "v1.0.9223372036854775807.a",
        "v1.0.1.d",
        "v2.0.1.a",
        "v1.0.1",
        "v1..1.a",
        "v1.0.1.a.more",
        "v1.NaN.1.a",
        "v1.1e10.1.a",
        "v1.+1.1.a",
        "v1.0x10.1.a",
        "v1.\u{0}.1.a",
        "",
    ]
    .iter()
    .map(|c| b64(c))
    .collect();
    cursors.extend(["!!!", "%00", "%ff%fe", "===", "a%20b", "\u{1F4A5}"].iter().map(|s| (*s).to_owned()));
    cursors.push("A".repeat(20_000));
    cursors.push(b64(&format!("v1.{}.1.a", "9".repeat(5000))));
    let mut targets: Vec<String> = Vec::new();
    for c in &cursors {
        targets.push(format!("/notifications?cursor={c}"));
        targets.push(format!("/notifications?order=desc&cursor={c}"));
        targets.push(format!("/order/{hot}?cursor={c}"));
        targets.push(format!("/correlation/saga-1?cursor={c}"));
    }
    for q in [
        "limit=0",
        "limit=-1",
        "limit=10001",
        "limit=abc",
        "limit=99999999999999999999",
        "limit=1.5",
        "limit=1&limit=2",
        "order=sideways",
        "since=yesterday",
        "since=99999-01-01T00:00:00Z",
        "since=2024-13-45T00:00:00Z",
        "since=1e400",
        "until=-infinity",
        "since=2100-01-01T00:00:00Z&until=2000-01-01T00:00:00Z",
        "since=0000-01-01T00:00:00Z&until=9999-12-31T23:59:59Z&event_type=x",
        "since=9999-12-31T23:59:59%2B23:59&until=9999-12-31T23:59:59-23:59",
        "since=2024-01-01T00:00:00.9999999999999999999Z",
        "event_type=order.paid",
        "source_topic=x&since=2024-01-01T00:00:00Z",
        "%zz=1",
        "=&=&&",
        "limit",
        "customer_id=%00",
        "order_id=%ff%fe",
    ] {
        targets.push(format!("/notifications?{q}"));
    }
    targets.push(format!("/notifications?customer_id={}", "c".repeat(5000)));
    for t in [
        "/notifications/abc",
        "/notifications/-1",
        "/notifications/99999999999999999999",
        "/notifications/0",
        "/notifications/%00",
        "/order/%ff%fe/latest",
        "/order/%00/latest",
        "/order/a%2Fb",
        "/order/%20",
        "/order/x?limit=0",
        "/order/x?limit=10001",
        "/order/x?unknown=1&limit=2",
        "/correlation/%ff",
        "/order/x/timeline?cursor=zzz",
        "/ui/search?q=%ff%fe",
        "/ui/search?q=%00",
        "/ui/record/abc",
        "/ui/record/99999999999999999999/value",
        "/ui/order/%ff",
        "/ui/customer/%00",
    ] {
        targets.push(t.to_owned());
    }
    targets.push(format!("/order/{}/latest", "o".repeat(5000)));
    let mut requests: Vec<(String, Vec<u8>)> = targets
        .iter()
        .map(|t| (format!("GET {}", &t[..t.len().min(80)]), request_bytes("GET", t, &[], b"", true)))
        .collect();
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let json = ("Content-Type", "application/json");
    for (what, content_type, body) in [
        ("not JSON", Some("application/json"), "{".to_owned()),
        ("a list", Some("application/json"), "[]".to_owned()),
        ("null", Some("application/json"), "null".to_owned()),
        ("nested 10,000 deep", Some("application/json"), nested.clone()),
        ("an object id", Some("application/json"), r#"{"customerId": {}, "orderId": 1, "event": {"a": 1}}"#.to_owned()),
        (
            "a NUL in the event",
            Some("application/json"),
            r#"{"customerId": "c", "orderId": "o", "event": {"x": "\u0000"}}"#.to_owned(),
        ),
        (
            "a huge number",
            Some("application/json"),
            r#"{"customerId": "c", "orderId": "o", "event": 1e400}"#.to_owned(),
        ),
        (
            "a deep event",
            Some("application/json"),
            format!(r#"{{"customerId": "c", "orderId": "o", "event": {nested}}}"#),
        ),
        ("text/plain", Some("text/plain"), r#"{"customerId": "c", "orderId": "o", "event": {"a": 1}}"#.to_owned()),
        ("no content type", None, r#"{"customerId": "c", "orderId": "o", "event": {"a": 1}}"#.to_owned()),
        ("a +json type", Some("application/vnd.siege+json"), "{oops".to_owned()),
        (
            "over the body limit",
            Some("application/json"),
            format!(r#"{{"customerId": "c", "orderId": "o", "event": "{}"}}"#, "x".repeat(1_100_000)),
        ),
    ] {
        let headers: Vec<(&str, &str)> = content_type.map(|c| vec![("Content-Type", c)]).unwrap_or_default();
        requests.push((
            format!("POST /send-notification ({what})"),
            request_bytes("POST", "/send-notification", &headers, body.as_bytes(), true),
        ));
    }
    let bearer = format!("Bearer {}", ctx.admin_token);
    for (what, auth, body) in [
        ("no token", None, "{}".to_owned()),
        ("a wrong token", Some("Bearer siege-not-the-admin-token-at-all"), "{}".to_owned()),
        ("not JSON", Some(bearer.as_str()), "{".to_owned()),
        ("unknown fields", Some(bearer.as_str()), r#"{"manifest": "", "component": "", "extra": 1}"#.to_owned()),
        ("bad base64", Some(bearer.as_str()), r#"{"manifest": "name = 1", "component": "!!!"}"#.to_owned()),
        ("a bad manifest", Some(bearer.as_str()), r#"{"manifest": "not toml [", "component": "AGFzbQ=="}"#.to_owned()),
        (
            "not a component",
            Some(bearer.as_str()),
            serde_json::json!({
                "manifest": Manifest::new("x", "1.0.0", "x.wasm", &["x"]).to_toml().unwrap(),
                "component": base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0"),
            })
            .to_string(),
        ),
    ] {
        let mut headers = vec![json];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        requests.push((
            format!("POST /admin/modules ({what})"),
            request_bytes("POST", "/admin/modules", &headers, body.as_bytes(), true),
        ));
    }
    for (method, path) in
        [("POST", "/openapi.json"), ("DELETE", "/notifications"), ("PUT", "/order/x"), ("PATCH", "/ready")]
    {
        requests.push((format!("{method} {path}"), request_bytes(method, path, &[], b"", true)));
    }
    let requests = std::sync::Arc::new(requests);
    let addr = ctx.addr();
    let end = Instant::now() + ctx.size.attack;
    let kinds = requests.len();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut ok_2xx = Vec::new();
            let mut i = w;
            // Every request at least once, then again until the window ends.
            while i < requests.len() || Instant::now() < end {
                let (what, bytes) = &requests[i % requests.len()];
                let a = client::once(addr, bytes, Duration::from_secs(30)).await;
                if let Ok(a) = &a
                    && a.status < 300
                    && ok_2xx.len() < 3
                {
                    ok_2xx.push(what.clone());
                }
                tally.count(what, &a);
                i += 8;
            }
            (tally, ok_2xx)
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        let (tally, ok) = t.await.unwrap();
        out.tally.merge(tally);
        accepted.extend(ok);
    }
    accepted.sort();
    accepted.dedup();
    out.notes.push(format!("{kinds} kinds of bad request, answers {}", out.tally.summary()));
    if !accepted.is_empty() {
        let shown: Vec<&str> = accepted.iter().take(6).map(String::as_str).collect();
        out.notes.push(format!("{} kinds answered 2xx (valid or ignored), e.g. {}", accepted.len(), shown.join(", ")));
    }
    out
}

/// `pg_notify` fails for the whole window, as it does when the notification
/// queue is full: every write goes on.
pub async fn notify(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let before = ctx.metric("notification_notify_failures_total").await;
    sqlx::query("UPDATE blocker.switch SET blocked = true").execute(&ctx.pool).await.unwrap();
    tokio::time::sleep(ctx.size.attack).await;
    let after = ctx.metric("notification_notify_failures_total").await;
    sqlx::query("UPDATE blocker.switch SET blocked = false").execute(&ctx.pool).await.unwrap();
    match (before, after) {
        (Ok(b), Ok(a)) if a > b => out.notes.push(format!("{} notifications failed; the rows were written", a - b)),
        (Ok(_), Ok(_)) => out.failures.push("no notification failed: the queue was never blocked".into()),
        (b, a) => out.failures.push(format!("reading notify failures: {b:?} {a:?}")),
    }
    out
}

/// A 21 KB component that needs more than a gigabyte and a minute and a
/// half to compile, pushed over `POST /admin/modules`: refused (422) within
/// the compile budget while the replica ingests on.
pub async fn compile_bomb(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let base = crate::fixtures::bomb_base_wat();
    let wasm = wat::parse_str(crate::fixtures::compile_bomb_wat(&base, ctx.size.bomb_blocks, 1)).unwrap();
    let topic = ctx.attack_topic("memories");
    let body = serde_json::json!({
        "manifest": Manifest::new("many-memories", "0.1.0", "bomb.wasm", &[topic.as_str()]).to_toml().unwrap(),
        "component": base64::engine::general_purpose::STANDARD.encode(&wasm),
        "by": "siege",
    })
    .to_string();
    let bearer = format!("Bearer {}", ctx.admin_token);
    let request = request_bytes(
        "POST",
        "/admin/modules",
        &[("Content-Type", "application/json"), ("Authorization", bearer.as_str())],
        body.as_bytes(),
        true,
    );
    let started = Instant::now();
    let answer = client::once(ctx.addr(), &request, ctx.size.compile_timeout + Duration::from_secs(60)).await;
    let took = started.elapsed();
    out.tally.count("POST /admin/modules (compile bomb)", &answer);
    match &answer {
        Ok(a) if a.status == 422 => {
            let reason = a.text().unwrap_or_default();
            if reason.contains("MODULE_COMPILE_MEMORY") || reason.contains("MODULE_COMPILE_TIMEOUT") {
                out.notes.push(format!(
                    "{} KB bomb (blocks={}) refused after {:.1} s: {}",
                    wasm.len() / 1000,
                    ctx.size.bomb_blocks,
                    took.as_secs_f64(),
                    reason.chars().take(160).collect::<String>()
                ));
            } else {
                out.failures.push(format!("the bomb was refused, but not by the compile budget: {reason}"));
            }
        }
        Ok(a) => out.failures.push(format!("the compile bomb got {}: {}", a.status, a.text().unwrap_or_default())),
        Err(e) => out.failures.push(format!("the compile bomb got no answer after {took:?}: {e}")),
    }
    if started.elapsed() < ctx.size.attack {
        tokio::time::sleep(ctx.size.attack - started.elapsed()).await;
    }
    if let Ok(n) = ctx.normalizers().await
        && live(&n, "many-memories").is_some()
    {
        out.failures.push("the compile bomb is live".into());
    }
    out
}

/// Bytes flipped in every entry of the compilation cache, then the host
/// made to load the module again: it must compile it again, never load it.
pub async fn cache(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let started = Instant::now();
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(&ctx.cache_dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "nhm")).collect())
        .unwrap_or_default();
    if entries.is_empty() {
        out.failures.push(format!("no compilation cache entry in {}", ctx.cache_dir.display()));
        return out;
    }
    let mut corrupted = Vec::new();
    for path in &entries {
        let mut bytes = std::fs::read(path).unwrap();
        for at in [bytes.len() / 2, bytes.len() / 3, bytes.len() - 1] {
            bytes[at] ^= 0x55;
        }
        std::fs::write(path, &bytes).unwrap();
        corrupted.push((path.clone(), bytes));
    }
    let log_from = ctx.host.log_text().len();
    // Unload campus-delivery, then load it again.
    let manifest = ctx.modules_dir.join("campus-delivery.toml");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    if let Err(e) = wait_for_modules(ctx, |n| live_names(n).is_empty(), Duration::from_secs(30)).await {
        out.failures.push(format!("campus-delivery did not go: {e}"));
    }
    let reloaded = Instant::now();
    ctx.put("campus-delivery.toml", &text);
    match wait_for_modules(ctx, |n| live_names(n) == ["campus-delivery"], Duration::from_secs(120)).await {
        Ok(_) => out
            .notes
            .push(format!("campus-delivery live again {:.1} s after its manifest", reloaded.elapsed().as_secs_f64())),
        Err(e) => out.failures.push(format!("campus-delivery did not come back: {e}")),
    }
    let log = ctx.host.log_text();
    let since = &log[log_from.min(log.len())..];
    let refused = since.matches("does not verify").count();
    if refused == 0 {
        out.failures.push(format!(
            "the host did not say it refused a corrupted cache entry; its log since:\n{}",
            super::tail(since, 20)
        ));
    } else {
        out.notes.push(format!("{} corrupted entries of {} refused and compiled again", refused, entries.len()));
    }
    let replaced = corrupted.iter().filter(|(p, bytes)| std::fs::read(p).is_ok_and(|now| now != *bytes)).count();
    out.notes.push(format!("{replaced} entries rewritten"));
    if started.elapsed() < ctx.size.attack {
        tokio::time::sleep(ctx.size.attack - started.elapsed()).await;
    }
    out
}

/// A lock on the table (an operator's `ALTER TABLE`, `VACUUM FULL`) makes
/// the writers wait past `PIPELINE_STALL_AFTER`: `/ready/ingest` must say
/// the pipeline is stalled and name what it waits on, while `/ready` (the
/// read side) stays 200.
pub async fn stall(ctx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let mut locker = sqlx::PgConnection::connect(&ctx.db_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let locked = Instant::now();
    let hold = STALL_AFTER + Duration::from_secs(4).max(ctx.size.attack / 2);
    let mut named = None;
    let mut unnamed = None;
    while locked.elapsed() < hold {
        if let Some((status, body)) = ready_ingest(ctx.addr()).await
            && status == 503
            && body.contains("stalled")
        {
            if body.contains("writer ") {
                named.get_or_insert((locked.elapsed(), body));
            } else {
                unnamed.get_or_insert(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    drop(locker);
    match (named, unnamed) {
        (Some((after, body)), _) => out.notes.push(format!(
            "/ready/ingest said so {:.1} s into the lock: {}",
            after.as_secs_f64(),
            body.chars().take(200).collect::<String>()
        )),
        (None, Some(body)) => {
            out.failures.push(format!("/ready/ingest reported the stall without its culprit: {body}"))
        }
        (None, None) => out.failures.push(format!("/ready/ingest never reported the stall in {hold:?}")),
    }
    let started = Instant::now();
    loop {
        match ready_ingest(ctx.addr()).await {
            Some((200, _)) => break,
            _ if started.elapsed() > Duration::from_secs(60) => {
                out.failures.push("/ready/ingest did not recover within 60 s of the lock's end".into());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    out
}

async fn ready_ingest(addr: SocketAddr) -> Option<(u16, String)> {
    let a = client::once(addr, &request_bytes("GET", "/ready/ingest", &[], b"", true), Duration::from_secs(3))
        .await
        .ok()?;
    Some((a.status, a.text().unwrap_or_default()))
}

/// PostgreSQL stopped while a second host that joined the group just
/// before leaves it: the first host is handed the second's partitions
/// while it cannot write, and must hold them paused within its memory.
pub async fn outage(ctx: &Ctx) -> Outcome {
    let mut out = Outcome { no_answer_ok: true, ..Outcome::default() };
    let mut second_options = ctx.options.clone();
    second_options.env.push(("SHUTDOWN_TIMEOUT".into(), "3s".into()));
    let mut second = crate::Host::start(&second_options);
    ctx.watch_other(second.child.id());
    let joined = Instant::now();
    let mut assigned = None;
    while joined.elapsed() < Duration::from_secs(60) {
        if second.log_text().contains("Partitions assigned.") {
            assigned = Some(joined.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if assigned.is_none() {
        out.failures
            .push(format!("the second host never got partitions; its log:\n{}", super::tail(&second.log_text(), 20)));
    }
    // Let it ingest a moment, then take the database away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| ctx.postgres.stop());
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The second host leaves during the outage (SIGTERM: it cannot write
    // what it holds, and gives up on it after its SHUTDOWN_TIMEOUT).
    let _ = std::process::Command::new("kill").args(["-TERM", &second.child.id().to_string()]).status();
    let mut left = None;
    while stopped.elapsed() < ctx.size.outage + Duration::from_secs(30) {
        if let Ok(Some(status)) = second.child.try_wait() {
            left = Some((stopped.elapsed(), status));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not ready while the database is down (the host looks every 2 s).
    let mut ready_during: Vec<(Duration, u16, String)> = Vec::new();
    while stopped.elapsed() < ctx.size.outage {
        if let Ok(a) =
            client::once(ctx.addr(), &request_bytes("GET", "/ready", &[], b"", true), Duration::from_secs(3)).await
        {
            ready_during.push((stopped.elapsed(), a.status, a.text().unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::task::block_in_place(|| ctx.postgres.start());
    let down = stopped.elapsed();
    match left {
        Some((at, status)) => out.notes.push(format!(
            "second host had partitions {:.1} s after it started, left {:.1} s into the outage ({status})",
            assigned.unwrap_or_default().as_secs_f64(),
            at.as_secs_f64()
        )),
        None => {
            out.failures.push("the second host did not leave during the outage".into());
            second.kill();
        }
    }
    out.notes.push(format!(
        "PostgreSQL down {:.1} s; second host peak RSS {} MiB",
        down.as_secs_f64(),
        ctx.other_peak_kib() / 1024
    ));
    ctx.watch_other(0);
    match ready_during.iter().find(|(_, status, body)| *status == 503 && body.contains("database")) {
        Some((after, _, _)) => {
            out.notes.push(format!("/ready said 503 (the database) {:.1} s into the outage", after.as_secs_f64()))
        }
        None => out.failures.push(format!(
            "/ready never said the database was down: {:?}",
            ready_during.iter().map(|(_, s, _)| *s).collect::<Vec<_>>()
        )),
    }
    let started = Instant::now();
    loop {
        match client::once(ctx.addr(), &request_bytes("GET", "/ready/ingest", &[], b"", true), Duration::from_secs(3))
            .await
        {
            Ok(a) if a.status == 200 => break,
            _ if started.elapsed() > Duration::from_secs(120) => {
                out.failures.push("the host did not ingest again within 120 s of the database's return".into());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    out.notes.push(format!("ingesting again {:.1} s after the database came back", started.elapsed().as_secs_f64()));
    if !ctx.host.log_text().contains("Partitions assigned.") {
        out.failures.push("the first host's log shows no assignment".into());
    }
    out
}
