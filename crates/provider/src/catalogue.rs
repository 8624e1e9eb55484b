//! The catalogue: published titles, their signed manifests, their keys, and which
//! sealed blocks belong to which title. All functions work on a SQLite connection
//! (see [`crate::db`]); the caller decides which thread that runs on.
//!
//! Invariant: a row in `titles` exists only together with all of its `title_blocks`
//! rows (both are written in one transaction by [`insert`]), and its manifest's
//! blocks and init segments are exactly those rows.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use telly_proto::{
    KeyId, Manifest, Sha256Hash, SignedManifest, TitleId, TitleKeys, TitleSummary,
    signing::SignatureHex,
};

use crate::db::{self, DbError};

/// Longest title id; ids are also directory names and URL path segments.
pub const MAX_ID_LEN: usize = 64;
pub const MAX_TITLE_LEN: usize = 200;
pub const MAX_SYNOPSIS_LEN: usize = 10_000;
pub const MAX_GENRE_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(
        "{0:?} is not a usable title id: use 1 to {MAX_ID_LEN} of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    InvalidId(String),
    #[error(
        "a title with id {0:?} already exists; choose another id with --id, or remove it first"
    )]
    DuplicateId(String),
    #[error("no title with id {0:?}")]
    NotFound(String),
    #[error("invalid title metadata: {0}")]
    InvalidMetadata(String),
    #[error("the catalogue holds a corrupt row for {id}: {what}")]
    Corrupt { id: String, what: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for CatalogueError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

/// Descriptive fields a provider gives a title at publish time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TitleInfo {
    pub title: String,
    pub synopsis: String,
    pub year: Option<u16>,
    pub genre: Option<String>,
}

impl TitleInfo {
    pub fn validate(&self) -> Result<(), CatalogueError> {
        let bad = |what: &str| Err(CatalogueError::InvalidMetadata(what.into()));
        if self.title.trim().is_empty() {
            return bad("the title is empty");
        }
        if self.title.chars().count() > MAX_TITLE_LEN {
            return bad("the title is too long");
        }
        if self.synopsis.chars().count() > MAX_SYNOPSIS_LEN {
            return bad("the synopsis is too long");
        }
        if let Some(genre) = &self.genre
            && (genre.trim().is_empty() || genre.chars().count() > MAX_GENRE_LEN)
        {
            return bad("the genre is empty or too long");
        }
        Ok(())
    }
}

/// A licence window: a licence is given only from `from` until `until` (Unix
/// seconds, both optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LicenceWindow {
    pub from: Option<u64>,
    pub until: Option<u64>,
}

impl LicenceWindow {
    pub fn is_open(&self, now: u64) -> bool {
        self.from.is_none_or(|from| now >= from) && self.until.is_none_or(|until| now < until)
    }
}

/// Everything [`insert`] records about a freshly packaged title.
#[derive(Clone, Debug)]
pub struct NewTitle {
    pub info: TitleInfo,
    pub manifest: Manifest,
    pub signed: SignedManifest,
    pub keys: TitleKeys,
    pub window: LicenceWindow,
}

/// What the licence endpoints need of a title.
#[derive(Clone, Debug)]
pub struct TitleSecrets {
    pub keys: TitleKeys,
    pub window: LicenceWindow,
}

pub fn validate_id(id: &str) -> Result<(), CatalogueError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CatalogueError::InvalidId(id.chars().take(80).collect()))
    }
}

/// A title id made from a display title: lowercase ASCII letters and digits, every
/// other run of characters one '-'. Falls back to "title" when nothing is left.
pub fn slug_from_title(title: &str) -> TitleId {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if slug.len() == MAX_ID_LEN {
                break;
            }
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') && slug.len() < MAX_ID_LEN {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "title".into()
    } else {
        slug.into()
    }
}

pub fn exists(conn: &Connection, id: &str) -> Result<bool, CatalogueError> {
    Ok(conn
        .query_row("SELECT 1 FROM titles WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Records a title, its keys and its blocks in one transaction.
pub fn insert(conn: &mut Connection, new: &NewTitle) -> Result<(), CatalogueError> {
    let id = &new.manifest.title_id;
    validate_id(id)?;
    new.info.validate()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if exists(&tx, id)? {
        return Err(CatalogueError::DuplicateId(id.clone()));
    }
    tx.execute(
        "INSERT INTO titles (id, title, synopsis, year, genre, duration_ms, size_bytes,
             published_at, swarm_id, manifest_body, manifest_signature,
             key_id, content_key, block_key, licence_from, licence_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            id,
            new.info.title,
            new.info.synopsis,
            new.info.year,
            new.info.genre,
            new.manifest.duration_ms as i64,
            new.manifest.total_bytes() as i64,
            new.manifest.published_at as i64,
            new.signed.swarm_id().to_hex(),
            new.signed.body,
            new.signed.signature.0,
            &new.keys.key_id.0[..],
            &new.keys.content_key[..],
            &new.keys.block_key[..],
            new.window.from.map(|t| t as i64),
            new.window.until.map(|t| t as i64),
        ],
    )?;
    {
        let mut add = tx.prepare(
            "INSERT OR IGNORE INTO title_blocks (sha256, title_id, size) VALUES (?1, ?2, ?3)",
        )?;
        for track in &new.manifest.tracks {
            for block in std::iter::once(&track.init).chain(&track.blocks) {
                add.execute(params![block.sha256.to_hex(), id, block.size as i64])?;
            }
        }
    }
    db::bump_catalogue_generation(&tx)?;
    tx.commit()?;
    Ok(())
}

const SUMMARY_COLUMNS: &str =
    "id, title, synopsis, year, genre, duration_ms, size_bytes, published_at, swarm_id";

fn summary_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(TitleSummary, String)> {
    let id: String = row.get(0)?;
    let swarm_hex: String = row.get(8)?;
    Ok((
        TitleSummary {
            poster: poster_url(&id),
            id,
            title: row.get(1)?,
            synopsis: row.get(2)?,
            year: row.get(3)?,
            genre: row.get(4)?,
            duration_ms: row.get::<_, i64>(5)? as u64,
            size_bytes: row.get::<_, i64>(6)? as u64,
            published_at: row.get::<_, i64>(7)? as u64,
            swarm_id: Sha256Hash::default(),
        },
        swarm_hex,
    ))
}

fn finish_summary(
    (mut summary, swarm_hex): (TitleSummary, String),
) -> Result<TitleSummary, CatalogueError> {
    summary.swarm_id = swarm_hex.parse().map_err(|_| CatalogueError::Corrupt {
        id: summary.id.clone(),
        what: "swarm id".into(),
    })?;
    Ok(summary)
}

/// Where the HTTP origin serves a title's poster.
pub fn poster_url(id: &str) -> String {
    format!("/api/titles/{id}/poster.jpg")
}

/// All titles, newest first.
pub fn list(conn: &Connection) -> Result<Vec<TitleSummary>, CatalogueError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM titles ORDER BY published_at DESC, rowid DESC"
    ))?;
    let rows = stmt.query_map([], summary_from_row)?;
    rows.map(|row| finish_summary(row?)).collect()
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<TitleSummary>, CatalogueError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM titles WHERE id = ?1"
        ))?
        .query_row([id], summary_from_row)
        .optional()?;
    row.map(finish_summary).transpose()
}

pub fn signed_manifest(
    conn: &Connection,
    id: &str,
) -> Result<Option<SignedManifest>, CatalogueError> {
    Ok(conn
        .prepare_cached("SELECT manifest_body, manifest_signature FROM titles WHERE id = ?1")?
        .query_row([id], |row| {
            Ok(SignedManifest {
                body: row.get(0)?,
                signature: SignatureHex(row.get(1)?),
            })
        })
        .optional()?)
}

pub fn secrets(conn: &Connection, id: &str) -> Result<Option<TitleSecrets>, CatalogueError> {
    let row = conn
        .prepare_cached(
            "SELECT key_id, content_key, block_key, licence_from, licence_until
             FROM titles WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    let Some((key_id, content_key, block_key, from, until)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| CatalogueError::Corrupt {
        id: id.into(),
        what: what.into(),
    };
    Ok(Some(TitleSecrets {
        keys: TitleKeys {
            key_id: KeyId(key_id.try_into().map_err(|_| corrupt("key id"))?),
            content_key: content_key.try_into().map_err(|_| corrupt("content key"))?,
            block_key: block_key.try_into().map_err(|_| corrupt("block key"))?,
        },
        window: LicenceWindow {
            from: from.map(|t| t as u64),
            until: until.map(|t| t as u64),
        },
    }))
}

/// Which title each stored block belongs to. A block that two titles share (which
/// random per-title keys make practically impossible) is attributed to one of them.
pub fn block_owners(conn: &Connection) -> Result<HashMap<Sha256Hash, TitleId>, CatalogueError> {
    let mut stmt = conn.prepare("SELECT sha256, title_id FROM title_blocks")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut owners = HashMap::new();
    for row in rows {
        let (hex, title) = row?;
        let hash = hex.parse().map_err(|_| CatalogueError::Corrupt {
            id: title.clone(),
            what: format!("block hash {hex:?}"),
        })?;
        owners.insert(hash, title);
    }
    Ok(owners)
}

pub fn is_block_referenced(conn: &Connection, hash: &Sha256Hash) -> Result<bool, CatalogueError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM title_blocks WHERE sha256 = ?1 LIMIT 1")?
        .query_row([hash.to_hex()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Removes a title and returns the blocks no other title references any more;
/// the caller deletes their files (after this commit, so a crash in between
/// leaves only unreferenced files, never a title without its blocks).
pub fn remove(conn: &mut Connection, id: &str) -> Result<Vec<Sha256Hash>, CatalogueError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !exists(&tx, id)? {
        return Err(CatalogueError::NotFound(id.into()));
    }
    let hashes: Vec<String> = tx
        .prepare("SELECT sha256 FROM title_blocks WHERE title_id = ?1")?
        .query_map([id], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    tx.execute("DELETE FROM titles WHERE id = ?1", [id])?;
    let mut orphans = Vec::new();
    for hex in hashes {
        let hash: Sha256Hash = hex.parse().map_err(|_| CatalogueError::Corrupt {
            id: id.into(),
            what: format!("block hash {hex:?}"),
        })?;
        if !is_block_referenced(&tx, &hash)? {
            orphans.push(hash);
        }
    }
    db::bump_catalogue_generation(&tx)?;
    tx.commit()?;
    Ok(orphans)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use telly_proto::manifest::MANIFEST_VERSION;
    use telly_proto::{BlockEntry, Track, TrackKind};

    fn entry(bytes: &[u8], start_ms: u64, duration_ms: u64) -> BlockEntry {
        BlockEntry {
            start_ms,
            duration_ms,
            size: bytes.len() as u64,
            sha256: Sha256Hash::of(bytes),
            piece_root: telly_proto::merkle::root(bytes),
        }
    }

    /// A title whose init segment and blocks are `blocks` (all at least 28 bytes),
    /// for tests that need a catalogue without running ffmpeg.
    pub(crate) fn sample_title(
        id: &str,
        key: &SigningKey,
        blocks: &[Vec<u8>],
        published_at: u64,
    ) -> NewTitle {
        let init = entry(&blocks[0], 0, 0);
        let mut start = 0;
        let blocks = blocks[1..]
            .iter()
            .map(|b| {
                let e = entry(b, start, 2000);
                start += 2000;
                e
            })
            .collect();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            title_id: id.into(),
            title: format!("Title {id}"),
            duration_ms: start,
            key_id: KeyId([published_at as u8; 16]),
            tracks: vec![Track {
                kind: TrackKind::Video,
                codec: "avc1.64001F".into(),
                mime: "video/mp4; codecs=\"avc1.64001F\"".into(),
                bandwidth: 1_000_000,
                width: Some(320),
                height: Some(240),
                init,
                blocks,
            }],
            published_at,
        };
        NewTitle {
            info: TitleInfo {
                title: manifest.title.clone(),
                synopsis: "A test.".into(),
                year: Some(2024),
                genre: Some("Test".into()),
            },
            signed: SignedManifest::sign(&manifest, key),
            manifest,
            keys: TitleKeys {
                key_id: KeyId([published_at as u8; 16]),
                content_key: [published_at as u8 ^ 0x55; 16],
                block_key: [published_at as u8 ^ 0xAA; 32],
            },
            window: LicenceWindow::default(),
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug_from_title("The Big Test: Part 2!"),
            "the-big-test-part-2"
        );
        assert_eq!(slug_from_title("  --  "), "title");
        assert_eq!(slug_from_title("Ünïcode Ärger"), "n-code-rger");
        let long = slug_from_title(&"ab ".repeat(100));
        assert!(
            long.len() <= MAX_ID_LEN && validate_id(&long).is_ok(),
            "{long}"
        );
        for title in ["x", "Hello World", "a--b", "9"] {
            validate_id(&slug_from_title(title)).unwrap();
        }
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            "A",
            "-a",
            "a-",
            "a b",
            ".",
            &"a".repeat(65),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn insert_list_get_remove() {
        let mut conn = db::open_in_memory().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let shared = vec![1u8; 64];
        let a = sample_title("a", &key, &[vec![2; 40], shared.clone(), vec![3; 50]], 100);
        let b = sample_title("b", &key, &[vec![4; 40], shared.clone()], 200);
        let gen0 = db::catalogue_generation(&conn).unwrap();
        insert(&mut conn, &a).unwrap();
        insert(&mut conn, &b).unwrap();
        assert_eq!(db::catalogue_generation(&conn).unwrap(), gen0 + 2);
        let ids: Vec<_> = list(&conn).unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["b", "a"], "newest first");
        let got = get(&conn, "a").unwrap().unwrap();
        assert_eq!(got.swarm_id, a.signed.swarm_id());
        assert_eq!(got.size_bytes, a.manifest.total_bytes());
        assert_eq!(got.poster, "/api/titles/a/poster.jpg");
        assert_eq!(signed_manifest(&conn, "a").unwrap().unwrap(), a.signed);
        assert_eq!(secrets(&conn, "b").unwrap().unwrap().keys, b.keys);
        assert!(get(&conn, "zzz").unwrap().is_none());

        let dup = insert(&mut conn, &a).unwrap_err();
        assert!(matches!(dup, CatalogueError::DuplicateId(_)), "{dup}");

        let owners = block_owners(&conn).unwrap();
        assert_eq!(owners.len(), 4);
        assert_eq!(owners[&Sha256Hash::of(&[3; 50])], "a");

        let orphans = remove(&mut conn, "a").unwrap();
        assert_eq!(orphans.len(), 2, "the block b shares must stay");
        assert!(!orphans.contains(&Sha256Hash::of(&shared)));
        assert!(is_block_referenced(&conn, &Sha256Hash::of(&shared)).unwrap());
        assert!(matches!(
            remove(&mut conn, "a"),
            Err(CatalogueError::NotFound(_))
        ));
    }

    #[test]
    fn licence_windows() {
        let open = LicenceWindow::default();
        assert!(open.is_open(0));
        let w = LicenceWindow {
            from: Some(10),
            until: Some(20),
        };
        assert!(!w.is_open(9));
        assert!(w.is_open(10));
        assert!(!w.is_open(20));
    }
}
