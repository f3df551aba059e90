//! The hostile-load suite, short: the debug host under a steady load while
//! every attack of issue 23 is made on it in turn (sleeping, spinning and
//! memory-hungry modules, slow and huge reads, retention behind a long
//! read, made-up methods, bad requests, a blocked notification queue, a
//! compile bomb, a corrupted compilation cache, a stalled pipeline, a
//! database outage with a rebalance). `scripts/siege` runs the same suite
//! at full size on the release build; `tests/src/siege.rs` says what each
//! attack checks. SIEGE_* variables resize it.

use notification_e2e::siege;

#[tokio::test(flavor = "multi_thread")]
async fn no_attack_stops_ingestion_loses_a_record_or_passes_the_memory_limit() {
    let report = siege::run(siege::Options::new(siege::Size::short().with_env())).await;
    assert!(report.failures.is_empty(), "{}\n\nfailures:\n{}", report.lines.join("\n"), report.failures.join("\n"));
}
