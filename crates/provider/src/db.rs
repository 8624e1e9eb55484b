//! The provider's SQLite database: opening it and migrating its schema.
//!
//! The schema version is SQLite's `user_version` pragma: version N means the first
//! N entries of [`MIGRATIONS`] have been applied. Migrations only ever get appended;
//! an applied one is never edited. docs/DATA.md describes the resulting schema.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this telly understands ({known}); upgrade telly"
    )]
    TooNew { found: u32, known: u32 },
}

/// Each entry moves the schema one version up.
const MIGRATIONS: &[&str] = &[
    // 1: catalogue, keys, accounts, sessions.
    r#"
    CREATE TABLE titles (
        id                  TEXT PRIMARY KEY NOT NULL,
        title               TEXT NOT NULL,
        synopsis            TEXT NOT NULL DEFAULT '',
        year                INTEGER,
        genre               TEXT,
        duration_ms         INTEGER NOT NULL,
        size_bytes          INTEGER NOT NULL,
        published_at        INTEGER NOT NULL,
        swarm_id            TEXT NOT NULL,
        manifest_body       TEXT NOT NULL,
        manifest_signature  TEXT NOT NULL,
        key_id              BLOB NOT NULL CHECK (length(key_id) = 16),
        content_key         BLOB NOT NULL CHECK (length(content_key) = 16),
        block_key           BLOB NOT NULL CHECK (length(block_key) = 32),
        licence_from        INTEGER,
        licence_until       INTEGER
    ) STRICT;
    CREATE INDEX titles_by_published ON titles (published_at DESC);

    CREATE TABLE title_blocks (
        sha256    TEXT NOT NULL CHECK (length(sha256) = 64),
        title_id  TEXT NOT NULL REFERENCES titles (id) ON DELETE CASCADE,
        size      INTEGER NOT NULL,
        PRIMARY KEY (sha256, title_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX title_blocks_by_title ON title_blocks (title_id);

    CREATE TABLE users (
        name           TEXT PRIMARY KEY NOT NULL,
        password_hash  TEXT NOT NULL,
        created_at     INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE sessions (
        token_sha256  BLOB PRIMARY KEY NOT NULL CHECK (length(token_sha256) = 32),
        user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);

    CREATE TABLE meta (
        key    TEXT PRIMARY KEY NOT NULL,
        value  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO meta (key, value) VALUES ('catalogue_generation', 0);
    "#,
];

/// The schema version this build writes.
pub fn schema_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Opens the database at `path` (created mode 0600 if absent: it holds title keys
/// and password hashes) and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if !path.exists() {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| DbError::Io {
                path: path.display().to_string(),
                source,
            })?;
    }
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// An in-memory database with the full schema, for tests.
pub fn open_in_memory() -> Result<Connection, DbError> {
    let mut conn = Connection::open_in_memory()?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), DbError> {
    // WAL lets `telly publish` commit while `telly serve` reads; the busy timeout
    // makes a writer wait for the other instead of failing at once.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let known = schema_version();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > known {
        return Err(DbError::TooNew { found, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tracing::info!(version = index + 1, "migrated the database schema");
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

/// Bumped in the same transaction as every change to the catalogue, so that a
/// running server can notice titles published or removed by another process.
pub fn catalogue_generation(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT value FROM meta WHERE key = 'catalogue_generation'",
        [],
        |row| row.get(0),
    )?)
}

pub(crate) fn bump_catalogue_generation(conn: &Connection) -> Result<(), DbError> {
    conn.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'catalogue_generation'",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.db");
        let conn = open(&path).unwrap();
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema_version());
        conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES ('a', 'h', 1)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "reopening must not re-run migrations");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.db");
        open(&path)
            .unwrap()
            .pragma_update(None, "user_version", schema_version() + 1)
            .unwrap();
        assert!(matches!(open(&path), Err(DbError::TooNew { .. })));
    }
}
