//! Hangar's records: the database behind the catalogue.
//!
//! This is the only crate that contains SQL. SQLite (a file in the data directory) is the embedded
//! default; the pool is shared with the session store so that one file holds all state.
#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

mod accounts;
#[doc(hidden)]
pub mod bench;
mod catalogue;
mod images;
mod jobs;
mod listing;
mod locations;
mod matrix;
mod members;
mod quota;
mod uploads;

/// The unit tests' database (a fresh SQLite file, migrated, in a directory removed on drop) and
/// the image helpers the catalogue and listing tests share.
#[cfg(test)]
mod test_db {
    use crate::{Db, ImageQuery, NewImage, Visible, MAX_LIST_LIMIT};

    pub(crate) async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.expect("open");
        (dir, db)
    }

    /// A new image named `name`, owned by `owner`, with `visibility`; its id.
    pub(crate) async fn image(db: &Db, name: &str, owner: Option<&str>, visibility: &str) -> String {
        let new = NewImage {
            name: name.into(),
            owner: owner.map(str::to_owned),
            visibility: Some(visibility.parse().unwrap()),
            ..Default::default()
        };
        db.create_image(&new).await.unwrap().id
    }

    /// Test set-up only: sets columns the public API does not write.
    pub(crate) async fn set(db: &Db, id: &str, assignments: &str) {
        let sql = format!("UPDATE images SET {assignments} WHERE id = ?");
        sqlx::query(&sql).bind(id).execute(db.pool()).await.unwrap();
    }

    /// The names `query` lists for `visible`, sorted (one page of the largest size).
    pub(crate) async fn list(db: &Db, query: &ImageQuery, visible: Visible<'_>) -> Vec<String> {
        let mut query = query.clone();
        query.limit = Some(MAX_LIST_LIMIT);
        let mut names: Vec<String> = db.query_images(&query, visible).await.unwrap().images.into_iter().map(|i| i.name).collect();
        names.sort();
        names
    }

    /// The query that filters nothing.
    pub(crate) fn q() -> ImageQuery {
        ImageQuery::default()
    }
}

pub use accounts::{AuditFilter, AuditRow, NewAudit, ProjectRow, QuotaRow, RoleRow, TokenRow, UserRow, MAX_AUDIT_PAGE};
#[allow(unused_imports)]
pub use catalogue::*;
pub use images::{ActiveImage, ImageIngestRow, ImageRow, NewImage, Visible};
pub use jobs::*;
pub use listing::*;
pub use locations::*;
pub use matrix::*;
pub use members::{MemberAdded, MemberRow};
pub use quota::{HoldRefused, QuotaUsage};
pub use uploads::{FinalCreated, NewUpload, UploadRow, UploadUsage, CONCAT_FINAL, CONCAT_NONE, CONCAT_PARTIAL};

/// Errors of the records layer. The web layer maps them to what users see.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened or migrated: the server cannot start.
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed (for example a database from a newer Hangar).
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database failure; logged in full, shown to users as an internal error.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Creating an image would take its project past its image-count quota (checked in the
    /// same statement as the insert, so parallel creates cannot overshoot it).
    #[error("the project already holds its quota of {max} images")]
    ImageQuota { max: i64 },
    /// A stored value is not one the schema's users know (a visibility, a status): reported,
    /// never quietly read as something else.
    #[error("a stored value is not valid: {0}")]
    Corrupt(String),
}

impl DbError {
    /// True when a UNIQUE constraint refused the write (e.g. a taken username or project name).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// True when the database could not write because its disk (or disk quota) is full:
    /// SQLite's SQLITE_FULL (13), or the I/O error under it. Callers answer 507, not 500.
    pub fn is_disk_full(&self) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|c| c == "13" || c.parse::<i32>().is_ok_and(|n| n & 0xff == 13))
                    || e.message().contains("disk is full")
            }
            DbError::Sqlx(sqlx::Error::Io(e)) => matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded),
            _ => false,
        }
    }
}

/// How long a writer waits for SQLite's write lock before giving up. Requests are short, so
/// five seconds means something is badly stuck rather than merely busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool. SQLite serialises writers anyway; readers in WAL mode run in
/// parallel, and a handful covers a 2-core server without holding many file descriptors.
const MAX_CONNECTIONS: u32 = 8;

/// The database handle: a connection pool plus the queries Hangar runs.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and applies the
    /// embedded migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; a power loss can lose the
            // last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        Self::connect(options, &path.display().to_string()).await
    }

    /// Opens a database from a `sqlite:` URL (used by tests and by `HANGAR_DATABASE_URL`).
    pub async fn open_url(url: &str) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| DbError::Open { path: url.to_owned(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        Self::connect(options, url).await
    }

    async fn connect(options: SqliteConnectOptions, label: &str) -> Result<Self, DbError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open { path: label.to_owned(), source })?;
        sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
        tracing::debug!(database = label, "database opened and migrated");
        Ok(Self { pool })
    }

    /// The pool, for the session store, which keeps its table in the same database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Checks that the database answers; used by `/healthz`.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
