//! Modules written outside this repository, end to end: projects created by
//! `notification-host new` in Rust, Python and JavaScript and built from the
//! registries (scripts/test does that and sets GUEST_PROJECTS_DIR) pass their
//! samples in the tester and go live in a running host by hot reload, each
//! refining the built-in answer through the host import. And `capture`
//! writes sample lines from a live topic that the tester reads back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use notification_e2e::*;
use serde_json::Value;
use sqlx::Row;

const LANGUAGES: [&str; 3] = ["rust", "python", "js"];

/// `$GUEST_PROJECTS_DIR/<lang>`: a built project named `<lang>-dispatch`.
fn project(lang: &str) -> PathBuf {
    let dir = std::env::var("GUEST_PROJECTS_DIR")
        .expect("GUEST_PROJECTS_DIR is not set: scripts/test creates the projects with `new` and builds them");
    let p = Path::new(&dir).join(lang);
    let wasm = p.join(format!("{lang}-dispatch.wasm"));
    assert!(wasm.is_file(), "{} is missing: the {lang} project was not built", wasm.display());
    p
}

fn cli(args: &[&str]) -> (String, String, bool) {
    let out = Command::new(host_binary()).args(args).env("RUST_LOG", "warn").output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn normalizers(host: &Host) -> Value {
    match http_get(host.http, "/normalizers") {
        Some((200, body)) => serde_json::from_str(&body).unwrap(),
        _ => Value::Null,
    }
}

#[test]
fn projects_from_new_pass_their_samples_in_the_tester() {
    for lang in LANGUAGES {
        let dir = project(lang);
        let manifest = dir.join(format!("{lang}-dispatch.toml"));
        let (out, err, ok) = cli(&["normalize", "--manifest", manifest.to_str().unwrap()]);
        assert!(ok, "{lang}: {out}{err}");
        assert!(out.contains(&format!("PASS {lang}-dispatch@0.1.0")) && out.contains("contract 1.1.0"), "{out}");
        assert_eq!(out.matches(" ok").count(), 3, "{lang}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn projects_from_new_go_live_by_hot_reload_and_refine_the_builtin_answer() {
    let prefix = unique("guests");
    let topics: Vec<String> = LANGUAGES.iter().map(|l| format!("{prefix}_{l}")).collect();
    Kafka::shared().create_topics(&topics, 1).await;
    let (db_url, pool) = fresh_database("guests").await;
    let modules_dir = std::env::temp_dir().join(format!("{prefix}-modules"));
    std::fs::create_dir_all(&modules_dir).unwrap();
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("NORMALIZERS_DIR".into(), modules_dir.display().to_string()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));

    for (lang, topic) in LANGUAGES.iter().zip(&topics) {
        let dir = project(lang);
        let name = format!("{lang}-dispatch");
        // Ship as the project's README says: component and samples first,
        // the manifest last (here pointed at this test's topic).
        for file in [format!("{name}.wasm"), format!("{name}.samples.jsonl")] {
            std::fs::copy(dir.join(&file), modules_dir.join(&file)).unwrap();
        }
        let manifest = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        let manifest = manifest.replace(r#"topics = ["order_events"]"#, &format!("topics = [{topic:?}]"));
        assert!(manifest.contains(topic.as_str()), "the template's topics line changed:\n{manifest}");
        let tmp = modules_dir.join(format!(".{name}.toml.tmp"));
        std::fs::write(&tmp, manifest).unwrap();
        let copied = Instant::now();
        std::fs::rename(&tmp, modules_dir.join(format!("{name}.toml"))).unwrap();
        loop {
            let n = normalizers(&host);
            let live = n["modules"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == name.as_str()));
            if live {
                break;
            }
            assert!(copied.elapsed() < Duration::from_secs(90), "{name} not live: {n}\n{}", host.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{name}: live {:?} after the manifest was copied (unoptimised test build)", copied.elapsed());
    }

    let producer = Kafka::shared().unbatched_producer();
    let event = r#"{"type": "courier.assigned", "correlation_id": "saga-9", "source": "dispatch-service", "payload": {"order_id": "9", "courier_id": "runner_9"}}"#;
    for topic in &topics {
        produce(&producer, &Out::new(topic, event)).await;
    }
    wait_for_rows(&pool, &prefix, topics.len(), Duration::from_secs(30)).await;
    let rows = sqlx::query(
        "SELECT source_topic, normalizer, normalizer_error, runner_id, order_id, correlation_id, source_service
         FROM notifications WHERE starts_with(source_topic, $1) ORDER BY source_topic",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let topic: String = row.get(0);
        let lang = topic.rsplit('_').next().unwrap();
        let normalizer: String = row.get(1);
        let error: Option<String> = row.get(2);
        assert_eq!(normalizer, format!("{lang}-dispatch@0.1.0"), "{topic}");
        assert_eq!(error, None, "{topic}");
        // Refined by the module...
        assert_eq!(row.get::<Option<String>, _>(3).as_deref(), Some("runner_9"), "{topic}");
        // ...on top of the built-in answer it asked the host for.
        assert_eq!(row.get::<Option<String>, _>(4).as_deref(), Some("9"), "{topic}");
        assert_eq!(row.get::<Option<String>, _>(5).as_deref(), Some("saga-9"), "{topic}");
        assert_eq!(row.get::<Option<String>, _>(6).as_deref(), Some("dispatch-service"), "{topic}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_writes_sample_lines_the_tester_reads_back_exactly() {
    let topic = unique("capture");
    Kafka::shared().create_topic(&topic, 2).await;
    let producer = Kafka::shared().unbatched_producer();
    let mut sent = Vec::new();
    for i in 0..6 {
        let mut out = Out::new(&topic, format!(r#"{{"type": "order.created", "payload": {{"order_id": "{i}"}}}}"#));
        out.partition = Some(i % 2);
        out.key = Some(if i == 4 { b"wanted".to_vec() } else { format!("k{i}").into_bytes() });
        out.headers = vec![(b"trace".to_vec(), Some(format!("t{i}").into_bytes())), (b"trace".to_vec(), None)];
        if i == 5 {
            out.value = Some(vec![0xff, 0xfe, b'{']);
        }
        sent.push((produce(&producer, &out).await, out));
    }

    let (lines, err, ok) = cli(&["capture", "--topic", &topic, "--count", "10", "--timeout", "20s"]);
    assert!(ok, "{err}");
    assert!(err.contains("captured 6 records"), "{err}");
    let samples: Vec<_> =
        lines.lines().map(|l| notification_host::samples::parse_line(l).expect("a valid sample line")).collect();
    assert_eq!(samples.len(), 6, "{lines}");
    for (coordinates, out) in &sent {
        let s = samples
            .iter()
            .find(|s| s.record.partition == coordinates.partition && s.record.offset == coordinates.offset)
            .unwrap_or_else(|| panic!("{coordinates:?} not captured:\n{lines}"));
        assert_eq!(s.record.value, out.value, "the exact value");
        assert_eq!(s.record.key, out.key);
        let headers: Vec<(String, Option<Vec<u8>>)> =
            s.record.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect();
        assert_eq!(
            headers,
            [
                (
                    "trace".to_owned(),
                    Some(format!("t{}", sent.iter().position(|(c, _)| c == coordinates).unwrap()).into_bytes())
                ),
                ("trace".to_owned(), None)
            ]
        );
    }
    assert!(lines.contains("value_b64"), "the non-UTF-8 value is base64:\n{lines}");

    // Only the last record of each partition, and only one key.
    let (lines, err, ok) = cli(&["capture", "--topic", &topic, "--count", "1"]);
    assert!(ok, "{err}");
    assert_eq!(lines.lines().count(), 1, "--count 1 caps the total:\n{lines}");
    let (lines, err, ok) = cli(&["capture", "--topic", &topic, "--key", "wanted", "--count", "5"]);
    assert!(ok, "{err}");
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.contains(r#""key":"wanted""#), "{lines}");

    // The tester reads the captured lines as they are.
    let file = std::env::temp_dir().join(format!("{topic}.jsonl"));
    let (all, _, _) = cli(&["capture", "--topic", &topic, "--count", "10"]);
    std::fs::write(&file, all).unwrap();
    let (out, err, ok) = cli(&["normalize", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(r#""order_id":"#)).count(), 6, "{out}");

    // A topic that does not exist is a clear error.
    let (_, err, ok) = cli(&["capture", "--topic", &unique("absent"), "--timeout", "5s"]);
    assert!(!ok);
    assert!(err.contains("no topic"), "{err}");
}
