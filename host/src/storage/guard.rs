//! A read that ends when its caller gives up. PostgreSQL goes on running a
//! statement whose client went away until it ends or hits
//! `statement_timeout`; a request that is dropped (its client disconnected,
//! or the server's own time limit fired) must not leave its query holding a
//! core and a connection. A guarded read knows its session's process id, and
//! when it is dropped before it finished it asks PostgreSQL to cancel that
//! session's statement, from a connection of the host's own, and closes the
//! session rather than hand it back to the pool (where another request
//! could be running by the time the cancel arrives).

use std::ops::ControlFlow;

use futures_util::TryStreamExt as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgArguments;
use sqlx::{PgPool, Postgres};

use super::{Db, DbError};

/// A read connection that cancels its statement if dropped unfinished.
pub(super) struct Guarded {
    conn: Option<PoolConnection<Postgres>>,
    pid: i32,
    admin: PgPool,
    finished: bool,
}

impl Db {
    /// A read connection whose statement is canceled if the read is dropped
    /// before it finishes.
    pub(super) async fn guarded(&self) -> Result<Guarded, DbError> {
        let mut conn = self.reads.acquire().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await?;
        Ok(Guarded { conn: Some(conn), pid, admin: self.admin.clone(), finished: false })
    }

    /// Runs `query` on a guarded read connection and hands each row to
    /// `visit` as it arrives, until the rows end or `visit` breaks: rows are
    /// never all held at once, so an answer can stop at a byte budget.
    pub(super) async fn each<T>(
        &self,
        query: sqlx::query::QueryAs<'_, Postgres, T, PgArguments>,
        mut visit: impl FnMut(T) -> ControlFlow<()>,
    ) -> Result<(), DbError>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let mut guard = self.guarded().await?;
        let Some(conn) = guard.conn.as_mut() else { return Ok(()) };
        {
            let mut rows = query.fetch(&mut **conn);
            while let Some(row) = rows.try_next().await? {
                if visit(row).is_break() {
                    break;
                }
            }
        }
        // A stop at `visit`'s word leaves at most the statement's LIMIT of
        // rows unread, which sqlx drains before the connection's next use.
        guard.finished = true;
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(conn) = self.conn.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        // The session leaves the pool now, so that nothing else runs on it
        // when the cancel arrives; it is closed once the cancel was sent.
        let session = conn.detach();
        let (admin, pid) = (self.admin.clone(), self.pid);
        runtime.spawn(async move {
            if let Err(error) = sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(&admin).await {
                tracing::debug!(%error, pid, "Could not cancel an abandoned read.");
            }
            let _ = sqlx::Connection::close(session).await;
        });
    }
}
