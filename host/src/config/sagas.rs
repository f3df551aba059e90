//! What the saga learner learns from and how it judges a saga overdue.

use std::time::Duration;

use clap::Args;

use super::env;
use super::parse::parse_duration;

/// Learned saga shapes and stuck-saga detection.
#[derive(Debug, Clone, Args)]
pub struct SagaConfig {
    /// How often new rows are learned from (one replica at a time learns;
    /// the others wait for their turn). `0s` turns learning off: the
    /// `/sagas` answers then stay as they were.
    #[arg(long, env = env::SAGA_LEARN_INTERVAL, default_value = "2s", value_parser = parse_duration)]
    pub saga_learn_interval: Duration,

    /// Most rows learned from in one transaction (a run takes as many as
    /// it needs to catch up, one such batch after another).
    #[arg(long, env = env::SAGA_LEARN_BATCH, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub saga_learn_batch: u32,

    /// A saga is overdue when the time since its last step exceeds this
    /// many times the learned p99 of every step that follows it.
    #[arg(long, env = env::SAGA_OVERDUE_MARGIN, default_value_t = 2.0, value_parser = parse_margin)]
    pub saga_overdue_margin: f64,

    /// Transitions seen fewer times than this teach nothing yet: no saga is
    /// judged overdue (or its status backwards) by them.
    #[arg(long, env = env::SAGA_MIN_SAMPLES, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub saga_min_samples: u32,

    /// Sagas idle for longer than this are forgotten (neither overdue nor
    /// kept); what they taught stays.
    #[arg(long, env = env::SAGA_WINDOW, default_value = "7d", value_parser = parse_duration)]
    pub saga_window: Duration,

    /// Saga types learned; sagas of further types are learned as `(other)`.
    /// Bounds the tables, the answers and the metrics' labels.
    #[arg(long, env = env::SAGA_MAX_TYPES, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub saga_max_types: u32,

    /// Steps learned per saga type; further steps are learned as `(other)`.
    #[arg(long, env = env::SAGA_MAX_STEPS, default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub saga_max_steps: u32,

    /// A producer (a source service and its event type) is silent when its
    /// rate over this window fell under a tenth of its usual rate (its rate
    /// over twelve such windows, as of its last record), and that usual
    /// rate would have sent at least `SAGA_MIN_SAMPLES` records in one
    /// window. Record times, judged on the log's own clock (the newest
    /// record learned).
    #[arg(long, env = env::SAGA_SILENCE_WINDOW, default_value = "5m", value_parser = parse_silence_window)]
    pub saga_silence_window: Duration,

    /// Producers whose rates are kept; records of further producers are
    /// not counted. Bounds the table, `/sagas/silent` and the metric's
    /// labels.
    #[arg(long, env = env::SAGA_MAX_PRODUCERS, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub saga_max_producers: u32,

    /// A tracing UI's address for one trace, with `{trace_id}` where the id
    /// goes (e.g. `https://jaeger.example/trace/{trace_id}`): the console
    /// links each record's trace there. Unset: trace ids are shown, not
    /// linked.
    #[arg(long, env = env::TRACE_URL_TEMPLATE, value_parser = parse_trace_url)]
    pub trace_url_template: Option<String>,
}

fn parse_trace_url(s: &str) -> Result<String, String> {
    let ok = s.contains("{trace_id}") && (s.starts_with("https://") || s.starts_with("http://"));
    if ok { Ok(s.to_owned()) } else { Err(format!("{s:?} is not an http(s) address with {{trace_id}} in it")) }
}

fn parse_silence_window(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(10) && d <= Duration::from_secs(7 * 86_400) => Ok(d),
        Ok(_) => Err(format!("{s:?} is not a window between 10s and 7d")),
        Err(e) => Err(e),
    }
}

fn parse_margin(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && (1.0..=100.0).contains(&m) => Ok(m),
        _ => Err(format!("{s:?} is not a margin between 1 and 100 (times the learned p99)")),
    }
}
