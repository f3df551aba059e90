//! The circuit breaker stops calling a failing module in the middle of a
//! batch: a module that spins on every record costs its failure limit in
//! deadlines, not one deadline per record of the batch. It is half-open: after
//! the cooldown a trial batch brings a recovered module back.

use std::time::{Duration, Instant};

use std::sync::Arc;

use notification_host::metrics::Metrics;
use notification_host::modules::{Manifest, Modules, ModulesConfig};
use notification_host::record::Record;

use crate::support::{self, RecordExt};
use notification_host::runtime::{Limits, Runtime};

const QUARANTINE_AFTER: u64 = 10;

/// A record with an order id and status, timed by its offset.
fn record(topic: &str, offset: i64) -> Record {
    support::record(topic, offset, format!(r#"{{"order_id": "o-{offset}", "status": "PAID"}}"#))
        .at(1_743_760_800_000 + offset)
}

fn modules_with(fixture: &str, topics: &str) -> (Modules, tempfile::TempDir) {
    modules_with_cooldown(fixture, topics, Duration::from_secs(3600))
}

fn modules_with_cooldown(fixture: &str, topics: &str, cooldown: Duration) -> (Modules, tempfile::TempDir) {
    modules_reporting(fixture, topics, cooldown, Arc::new(Metrics::default()))
}

fn modules_reporting(
    fixture: &str,
    topics: &str,
    cooldown: Duration,
    metrics: Arc<Metrics>,
) -> (Modules, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(crate::support::component(&format!("fixture_{fixture}")), dir.path().join("m.wasm")).unwrap();
    std::fs::write(dir.path().join("m.toml"), Manifest::new(fixture, "0.1.0", "m.wasm", &[topics]).to_toml().unwrap())
        .unwrap();
    let modules = Modules::with_metrics(
        Runtime::new(Limits::default()).unwrap(),
        ModulesConfig {
            dir: Some(dir.path().to_path_buf()),
            quarantine_after: QUARANTINE_AFTER,
            quarantine_cooldown: cooldown,
            maxima: Default::default(),
        },
        metrics,
    );
    modules.reload();
    assert_eq!(modules.list().len(), 1, "rejected: {:?}", modules.rejections());
    (modules, dir)
}

#[test]
fn a_spinning_module_is_quarantined_within_its_first_batch() {
    let (modules, _dir) = modules_with("spin", "spin-*");
    // One pipeline batch of the largest size, nearly all routed to the module.
    let mut records: Vec<Record> = (0..1000).map(|i| record("spin-a", i)).collect();
    records.extend((0..10).map(|i| record("other", i)));

    let started = Instant::now();
    let answers = modules.normalize(&records);
    let took = started.elapsed();

    // One failed batch call and QUARANTINE_AFTER single calls, each up to
    // the 50 ms deadline: about 0.6 s. Before the breaker looked inside a
    // batch, this was one deadline per record, about 50 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(answers.len(), records.len());
    for (n, r) in answers.iter().zip(&records).take(1000) {
        assert_eq!(n.normalizer, "spin@0.1.0");
        assert!(n.error.is_some(), "offset {}", r.offset);
        assert_eq!(n.fields.order_id.as_deref(), Some(format!("o-{}", r.offset).as_str()), "default's fields kept");
    }
    let quarantined = answers[..1000].iter().filter(|n| n.error.as_deref().unwrap().contains("quarantined")).count();
    assert_eq!(quarantined, 1000 - QUARANTINE_AFTER as usize);
    for n in &answers[1000..] {
        assert_eq!((n.normalizer.as_str(), n.error.as_deref()), ("default@1.1.0", None));
    }

    let info = &modules.list()[0];
    assert!(info.quarantined);
    assert_eq!((info.calls, info.errors), (QUARANTINE_AFTER, QUARANTINE_AFTER));
    assert!(info.last_error.as_deref().unwrap().contains("deadline"), "{info:?}");

    // Later batches do not call it at all.
    let started = Instant::now();
    let answers = modules.normalize(&records[..100]);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(answers.iter().all(|n| n.error.as_deref().unwrap().contains("quarantined")));
    assert_eq!(modules.list()[0].calls, QUARANTINE_AFTER);
}

#[test]
fn failures_spread_over_batches_add_up() {
    let (modules, _dir) = modules_with("trap", "t");
    let records: Vec<Record> = (0..4).map(|i| record("t", i)).collect();
    for _ in 0..2 {
        modules.normalize(&records);
        assert!(!modules.list()[0].quarantined);
    }
    // 8 failures in a row so far; the second one of the next batch trips it.
    let answers = modules.normalize(&records);
    let info = &modules.list()[0];
    assert!(info.quarantined);
    assert_eq!(info.calls, QUARANTINE_AFTER);
    assert!(answers[..2].iter().all(|n| n.error.as_deref().unwrap().contains("trapped")), "{answers:?}");
    assert!(answers[2..].iter().all(|n| n.error.as_deref().unwrap().contains("quarantined")), "{answers:?}");
}

fn valued(offset: i64, value: &str) -> Record {
    Record { value: Some(value.as_bytes().to_vec()), ..record("f", offset) }
}

/// A good module hit by a burst of failures is quarantined, stays off during
/// the cooldown, and comes back when a trial batch after it succeeds; a trial
/// that fails starts a new cooldown.
#[test]
fn a_quarantined_module_comes_back_after_a_good_trial() {
    let cooldown = Duration::from_millis(300);
    let (modules, _dir) = modules_with_cooldown("flaky", "f", cooldown);
    let burst: Vec<Record> = (0..20).map(|i| valued(i, r#"{"trap": true}"#)).collect();
    let good: Vec<Record> = (0..5).map(|i| valued(100 + i, r#"{"order_id": "o"}"#)).collect();

    modules.normalize(&burst);
    let info = &modules.list()[0];
    assert!(info.quarantined && info.quarantines == 1, "{info:?}");
    assert_eq!(info.calls, QUARANTINE_AFTER);

    // During the cooldown: not called, the default's fields.
    let answers = modules.normalize(&good);
    assert!(answers.iter().all(|n| n.error.as_deref().unwrap_or_default().contains("quarantined")), "{answers:?}");
    assert_eq!(modules.list()[0].calls, QUARANTINE_AFTER);

    // A failing trial: another cooldown.
    std::thread::sleep(cooldown + Duration::from_millis(50));
    modules.normalize(&burst);
    let info = &modules.list()[0];
    assert!(info.quarantined && info.recoveries == 0, "{info:?}");
    assert_eq!(info.calls, 2 * QUARANTINE_AFTER, "the trial called the module until the breaker tripped again");
    assert_eq!(modules.normalize(&good)[0].event_type_or_error(), "quarantined");

    // A good trial: live again, answering itself.
    std::thread::sleep(cooldown + Duration::from_millis(50));
    let answers = modules.normalize(&good);
    assert!(
        answers.iter().all(|n| n.error.is_none() && n.fields.event_type.as_deref() == Some("flaky.ok")),
        "{answers:?}"
    );
    let info = &modules.list()[0];
    assert!(!info.quarantined && info.recoveries == 1 && info.quarantines == 1, "{info:?}");
    // And stays live: the next batch is an ordinary call.
    assert!(modules.normalize(&good).iter().all(|n| n.normalizer == "flaky@0.1.0" && n.error.is_none()));
}

trait Outcome {
    fn event_type_or_error(&self) -> &str;
}

impl Outcome for notification_host::record::Normalized {
    /// "quarantined" when the record got the fallback for a quarantine.
    fn event_type_or_error(&self) -> &str {
        match &self.error {
            Some(e) if e.contains("quarantined") => "quarantined",
            Some(e) => e,
            None => self.fields.event_type.as_deref().unwrap_or_default(),
        }
    }
}

/// `/metrics` per module version: records, failures by kind, time, and the
/// quarantine and version gauges of the live modules.
#[test]
fn module_metrics_by_version() {
    let metrics = Arc::new(Metrics::default());
    let (modules, _dir) = modules_reporting("flaky", "f", Duration::from_secs(3600), metrics.clone());
    let good: Vec<Record> = (0..5).map(|i| valued(i, r#"{"order_id": "o"}"#)).collect();
    let burst: Vec<Record> = (0..20).map(|i| valued(100 + i, r#"{"trap": true}"#)).collect();
    modules.normalize(&good);
    modules.normalize(&burst);
    modules.refresh_metrics();
    let text = metrics.encode();
    let hash = &modules.list()[0].hash;
    for line in [
        r#"notification_module_records_total{module="flaky",version="0.1.0"} 15"#.to_owned(),
        r#"notification_module_failures_total{module="flaky",version="0.1.0",kind="trap"} 10"#.to_owned(),
        r#"notification_module_call_seconds_count{module="flaky",version="0.1.0"} 2"#.to_owned(),
        r#"notification_module_quarantined{module="flaky",version="0.1.0"} 1"#.to_owned(),
        format!(r#"notification_module_info{{module="flaky",version="0.1.0",hash="{hash}"}} 1"#),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}
