//! `telly publish`: a video file becomes a title in the catalogue.
//!
//! Invariant: publishing either completes (blocks on disk, poster in the title's
//! directory, title and keys committed to the catalogue) or leaves nothing behind:
//! on any failure the blocks this run wrote that no title references are deleted,
//! the title directory it created is removed, and no row is committed. The catalogue
//! row is the commit point: it is written last, in one transaction. A run that is
//! killed cannot clean up itself; its journal lets the next run do it
//! ([`crate::journal`]).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::Connection;
use telly_media::package::{self, BlockSink, MediaError, PackageOptions, Progress};
use telly_proto::manifest::MANIFEST_VERSION;
use telly_proto::{
    KeyId, Manifest, ManifestError, ProviderPublicKey, Sha256Hash, SignedManifest, TitleKeys,
};

use crate::blocks::{BlockStore, BlockStoreError, Put};
use crate::catalogue::{self, CatalogueError, LicenceWindow, NewTitle, TitleInfo};
use crate::data_dir::{DataDir, DataDirError};
use crate::db::{self, DbError};
use crate::journal::{self, PublishJournal, WORK_PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}: no such file")]
    NoSuchInput(PathBuf),
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("the packaged title is inconsistent: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the packager listed block {0} in the manifest but never stored it")]
    MissingBlock(Sha256Hash),
    #[error(transparent)]
    Store(#[from] BlockStoreError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Debug, Default)]
pub struct PublishRequest {
    pub input: PathBuf,
    /// The title id; made from the title when absent.
    pub id: Option<String>,
    pub info: TitleInfo,
    pub window: LicenceWindow,
    pub options: PackageOptions,
}

#[derive(Clone, Debug)]
pub struct Published {
    pub id: String,
    pub manifest: Manifest,
    pub signed: SignedManifest,
    /// Blocks this run added to the store (the rest were already there).
    pub blocks_written: usize,
    pub transcode_ms: u64,
    pub package_ms: u64,
    pub total_ms: u64,
}

/// Publishes `request.input` into the data directory. See the module's invariant.
pub fn publish(
    data: &DataDir,
    request: &PublishRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<Published, PublishError> {
    let started = Instant::now();
    request.info.validate()?;
    let id = match &request.id {
        Some(id) => id.clone(),
        None => catalogue::slug_from_title(&request.info.title),
    };
    catalogue::validate_id(&id)?;
    let mut conn = db::open(&data.database_path())?;
    journal::recover(data, &conn)?;
    // Checked again inside the inserting transaction; this early check only spares
    // a long transcode that could not be recorded.
    if catalogue::exists(&conn, &id)? {
        return Err(CatalogueError::DuplicateId(id).into());
    }
    match fs::metadata(&request.input) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PublishError::NoSuchInput(request.input.clone()));
        }
        Err(source) => {
            return Err(PublishError::Io {
                path: request.input.clone(),
                source,
            });
        }
        Ok(meta) if !meta.is_file() => return Err(PublishError::NotAFile(request.input.clone())),
        Ok(_) => {}
    }
    let signing_key = data.provider_key()?;
    let keys = new_title_keys();

    let journal = PublishJournal::create(data, &id).map_err(|source| PublishError::Io {
        path: data.tmp_dir(),
        source,
    })?;
    let mut sink = RecordingSink {
        store: BlockStore::new(data.blocks_dir()),
        journal,
        written: Vec::new(),
        seen: HashSet::new(),
    };
    let mut created_title_dir = None;
    let outcome = (|| {
        let work_dir = tempfile::Builder::new()
            .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
            .tempdir_in(data.tmp_dir())
            .map_err(|source| PublishError::Io {
                path: data.tmp_dir(),
                source,
            })?;
        let packaged = package::package(
            &request.input,
            work_dir.path(),
            &keys,
            &request.options,
            &mut sink,
            progress,
        )?;
        drop(work_dir);

        let manifest = Manifest {
            version: MANIFEST_VERSION,
            title_id: id.clone(),
            title: request.info.title.clone(),
            duration_ms: packaged.duration_ms,
            key_id: keys.key_id,
            tracks: packaged.tracks,
            published_at: crate::unix_now(),
        };
        manifest.validate()?;
        for track in &manifest.tracks {
            for block in std::iter::once(&track.init).chain(&track.blocks) {
                if !sink.seen.contains(&block.sha256) && !sink.store.contains(&block.sha256) {
                    return Err(PublishError::MissingBlock(block.sha256));
                }
            }
        }
        let signed = SignedManifest::sign(&manifest, &signing_key);
        signed.verify(&ProviderPublicKey(signing_key.verifying_key()))?;

        let title_dir = data.title_dir(&id);
        // No catalogue row has this id, so a directory of that name is debris of an
        // earlier run that died before committing.
        if title_dir.exists() {
            fs::remove_dir_all(&title_dir).map_err(io_at(&title_dir))?;
        }
        fs::create_dir_all(&title_dir).map_err(io_at(&title_dir))?;
        created_title_dir = Some(title_dir);
        let poster = data.poster_path(&id);
        fs::write(&poster, &packaged.poster_jpeg).map_err(io_at(&poster))?;

        catalogue::insert(
            &mut conn,
            &NewTitle {
                info: request.info.clone(),
                manifest: manifest.clone(),
                signed: signed.clone(),
                keys: keys.clone(),
                window: request.window,
            },
        )?;
        Ok(Published {
            id: id.clone(),
            manifest,
            signed,
            blocks_written: sink.written.len(),
            transcode_ms: packaged.transcode_ms,
            package_ms: packaged.package_ms,
            total_ms: started.elapsed().as_millis() as u64,
        })
    })();

    if outcome.is_err() {
        roll_back(&conn, &sink, created_title_dir.as_deref());
    }
    sink.journal.finish();
    outcome
}

/// Undoes what a failed run wrote. Best effort: a failure here is logged, and the
/// error that made the run fail is the one reported.
fn roll_back(conn: &Connection, sink: &RecordingSink, title_dir: Option<&Path>) {
    for hash in &sink.written {
        match catalogue::is_block_referenced(conn, hash) {
            Ok(false) => {
                if let Err(e) = sink.store.remove(hash) {
                    tracing::warn!(block = %hash, error = %e, "could not remove a block of a failed publish");
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(block = %hash, error = %e, "kept a block: could not check its references")
            }
        }
    }
    if let Some(dir) = title_dir
        && let Err(e) = fs::remove_dir_all(dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the title directory of a failed publish");
    }
}

/// Removes a published title: its catalogue rows, then the blocks no other title
/// uses, then its directory. Returns how many blocks were deleted.
pub fn remove_title(data: &DataDir, id: &str) -> Result<usize, PublishError> {
    catalogue::validate_id(id)?;
    let mut conn = db::open(&data.database_path())?;
    journal::recover(data, &conn)?;
    let orphans = catalogue::remove(&mut conn, id)?;
    let store = BlockStore::new(data.blocks_dir());
    for hash in &orphans {
        store.remove(hash)?;
    }
    let dir = data.title_dir(id);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(PublishError::Io { path: dir, source }),
    }
    Ok(orphans.len())
}

fn new_title_keys() -> TitleKeys {
    let mut keys = TitleKeys {
        key_id: KeyId([0; 16]),
        content_key: [0; 16],
        block_key: [0; 32],
    };
    OsRng.fill_bytes(&mut keys.key_id.0);
    OsRng.fill_bytes(&mut keys.content_key);
    OsRng.fill_bytes(&mut keys.block_key);
    keys
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Stores blocks and remembers which ones this run created, for the roll-back
/// (and, should this process die, in the journal for [`journal::recover`]).
struct RecordingSink {
    store: BlockStore,
    journal: PublishJournal,
    written: Vec<Sha256Hash>,
    seen: HashSet<Sha256Hash>,
}

impl BlockSink for RecordingSink {
    fn put(&mut self, sha256: &Sha256Hash, sealed: &[u8]) -> io::Result<()> {
        self.journal.record_block(sha256)?;
        if self.store.put(sha256, sealed)? == Put::Written {
            self.written.push(*sha256);
        }
        self.seen.insert(*sha256);
        Ok(())
    }
}
