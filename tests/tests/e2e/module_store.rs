//! The module store, end to end: two host processes on one database follow
//! pushes, rollbacks and removals made with `notification-host modules` and
//! `POST /admin/modules`; refused pushes change nothing; the store wins over
//! a directory manifest of the same name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use notification_e2e::*;
use serde_json::Value;

fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var("NORMALIZER_WASM_DIR").expect("NORMALIZER_WASM_DIR (scripts/test sets it)");
    let p = Path::new(&dir).join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// A module folder: `m.toml`, `m.wasm`, `m.samples.jsonl`.
fn module_dir(name: &str, version: &str, component: &str, samples: &str, topics: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("push"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wasm(component), dir.join("m.wasm")).unwrap();
    std::fs::write(dir.join("m.samples.jsonl"), samples).unwrap();
    std::fs::write(
        dir.join("m.toml"),
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\ncomponent = \"m.wasm\"\nsamples = \"m.samples.jsonl\"\nfallback = true\n[match]\ntopics = [\"{topics}\"]\n"
        ),
    )
    .unwrap();
    dir
}

fn cli(db_url: &str, args: &[&str]) -> (String, bool) {
    let out = Command::new(host_binary())
        .arg("modules")
        .args(args)
        .args(["--by", "test"])
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (text, out.status.success())
}

fn live(host: &Host) -> Vec<String> {
    match http_get(host.http, "/normalizers") {
        Some((200, body)) => {
            let n: Value = serde_json::from_str(&body).unwrap();
            n["modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("{}@{}", m["name"].as_str().unwrap(), m["version"].as_str().unwrap()))
                .collect()
        }
        _ => vec!["(no answer)".into()],
    }
}

/// Waits until both replicas run `want`; returns how long the slower took.
fn both_run(hosts: &[&Host], want: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        if hosts.iter().all(|h| live(h) == want) {
            return start.elapsed();
        }
        let seen: Vec<Vec<String>> = hosts.iter().map(|h| live(h)).collect();
        assert!(start.elapsed() < Duration::from_secs(20), "wanted {want:?} on both replicas, they run {seen:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn push_body(dir: &Path) -> String {
    use base64::Engine as _;
    let component = base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("m.wasm")).unwrap());
    serde_json::json!({
        "manifest": std::fs::read_to_string(dir.join("m.toml")).unwrap(),
        "component": component,
        "samples": std::fs::read_to_string(dir.join("m.samples.jsonl")).unwrap(),
        "by": "http-test",
    })
    .to_string()
}

/// A samples line: an authorize_payment record and the status `versioned`
/// at `version` gives it.
fn versioned_sample(version: &str) -> String {
    format!(
        "{{\"topic\": \"t\", \"value_text\": {}, \"expected\": {{\"status\": \"v{version}\", \"order_id\": \"7\"}}}}\n",
        serde_json::to_string(r#"{"type": "authorize_payment", "payload": {"order_id": 7}}"#).unwrap()
    )
}

/// The `versioned` fixture at `version`, as a module folder.
fn versioned(version: &str, samples: &str) -> PathBuf {
    module_dir(
        "versioned",
        version,
        &format!("fixture_versioned_{}", version.replace('.', "_")),
        samples,
        "*_payment_commands",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_follow_the_store() {
    let prefix = unique("store");
    let topic = format!("{prefix}_payment_commands");
    Kafka::shared().create_topic(&topic, 2).await;
    let (db_url, pool) = fresh_database("store").await;

    // Replica B also has a modules directory holding a manifest of the same
    // name as a stored module: the store wins.
    let b_dir = std::env::temp_dir().join(format!("{prefix}-b-modules"));
    std::fs::create_dir_all(&b_dir).unwrap();
    let local = versioned("2.0.0", "");
    for f in ["m.toml", "m.wasm", "m.samples.jsonl"] {
        std::fs::copy(local.join(f), b_dir.join(f)).unwrap();
    }
    let mut a_options = HostOptions::new(&db_url, &prefix);
    a_options.env.push(("MODULE_STORE_POLL_INTERVAL".into(), "60s".into()));
    let mut b_options = a_options.clone();
    b_options.env.push(("NORMALIZERS_DIR".into(), b_dir.display().to_string()));
    b_options.env.push(("ADMIN_TOKEN".into(), "admin-token-0123456789abcdef".into()));
    let a = Host::start(&a_options);
    let b = Host::start(&b_options);
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    both_run(&[&a], &[]);
    both_run(&[&b], &["versioned@2.0.0"]);

    // Push: validated, stored, live on both within a second (the poll is a
    // minute, so this is the notification).
    let v1 = versioned("1.0.0", &versioned_sample("1.0.0"));
    let (out, ok) = cli(&db_url, &["push", v1.join("m.toml").to_str().unwrap()]);
    assert!(ok, "{out}");
    let took = both_run(&[&a, &b], &["versioned@1.0.0"]);
    eprintln!("push live on both replicas after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let b_rejected = http_get(b.http, "/normalizers").unwrap().1;
    assert!(b_rejected.contains("overridden by the module store, where versioned@1.0.0 is live"), "{b_rejected}");

    // Records are normalized by the stored module.
    let producer = Kafka::shared().unbatched_producer();
    let record = r#"{"type": "authorize_payment", "correlation_id": "s-1", "payload": {"order_id": 7, "customer": {"clerkUserId": "user_7"}}}"#;
    produce(&producer, &Out::new(&topic, record)).await;
    wait_for_rows(&pool, &prefix, 1, Duration::from_secs(30)).await;
    let (normalizer, status): (String, Option<String>) =
        sqlx::query_as("SELECT normalizer, status FROM notifications WHERE starts_with(source_topic, $1)")
            .bind(&prefix)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((normalizer.as_str(), status.as_deref()), ("versioned@1.0.0", Some("v1.0.0")));

    // A second version, then a rollback to the first.
    let v2 = versioned("1.1.0", &versioned_sample("1.1.0"));
    assert!(cli(&db_url, &["push", v2.join("m.toml").to_str().unwrap()]).1);
    both_run(&[&a, &b], &["versioned@1.1.0"]);
    let (out, ok) = cli(&db_url, &["rollback", "versioned"]);
    assert!(ok && out.contains("versioned@1.0.0 is live"), "{out}");
    let took = both_run(&[&a, &b], &["versioned@1.0.0"]);
    assert!(took < Duration::from_secs(1), "rollback took {took:?}");

    // Refusals change nothing.
    let (out, ok) = cli(&db_url, &["rollback", "versioned@9.9.9"]);
    assert!(!ok && out.contains("versioned@9.9.9 is not in the store (stored versions: 1.0.0, 1.1.0)"), "{out}");
    let failing = versioned("2.0.0", &versioned_sample("1.0.0"));
    let (out, ok) = cli(&db_url, &["push", failing.join("m.toml").to_str().unwrap()]);
    assert!(
        !ok && out.contains("refused, nothing stored") && out.contains("status: expected \"v1.0.0\", got \"v2.0.0\""),
        "{out}"
    );
    let corrupt = module_dir("versioned", "2.0.1", "fixture_versioned_2_0_0", "", "*_payment_commands");
    std::fs::write(corrupt.join("m.wasm"), b"\0asm not really").unwrap();
    let (out, ok) = cli(&db_url, &["push", corrupt.join("m.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("not a valid WebAssembly component"), "{out}");
    let impostor = module_dir("versioned", "3.0.0", "fixture_versioned_1_0_0", "", "*_payment_commands");
    let (out, ok) = cli(&db_url, &["push", impostor.join("m.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("describes itself as versioned@1.0.0, but the manifest says versioned@3.0.0"), "{out}");
    let conflicting = versioned("1.1.0", "");
    let (out, ok) = cli(&db_url, &["push", conflicting.join("m.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("already stored with other content"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live(&a), ["versioned@1.0.0"]);
    assert_eq!(live(&b), ["versioned@1.0.0"]);

    // Over HTTP, with the admin token only where it is configured.
    let other = module_dir("refine", "0.1.0", "fixture_refine", "", "*_user_events");
    let body = push_body(&other);
    assert_eq!(
        post(a.http, "/admin/modules", Some("admin-token-0123456789abcdef"), &body).0,
        403,
        "no ADMIN_TOKEN on replica A"
    );
    assert_eq!(post(b.http, "/admin/modules", None, &body).0, 401);
    assert_eq!(post(b.http, "/admin/modules", Some("wrong"), &body).0, 401);
    let bad = push_body(&corrupt);
    let (status, answer) = post(b.http, "/admin/modules", Some("admin-token-0123456789abcdef"), &bad);
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("not a valid WebAssembly component"), "{answer}");
    // The samples gate cannot be skipped by leaving the samples out.
    let mut without_samples: Value = serde_json::from_str(&push_body(&v1)).unwrap();
    without_samples.as_object_mut().unwrap().remove("samples");
    let (status, answer) =
        post(b.http, "/admin/modules", Some("admin-token-0123456789abcdef"), &without_samples.to_string());
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("names samples (m.samples.jsonl) but none were given"), "{answer}");
    let (status, answer) = post(b.http, "/admin/modules", Some("admin-token-0123456789abcdef"), &body);
    assert_eq!(status, 201, "{answer}");
    // One team's push leaves the other team's module as it was.
    both_run(&[&a, &b], &["refine@0.1.0", "versioned@1.0.0"]);

    // A shadow version runs beside the live one on live traffic: compared,
    // never stored, then promoted.
    let (out, ok) = cli(&db_url, &["push", "--shadow", other.join("m.toml").to_str().unwrap()]);
    assert!(ok, "{out}"); // refine@0.1.0 again, as its own shadow: nothing differs
    let (out, ok) = cli(&db_url, &["push", "--shadow", corrupt.join("m.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("refused, nothing stored"), "{out}");
    let nothing_live = module_dir("campus-delivery", "1.0.0", "normalizer_campus_delivery", "", "*_payment_commands");
    let (out, ok) = cli(&db_url, &["push", "--shadow", nothing_live.join("m.toml").to_str().unwrap()]);
    assert!(!ok && out.contains("campus-delivery has no live version in the store"), "{out}");
    let v3 = versioned("2.0.0", "");
    let (out, ok) = cli(&db_url, &["push", "--shadow", v3.join("m.toml").to_str().unwrap()]);
    assert!(ok, "{out}");
    let shadow_of = |h: &Host| -> Value {
        let n: Value = serde_json::from_str(&http_get(h.http, "/normalizers").unwrap().1).unwrap();
        n["modules"].as_array().unwrap().iter().find(|m| m["name"] == "versioned").unwrap()["shadow"].clone()
    };
    let start = Instant::now();
    while shadow_of(&a)["version"] != "2.0.0" || shadow_of(&b)["version"] != "2.0.0" {
        assert!(start.elapsed() < Duration::from_secs(5), "{} {}", shadow_of(&a), shadow_of(&b));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(live(&a), ["refine@0.1.0", "versioned@1.0.0"], "a shadow push leaves the live version");
    for i in 0..3 {
        let record = format!(
            r#"{{"type": "authorize_payment", "correlation_id": "s-{i}", "payload": {{"order_id": {i}, "customer": {{"clerkUserId": "user_{i}"}}}}}}"#
        );
        produce(&producer, &Out::new(&topic, record)).await;
    }
    wait_for_rows(&pool, &prefix, 4, Duration::from_secs(30)).await;
    let stored: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT normalizer, status FROM notifications WHERE starts_with(source_topic, $1) ORDER BY kafka_offset",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        stored.iter().all(|(n, s)| n == "versioned@1.0.0" && s.as_deref() == Some("v1.0.0")),
        "only live answers are stored: {stored:?}"
    );
    let compared = |s: &Value| s["records"].as_u64().unwrap_or(0);
    let total = compared(&shadow_of(&a)) + compared(&shadow_of(&b));
    assert_eq!(total, 3, "{} {}", shadow_of(&a), shadow_of(&b));
    let differing = shadow_of(&a)["differing"].as_u64().unwrap() + shadow_of(&b)["differing"].as_u64().unwrap();
    assert_eq!(differing, 3);
    let sample = [shadow_of(&a), shadow_of(&b)]
        .into_iter()
        .find_map(|s| s["samples"].as_array().and_then(|a| a.first().cloned()))
        .unwrap();
    assert_eq!(sample["fields"][0]["field"], "status", "{sample}");
    assert_eq!(
        (sample["fields"][0]["live"].as_str(), sample["fields"][0]["shadow"].as_str()),
        (Some("v1.0.0"), Some("v2.0.0"))
    );
    // `modules diff` sums the replicas' reports (written every second).
    let start = Instant::now();
    loop {
        let (out, ok) = cli(&db_url, &["diff", "versioned"]);
        assert!(ok, "{out}");
        if out.contains("versioned@2.0.0 in shadow: 3 of 3 records answered differently") {
            assert!(out.contains("status: Some(\"v1.0.0\") → Some(\"v2.0.0\")"), "{out}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (out, ok) = cli(&db_url, &["promote", "versioned"]);
    assert!(ok && out.contains("versioned@2.0.0 is live"), "{out}");
    both_run(&[&a, &b], &["refine@0.1.0", "versioned@2.0.0"]);
    assert!(shadow_of(&a).is_null() && shadow_of(&b).is_null());
    let (out, ok) = cli(&db_url, &["promote", "versioned"]);
    assert!(!ok && out.contains("no shadow version to promote"), "{out}");

    // Remove; the directory's own manifest then serves B again.
    let (out, ok) = cli(&db_url, &["remove", "versioned"]);
    assert!(ok, "{out}");
    let start = Instant::now();
    loop {
        if live(&a) == ["refine@0.1.0"] && live(&b) == ["versioned@2.0.0", "refine@0.1.0"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "after remove: {:?} {:?}", live(&a), live(&b));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(start.elapsed() < Duration::from_secs(1), "remove took {:?}", start.elapsed());
    let b_after = http_get(b.http, "/normalizers").unwrap().1;
    assert!(b_after.contains(&b_dir.join("m.toml").display().to_string()), "B serves its file again: {b_after}");

    let (out, ok) = cli(&db_url, &["history", "versioned"]);
    assert!(ok, "{out}");
    for needle in [
        "push     1.0.0",
        "push     1.1.0",
        "rollback 1.0.0",
        "shadow   2.0.0",
        "promote  2.0.0",
        "remove",
        "stored versions: 1.0.0",
    ] {
        assert!(out.contains(needle), "history lacks {needle:?}:\n{out}");
    }
    let (out, ok) = cli(&db_url, &["list"]);
    assert!(ok && out.contains("refine@0.1.0") && !out.contains("versioned"), "{out}");
}
