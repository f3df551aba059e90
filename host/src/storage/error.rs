//! Why a database call failed, in the terms its callers branch on: wait and
//! retry, narrow the request, tell the client its value was refused, or
//! report that something does not exist yet. Nothing outside `storage`
//! reads a SQLSTATE.

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or cannot work now (connection lost,
    /// no connection free in time, shutting down, out of disk): retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A statement ran past its time limit (`statement_timeout`), waited
    /// past `lock_timeout` for a lock, or was canceled.
    #[error("the query ran past its time limit: {0}")]
    TimedOut(#[source] sqlx::Error),
    /// PostgreSQL refused a value it was given (a data exception such as
    /// `\u0000` in JSONB, a program limit such as nesting too deep, a
    /// constraint): the request, not the database, is at fault.
    #[error("the database refused a value: {0}")]
    Refused(#[source] sqlx::Error),
    /// What the call needs does not exist yet (a table before its migration).
    #[error("not in the database yet: {0}")]
    Missing(#[source] sqlx::Error),
    /// Anything else: an unexpected answer.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> DbError {
        match class(&e) {
            Class::Unavailable => DbError::Unavailable(e),
            Class::TimedOut => DbError::TimedOut(e),
            Class::Refused => DbError::Refused(e),
            Class::Missing => DbError::Missing(e),
            Class::Other => DbError::Other(e),
        }
    }
}

enum Class {
    Unavailable,
    TimedOut,
    Refused,
    Missing,
    Other,
}

/// `57014`: canceled, by `statement_timeout` or a cancel request.
const QUERY_CANCELED: &str = "57014";
/// `55P03`: a lock not acquired within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn class(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code == QUERY_CANCELED || code == LOCK_NOT_AVAILABLE {
                Class::TimedOut
            } else if code == "42P01" || code == "3F000" {
                Class::Missing
            } else if ["22", "23", "54"].iter().any(|c| code.starts_with(c)) {
                Class::Refused
            } else if is_outage_code(&code) {
                Class::Unavailable
            } else {
                Class::Other
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            Class::Unavailable
        }
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => Class::Refused,
        _ => Class::Other,
    }
}

/// SQLSTATE classes that mean the database cannot work now, whatever the
/// statement: connection exceptions (08), insufficient resources (53),
/// operator intervention (57), system errors (58), transaction rollbacks
/// such as deadlocks (40), invalid transaction state (25), object not in
/// prerequisite state such as a lock not available (55), invalid catalog
/// name (3D) and invalid authorization (28).
pub(super) fn is_outage_code(code: &str) -> bool {
    ["08", "53", "57", "58", "40", "25", "55", "3D", "28"].iter().any(|class| code.starts_with(class))
}

impl DbError {
    /// Whether retrying later may succeed (the database, not the request,
    /// is the cause).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_outages() {
        assert!(matches!(DbError::from(sqlx::Error::PoolTimedOut), DbError::Unavailable(_)));
        assert!(matches!(DbError::from(sqlx::Error::PoolClosed), DbError::Unavailable(_)));
        assert!(matches!(DbError::from(sqlx::Error::RowNotFound), DbError::Other(_)));
    }
}
