//! Module authoring: both contract versions side by side, the host import,
//! per-module limits, guest diagnostics, and the tester (`normalize
//! --manifest/--dir`) giving the live host's verdict, `--bless`, `new`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use notification_host::modules::{Manifest, ManifestLimits, Modules, ModulesConfig};
use notification_host::record::Record;

use crate::support::record;
use notification_host::runtime::{Breaker, CallError, Limits, Runtime};

const ORDER_CREATED: &str = r#"{"type": "order.created", "correlation_id": "c-1", "source": "order-service", "payload": {"order_id": "42", "customer_id": "u-1", "status": "PENDING"}}"#;

fn run_cli(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_notification-host")).args(args).output().unwrap();
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap(), out.status.code().unwrap_or(-1))
}

/// The name and version a fixture component describes itself with, which
/// its manifest must repeat.
fn identity(fixture: &str) -> (String, String) {
    let runtime = Runtime::new(Limits::default()).unwrap();
    match runtime.load_file(&crate::support::component(fixture)) {
        Ok(c) => {
            let d = c.descriptor().unwrap();
            (d.name.clone(), d.version.clone())
        }
        // A component that does not load: any identity will do.
        Err(_) => (fixture.replace('_', "-"), "0.1.0".into()),
    }
}

/// A module in `dir`: `<file>.toml`, `<file>.wasm` (a copy of `fixture`) and,
/// if given, `<file>.samples.jsonl`; the manifest names the component's own
/// name and version.
fn module(
    dir: &Path,
    file: &str,
    fixture: &str,
    topics: &str,
    limits: ManifestLimits,
    samples: Option<&str>,
) -> PathBuf {
    let (name, version) = identity(fixture);
    manifest_as(dir, file, &name, &version, fixture, topics, limits, samples)
}

/// [`module`] with the manifest's name and version given.
#[allow(clippy::too_many_arguments)]
fn manifest_as(
    dir: &Path,
    file: &str,
    name: &str,
    version: &str,
    fixture: &str,
    topics: &str,
    limits: ManifestLimits,
    samples: Option<&str>,
) -> PathBuf {
    std::fs::copy(crate::support::component(fixture), dir.join(format!("{file}.wasm"))).unwrap();
    let mut manifest = Manifest::new(name, version, format!("{file}.wasm"), &[topics]);
    manifest.limits = limits;
    if let Some(text) = samples {
        std::fs::write(dir.join(format!("{file}.samples.jsonl")), text).unwrap();
        manifest.samples = Some(format!("{file}.samples.jsonl").into());
    }
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(&path, manifest.to_toml().unwrap()).unwrap();
    path
}

fn live(dir: &Path) -> Modules {
    let modules = Modules::new(
        Runtime::new(Limits::default()).unwrap(),
        ModulesConfig {
            dir: Some(dir.to_path_buf()),
            quarantine_after: u64::MAX,
            quarantine_cooldown: Duration::from_secs(30),
            maxima: Limits { memory_bytes: 512 << 20, deadline: Duration::from_secs(1), ..Limits::default() },
        },
    );
    modules.reload();
    modules
}

fn builtin(value: &str) -> notification_host::record::Fields {
    notification_host::modules::builtin_fields(&record("t", 0, value))
}

#[test]
fn both_contract_versions_run_side_by_side_and_1_1_refines_the_builtin_answer() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let old = runtime.load_file(&crate::support::component("normalizer_default")).unwrap();
    let new = runtime.load_file(&crate::support::component("fixture_refine")).unwrap();
    assert_eq!(old.contract(), "1.0.0");
    assert_eq!(new.contract(), "1.1.0");

    let with_producer = r#"{"type": "order.created", "payload": {"order_id": "7"}, "producer": "dispatch"}"#;
    let records = [record("t", 0, ORDER_CREATED), record("t", 1, with_producer)];
    let refs: Vec<&Record> = records.iter().collect();
    let run = new.normalize(&refs, &mut Breaker::unlimited());
    let answers: Vec<_> = run.answers.into_iter().map(Result::unwrap).collect();
    // The first is exactly the built-in answer, obtained through the import.
    assert_eq!(answers[0], builtin(ORDER_CREATED));
    assert_eq!(answers[0].order_id.as_deref(), Some("42"));
    // The second is the built-in answer with one field refined.
    let mut expected = builtin(with_producer);
    assert_ne!(expected.source_service.as_deref(), Some("dispatch"));
    expected.source_service = Some("dispatch".into());
    assert_eq!(answers[1], expected);
    // The 1.0.0 component, in the same runtime, still answers.
    let run = old.normalize(&refs, &mut Breaker::unlimited());
    assert_eq!(run.answers[0].as_ref().unwrap(), &builtin(ORDER_CREATED));

    // And both live in one modules directory, each on its topics.
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "a-old", "normalizer_campus_delivery", "old_*", ManifestLimits::default(), None);
    module(dir.path(), "b-new", "fixture_refine", "new_*", ManifestLimits::default(), None);
    let modules = live(dir.path());
    let infos = modules.list();
    assert_eq!(infos.len(), 2, "{:?}", modules.rejections());
    assert_eq!(infos.iter().map(|i| i.contract.as_str()).collect::<Vec<_>>(), ["1.0.0", "1.1.0"]);
    let out = modules.normalize(&[record("old_x", 0, with_producer), record("new_x", 0, with_producer)]);
    assert_eq!(out[0].normalizer, "campus-delivery@1.0.0");
    assert_eq!(out[1].normalizer, "refine@0.1.0");
    assert_eq!(out[0].fields.source_service, builtin(with_producer).source_service);
    assert_eq!(out[1].fields.source_service.as_deref(), Some("dispatch"));
}

#[test]
fn a_component_for_another_contract_version_is_refused_with_what_it_exports() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let error = runtime.load_file(&crate::support::component("fixture_wrong_contract")).err().unwrap();
    let message = format!("{error:#}");
    assert!(message.contains("incompatible contract"), "{message}");
    assert!(message.contains("notification:normalizer/normalize@2.0.0"), "{message}");
    assert!(message.contains("@1.1.0 or notification:normalizer/normalize@1.0.0"), "{message}");
}

#[test]
fn what_a_module_prints_is_captured_per_call_and_capped() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let refine = runtime.load_file(&crate::support::component("fixture_refine")).unwrap();
    let records = [
        record("t", 10, ORDER_CREATED),
        record("t", 11, r#"{"debug": true}"#),
        record("t", 12, r#"{"panic": "the payload has no order"}"#),
        record("t", 13, ORDER_CREATED),
    ];
    let refs: Vec<&Record> = records.iter().collect();
    let run = refine.normalize(&refs, &mut Breaker::unlimited());
    assert!(run.answers[0].is_ok() && run.answers[1].is_ok() && run.answers[3].is_ok());
    assert!(matches!(run.answers[2], Err(CallError::Trap(_))), "{:?}", run.answers[2]);
    // The batch trapped, so every record ran alone: each output is its own.
    let by_record: Vec<(usize, &str)> = run.output.iter().map(|o| (o.first, o.text.as_str())).collect();
    assert!(run.output.iter().all(|o| o.len == 1), "{:?}", run.output);
    assert_eq!(by_record.len(), 2, "{by_record:?}");
    assert_eq!(by_record[0].0, 1);
    assert!(by_record[0].1.contains("refine: looking at offset 11 of t"), "{by_record:?}");
    assert_eq!(by_record[1].0, 2);
    assert!(by_record[1].1.contains("refine cannot go on: the payload has no order"), "{by_record:?}");

    // A 1.0.0 module's panic message is captured too.
    let trap = runtime.load_file(&crate::support::component("fixture_trap")).unwrap();
    let run = trap.normalize(&refs[..1], &mut Breaker::unlimited());
    assert!(run.output[0].text.contains("this fixture always traps"), "{:?}", run.output);

    // Output is capped per call; the module does not notice.
    let noisy = format!(r#"{{"panic": "{}"}}"#, "x".repeat(20_000));
    let records = [record("t", 0, &noisy)];
    let run = refine.normalize(&records.iter().collect::<Vec<_>>(), &mut Breaker::unlimited());
    let text = &run.output[0].text;
    assert!(text.len() < notification_host::runtime::OUTPUT_CAP + 100, "{}", text.len());
    assert!(text.contains("more bytes not kept"), "{text}");
}

#[test]
fn a_manifest_sets_its_own_limits_within_the_host_maxima() {
    let dir = tempfile::tempdir().unwrap();
    module(
        dir.path(),
        "fast",
        "fixture_spin",
        "fast",
        ManifestLimits { deadline_ms: Some(10), ..Default::default() },
        None,
    );
    module(
        dir.path(),
        "greedy",
        "normalizer_default",
        "greedy",
        ManifestLimits { memory_mib: Some(4096), ..Default::default() },
        None,
    );
    module(
        dir.path(),
        "roomy",
        "normalizer_default",
        "roomy",
        ManifestLimits { memory_mib: Some(256), max_output_bytes: Some(100), ..Default::default() },
        None,
    );
    let modules = live(dir.path());
    let infos = modules.list();
    let fast = infos.iter().find(|i| i.manifest.ends_with("fast.toml")).unwrap();
    assert_eq!(fast.deadline_ms, 10);
    let roomy = infos.iter().find(|i| i.manifest.ends_with("roomy.toml")).unwrap();
    assert_eq!((roomy.memory_bytes, roomy.max_output_bytes), (256 << 20, 100));
    let rejected = modules.rejections();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].reason.contains("limits.memory_mib = 4096") && rejected[0].reason.contains("MODULE_MEMORY_MAX")
    );
    // The module's own deadline is the one enforced.
    let out = modules.normalize(&[record("fast", 0, ORDER_CREATED)]);
    assert!(out[0].error.as_deref().unwrap().contains("10ms deadline"), "{:?}", out[0].error);
    // And its own answer cap.
    let out = modules.normalize(&[record("roomy", 0, format!(r#"{{"order_id": "{}"}}"#, "9".repeat(200)))]);
    assert!(out[0].error.as_deref().unwrap().contains("exceeds the 100-byte cap"), "{:?}", out[0].error);
}

/// The fixture modules of the agreement test: good ones, failing samples,
/// and misbehaving components.
fn fixture_directory(dir: &Path) {
    let ok = |v: &str| {
        let f = builtin(v);
        format!(
            "{{\"topic\": \"t\", \"value_text\": {}, \"expected\": {{\"order_id\": {}}}}}\n",
            serde_json::to_string(v).unwrap(),
            serde_json::to_string(&f.order_id).unwrap()
        )
    };
    let good = ok(ORDER_CREATED);
    let wrong = good.replace(r#""order_id": "42""#, r#""order_id": "43""#);
    module(dir, "a-default", "normalizer_default", "a", ManifestLimits::default(), Some(&good));
    module(dir, "b-refine", "fixture_refine", "b", ManifestLimits::default(), Some(&good));
    module(dir, "c-wrong-expectation", "fixture_refine", "c", ManifestLimits::default(), Some(&wrong));
    module(
        dir,
        "d-broken-line",
        "normalizer_default",
        "d",
        ManifestLimits::default(),
        Some(&format!("{good}{{\"topic\": 1}}\n")),
    );
    module(dir, "e-trap", "fixture_trap", "e", ManifestLimits::default(), Some(&good));
    module(dir, "f-spin", "fixture_spin", "f", ManifestLimits::default(), Some(&good));
    // A second to reach its memory limit: with the default 50 ms, a debug
    // build on a busy machine may meet the deadline first, live or in the
    // tester, and the two verdicts would differ by timing, not by rule.
    module(
        dir,
        "g-memory-hog",
        "fixture_memory_hog",
        "g",
        ManifestLimits { deadline_ms: Some(1000), ..Default::default() },
        Some(&good),
    );
    module(dir, "h-huge-output", "fixture_huge_output", "h", ManifestLimits::default(), Some(&good));
    module(dir, "i-wrong-contract", "fixture_wrong_contract", "i", ManifestLimits::default(), Some(&good));
    module(dir, "j-no-samples", "fixture_refine", "j", ManifestLimits::default(), None);
    module(
        dir,
        "k-over-limit",
        "fixture_refine",
        "k",
        ManifestLimits { deadline_ms: Some(5000), ..Default::default() },
        Some(&good),
    );
    manifest_as(dir, "l-not-itself", "refine", "0.2.0", "fixture_refine", "l", ManifestLimits::default(), Some(&good));
}

#[test]
fn the_tester_gives_the_live_verdict_on_every_fixture_module() {
    let dir = tempfile::tempdir().unwrap();
    fixture_directory(dir.path());
    let modules = live(dir.path());
    let live_names: Vec<String> = modules.list().into_iter().map(|i| i.name).collect();
    assert_eq!(live_names, ["default", "refine", "refine"], "{:?}", modules.rejections());

    let (out, err, code) = run_cli(&[
        "normalize",
        "--dir",
        dir.path().to_str().unwrap(),
        "--module-memory-max",
        "536870912",
        "--module-deadline-max",
        "1s",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let mut passed = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("PASS ") {
            passed.push(rest.split('@').next().unwrap().to_owned());
        }
    }
    assert_eq!(passed, live_names, "{out}");
    let failed = out.lines().filter(|l| l.starts_with("FAIL ")).count();
    assert_eq!(failed, modules.rejections().len(), "{out}");
    for reason in modules.rejections().iter().map(|r| r.reason.clone()) {
        assert!(out.contains(&reason), "the tester does not show {reason:?}:\n{out}");
    }
    assert!(
        out.contains("the component describes itself as refine@0.1.0, but the manifest says refine@0.2.0"),
        "{out}"
    );
    // What the author needs to see beside the failing sample.
    assert!(out.contains("order_id: expected \"43\", got \"42\""), "{out}");
    assert!(out.contains("line 2: not a valid sample: \"topic\" must be a string"), "{out}");
    assert!(out.contains("| panicked at") || out.contains("this fixture always traps"), "{out}");

    // One module alone, by manifest: the same verdict.
    let (out, _, code) = run_cli(&["normalize", "--manifest", dir.path().join("b-refine.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS refine@0.1.0") && out.contains("contract 1.1.0"), "{out}");
}

#[test]
fn bless_records_the_observed_fields_and_the_next_run_passes() {
    let dir = tempfile::tempdir().unwrap();
    let line = |v: &str, expected: &str| {
        format!(
            "{{\"topic\": \"t\", \"value_text\": {}, \"expected\": {expected}}}\n",
            serde_json::to_string(v).unwrap()
        )
    };
    let producer = r#"{"type": "order.created", "payload": {"order_id": "7"}, "producer": "dispatch"}"#;
    let samples =
        format!("{}{}", line(ORDER_CREATED, r#"{"order_id": "1"}"#), line(producer, r#"{"source_service": null}"#));
    let manifest = module(dir.path(), "refine", "fixture_refine", "t", ManifestLimits::default(), Some(&samples));
    let manifest = manifest.to_str().unwrap();
    let (out, _, code) = run_cli(&["normalize", "--manifest", manifest]);
    assert_eq!(code, 1, "{out}");

    let (out, err, code) = run_cli(&["normalize", "--manifest", manifest, "--bless"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#"order_id: "1" → "42""#), "{out}");
    assert!(out.contains(r#"source_service: null → "dispatch""#), "{out}");
    assert!(out.contains("blessed 2 sample lines"), "{out}");
    let (out, _, code) = run_cli(&["normalize", "--manifest", manifest]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(dir.path().join("refine.samples.jsonl")).unwrap();
    assert!(text.lines().all(|l| l.starts_with(r#"{"topic": "t", "value_text": "#)), "{text}");
}

#[test]
fn new_refuses_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p");
    let target = target.to_str().unwrap();
    let (_, err, code) = run_cli(&["new", "ok-name", "--lang", "go", "--dir", target]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid value 'go'") && err.contains("rust, python, js"), "{err}");
    let (_, err, code) = run_cli(&["new", "Bad_Name", "--lang", "rust", "--dir", target]);
    assert_ne!(code, 0);
    assert!(err.contains("\"Bad_Name\" is not a valid module name"), "{err}");
    std::fs::create_dir(dir.path().join("p")).unwrap();
    let (_, err, code) = run_cli(&["new", "ok-name", "--lang", "rust", "--dir", target]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn new_writes_a_self_contained_project_in_each_language() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, source) in [("rust", "src/lib.rs"), ("python", "app.py"), ("js", "normalizer.js")] {
        let target = dir.path().join(lang);
        let (out, err, code) = run_cli(&["new", "dispatch-events", "--lang", lang, "--dir", target.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        for file in
            [source, "build.sh", ".gitignore", "README.md", "dispatch-events.toml", "dispatch-events.samples.jsonl"]
        {
            assert!(target.join(file).is_file(), "{lang}: no {file}");
        }
        let contract = if lang == "js" { "wit/deps/normalizer/normalizer.wit" } else { "wit/normalizer.wit" };
        let wit = std::fs::read_to_string(target.join(contract)).unwrap();
        let ours = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/normalizer.wit")).unwrap();
        assert_eq!(wit, ours);
        // Nothing points back into this repository.
        for entry in walk(&target) {
            let text = std::fs::read_to_string(&entry).unwrap();
            assert!(!text.contains("../"), "{} refers outside the project", entry.display());
            assert!(!text.contains("{{"), "{} has an unfilled placeholder", entry.display());
        }
        let manifest: notification_host::modules::Manifest =
            toml::from_str(&std::fs::read_to_string(target.join("dispatch-events.toml")).unwrap()).unwrap();
        assert_eq!(manifest.name, "dispatch-events");
        let samples = std::fs::read_to_string(target.join("dispatch-events.samples.jsonl")).unwrap();
        for line in samples.lines() {
            assert!(notification_host::samples::parse_line(line).unwrap().expected.is_some(), "{line}");
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn watch_judges_again_when_a_file_changes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "{{\"topic\": \"t\", \"value_text\": {}, \"expected\": {{\"order_id\": \"42\"}}}}\n",
        serde_json::to_string(ORDER_CREATED).unwrap()
    );
    let manifest = module(dir.path(), "w", "fixture_refine", "t", ManifestLimits::default(), Some(&good));
    let mut child = Command::new(env!("CARGO_BIN_EXE_notification-host"))
        .args(["normalize", "--watch", "--manifest", manifest.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_verdict = |rx: &std::sync::mpsc::Receiver<String>| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).expect("no verdict from --watch");
            if line.starts_with("PASS ") || line.starts_with("FAIL ") {
                return line;
            }
        }
    };
    let first = next_verdict(&rx);
    assert!(first.starts_with("PASS refine@0.1.0"), "{first}");
    // Wait for the watcher to be in place, then break the samples.
    while !rx.recv_timeout(Duration::from_secs(30)).unwrap().starts_with("watching ") {}
    std::fs::write(dir.path().join("w.samples.jsonl"), good.replace("\"42\"", "\"41\"")).unwrap();
    let second = next_verdict(&rx);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(second.starts_with("FAIL "), "{second}");
}
