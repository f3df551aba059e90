//! The module load-cost benchmark. Run it with `scripts/bench-modules`.
//!
//! For one module per language, each created by `notification-host new`
//! from the same template (the built-in answer through the host import,
//! plus one rule) and built from its registry:
//!
//! 1. component size;
//! 2. first load: compile and check, with no compilation cache;
//! 3. cached load: the same, from a warm cache (a restart, another replica);
//! 4. per-record cost in 64-record batches, in-process, against the
//!    built-in default running natively (measured in the same run);
//! 5. records/s through the host (release build): a preloaded backlog on a
//!    topic the module serves, drained by a fresh consumer group, against
//!    the same backlog with no module, in the same run;
//! 6. time from copying the files into a running host's modules directory
//!    to `GET /normalizers` listing the module (no cache, as for a new
//!    version).
//!
//! Reads `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS` like the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use notification_e2e::{Host, HostOptions, Kafka, Out, fresh_database, http_get, produce, unique};
use notification_host::record::Record;
use notification_host::runtime::{Breaker, Cache, CacheKey, Compiler, Limits, Runtime};
use sqlx::PgPool;

struct Args {
    host_bin: PathBuf,
    projects: PathBuf,
    records: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { host_bin: PathBuf::new(), projects: PathBuf::new(), records: 20_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host-bin" => a.host_bin = value.into(),
            "--projects" => a.projects = value.into(),
            "--records" => a.records = value.parse()?,
            _ => bail!("usage: bench-modules --host-bin PATH --projects DIR [--records N]"),
        }
    }
    Ok(a)
}

/// `(language, project folder, module name)`.
fn projects(dir: &Path) -> Vec<(&'static str, PathBuf, String)> {
    [("Rust", "rust"), ("Python", "python"), ("JavaScript", "js")]
        .into_iter()
        .map(|(label, lang)| (label, dir.join(lang), format!("{lang}-dispatch")))
        .collect()
}

/// The template's three sample records, repeated.
fn records(project: &Path, name: &str, n: usize) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(project.join(format!("{name}.samples.jsonl")))?;
    let samples: Vec<Record> = text
        .lines()
        .map(|l| notification_host::samples::parse_line(l).map(|s| s.record).map_err(anyhow::Error::msg))
        .collect::<Result<_, _>>()?;
    Ok(samples.iter().cycle().take(n).cloned().collect())
}

fn limits_of(project: &Path, name: &str) -> anyhow::Result<Limits> {
    let manifest: notification_host::modules::Manifest =
        toml::from_str(&std::fs::read_to_string(project.join(format!("{name}.toml")))?)?;
    manifest
        .limits
        .resolve(
            Limits::default(),
            Limits { memory_bytes: 1 << 30, deadline: Duration::from_secs(5), ..Limits::default() },
        )
        .map_err(anyhow::Error::msg)
}

struct Row {
    language: &'static str,
    size: u64,
    first_load: Duration,
    cached_load: Duration,
    per_record: Duration,
    host_rate: f64,
    live_after: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let cache = std::env::temp_dir().join(unique("bench-module-cache"));
    let mut rows = Vec::new();

    // The built-in default, natively, on the same records.
    let sample_records = records(&a.projects.join("rust"), "rust-dispatch", 6_400)?;
    let started = Instant::now();
    for r in &sample_records {
        std::hint::black_box(notification_host::modules::builtin_fields(r));
    }
    let native = started.elapsed() / sample_records.len() as u32;

    let (baseline_rate, _) = drain(&a, None).await?;
    println!("host drain with the built-in default: {baseline_rate:.0} records/s ({} records)", a.records);

    for (language, project, name) in projects(&a.projects) {
        let wasm = project.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&wasm).with_context(|| format!("{} (build the project first)", wasm.display()))?;
        let limits = limits_of(&project, &name)?;

        // As `serve` compiles: in a child process within the default budget.
        let compiler =
            Compiler::Child { exe: a.host_bin.clone(), memory_bytes: 2 << 30, timeout: Duration::from_secs(600) };
        let cached = Some(Cache { dir: cache.clone(), key: CacheKey::PUBLIC });
        let uncached = Runtime::with(limits, compiler.clone(), None)?;
        let started = Instant::now();
        let component = uncached.load(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let first_load = started.elapsed();

        let warm = Runtime::with(limits, compiler.clone(), cached.clone())?;
        warm.load(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let again = Runtime::with(limits, compiler, cached)?;
        let started = Instant::now();
        again.load(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cached_load = started.elapsed();

        let refs: Vec<&Record> = sample_records.iter().collect();
        component.normalize(&refs[..64], &mut Breaker::unlimited()); // warm up
        let started = Instant::now();
        let run = component.normalize(&refs, &mut Breaker::unlimited());
        let per_record = started.elapsed() / refs.len() as u32;
        if let Some(e) = run.answers.iter().find_map(|r| r.as_ref().err()) {
            bail!("{language}: the module failed in the benchmark: {e}");
        }

        let (host_rate, live_after) = drain(&a, Some((&project, &name))).await?;
        let row = Row {
            language,
            size: bytes.len() as u64,
            first_load,
            cached_load,
            per_record,
            host_rate,
            live_after: live_after.unwrap_or_default(),
        };
        println!(
            "{language}: {} bytes, first load {:?}, cached {:?}, {:?}/record, host {:.0} records/s, live after {:?}",
            row.size, row.first_load, row.cached_load, row.per_record, row.host_rate, row.live_after
        );
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&cache);

    let routing = routing_cost(&a.projects.join("rust"))?;
    let shadow = shadow_cost(&a.projects)?;

    println!();
    println!(
        "| module ({} records through the host) | component | first load (compile) | cached load | per record, 64-record batches | records/s through the host | files copied → live |",
        a.records
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| built-in default (native, baseline) | — | — | — | {:.1} µs | {baseline_rate:.0} (1.00×) | — |",
        native.as_secs_f64() * 1e6
    );
    for r in &rows {
        println!(
            "| {} | {:.1} MB | {:.2} s | {:.3} s | {:.1} µs ({:.0}× native) | {:.0} ({:.2}×) | {:.2} s |",
            r.language,
            r.size as f64 / 1e6,
            r.first_load.as_secs_f64(),
            r.cached_load.as_secs_f64(),
            r.per_record.as_secs_f64() * 1e6,
            r.per_record.as_secs_f64() / native.as_secs_f64().max(1e-9),
            r.host_rate,
            r.host_rate / baseline_rate,
            r.live_after.as_secs_f64()
        );
    }
    println!();
    println!(
        "Routing cost per record, 20 modules on one topic, the record matching the last (in-process, {} records):",
        ROUTED
    );
    println!("| routing rules | per record |");
    println!("|---|---:|");
    for (label, per_record) in routing {
        println!("| {label} | {:.2} µs |", per_record.as_secs_f64() * 1e6);
    }
    println!();
    println!("A shadow version beside the live one (in-process, the template's records, 1,000-record batches):");
    println!("| module | per record, alone | with a shadow | ratio |");
    println!("|---|---:|---:|---:|");
    for (language, alone, with_shadow) in shadow {
        println!(
            "| {language} | {:.1} µs | {:.1} µs | {:.2}× |",
            alone.as_secs_f64() * 1e6,
            with_shadow.as_secs_f64() * 1e6,
            with_shadow.as_secs_f64() / alone.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

const ROUTED: usize = 100_000;

/// Per-record cost of `Modules::normalize` (routing, the module, the
/// fallback) for each language's module, alone and with a shadow version of
/// itself beside it, in-process on the template's records.
fn shadow_cost(projects: &Path) -> anyhow::Result<Vec<(&'static str, Duration, Duration)>> {
    use notification_host::modules::{Modules, ModulesConfig, content_hash};
    use notification_host::storage::module_store::StoredModule;
    let mut out = Vec::new();
    for (language, project, name) in self::projects(projects) {
        let manifest = std::fs::read_to_string(project.join(format!("{name}.toml")))?
            .replace(r#"topics = ["order_events"]"#, r#"topics = ["*"]"#);
        let component = std::fs::read(project.join(format!("{name}.wasm")))?;
        let stored = |version: &str| {
            let manifest = manifest.replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
            let hash = content_hash(&component, &manifest, None);
            Arc::new(StoredModule {
                name: name.clone(),
                version: version.into(),
                manifest,
                component: component.clone(),
                samples: None,
                hash,
            })
        };
        let limits = limits_of(&project, &name)?;
        let modules = Modules::new(
            Runtime::new(Limits::default())?,
            ModulesConfig {
                dir: None,
                quarantine_after: 10,
                quarantine_cooldown: Duration::from_secs(30),
                maxima: Limits { memory_bytes: 1 << 30, deadline: Duration::from_secs(5), ..limits },
            },
        );
        let batch = records(&project, &name, 1_000)?;
        let time = |shadow: bool| -> anyhow::Result<Duration> {
            // The shadow is the same version (a module's manifest must
            // repeat what its component says it is).
            modules.set_store(vec![stored("0.1.0")], if shadow { vec![stored("0.1.0")] } else { vec![] });
            anyhow::ensure!(modules.list().len() == 1, "shadow bench: {:?}", modules.rejections());
            modules.normalize(&batch); // warm up
            let started = Instant::now();
            for _ in 0..10 {
                std::hint::black_box(modules.normalize(&batch));
            }
            Ok(started.elapsed() / (10 * batch.len() as u32))
        };
        let alone = time(false)?;
        let with_shadow = time(true)?;
        anyhow::ensure!(
            modules.shadows().first().is_some_and(|s| s.info().records > 0 && s.info().differing == 0),
            "shadow bench: the shadow compared nothing"
        );
        out.push((language, alone, with_shadow));
    }
    Ok(out)
}

/// How long choosing a module takes per record with 20 modules whose rules
/// all look at the record, only the last matching: by topic only, by topic
/// and key, and by topic and two value members (the value parsed once per
/// record for all 20).
fn routing_cost(project: &Path) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let wasm = project.join("rust-dispatch.wasm");
    let value = br#"{"type": "ORDER_ACCEPTED", "source": "order-service", "correlation_id": "order-20250404100000-0000abcd", "payload": {"customerId": "u1", "runnerId": "r1", "orderId": 42, "status": "ACCEPTED", "sourceService": "svc-19", "event": "{\"orderId\": 42, \"orderDescription\": \"two coffees\"}"}}"#;
    let record = Record {
        topic: "order_events".into(),
        partition: 0,
        offset: 0,
        timestamp: None,
        key: Some(b"tenant-19/order-42".to_vec()),
        headers: vec![],
        value: Some(value.to_vec()),
    };
    type Rules = fn(usize) -> String;
    let cases: [(&'static str, Rules); 3] = [
        ("topic globs", |i| format!("topics = [\"order_events_{i}*\"]")),
        ("topic + key glob", |i| format!("topics = [\"order_*\"]\nkey = \"tenant-{i}/*\"")),
        ("topic + two value members (equality, nested glob)", |i| {
            format!(
                "topics = [\"order_*\"]\nfields = {{ source = \"order-service\", \"payload.sourceService\" = {{ glob = \"svc-{i}\" }} }}"
            )
        }),
    ];
    let mut results = Vec::new();
    for (label, rules) in cases {
        let dir = std::env::temp_dir().join(unique("bench-routing"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&wasm, dir.join("m.wasm"))?;
        for i in 0..20 {
            // The last module's rules are the ones the record meets.
            let rules =
                if i == 19 && label == "topic globs" { "topics = [\"order_events\"]".to_owned() } else { rules(i) };
            std::fs::write(
                dir.join(format!("m{i:02}.toml")),
                format!("name = \"m{i:02}\"\nversion = \"1.0.0\"\ncomponent = \"m.wasm\"\n[match]\n{rules}\n"),
            )?;
        }
        let modules = notification_host::modules::Modules::new(
            Runtime::new(Limits::default())?,
            notification_host::modules::ModulesConfig {
                dir: Some(dir.clone()),
                quarantine_after: 10,
                quarantine_cooldown: Duration::from_secs(30),
                maxima: Limits::default(),
            },
        );
        modules.reload();
        anyhow::ensure!(modules.list().len() == 20, "routing bench: {:?}", modules.rejections());
        anyhow::ensure!(modules.route(&record).as_deref() == Some("m19@1.0.0"), "routing bench: wrong module");
        let started = Instant::now();
        for _ in 0..ROUTED {
            std::hint::black_box(modules.route(std::hint::black_box(&record)));
        }
        results.push((label, started.elapsed() / ROUTED as u32));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(results)
}

/// Preloads `records` template records on a fresh topic, starts the release
/// host with an empty modules directory, installs the module (if any) by
/// copying its files in and times until `/normalizers` lists it, then lets
/// the host drain the backlog. Returns records/s from the first stored row
/// to the last, and the install time.
async fn drain(a: &Args, module: Option<(&Path, &str)>) -> anyhow::Result<(f64, Option<Duration>)> {
    let prefix = unique("benchmod");
    let topic = format!("{prefix}_order_events");
    let kafka = Kafka::shared();
    kafka.create_topic(&topic, 3).await;
    let values = records(&a.projects.join("rust"), "rust-dispatch", 3)?;
    let producer = kafka.producer();
    let mut pending = Vec::new();
    for i in 0..a.records {
        pending.push(Out::new(&topic, values[i % values.len()].value.clone().unwrap_or_default()));
    }
    for chunk in pending.chunks(2_000) {
        futures_util::future::join_all(chunk.iter().map(|o| produce(&producer, o))).await;
    }

    let (db_url, pool) = fresh_database("benchmod").await;
    let dir = std::env::temp_dir().join(format!("{prefix}-modules"));
    std::fs::create_dir_all(&dir)?;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.binary = Some(a.host_bin.clone());
    options.env.push(("NORMALIZERS_DIR".into(), dir.display().to_string()));
    options.env.push(("MODULE_CACHE_DIR".into(), "off".into()));
    options.env.push(("RUST_LOG".into(), "warn".into()));
    // Install before consuming: hold the backlog until the module is live.
    options.topic_include = format!("{prefix}_never");
    let mut host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let live_after = match module {
        Some((project, name)) => Some(install(&host, project, name, &dir, &topic)?),
        None => None,
    };
    host.terminate(Duration::from_secs(10));

    options.topic_include = format!("{prefix}.*");
    let mut host = Host::start(&options);
    let rate = rate_of(&pool, &prefix, a.records).await?;
    host.terminate(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((rate, live_after))
}

fn install(host: &Host, project: &Path, name: &str, dir: &Path, topic: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for file in [format!("{name}.wasm"), format!("{name}.samples.jsonl")] {
        std::fs::copy(project.join(&file), dir.join(&file))?;
    }
    let manifest = std::fs::read_to_string(project.join(format!("{name}.toml")))?
        .replace(r#"topics = ["order_events"]"#, &format!("topics = [{topic:?}]"));
    std::fs::write(dir.join(format!(".{name}.tmp")), manifest)?;
    std::fs::rename(dir.join(format!(".{name}.tmp")), dir.join(format!("{name}.toml")))?;
    loop {
        if let Some((200, body)) = http_get(host.http, "/normalizers")
            && body.contains(&format!("\"name\":\"{name}\""))
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{name} not live after 120 s:\n{}", host.log_text());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn rate_of(pool: &PgPool, prefix: &str, n: usize) -> anyhow::Result<f64> {
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE starts_with(source_topic, $1)")
            .bind(prefix)
            .fetch_one(pool)
            .await
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let c = count().await?;
        if first.is_none() && c > 0 {
            first = Some((Instant::now(), c));
        }
        if c as usize >= n {
            let (t0, c0) = first.unwrap_or((Instant::now(), 0));
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            return Ok((c - c0) as f64 / secs);
        }
        if Instant::now() > deadline {
            bail!("only {c} of {n} rows after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
