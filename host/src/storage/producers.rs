//! The producers' rates (see `migrations/0010_saga_producers.sql`): read
//! and saved in the learner's transaction, read whole by the API.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::sagas::Learning;
use super::{Db, DbError};
use crate::config::SagaConfig;
use crate::sagas::producers::{Silence, judge};
use crate::sagas::{Horizons, Producer, Rates};

type RatesTuple = (String, String, i64, DateTime<Utc>, DateTime<Utc>, f64, f64);

fn from_tuple((service, event, events, first_at, last_at, recent, baseline): RatesTuple) -> (Producer, Rates) {
    (Producer { service, event }, Rates { events, first_at, last_at, recent, baseline })
}

const RATES_COLUMNS: &str = "service, event, events, first_at, last_at, recent_rate, baseline_rate";

impl Learning {
    /// The stored rates of `producers`, and how many producers are known.
    pub async fn producers(&mut self, producers: &[Producer]) -> Result<(HashMap<Producer, Rates>, usize), DbError> {
        let (services, events): (Vec<&str>, Vec<&str>) =
            producers.iter().map(|p| (p.service.as_str(), p.event.as_str())).unzip();
        let rows: Vec<RatesTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RATES_COLUMNS} FROM saga_producers \
             WHERE (service, event) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        )))
        .bind(&services)
        .bind(&events)
        .fetch_all(&mut *self.tx)
        .await?;
        let known: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_producers").fetch_one(&mut *self.tx).await?;
        Ok((rows.into_iter().map(from_tuple).collect(), usize::try_from(known).unwrap_or(usize::MAX)))
    }

    /// Saves producers' rates (before [`Learning::save`] commits them with
    /// the rest).
    pub async fn save_producers(&mut self, rates: &[(Producer, Rates)]) -> Result<(), DbError> {
        if rates.is_empty() {
            return Ok(());
        }
        let doc: Vec<serde_json::Value> = rates
            .iter()
            .map(|(p, r)| {
                json!({
                    "service": p.service, "event": p.event, "events": r.events, "first_at": r.first_at,
                    "last_at": r.last_at, "recent_rate": r.recent, "baseline_rate": r.baseline,
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO saga_producers (service, event, events, first_at, last_at, recent_rate, baseline_rate) \
             SELECT * FROM jsonb_to_recordset($1) AS r(service text, event text, events int8, first_at timestamptz, \
                  last_at timestamptz, recent_rate float8, baseline_rate float8) \
             ON CONFLICT (service, event) DO UPDATE SET events = EXCLUDED.events, first_at = EXCLUDED.first_at, \
                  last_at = EXCLUDED.last_at, recent_rate = EXCLUDED.recent_rate, \
                  baseline_rate = EXCLUDED.baseline_rate",
        )
        .bind(serde_json::Value::Array(doc))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Db {
    /// Every known producer's rates (at most `limit`, the busiest first).
    pub async fn producers(&self, limit: i64) -> Result<Vec<(Producer, Rates)>, DbError> {
        let rows: Vec<RatesTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RATES_COLUMNS} FROM saga_producers ORDER BY baseline_rate DESC, service, event LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.admin)
        .await?;
        Ok(rows.into_iter().map(from_tuple).collect())
    }

    /// The producers silent now, judged on the log's own clock (see
    /// [`crate::sagas::producers`]).
    pub async fn silent_producers(&self, config: &SagaConfig) -> Result<Silence, DbError> {
        let all = self.producers(i64::from(config.saga_max_producers)).await?;
        Ok(judge(all, Horizons::of(config.saga_silence_window), f64::from(config.saga_min_samples)))
    }

    /// Forgets producers with no record for longer than `window`.
    pub async fn forget_producers(&self, window: Duration) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM saga_producers WHERE last_at < (SELECT max(last_at) FROM saga_producers) - $1 * interval '1 second'",
        )
        .bind(window.as_secs_f64())
        .execute(&self.admin)
        .await?;
        Ok(done.rows_affected())
    }
}
