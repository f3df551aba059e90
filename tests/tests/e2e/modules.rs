//! Normalizer modules end to end: install, replace and remove a module while
//! records flow; contain modules that misbehave; refuse bad versions while
//! the previous one keeps serving.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notification_e2e::*;
use serde_json::Value;
use sqlx::Row;

fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var("NORMALIZER_WASM_DIR").expect("NORMALIZER_WASM_DIR (scripts/test sets it)");
    let p = Path::new(&dir).join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing", p.display());
    p
}

const CAMPUS_SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../normalizers/campus-delivery/samples.jsonl");

/// Writes a file the way deployment tools do: to a temporary name, then an
/// atomic rename.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn manifest(name: &str, version: &str, component: &str, topics: &str, samples: Option<&str>) -> String {
    let samples = samples.map(|s| format!("samples = \"{s}\"\n")).unwrap_or_default();
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\ncomponent = \"{component}\"\n{samples}fallback = true\n[match]\ntopics = [\"{topics}\"]\n"
    )
}

fn normalizers(host: &Host) -> Value {
    match http_get(host.http, "/normalizers") {
        Some((200, body)) => serde_json::from_str(&body).unwrap(),
        Some((status, body)) => panic!("/normalizers answered {status}: {body}"),
        None => Value::Null, // not listening yet
    }
}

/// Waits until `/normalizers` satisfies `ok`; returns how long that took.
fn wait_for(host: &Host, what: &str, ok: impl Fn(&Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let n = normalizers(host);
        if ok(&n) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: /normalizers is {n}\nlog:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn versions(n: &Value) -> Vec<String> {
    let Some(modules) = n["modules"].as_array() else { return vec!["(no answer)".into()] };
    modules.iter().map(|m| format!("{}@{}", m["name"].as_str().unwrap(), m["version"].as_str().unwrap())).collect()
}

fn authorize_payment(i: usize) -> String {
    format!(
        r#"{{"type": "authorize_payment", "correlation_id": "saga-{i}", "payload": {{"order_id": {i}, "customer": {{"clerkUserId": "user_{i}"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn install_replace_remove_while_records_flow() {
    let prefix = unique("mod");
    let topic = format!("{prefix}_payment_commands");
    Kafka::shared().create_topic(&topic, 2).await;
    let (db_url, pool) = fresh_database("modules").await;
    let dir = tempfile_dir(&prefix);
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let producer = Kafka::shared().unbatched_producer();
    let mut expected: Vec<(Coordinates, &str)> = Vec::new();
    let mut n = 0;

    let mut phase = async |label: &'static str, expected: &mut Vec<(Coordinates, &str)>| {
        for _ in 0..10 {
            let c = produce(&producer, &Out::new(&topic, authorize_payment(n))).await;
            expected.push((c, label));
            n += 1;
        }
        // Wait until this phase's records are stored before changing modules.
        wait_for_rows(&pool, &prefix, expected.len(), Duration::from_secs(30)).await;
    };

    phase("default@1.1.0", &mut expected).await;

    // Install: component first, then the manifest.
    std::fs::copy(wasm("fixture_versioned_1_0_0"), dir.join("m.wasm")).unwrap();
    put(&dir, "m.toml", manifest("versioned", "1.0.0", "m.wasm", "*_payment_commands", None).as_bytes());
    let took = wait_for(&host, "install", |n| versions(n) == ["versioned@1.0.0"]);
    eprintln!("install live after {took:?}");
    // Compiling a component in an unoptimised (test) build of the host takes
    // most of this; the release build's figure is in the README.
    assert!(took < Duration::from_secs(5), "install took {took:?}");
    phase("versioned@1.0.0", &mut expected).await;

    // Replace in place: a new version, component first.
    put(&dir, "m.wasm", &std::fs::read(wasm("fixture_versioned_1_1_0")).unwrap());
    put(&dir, "m.toml", manifest("versioned", "1.1.0", "m.wasm", "*_payment_commands", None).as_bytes());
    let took = wait_for(&host, "replace", |n| versions(n) == ["versioned@1.1.0"]);
    eprintln!("replace live after {took:?}");
    phase("versioned@1.1.0", &mut expected).await;

    // Remove.
    std::fs::remove_file(dir.join("m.toml")).unwrap();
    wait_for(&host, "remove", |n| versions(n).is_empty());
    phase("default@1.1.0", &mut expected).await;

    let rows = sqlx::query(
        "SELECT source_topic, kafka_partition, kafka_offset, normalizer, status FROM notifications WHERE starts_with(source_topic, $1)",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 40, "exactly one row per record");
    let stored: BTreeSet<(Coordinates, String, Option<String>)> = rows
        .iter()
        .map(|r| (Coordinates { topic: r.get(0), partition: r.get(1), offset: r.get(2) }, r.get(3), r.get(4)))
        .collect();
    for (c, label) in &expected {
        let row = stored.iter().find(|(sc, _, _)| sc == c).unwrap_or_else(|| panic!("{c:?} not stored"));
        assert_eq!(row.1, *label, "{c:?}");
        // Each version marks the status with its own version.
        let status = label.strip_prefix("versioned@").map(|v| format!("v{v}"));
        assert_eq!(row.2, status, "{c:?}: {row:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_modules_are_contained() {
    let prefix = unique("bad");
    let (db_url, pool) = fresh_database("bad").await;
    let dir = tempfile_dir(&prefix);
    let fixtures = ["trap", "spin", "memory_hog", "huge_output"];
    for f in fixtures {
        let topic = format!("{prefix}-{f}");
        Kafka::shared().create_topic(&topic, 1).await;
        std::fs::copy(wasm(&format!("fixture_{f}")), dir.join(format!("{f}.wasm"))).unwrap();
        let name = f.replace('_', "-");
        put(&dir, &format!("{f}.toml"), manifest(&name, "0.1.0", &format!("{f}.wasm"), &topic, None).as_bytes());
    }
    let good = format!("{prefix}-good");
    Kafka::shared().create_topic(&good, 2).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    wait_for(&host, "fixtures loaded", |n| versions(n).len() == 4);

    let producer = Kafka::shared().producer();
    let mut total = 0;
    for round in 0..3 {
        for f in fixtures {
            for i in 0..10 {
                produce(
                    &producer,
                    &Out::new(&format!("{prefix}-{f}"), format!(r#"{{"order_id": "{f}-{round}-{i}"}}"#)),
                )
                .await;
                total += 1;
            }
        }
        for i in 0..50 {
            produce(&producer, &Out::new(&good, format!(r#"{{"order_id": "good-{round}-{i}"}}"#))).await;
            total += 1;
        }
    }
    let rows = wait_for_rows(&pool, &prefix, total, Duration::from_secs(120)).await;
    assert_eq!(rows.len(), total, "log:\n{}", host.log_text());
    let peak = rss_kib(host.child.id()).unwrap();
    assert!(peak < 300 * 1024, "host RSS {peak} KiB");

    // Every record of a bad module is stored with the default's fields and the failure noted.
    let bad: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT normalizer, normalizer_error, order_id FROM notifications WHERE starts_with(source_topic, $1) AND source_topic NOT LIKE '%-good'",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(bad.len(), 120);
    for (normalizer, error, order_id) in &bad {
        assert!(error.is_some(), "{normalizer} left no error");
        assert!(order_id.is_some(), "{normalizer}: the default's fields are kept");
    }
    let good_rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT normalizer, normalizer_error FROM notifications WHERE source_topic = $1")
            .bind(&good)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(good_rows.len(), 150);
    assert!(good_rows.iter().all(|(n, e)| n == "default@1.1.0" && e.is_none()));

    let n = normalizers(&host);
    for m in n["modules"].as_array().unwrap() {
        assert!(m["errors"].as_u64().unwrap() >= 10, "{m}");
        assert_eq!(m["quarantined"], true, "{m}");
        assert!(m["lastError"].is_string(), "{m}");
    }
    let kinds: Vec<String> =
        n["modules"].as_array().unwrap().iter().map(|m| format!("{}: {}", m["name"], m["lastError"])).collect();
    let all = kinds.join("\n");
    assert!(all.contains("deadline"), "{all}");
    assert!(all.contains("exceeds"), "{all}");
    assert!(all.contains("trapped"), "{all}");
    let (_, metrics) = http_get(host.http, "/metrics").unwrap();
    assert!(metrics.contains(r#"notification_normalizer_errors_total{normalizer="spin@0.1.0"}"#), "{metrics}");

    // A later good version clears the quarantine.
    put(&dir, "trap.wasm", &std::fs::read(wasm("fixture_versioned_2_0_0")).unwrap());
    put(&dir, "trap.toml", manifest("versioned", "2.0.0", "trap.wasm", &format!("{prefix}-trap"), None).as_bytes());
    wait_for(&host, "fixed version", |n| {
        n["modules"].as_array().is_some_and(|m| {
            m.iter().any(|m| m["name"] == "versioned" && m["version"] == "2.0.0" && m["quarantined"] == false)
        })
    });
    let c = produce(&producer, &Out::new(&format!("{prefix}-trap"), r#"{"order_id": "after-fix"}"#)).await;
    wait_for_rows(&pool, &prefix, total + 1, Duration::from_secs(30)).await;
    let (normalizer, error): (String, Option<String>) = sqlx::query_as(
        "SELECT normalizer, normalizer_error FROM notifications WHERE source_topic = $1 AND kafka_offset = $2",
    )
    .bind(&c.topic)
    .bind(c.offset)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((normalizer.as_str(), error), ("versioned@2.0.0", None));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_versions_leave_the_previous_one_serving() {
    let prefix = unique("rej");
    let (db_url, _pool) = fresh_database("rej").await;
    let dir = tempfile_dir(&prefix);
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    std::fs::copy(wasm("normalizer_campus_delivery"), dir.join("campus.wasm")).unwrap();
    std::fs::copy(CAMPUS_SAMPLES, dir.join("campus.samples.jsonl")).unwrap();
    put(
        &dir,
        "campus.toml",
        manifest("campus-delivery", "1.0.0", "campus.wasm", "*", Some("campus.samples.jsonl")).as_bytes(),
    );
    let host = Host::start(&options);
    wait_for(&host, "initial", |n| versions(n) == ["campus-delivery@1.0.0"]);
    let hash = normalizers(&host)["modules"][0]["hash"].clone();

    type BreakIt = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, BreakIt, &str)> = vec![
        (
            "bad bytes",
            Box::new(|d: &Path| put(d, "campus.wasm", b"\0asm\x0d\0\x01\0garbage")),
            "not a valid WebAssembly component",
        ),
        (
            "wrong contract",
            Box::new(|d: &Path| put(d, "campus.wasm", &std::fs::read(wasm("fixture_wrong_contract")).unwrap())),
            "incompatible contract",
        ),
        (
            "failing samples",
            Box::new(|d: &Path| {
                let wrong = std::fs::read_to_string(CAMPUS_SAMPLES).unwrap().replacen("\"user_2abc\"", "\"nobody\"", 1);
                put(d, "campus.samples.jsonl", wrong.as_bytes());
            }),
            "sample failures",
        ),
        (
            "a component that is not the one the manifest names",
            Box::new(|d: &Path| put(d, "campus.wasm", &std::fs::read(wasm("normalizer_default")).unwrap())),
            "the component describes itself as default@1.1.0, but the manifest says campus-delivery@1.0.0",
        ),
        ("bad manifest", Box::new(|d: &Path| put(d, "campus.toml", b"name = 1")), "invalid manifest"),
    ];
    for (what, break_it, reason) in cases {
        break_it(&dir);
        wait_for(&host, what, |n| {
            n["rejected"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["reason"].as_str().unwrap_or("").contains(reason)))
        });
        let n = normalizers(&host);
        assert_eq!(versions(&n), ["campus-delivery@1.0.0"], "{what}: the previous version stays live");
        assert_eq!(n["modules"][0]["hash"], hash, "{what}");
        // Restore the good files for the next case.
        put(&dir, "campus.wasm", &std::fs::read(wasm("normalizer_campus_delivery")).unwrap());
        put(&dir, "campus.samples.jsonl", &std::fs::read(CAMPUS_SAMPLES).unwrap());
        put(
            &dir,
            "campus.toml",
            manifest("campus-delivery", "1.0.0", "campus.wasm", "*", Some("campus.samples.jsonl")).as_bytes(),
        );
        wait_for(&host, "restored", |n| n["rejected"].as_array().is_some_and(|r| r.is_empty()));
    }
    let log = host.log_text();
    assert!(log.contains("Normalizer module rejected"), "{log}");
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-modules"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kubernetes mounts a ConfigMap as `<file> -> ..data/<file>` links and
/// updates it by pointing `..data` at a new timestamped directory with one
/// atomic rename. The host must follow.
#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swaps_are_followed() {
    use std::os::unix::fs::symlink;
    let prefix = unique("cm");
    let (db_url, _pool) = fresh_database("cm").await;
    let dir = tempfile_dir(&prefix);
    let version_dir = |v: &str| {
        let d = dir.join(format!("..2026_11_26_{v}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(wasm(&format!("fixture_versioned_{}", v.replace('.', "_"))), d.join("campus.wasm")).unwrap();
        std::fs::copy(CAMPUS_SAMPLES, d.join("campus.samples.jsonl")).unwrap();
        std::fs::write(d.join("campus.toml"), manifest("versioned", v, "campus.wasm", "*", None)).unwrap();
        d
    };
    let first = version_dir("1.0.0");
    symlink(first.file_name().unwrap(), dir.join("..data")).unwrap();
    for f in ["campus.toml", "campus.wasm", "campus.samples.jsonl"] {
        symlink(format!("..data/{f}"), dir.join(f)).unwrap();
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    let host = Host::start(&options);
    wait_for(&host, "initial", |n| versions(n) == ["versioned@1.0.0"]);

    let second = version_dir("2.0.0");
    symlink(second.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let took = wait_for(&host, "swap", |n| versions(n) == ["versioned@2.0.0"]);
    eprintln!("ConfigMap swap live after {took:?}");
    assert!(normalizers(&host)["rejected"].as_array().unwrap().is_empty());
}

/// The shared-topic case of PRODUCERS.md through the binary: the order
/// service's Kafka handlers and its HTTP routes both write `order_events`,
/// with no headers; content rules give each producer its own module, and a
/// module's `unsupported` hands the record to the next matching one.
#[tokio::test(flavor = "multi_thread")]
async fn two_producers_on_one_topic_each_get_their_module() {
    let prefix = unique("route");
    let topic = format!("{prefix}_order_events");
    Kafka::shared().create_topic(&topic, 1).await;
    let (db_url, pool) = fresh_database("routing").await;
    let dir = tempfile_dir(&prefix);
    std::fs::copy(wasm("normalizer_campus_delivery"), dir.join("routes.wasm")).unwrap();
    std::fs::copy(wasm("fixture_refine"), dir.join("handlers.wasm")).unwrap();
    std::fs::copy(wasm("fixture_versioned_1_0_0"), dir.join("rest.wasm")).unwrap();
    // Each manifest repeats its component's own name@version.
    let module = |name_at_version: &str, component: &str, rules: &str| {
        let (name, version) = name_at_version.split_once('@').unwrap();
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\ncomponent = \"{component}\"\n[match]\ntopics = [\"*_order_events\"]\n{rules}\n"
        )
    };
    put(
        &dir,
        "a-routes.toml",
        module("campus-delivery@1.0.0", "routes.wasm", "fields = { \"type\" = { glob = \"ORDER_*\" } }").as_bytes(),
    );
    put(
        &dir,
        "b-handlers.toml",
        module(
            "refine@0.1.0",
            "handlers.wasm",
            "fields = { source = \"order-service\", \"type\" = { glob = \"order.*\" } }",
        )
        .as_bytes(),
    );
    put(&dir, "c-rest.toml", module("versioned@1.0.0", "rest.wasm", "").as_bytes());
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    wait_for(&host, "three modules", |n| versions(n).len() == 3);

    let producer = Kafka::shared().unbatched_producer();
    let records: [(&[u8], &str); 4] = [
        (
            br#"{"type": "ORDER_ACCEPTED", "correlation_id": "order-20250404100000-0000abcd", "source": "order-service", "payload": {"customerId": "u1", "runnerId": "r1", "orderId": 42, "status": "ACCEPTED", "event": "{}"}}"#,
            "campus-delivery@1.0.0",
        ),
        (
            br#"{"type": "order.status_updated", "correlation_id": "saga-1", "source": "order-service", "payload": {"order_id": 42, "status": "PAID"}}"#,
            "refine@0.1.0",
        ),
        // Not JSON: no content rule holds, so the module without any takes it.
        (b"\xff\xfe not json", "versioned@1.0.0"),
        // Another producer on the same topic.
        (br#"{"type": "payment.authorized", "payload": {"order_id": 42}}"#, "versioned@1.0.0"),
    ];
    let mut coordinates = Vec::new();
    for (value, _) in &records {
        coordinates.push(produce(&producer, &Out::new(&topic, value.to_vec())).await);
    }
    wait_for_rows(&pool, &prefix, records.len(), Duration::from_secs(30)).await;
    for ((_, expected), c) in records.iter().zip(&coordinates) {
        let normalizer: String = sqlx::query_scalar(
            "SELECT normalizer FROM notifications WHERE source_topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
        )
        .bind(&c.topic)
        .bind(c.partition)
        .bind(c.offset)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(normalizer, *expected, "{c:?}");
    }

    // `unsupported` chains: a module with no content rules that refuses
    // values that are not JSON, ahead of `rest`.
    put(&dir, "b2-refine.toml", module("refine@0.1.0", "handlers.wasm", "").as_bytes());
    wait_for(&host, "refine", |n| versions(n).len() == 4);
    let json = produce(&producer, &Out::new(&topic, br#"{"producer": "p", "type": "x"}"#.to_vec())).await;
    let binary = produce(&producer, &Out::new(&topic, b"\xff binary".to_vec())).await;
    wait_for_rows(&pool, &prefix, records.len() + 2, Duration::from_secs(30)).await;
    for (c, expected) in [(json, "refine@0.1.0"), (binary, "versioned@1.0.0")] {
        let (normalizer, error): (String, Option<String>) = sqlx::query_as(
            "SELECT normalizer, normalizer_error FROM notifications WHERE source_topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
        )
        .bind(&c.topic)
        .bind(c.partition)
        .bind(c.offset)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((normalizer.as_str(), error), (expected, None), "{c:?}");
    }
}
