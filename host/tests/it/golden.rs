//! Golden tests: the built-in default rules and the `normalizers/default`
//! component give identical answers on one shared sample set, and both match
//! the expected fields written in it.

use std::process::Command;
use std::sync::Arc;

use notification_host::modules::{Module, Normalizer};
use notification_host::record::Record;
use notification_host::runtime::{Limits, Runtime};
use notification_host::samples;

/// An edge case's value as a record.
fn record(value: Vec<u8>) -> Record {
    crate::support::record("edge", 0, value)
}

fn default_component() -> Normalizer {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let module = runtime.load_file(&crate::support::component("normalizer_default")).unwrap();
    let d = module.descriptor().unwrap().clone();
    Normalizer::Module(Arc::new(Module {
        component: module,
        label: format!("{}@{}", d.name, d.version),
        fallback: false,
    }))
}

fn golden_samples() -> Vec<samples::Sample> {
    let text = std::fs::read_to_string(crate::support::samples("default.jsonl")).unwrap();
    text.lines().map(|l| samples::parse_line(l).unwrap()).collect()
}

/// Values too large to keep in the sample file.
fn generated_records() -> Vec<Record> {
    let big_filler = "x".repeat(1 << 20);
    let nested = format!("{}{}", "{\"n\": ".repeat(100), "1".to_owned() + &"}".repeat(100));
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        record(
            format!(r#"{{"type": "big", "payload": {{"order_id": "o-big", "blob": "{big_filler}"}}}}"#).into_bytes(),
        ),
        record(format!(r#"{{"order_id": "o-nested", "deep": {nested}}}"#).into_bytes()),
        record(format!(r#"{{"order_id": "o-deep-array", "deep": {deep_array}}}"#).into_bytes()),
        record(nested.into_bytes()),
        record(vec![0xff; 1000]),
    ]
}

#[test]
fn builtin_matches_every_expected_field() {
    let samples = golden_samples();
    assert!(samples.len() >= 50, "the golden set shrank to {}", samples.len());
    let records: Vec<Record> = samples.iter().map(|s| s.record.clone()).collect();
    let answers = Normalizer::Builtin.normalize(&records);
    let mut failures = Vec::new();
    for (i, (sample, answer)) in samples.iter().zip(&answers).enumerate() {
        let expected = sample.expected.as_ref().expect("every golden sample states its expected fields");
        for diff in samples::mismatches(expected, &answer.fields) {
            failures.push(format!("sample {}: {diff}", i + 1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn component_and_builtin_agree_on_every_sample() {
    let mut records: Vec<Record> = golden_samples().into_iter().map(|s| s.record).collect();
    records.extend(generated_records());
    let native = Normalizer::Builtin.normalize(&records);
    let wasm = default_component().normalize(&records);
    assert_eq!(native.len(), wasm.len());
    for (i, (n, w)) in native.iter().zip(&wasm).enumerate() {
        // The same fields; only the host sees which placeholders the rules
        // left out natively (the component keeps that to itself).
        assert_eq!((&n.fields, &n.normalizer), (&w.fields, &w.normalizer), "record {i} differs");
        assert_eq!(w.error, None);
    }
    assert!(native.iter().any(|n| !n.notes.is_empty()), "the samples hold placeholders the notes name");
    // The generated values were read, not skipped.
    let tail = &native[native.len() - 5..];
    assert_eq!(tail[0].fields.order_id.as_deref(), Some("o-big"));
    assert_eq!(tail[0].fields.event_type.as_deref(), Some("big"));
    assert_eq!(tail[1].fields.order_id.as_deref(), Some("o-nested"));
    assert_eq!(tail[2].fields.order_id.as_deref(), Some("o-deep-array"));
    assert!(tail[3].fields.is_empty() && tail[4].fields.is_empty());
}

fn run_cli(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_notification-host")).args(args).output().unwrap();
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap(), out.status.code().unwrap_or(-1))
}

#[test]
fn cli_prints_the_same_lines_natively_and_with_the_component() {
    let samples = crate::support::samples("default.jsonl");
    let samples = samples.to_str().unwrap();
    let module = crate::support::component("normalizer_default");
    let (native, err, code) = run_cli(&["normalize", samples]);
    assert_eq!(code, 0, "{err}");
    let (wasm, err, code) = run_cli(&["normalize", "--module", module.to_str().unwrap(), samples]);
    assert_eq!(code, 0, "{err}");
    // Line by line, the same fields (the native lines also name the
    // placeholders left out).
    let fields = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("notes");
                v
            })
            .collect()
    };
    assert_eq!(fields(&native), fields(&wasm));
    assert!(native.contains(r#""order_id \"unknown\" is a placeholder, stored as absent""#), "{native}");
    let input_lines = std::fs::read_to_string(samples).unwrap().lines().count();
    assert_eq!(native.lines().count(), input_lines);
    for line in native.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["normalizer"], "default@1.1.0");
        assert!(v["error"].is_null());
    }
}

#[test]
fn cli_reports_mismatches_and_malformed_lines_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"topic": "t", "value": {"order_id": "o1"}, "expected": {"order_id": "o1"}}"#,
            "\n",
            "this is not json\n",
            "\n",
            r#"{"topic": "t", "value": {"order_id": "o2"}, "expected": {"order_id": "zzz", "status": null}}"#,
            "\n",
            r#"{"topic": "t", "value_text": "{\"customerId\": \"c\"}"}"#,
            "\n",
        ),
    )
    .unwrap();
    let (out, err, code) = run_cli(&["normalize", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "one output line per non-blank input line");
    assert_eq!(lines[0]["order_id"], "o1");
    assert!(lines[1]["error"].as_str().unwrap().starts_with("line 2: not a JSON object"));
    assert_eq!(lines[2]["order_id"], "o2");
    assert_eq!(lines[3]["customer_id"], "c");
    assert!(err.contains("line 2: not a JSON object"), "{err}");
    assert!(err.contains(r#"line 4: order_id: expected "zzz", got "o2""#), "{err}");
    assert!(err.contains("4 samples: 1 mismatched, 1 malformed"), "{err}");
}

#[test]
fn cli_reads_stdin_and_rejects_a_broken_module() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_notification-host"))
        .args(["normalize"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"topic\": \"t\", \"value\": {\"orderId\": 7}}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains(r#""order_id":"7""#));

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm not really").unwrap();
    let (_, err, code) = run_cli(&["normalize", "--module", bogus.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[test]
fn campus_delivery_golden_samples_pass_through_the_cli() {
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../normalizers/campus-delivery/samples.jsonl");
    let module = crate::support::component("normalizer_campus_delivery");
    let (out, err, code) = run_cli(&["normalize", "--module", module.to_str().unwrap(), samples]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), std::fs::read_to_string(samples).unwrap().lines().count());
    assert!(lines.iter().all(|l| l["normalizer"] == "campus-delivery@1.0.0"));
    // The same samples through the built-in default do not pass: the module adds something.
    let (_, err, code) = run_cli(&["normalize", samples]);
    assert_eq!(code, 1);
    assert!(err.contains("customer_id: expected \"user_2abc\", got null"), "{err}");
}
