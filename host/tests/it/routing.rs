//! Routing by producer: a manifest's `[match]` tests the record's key and
//! JSON members besides its topic and headers, and a module that answers
//! `unsupported` passes the record to the next matching module.

use std::path::Path;
use std::time::Duration;

use notification_host::modules::{Manifest, Modules, ModulesConfig};
use notification_host::record::Record;

use crate::support::{self, RecordExt};

/// A record with an optional key.
fn record(topic: &str, key: Option<&str>, value: &[u8]) -> Record {
    let r = support::record(topic, 0, value);
    match key {
        Some(k) => r.keyed(k.as_bytes()),
        None => r,
    }
}
use notification_host::runtime::{Limits, Runtime};

/// A module file pair; the manifest repeats the component's own name and
/// version (`name@version` below).
fn module(dir: &Path, file: &str, name_at_version: &str, fixture: &str, rules: &str) {
    let (name, version) = name_at_version.split_once('@').unwrap();
    std::fs::copy(crate::support::component(fixture), dir.join(format!("{file}.wasm"))).unwrap();
    let mut manifest = Manifest::new(name, version, format!("{file}.wasm"), &[]);
    manifest.rules = toml::from_str(rules).unwrap();
    std::fs::write(dir.join(format!("{file}.toml")), manifest.to_toml().unwrap()).unwrap();
}

fn modules(dir: &Path) -> Modules {
    let modules = Modules::new(
        Runtime::new(Limits::default()).unwrap(),
        ModulesConfig {
            dir: Some(dir.to_path_buf()),
            quarantine_after: 10,
            quarantine_cooldown: Duration::from_secs(30),
            maxima: Limits::default(),
        },
    );
    modules.reload();
    assert!(modules.rejections().is_empty(), "{:?}", modules.rejections());
    modules
}

/// The two producers of `order_events` in PRODUCERS.md: the order service's
/// Kafka handlers (snake_case `order.*` types) and its HTTP routes
/// (`ORDER_*` types with a camelCase payload), one module each.
#[test]
fn two_producers_of_one_topic_go_to_their_own_modules() {
    let dir = tempfile::tempdir().unwrap();
    module(
        dir.path(),
        "a-http-routes",
        "campus-delivery@1.0.0",
        "normalizer_campus_delivery",
        "topics = [\"order_events\"]\nfields = { \"type\" = { glob = \"ORDER_*\" }, \"payload.orderId\" = { present = true } }",
    );
    module(
        dir.path(),
        "b-handlers",
        "refine@0.1.0",
        "fixture_refine",
        "topics = [\"order_events\"]\nfields = { source = \"order-service\", \"type\" = { glob = \"order.*\" } }",
    );
    let m = modules(dir.path());
    let http = br#"{"type": "ORDER_ACCEPTED", "correlation_id": "order-20250404100000-0000abcd", "source": "order-service", "payload": {"customerId": "u1", "runnerId": "r1", "orderId": 42, "status": "ACCEPTED", "event": "{}"}}"#;
    let handler = br#"{"type": "order.status_updated", "correlation_id": "saga-1", "source": "order-service", "payload": {"order_id": 42, "status": "PAID"}}"#;
    let other = br#"{"type": "order.created", "source": "somebody-else", "payload": {"order_id": 7}}"#;
    let out = m.normalize(&[
        record("order_events", None, http),
        record("order_events", None, handler),
        record("order_events", None, other),
        record("order_events", None, b"not json"),
    ]);
    let labels: Vec<&str> = out.iter().map(|n| n.normalizer.as_str()).collect();
    assert_eq!(labels, ["campus-delivery@1.0.0", "refine@0.1.0", "default@1.1.0", "default@1.1.0"]);
    assert_eq!(out[0].fields.order_id.as_deref(), Some("42"));
}

#[test]
fn field_rules_read_numbers_as_sent_nested_paths_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let amount = "topics = [\"t\"]\nfields = { \"data.amount\" = \"1.50\" }";
    module(dir.path(), "a", "campus-delivery@1.0.0", "normalizer_campus_delivery", amount);
    module(dir.path(), "b", "refine@0.1.0", "fixture_refine", "topics = [\"t\"]\nkey = \"tenant-7/*\"");
    let absent = "topics = [\"t\"]\nfields = { data = { present = false } }";
    module(dir.path(), "c", "versioned@1.0.0", "fixture_versioned_1_0_0", absent);
    let m = modules(dir.path());
    let out = m.normalize(&[
        record("t", None, br#"{"data": {"amount": 1.50}}"#),
        record("t", None, br#"{"data": {"amount": 1.5}}"#),
        record("t", Some("tenant-7/order-1"), br#"{"data": {}}"#),
        record("t", None, br#"{"data": null}"#),
        record("t", None, b"\xEF\xBB\xBF{\"data\": {\"amount\": 1.50}}"),
    ]);
    let labels: Vec<&str> = out.iter().map(|n| n.normalizer.as_str()).collect();
    assert_eq!(
        labels,
        ["campus-delivery@1.0.0", "default@1.1.0", "refine@0.1.0", "versioned@1.0.0", "campus-delivery@1.0.0"]
    );
}

#[test]
fn bad_field_rules_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "a", "default@1.1.0", "normalizer_default", "topics = [\"t\"]\nfields = { \"a..b\" = \"1\" }");
    module(
        dir.path(),
        "b",
        "default@1.1.0",
        "normalizer_default",
        "topics = [\"t\"]\nfields = { a = { glob = \"x\", present = true } }",
    );
    module(dir.path(), "c", "default@1.1.0", "normalizer_default", "topics = [\"t\"]\nkey = \"[\"");
    let m = Modules::new(
        Runtime::new(Limits::default()).unwrap(),
        ModulesConfig {
            dir: Some(dir.path().to_path_buf()),
            quarantine_after: 10,
            quarantine_cooldown: Duration::from_secs(30),
            maxima: Limits::default(),
        },
    );
    m.reload();
    let reasons: Vec<String> = m.rejections().into_iter().map(|r| r.reason).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("not a dotted path"), "{reasons:?}");
    assert!(reasons[1].contains("exactly one of equals, glob or present"), "{reasons:?}");
    assert!(reasons[2].contains("bad match.key glob"), "{reasons:?}");
}

#[test]
fn unsupported_passes_the_record_to_the_next_matching_module_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    // `refine` answers `unsupported` for a value that is not JSON.
    module(dir.path(), "a", "refine@0.1.0", "fixture_refine", "topics = [\"t\", \"u\"]");
    module(dir.path(), "b", "versioned@1.0.0", "fixture_versioned_1_0_0", "topics = [\"t\"]");
    let m = modules(dir.path());
    let out = m.normalize(&[
        record("t", None, br#"{"order_id": "1", "producer": "p"}"#),
        record("t", None, b"\xff not json"),
        record("u", None, b"\xff not json"),
    ]);
    assert_eq!(out[0].normalizer, "refine@0.1.0");
    assert_eq!(out[0].fields.source_service.as_deref(), Some("p"));
    assert_eq!(out[1].normalizer, "versioned@1.0.0");
    assert_eq!(out[2].normalizer, "default@1.1.0");
    assert!(out.iter().all(|n| n.error.is_none()), "{out:?}");
    // Passing a record on is not a failure of the module.
    let info = m.list();
    assert_eq!(info[0].errors, 0);
    assert!(!info[0].quarantined);
}

/// A stored module wins over a directory manifest of the same name only
/// while it is live: a stored version that is refused leaves the file
/// serving.
#[test]
fn the_store_overrides_a_file_only_with_a_live_version() {
    use notification_host::modules::content_hash;
    use notification_host::storage::module_store::StoredModule;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    module(dir.path(), "m", "versioned@2.0.0", "fixture_versioned_2_0_0", "topics = [\"t\"]");
    let m = modules(dir.path());
    let stored = |component: Vec<u8>| {
        let manifest = Manifest::new("versioned", "1.0.0", "x", &["t"]).to_toml().unwrap();
        let hash = content_hash(&component, &manifest, None);
        Arc::new(StoredModule {
            name: "versioned".into(),
            version: "1.0.0".into(),
            manifest,
            component,
            samples: None,
            hash,
        })
    };
    let labels = |m: &Modules| m.list().into_iter().map(|i| format!("{}@{}", i.name, i.version)).collect::<Vec<_>>();
    m.set_store(vec![stored(b"\0asm not a component".to_vec())], vec![]);
    assert_eq!(labels(&m), ["versioned@2.0.0"], "a refused stored version leaves the file serving");
    assert!(m.rejections().iter().any(|r| r.manifest == "store:versioned"), "{:?}", m.rejections());
    m.set_store(vec![stored(std::fs::read(crate::support::component("fixture_versioned_1_0_0")).unwrap())], vec![]);
    assert_eq!(labels(&m), ["versioned@1.0.0"], "a live stored version wins");
    assert!(m.rejections().iter().any(|r| r.reason.contains("overridden by the module store")), "{:?}", m.rejections());
    m.set_store(vec![], vec![]);
    assert_eq!(labels(&m), ["versioned@2.0.0"], "removed from the store, the file serves again");
}
