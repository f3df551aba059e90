//! Producers gone silent: for each (source service, event type) the learner
//! keeps two exponentially decaying rates of its records, a recent one (the
//! silence window, `SAGA_SILENCE_WINDOW`) and a baseline twelve times as
//! long. A producer is silent when its recent rate fell under a tenth of
//! its baseline while the baseline says it would have sent enough records
//! in a window for their absence to mean something.
//!
//! The rates count record times, not the moment the learner saw the
//! records, so history loaded late gives the same rates as records stored
//! live. They are judged on the log's own clock: the newest record time
//! learned from any producer. A backlog being consumed moves every
//! producer's clock alike, so it does not make one look silent; a log whose
//! every producer stops at once is the consumer-lag and ingest alerts' job.
//!
//! An exponentially decayed rate needs no buckets: the state is the rate as
//! of one instant, and it decays exactly to any later instant. A record
//! older than that instant adds its own decayed share, so the order in
//! which records arrive does not change the result.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The baseline's horizon, in silence windows.
pub const BASELINE_WINDOWS: u32 = 12;
/// A producer is silent when its recent rate is under this share of its
/// baseline.
pub const SILENT_SHARE: f64 = 0.1;

/// The two horizons rates decay over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Horizons {
    /// The silence window: the recent rate's horizon.
    pub recent: Duration,
    /// The baseline's horizon.
    pub baseline: Duration,
}

impl Horizons {
    pub fn of(window: Duration) -> Horizons {
        let recent = window.max(Duration::from_secs(1));
        Horizons { recent, baseline: recent * BASELINE_WINDOWS }
    }
}

/// One producer: a source service and the event type it sends (its status
/// when records have no event type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Producer {
    pub service: String,
    pub event: String,
}

impl Producer {
    /// The producer of a row, or None when the row names neither a service
    /// nor an event.
    pub fn of(row: &super::LearnRow) -> Option<Producer> {
        let event = row.event_type.as_deref().or(row.status.as_deref());
        if row.service.is_none() && event.is_none() {
            return None;
        }
        let cut = super::learn::cut;
        Some(Producer {
            service: cut(row.service.as_deref().unwrap_or("(unknown)")),
            event: cut(event.unwrap_or("(none)")),
        })
    }
}

/// What the learner keeps of a producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub events: i64,
    pub first_at: DateTime<Utc>,
    /// Its newest record time: the instant both rates are as of.
    pub last_at: DateTime<Utc>,
    /// Records per second over the recent and the baseline horizon, as of
    /// `last_at`.
    pub recent: f64,
    pub baseline: f64,
}

fn decay(seconds: f64, horizon: Duration) -> f64 {
    (-seconds.max(0.0) / horizon.as_secs_f64()).exp()
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().map_or(f64::MAX, |us| us as f64 / 1e6)
}

impl Rates {
    /// A producer's first record, at `at`.
    pub fn first(at: DateTime<Utc>, h: Horizons) -> Rates {
        Rates {
            events: 1,
            first_at: at,
            last_at: at,
            recent: 1.0 / h.recent.as_secs_f64(),
            baseline: 1.0 / h.baseline.as_secs_f64(),
        }
    }

    /// Counts one more record, at `at` (in any order).
    pub fn add(&mut self, at: DateTime<Utc>, h: Horizons) {
        self.events = self.events.saturating_add(1);
        self.first_at = self.first_at.min(at);
        if at >= self.last_at {
            let s = seconds_between(self.last_at, at);
            self.recent = self.recent * decay(s, h.recent) + 1.0 / h.recent.as_secs_f64();
            self.baseline = self.baseline * decay(s, h.baseline) + 1.0 / h.baseline.as_secs_f64();
            self.last_at = at;
        } else {
            let s = seconds_between(at, self.last_at);
            self.recent += decay(s, h.recent) / h.recent.as_secs_f64();
            self.baseline += decay(s, h.baseline) / h.baseline.as_secs_f64();
        }
    }

    /// The recent rate (records per second) at `at`.
    pub fn recent_at(&self, at: DateTime<Utc>, h: Horizons) -> f64 {
        self.recent * decay(seconds_between(self.last_at, at), h.recent)
    }

    /// Whether the producer is silent at `at`: its recent rate, decayed
    /// to `at`, is under [`SILENT_SHARE`] of its baseline as of its last
    /// record (its usual rate: the baseline is not decayed through the
    /// silence, so a producer silent for long stays silent), and that
    /// baseline would have sent at least `min_events` records in a silence
    /// window (so a rare producer's quiet hour is not silence).
    pub fn silent(&self, at: DateTime<Utc>, h: Horizons, min_events: f64) -> bool {
        self.baseline * h.recent.as_secs_f64() >= min_events && self.recent_at(at, h) < self.baseline * SILENT_SHARE
    }
}

/// A producer as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub producer: Producer,
    pub rates: Rates,
    /// Records per minute over the silence window at the judging instant,
    /// and its usual rate (the baseline as of its last record).
    pub recent_per_minute: f64,
    pub baseline_per_minute: f64,
}

/// Every producer judged on the log's own clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Silence {
    /// The newest record time learned: the instant the rates are judged at
    /// (None before any record).
    pub judged_at: Option<DateTime<Utc>>,
    /// Silent producers, the largest baseline first.
    pub silent: Vec<Judged>,
    /// How many producers are known.
    pub producers: usize,
}

/// Judges `all` at the newest record time among them.
pub fn judge(all: Vec<(Producer, Rates)>, h: Horizons, min_events: f64) -> Silence {
    let judged_at = all.iter().map(|(_, r)| r.last_at).max();
    let producers = all.len();
    let Some(at) = judged_at else { return Silence::default() };
    let mut silent: Vec<Judged> = all
        .into_iter()
        .filter(|(_, r)| r.silent(at, h, min_events))
        .map(|(producer, rates)| {
            let recent_per_minute = rates.recent_at(at, h) * 60.0;
            let baseline_per_minute = rates.baseline * 60.0;
            Judged { producer, rates, recent_per_minute, baseline_per_minute }
        })
        .collect();
    silent.sort_by(|a, b| b.baseline_per_minute.total_cmp(&a.baseline_per_minute).then(a.producer.cmp(&b.producer)));
    Silence { judged_at, silent, producers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_765_000_000 + seconds, 0).unwrap()
    }

    /// A producer sending one record every `every` seconds from 0 to `until`.
    fn steady(every: i64, until: i64, h: Horizons) -> Rates {
        let mut r = Rates::first(t(0), h);
        for s in (every..=until).step_by(every as usize) {
            r.add(t(s), h);
        }
        r
    }

    #[test]
    fn a_steady_producer_is_not_silent_and_one_that_stops_is() {
        let h = Horizons::of(Duration::from_secs(300));
        // One record a second for two hours: the recent rate is 1/s, the
        // baseline (an hour's horizon) most of the way there.
        let r = steady(1, 7200, h);
        let (recent, baseline) = (r.recent_at(t(7200), h), r.baseline);
        assert!((recent - 1.0).abs() < 0.01 && (0.8..1.0).contains(&baseline), "{recent} {baseline}");
        assert!(!r.silent(t(7200), h, 20.0));
        // Five minutes later it has sent nothing: lower, not yet silent.
        assert!(!r.silent(t(7200 + 300), h, 20.0));
        // Fifteen minutes of nothing: silent, and it stays silent however
        // long the silence lasts.
        assert!(r.silent(t(7200 + 900), h, 20.0));
        assert!(r.silent(t(7200 + 7 * 86_400), h, 20.0));
    }

    #[test]
    fn a_rare_producer_is_never_silent_and_a_new_one_is_not_at_once() {
        let h = Horizons::of(Duration::from_secs(300));
        // One record a minute: 5 expected in a window, under 20.
        let rare = steady(60, 7200, h);
        assert!(!rare.silent(t(7200 + 3600), h, 20.0));
        // Busy for ten minutes only, then quiet for ten: its baseline has
        // not grown enough to call that silence.
        let young = steady(1, 600, h);
        assert!(!young.silent(t(1200), h, 20.0));
    }

    #[test]
    fn judged_on_the_newest_record_time_not_the_wall_clock() {
        let h = Horizons::of(Duration::from_secs(300));
        let p = |s: &str| Producer { service: s.into(), event: "e".into() };
        // Both stopped at 7200; an hour of the log's time passed for
        // `a`'s silence only because `b` went on.
        let stopped = steady(1, 7200, h);
        let mut going = steady(1, 7200, h);
        for s in 7201..=10_800 {
            going.add(t(s), h);
        }
        let s = judge(vec![(p("a"), stopped.clone()), (p("b"), going)], h, 20.0);
        assert_eq!(s.judged_at, Some(t(10_800)));
        assert_eq!(s.silent.iter().map(|j| j.producer.service.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(s.silent[0].recent_per_minute < s.silent[0].baseline_per_minute * SILENT_SHARE);
        // Alone, the stopped producer is the log's clock: a backlog that
        // ends there is not silence.
        assert!(judge(vec![(p("a"), stopped)], h, 20.0).silent.is_empty());
    }

    #[test]
    fn the_order_records_arrive_in_does_not_matter() {
        let h = Horizons::of(Duration::from_secs(60));
        let times = [5, 1, 9, 3, 7, 2, 8];
        let mut shuffled = Rates::first(t(4), h);
        let mut sorted = Rates::first(t(1), h);
        for s in times {
            shuffled.add(t(s), h);
        }
        for s in [2, 3, 4, 5, 7, 8, 9] {
            sorted.add(t(s), h);
        }
        let (a, b) = ((shuffled.recent_at(t(20), h), shuffled.baseline), (sorted.recent_at(t(20), h), sorted.baseline));
        assert!((a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12, "{a:?} {b:?}");
        assert_eq!((shuffled.first_at, shuffled.last_at, shuffled.events), (t(1), t(9), 8));
    }
}
