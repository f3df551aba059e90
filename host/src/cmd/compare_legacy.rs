//! `notification-host compare-legacy`: before a switch, what the original
//! service answers against what the host answers, order by order.
//!
//! The original's answers are computed from its rows the way its API read
//! them (`GET /order/{id}`: every row of the order; `/latest`: the row
//! inserted last, as PostgreSQL's `ORDER BY created_at DESC` gave it, a row
//! without a time first), so the original need not run. The host's are
//! asked from its API, which should run with `API_COMPAT=original`. Rows are
//! matched by `notificationId` and compared key by key. The differences the
//! book documents ([compatibility](../api/compatibility.md)) are counted
//! apart and do not fail the comparison; any other does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::config::CompareLegacyArgs;
use crate::storage::legacy::{LegacyDb, LegacyRow};

/// The keys of a notification in the original's answers.
const KEYS: [&str; 11] = [
    "notificationId",
    "customerId",
    "runnerId",
    "orderId",
    "event",
    "status",
    "createdAt",
    "sourceTopic",
    "eventType",
    "correlationId",
    "sourceService",
];

/// Keys whose placeholders the host answers as null.
const PLACEHOLDER_KEYS: [&str; 7] =
    ["customerId", "runnerId", "orderId", "status", "eventType", "correlationId", "sourceService"];

/// Orders compared at once (each: the original's rows, two requests).
const CONCURRENCY: usize = 8;

/// Rows the host answers per request while paging.
const PAGE: u32 = 1000;

/// A documented difference, by kind.
pub const PLACEHOLDER_AS_NULL: &str = "a placeholder answered as null";
pub const NO_INSERT_TIME: &str = "a row without an insert time (the host dates it at the Unix epoch)";
pub const HOST_ROWS: &str = "rows the host stored itself";
pub const LATEST_TIE: &str = "latest among rows inserted at the same time";

/// What comparing one order found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OrderComparison {
    /// Differences beyond the documented ones, one line each.
    pub differences: Vec<String>,
    /// Documented differences, counted by kind.
    pub documented: BTreeMap<&'static str, u64>,
    pub rows: usize,
}

/// Runs the comparison, writing differences and a summary to `out`.
pub async fn run(args: &CompareLegacyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let base = args.api.trim_end_matches('/').to_owned();
    anyhow::ensure!(
        base.starts_with("http://"),
        "--api must be the host's plain http:// address (compare-legacy speaks no TLS; use the Service's address \
         inside the cluster, or `kubectl port-forward`)"
    );
    let legacy = LegacyDb::open(&args.from).await?;
    let client = reqwest::Client::builder().timeout(args.timeout).build().context("cannot make an HTTP client")?;
    let host = Host { client, base, token: args.token.clone() };
    let orders = legacy
        .order_ids(if args.all { None } else { Some(args.sample) })
        .await
        .context("cannot read the original's order ids")?;
    writeln!(out, "comparing {} orders of {} with {}", orders.len(), legacy.source(), host.base)?;

    let (mut same, mut documented_only, mut differing, mut rows, mut shown) = (0, 0, 0, 0, 0);
    let mut documented: BTreeMap<&'static str, u64> = BTreeMap::new();
    // A few orders at a time, answered in order.
    let mut compared = futures_util::stream::iter(orders.iter())
        .map(|order_id| {
            let (legacy, host) = (&legacy, &host);
            async move {
                let old = legacy.order_rows(order_id).await.context("cannot read the original's rows")?;
                let all = host.order(order_id).await?;
                let latest = host.latest(order_id).await?;
                anyhow::Ok(compare_order(order_id, &old, &all, latest.as_ref(), args.allow_host_rows))
            }
        })
        .buffered(CONCURRENCY);
    while let Some(c) = compared.next().await {
        let c = c?;
        rows += c.rows;
        for (kind, n) in &c.documented {
            *documented.entry(kind).or_default() += n;
        }
        if !c.differences.is_empty() {
            differing += 1;
            for line in &c.differences {
                if shown < args.show {
                    writeln!(out, "{line}")?;
                }
                shown += 1;
            }
        } else if c.documented.is_empty() {
            same += 1;
        } else {
            documented_only += 1;
        }
    }
    if shown > args.show {
        writeln!(out, "... and {} more differences", shown - args.show)?;
    }
    writeln!(
        out,
        "compared {} orders ({rows} rows): {same} the same, {documented_only} with documented differences only, \
         {differing} differing",
        orders.len()
    )?;
    for (kind, n) in &documented {
        writeln!(out, "  documented: {kind}: {n}")?;
    }
    Ok(if differing == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The host's API.
struct Host {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Host {
    /// `GET /order/{id}`, every page; an empty list for a 404.
    async fn order(&self, order_id: &str) -> anyhow::Result<Vec<Value>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(&["order", order_id])?;
            url.query_pairs_mut().append_pair("limit", &PAGE.to_string());
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let response = self.get(url).await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(rows);
            }
            let next = response.headers().get("x-next-cursor").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let page: Vec<Value> = json_of(response, order_id).await?;
            rows.extend(page);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(rows),
            }
        }
    }

    /// `GET /order/{id}/latest`; None for a 404.
    async fn latest(&self, order_id: &str) -> anyhow::Result<Option<Value>> {
        let response = self.get(self.url(&["order", order_id, "latest"])?).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(json_of(response, order_id).await?))
    }

    fn url(&self, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.base).with_context(|| format!("{} is not a URL", self.base))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn get(&self, url: reqwest::Url) -> anyhow::Result<reqwest::Response> {
        let mut request = self.client.get(url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.with_context(|| format!("the host did not answer {url}"))
    }
}

async fn json_of<T: serde::de::DeserializeOwned>(response: reqwest::Response, order_id: &str) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await.context("cannot read the host's answer")?;
    anyhow::ensure!(status.is_success(), "the host answered {status} for order {order_id:?}: {text}");
    serde_json::from_str(&text)
        .with_context(|| format!("the host's answer for order {order_id:?} is not the JSON expected"))
}

/// A row as the original's API answered it.
pub fn original_answer(row: &LegacyRow) -> Value {
    json!({
        "notificationId": row.notification_id,
        "customerId": row.customer_id,
        "runnerId": row.runner_id,
        "orderId": row.order_id,
        // Its API answered json.loads(event).
        "event": serde_json::from_str::<Value>(&row.event).unwrap_or_else(|_| Value::String(row.event.clone())),
        "status": row.status,
        "createdAt": row.created_at.map(isoformat),
        "sourceTopic": row.source_topic,
        "eventType": row.event_type,
        "correlationId": row.correlation_id,
        "sourceService": row.source_service,
    })
}

/// Python's `datetime.isoformat()` of a naive time: microseconds only when
/// there are any.
fn isoformat(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// Compares the original's rows of one order with the host's answers.
pub fn compare_order(
    order_id: &str,
    old: &[LegacyRow],
    host_all: &[Value],
    host_latest: Option<&Value>,
    allow_host_rows: bool,
) -> OrderComparison {
    let mut c = OrderComparison { rows: old.len(), ..OrderComparison::default() };
    let id_of = |v: &Value| v.get("notificationId").map(|id| id.as_str().map_or_else(|| id.to_string(), str::to_owned));
    let host: BTreeMap<String, &Value> = host_all.iter().filter_map(|v| Some((id_of(v)?, v))).collect();
    let old_ids: BTreeSet<&str> = old.iter().map(|r| r.notification_id.as_str()).collect();

    for row in old {
        let Some(new) = host.get(&row.notification_id) else {
            c.differences.push(format!("order {order_id}: row {} is missing from the host", row.notification_id));
            continue;
        };
        let expected = original_answer(row);
        for key in KEYS {
            let (o, n) = (&expected[key], new.get(key).unwrap_or(&Value::Null));
            if o == n {
                continue;
            }
            match documented(key, o, n) {
                Some(kind) => *c.documented.entry(kind).or_default() += 1,
                None => c.differences.push(format!(
                    "order {order_id}: row {}: {key}: original {}, host {}",
                    row.notification_id,
                    shorten(o),
                    shorten(n)
                )),
            }
        }
    }
    let host_only: Vec<&String> = host.keys().filter(|id| !old_ids.contains(id.as_str())).collect();
    if !host_only.is_empty() {
        if allow_host_rows {
            *c.documented.entry(HOST_ROWS).or_default() += host_only.len() as u64;
        } else {
            let shown: Vec<&str> = host_only.iter().take(5).map(|s| s.as_str()).collect();
            c.differences.push(format!(
                "order {order_id}: {} rows only in the host: {}{}",
                host_only.len(),
                shown.join(", "),
                if host_only.len() > shown.len() { ", ..." } else { "" }
            ));
        }
    }
    if host.len() != host_all.len() {
        c.differences.push(format!("order {order_id}: the host answered a row without notificationId, or one twice"));
    }

    // The original's latest: the greatest insert time, a row without one
    // first (PostgreSQL's DESC puts NULL first); any of a tie.
    let top = old.iter().map(|r| r.created_at).max_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    });
    let Some(top) = top else { return c };
    let latest: Vec<&str> = old.iter().filter(|r| r.created_at == top).map(|r| r.notification_id.as_str()).collect();
    let host_latest_id = host_latest.and_then(id_of);
    match host_latest_id.as_deref() {
        Some(id) if latest.contains(&id) => {
            if latest.len() > 1 {
                *c.documented.entry(LATEST_TIE).or_default() += 1;
            }
        }
        Some(_) if top.is_none() => *c.documented.entry(NO_INSERT_TIME).or_default() += 1,
        Some(id) if allow_host_rows && !old_ids.contains(id) => *c.documented.entry(HOST_ROWS).or_default() += 1,
        other => c.differences.push(format!(
            "order {order_id}: latest: original {}, host {}",
            latest.join(" or "),
            other.unwrap_or("none (404)")
        )),
    }
    c
}

/// The documented difference `key` shows between the original's value `o`
/// and the host's `n`, if it is one.
fn documented(key: &str, o: &Value, n: &Value) -> Option<&'static str> {
    match (key, o, n) {
        (k, Value::String(s), Value::Null) if PLACEHOLDER_KEYS.contains(&k) && normalizer_rules::is_placeholder(s) => {
            Some(PLACEHOLDER_AS_NULL)
        }
        ("createdAt", Value::Null, Value::String(s)) if s == "1970-01-01T00:00:00" => Some(NO_INSERT_TIME),
        _ => None,
    }
}

/// A value for a difference line, cut to a readable length.
fn shorten(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 120 { text } else { format!("{}…", text.chars().take(120).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, micros: u32) -> LegacyRow {
        LegacyRow {
            notification_id: id.into(),
            customer_id: Some(String::new()),
            runner_id: None,
            order_id: Some("42".into()),
            event: r#"{"topic": "order_events", "payload": {"order_id": "42"}}"#.into(),
            status: Some("PENDING".into()),
            created_at: chrono::NaiveDate::from_ymd_opt(2025, 4, 4).and_then(|d| d.and_hms_micro_opt(10, 0, 0, micros)),
            source_topic: Some("order_events".into()),
            event_type: Some("order.created".into()),
            correlation_id: Some("saga-1".into()),
            source_service: Some("order-service".into()),
        }
    }

    /// The host's answer for an imported row: the original's, with its
    /// placeholder answered as null.
    fn host(row: &LegacyRow) -> Value {
        let mut v = original_answer(row);
        v["customerId"] = Value::Null;
        v["kafkaPartition"] = Value::Null;
        v
    }

    #[test]
    fn python_isoformat() {
        let t =
            |micros| chrono::NaiveDate::from_ymd_opt(2025, 4, 4).unwrap().and_hms_micro_opt(10, 0, 0, micros).unwrap();
        assert_eq!(isoformat(t(123_456)), "2025-04-04T10:00:00.123456");
        assert_eq!(isoformat(t(500)), "2025-04-04T10:00:00.000500");
        assert_eq!(isoformat(t(0)), "2025-04-04T10:00:00");
    }

    #[test]
    fn placeholders_as_null_are_documented_and_the_rest_differs() {
        let old = [row("a", 1), row("b", 2)];
        let all: Vec<Value> = old.iter().map(host).collect();
        let c = compare_order("42", &old, &all, Some(&all[1]), false);
        assert!(c.differences.is_empty(), "{:?}", c.differences);
        assert_eq!(c.documented.get(PLACEHOLDER_AS_NULL), Some(&2));

        let mut changed = all.clone();
        changed[0]["status"] = json!("ACCEPTED");
        let c = compare_order("42", &old, &changed, Some(&all[1]), false);
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
        assert!(c.differences[0].contains("status"), "{:?}", c.differences);
    }

    #[test]
    fn missing_extra_and_latest_rows_differ() {
        let old = [row("a", 1), row("b", 2)];
        let all: Vec<Value> = old.iter().map(host).collect();
        let c = compare_order("42", &old, &all[..1], Some(&all[0]), false);
        assert!(c.differences.iter().any(|d| d.contains("row b is missing")), "{:?}", c.differences);
        assert!(c.differences.iter().any(|d| d.contains("latest: original b, host a")), "{:?}", c.differences);

        let mut extra = all.clone();
        extra.push(json!({"notificationId": "1234", "orderId": "42"}));
        let c = compare_order("42", &old, &extra, Some(&all[1]), false);
        assert!(c.differences.iter().any(|d| d.contains("1 rows only in the host")), "{:?}", c.differences);
        let c = compare_order("42", &old, &extra, Some(&extra[2]), true);
        assert!(c.differences.is_empty(), "{:?}", c.differences);
        assert_eq!(c.documented.get(HOST_ROWS), Some(&2));
    }

    #[test]
    fn a_tie_for_latest_takes_either() {
        let old = [row("a", 5), row("b", 5)];
        let all: Vec<Value> = old.iter().map(host).collect();
        for latest in &all {
            let c = compare_order("42", &old, &all, Some(latest), false);
            assert!(c.differences.is_empty(), "{:?}", c.differences);
        }
    }
}
