//! Which schema the host's tables live in, chosen once per process and the
//! same on every start.
//!
//! A database that already holds the original service's `notifications`
//! table (the cut-over case) cannot take the host's table of the same name:
//! migration 0001 would collide with it. The host then keeps its tables in a
//! schema of its own, [`HOST_SCHEMA`], and leaves the original's tables as
//! they are. In order:
//!
//! 1. `DATABASE_SCHEMA`, when set (created if missing);
//! 2. [`HOST_SCHEMA`], when it already holds the host's migrations (so the
//!    choice never changes once made, even after the old tables are gone);
//! 3. [`HOST_SCHEMA`], when the `notifications` table the session would
//!    find is not the host's (the original's, or another application's);
//! 4. otherwise the session's own search path, untouched: every existing
//!    deployment keeps its tables where they are (`public`, or whatever its
//!    role's `search_path` says).
//!
//! The choice is made on the first connection any pool opens, and every
//! connection of every pool then sets its `search_path` to it (cases 1–3)
//! before it is handed out, so no query anywhere needs a schema name.

use std::fmt;
use std::sync::Arc;

use sqlx::PgConnection;
use tokio::sync::OnceCell;

use super::DbError;

/// The schema the host creates for itself beside another application's
/// `notifications` table.
pub const HOST_SCHEMA: &str = "notification_host";

/// The schema the host's tables are in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The schema's name (for the session default, what `current_schema()`
    /// answered; empty when the search path names no existing schema).
    pub name: String,
    pub reason: SchemaReason,
    /// The schema of the original service's `notifications` table, when the
    /// session finds one (the host's tables are then beside it).
    pub original: Option<String>,
}

/// Why a schema was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaReason {
    /// `DATABASE_SCHEMA` names it.
    Configured,
    /// It already holds the host's migrations.
    HoldsMigrations,
    /// The session's `notifications` table is the original service's
    /// (`notification_id varchar(36)`), in this schema.
    BesideOriginal { schema: String },
    /// The session's `notifications` table is some other application's.
    BesideForeign { schema: String, id_type: Option<String> },
    /// Nothing stands in the way: the session's own search path.
    SessionDefault,
    /// A pool made elsewhere ([`super::Db::from_pool`]): its connections'
    /// search path, as they set it.
    Unmanaged,
}

impl Schema {
    /// Whether the host sets `search_path` itself (and creates the schema).
    pub fn is_own(&self) -> bool {
        !matches!(self.reason, SchemaReason::SessionDefault | SchemaReason::Unmanaged)
    }
}

impl fmt::Display for SchemaReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaReason::Configured => write!(f, "set by DATABASE_SCHEMA"),
            SchemaReason::HoldsMigrations => write!(f, "it holds the host's migrations"),
            SchemaReason::BesideOriginal { schema } => write!(
                f,
                "{schema}.notifications is the original service's table, which the host leaves untouched; \
                 `notification-host import-legacy` imports its rows"
            ),
            SchemaReason::BesideForeign { schema, id_type } => write!(
                f,
                "{schema}.notifications belongs to another application, its notification_id being {}; the host \
                 leaves it untouched",
                id_type.as_deref().unwrap_or("missing")
            ),
            SchemaReason::SessionDefault => write!(f, "the session's search path"),
            SchemaReason::Unmanaged => write!(f, "the pool's own search path"),
        }
    }
}

impl Schema {
    /// Why, with what stands beside it.
    pub fn why(&self) -> String {
        match &self.original {
            Some(schema) if !matches!(self.reason, SchemaReason::BesideOriginal { .. }) => {
                format!("{}; the original service's tables in {schema} stay untouched", self.reason)
            }
            _ => self.reason.to_string(),
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() { "(none)" } else { &self.name };
        write!(f, "{name}: {}", self.why())
    }
}

/// The choice, shared by every pool of one [`super::Db`].
#[derive(Debug, Default)]
pub(super) struct SchemaCell {
    /// `DATABASE_SCHEMA`, when set.
    configured: Option<String>,
    /// Whether the pools are the host's own (not [`super::Db::from_pool`]).
    managed: bool,
    chosen: OnceCell<Schema>,
}

impl SchemaCell {
    pub(super) fn managed(configured: Option<String>) -> Arc<SchemaCell> {
        Arc::new(SchemaCell { configured, managed: true, chosen: OnceCell::new() })
    }

    pub(super) fn unmanaged() -> Arc<SchemaCell> {
        Arc::new(SchemaCell::default())
    }

    /// What every new connection runs before any pool hands it out: the
    /// choice (made on this connection if it is the first), then the
    /// search path.
    pub(super) async fn prepare(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.managed {
            return Ok(());
        }
        let schema = self
            .chosen
            .get_or_try_init(|| async {
                let schema = choose(conn, self.configured.as_deref()).await?;
                tracing::info!(schema = %schema.name, reason = %schema.why(), "Chose the schema of the host's tables.");
                Ok::<_, sqlx::Error>(schema)
            })
            .await?;
        if schema.is_own() {
            sqlx::query("SELECT set_config('search_path', $1, false)")
                .bind(search_path_of(&schema.name))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// The choice, once a connection has made it.
    pub(super) fn chosen(&self) -> Option<&Schema> {
        self.chosen.get()
    }

    pub(super) fn is_managed(&self) -> bool {
        self.managed
    }
}

/// Looks at the database as the session finds it (its own search path,
/// before the host changes it) and chooses.
async fn choose(conn: &mut PgConnection, configured: Option<&str>) -> Result<Schema, sqlx::Error> {
    let configured = configured.map(str::to_owned);
    #[derive(sqlx::FromRow)]
    struct Found {
        host_schema_migrated: bool,
        default_schema: Option<String>,
        table_schema: Option<String>,
        id_type: Option<String>,
    }
    // Names in the catalogue are compared, never interpolated.
    let found: Found = sqlx::query_as(
        "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL AS host_schema_migrated, \
         current_schema()::text AS default_schema, n.nspname::text AS table_schema, \
         (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
          WHERE a.attrelid = c.oid AND a.attname = 'notification_id' AND NOT a.attisdropped) AS id_type \
         FROM (SELECT to_regclass('notifications') AS oid) t \
         LEFT JOIN pg_class c ON c.oid = t.oid LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
    )
    .bind(HOST_SCHEMA)
    .fetch_one(&mut *conn)
    .await?;
    let original = found.table_schema.clone().filter(|_| found.id_type.as_deref() == Some(ORIGINAL_ID_TYPE));
    let mut schema = match configured {
        Some(name) => Schema { name, reason: SchemaReason::Configured, original: None },
        None => decide(found.host_schema_migrated, found.default_schema, found.table_schema, found.id_type),
    };
    schema.original = original.filter(|o| *o != schema.name);
    Ok(schema)
}

/// The type of the original service's `notification_id`.
const ORIGINAL_ID_TYPE: &str = "character varying(36)";

/// The rules of the module documentation, on what [`choose`] found.
fn decide(
    host_schema_migrated: bool,
    default_schema: Option<String>,
    table_schema: Option<String>,
    id_type: Option<String>,
) -> Schema {
    let own = |reason| Schema { name: HOST_SCHEMA.to_owned(), reason, original: None };
    if host_schema_migrated {
        return own(SchemaReason::HoldsMigrations);
    }
    if let Some(schema) = table_schema {
        // The host's notification_id is a bigint from a sequence; anything
        // else is a table the host must not touch.
        match id_type.as_deref() {
            Some("bigint") => {}
            Some(ORIGINAL_ID_TYPE) => return own(SchemaReason::BesideOriginal { schema }),
            _ => return own(SchemaReason::BesideForeign { schema, id_type }),
        }
    }
    Schema { name: default_schema.unwrap_or_default(), reason: SchemaReason::SessionDefault, original: None }
}

/// `name` as the whole search path: as it is when it needs no quotes (so
/// that `SHOW search_path` reads plainly), quoted otherwise.
fn search_path_of(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain { name.to_owned() } else { quote_identifier(name) }
}

/// `name` as a quoted SQL identifier.
pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl super::Db {
    /// The schema the host's tables are in, and why (connecting first if no
    /// connection has chosen yet).
    pub async fn schema(&self) -> Result<Schema, DbError> {
        let mut conn = self.admin.acquire().await?;
        if let Some(schema) = self.schema.chosen() {
            return Ok(schema.clone());
        }
        let name: Option<String> = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(&mut *conn).await?;
        Ok(Schema { name: name.unwrap_or_default(), reason: SchemaReason::Unmanaged, original: None })
    }

    /// Creates the host's own schema when it is the chosen one and does not
    /// exist yet (before the migrations, which create their tables in it).
    /// An advisory lock keeps replicas starting together from racing.
    pub(super) async fn create_own_schema(&self) -> Result<(), DbError> {
        if !self.schema.is_managed() {
            return Ok(());
        }
        let mut tx = self.admin.begin().await?;
        let Some(schema) = self.schema.chosen().filter(|s| s.is_own()) else {
            return Ok(());
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notification_host_schema'))").execute(&mut *tx).await?;
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(&schema.name));
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_in_order() {
        let public = || Some("public".to_owned());
        // A fresh database, and an existing deployment: the session's path.
        assert_eq!(decide(false, public(), None, None).reason, SchemaReason::SessionDefault);
        let existing = decide(false, public(), public(), Some("bigint".into()));
        assert_eq!((existing.name.as_str(), existing.reason), ("public", SchemaReason::SessionDefault));
        // The original's table: a schema of the host's own.
        let beside = decide(false, public(), public(), Some("character varying(36)".into()));
        assert_eq!(beside.name, HOST_SCHEMA);
        assert!(matches!(beside.reason, SchemaReason::BesideOriginal { .. }));
        assert!(matches!(
            decide(false, public(), public(), Some("uuid".into())).reason,
            SchemaReason::BesideForeign { .. }
        ));
        assert!(matches!(decide(false, public(), public(), None).reason, SchemaReason::BesideForeign { .. }));
        // Once migrated there, always there.
        assert_eq!(decide(true, public(), None, None).reason, SchemaReason::HoldsMigrations);
        assert_eq!(decide(true, public(), public(), Some("bigint".into())).name, HOST_SCHEMA);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("notification_host"), "\"notification_host\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(search_path_of("notification_host"), "notification_host");
        assert_eq!(search_path_of("Audit Log"), "\"Audit Log\"");
    }
}
