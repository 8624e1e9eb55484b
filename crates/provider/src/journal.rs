//! A publish run's journal, so that even a run that is killed (Ctrl-C, SIGKILL, a
//! crash) leaves nothing half-published for long.
//!
//! A run writes `tmp/publish-<pid>-<random>.journal` before it stores anything:
//! its process id, its title id, then each block's hash *before* the block is
//! stored. A run that ends, well or badly, deletes its journal after cleaning up.
//! A journal whose process no longer exists therefore belongs to a run that died;
//! [`recover`] undoes such a run: it deletes the listed blocks no title references,
//! the title directory if the catalogue has no such title, the run's scratch
//! directory, temporary block files of dead processes, and the journal.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::Connection;
use telly_proto::Sha256Hash;

use crate::blocks::BlockStore;
use crate::catalogue::{self, CatalogueError};
use crate::data_dir::DataDir;

const JOURNAL_PREFIX: &str = "publish-";
const JOURNAL_SUFFIX: &str = ".journal";
/// Scratch directories of a run are named `work-<pid>-...`.
pub const WORK_PREFIX: &str = "work-";

#[derive(Debug)]
pub struct PublishJournal {
    path: PathBuf,
    file: fs::File,
}

impl PublishJournal {
    pub fn create(data: &DataDir, title_id: &str) -> io::Result<Self> {
        let mut suffix = [0u8; 6];
        OsRng.fill_bytes(&mut suffix);
        let path = data.tmp_dir().join(format!(
            "{JOURNAL_PREFIX}{}-{}{JOURNAL_SUFFIX}",
            std::process::id(),
            hex::encode(suffix)
        ));
        let mut file = fs::File::create_new(&path)?;
        writeln!(file, "title {title_id}")?;
        file.sync_data()?;
        Ok(Self { path, file })
    }

    /// Called before the block is stored, so a crash in between leaves at worst
    /// an entry for a block that does not exist.
    pub fn record_block(&mut self, hash: &Sha256Hash) -> io::Result<()> {
        writeln!(self.file, "block {hash}")
    }

    /// The run is over and cleaned up (committed, or rolled back).
    pub fn finish(self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a publish journal");
        }
    }
}

/// What [`recover`] cleaned up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub runs: usize,
    pub blocks: usize,
}

/// Undoes every publish run whose process has died. Runs still alive are left alone.
pub fn recover(data: &DataDir, conn: &Connection) -> Result<Recovered, CatalogueError> {
    let mut recovered = Recovered::default();
    let Ok(entries) = fs::read_dir(data.tmp_dir()) else {
        return Ok(recovered);
    };
    let store = BlockStore::new(data.blocks_dir());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(rest) = name.strip_prefix(WORK_PREFIX) {
            if owner_is_dead(rest) {
                let _ = fs::remove_dir_all(&path);
            }
            continue;
        }
        let Some(rest) = name.strip_prefix(JOURNAL_PREFIX) else {
            continue;
        };
        if !name.ends_with(JOURNAL_SUFFIX) || !owner_is_dead(rest) {
            continue;
        }
        recovered.blocks += undo_run(data, conn, &store, &path)?;
        recovered.runs += 1;
        let _ = fs::remove_file(&path);
    }
    if recovered.runs > 0 {
        // A dead run may also have died while writing a block.
        store.remove_temporaries_of(pid_is_dead);
        tracing::info!(
            runs = recovered.runs,
            blocks = recovered.blocks,
            "cleaned up after interrupted publish runs"
        );
    }
    Ok(recovered)
}

fn undo_run(
    data: &DataDir,
    conn: &Connection,
    store: &BlockStore,
    journal: &Path,
) -> Result<usize, CatalogueError> {
    let text = fs::read_to_string(journal).unwrap_or_default();
    let mut removed = 0;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("title ") {
            if catalogue::validate_id(id).is_ok() && !catalogue::exists(conn, id)? {
                let _ = fs::remove_dir_all(data.title_dir(id));
            }
        } else if let Some(hash) = line
            .strip_prefix("block ")
            .and_then(|h| h.parse::<Sha256Hash>().ok())
            && store.contains(&hash)
            && !catalogue::is_block_referenced(conn, &hash)?
            && store.remove(&hash).is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// `rest` starts with `<pid>-`; the owner is dead when no such process exists.
/// A reused pid only delays the clean-up; it never removes a live run's files.
fn owner_is_dead(rest: &str) -> bool {
    rest.split('-')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(pid_is_dead)
}

fn pid_is_dead(pid: u32) -> bool {
    pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    #[test]
    fn a_dead_runs_leftovers_are_removed_and_a_live_runs_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let conn = db::open(&data.database_path()).unwrap();
        let store = BlockStore::new(data.blocks_dir());
        let orphan = b"orphan block".to_vec();
        let orphan_hash = Sha256Hash::of(&orphan);
        store.put(&orphan_hash, &orphan).unwrap();
        fs::create_dir_all(data.title_dir("half")).unwrap();
        fs::write(data.poster_path("half"), b"jpeg").unwrap();
        // No process has a pid this large (Linux caps pids at 2^22).
        let dead = 4_000_000_000u32;
        let journal = data.tmp_dir().join(format!("publish-{dead}-abc.journal"));
        let missing = Sha256Hash::of(b"never stored");
        fs::write(
            &journal,
            format!("title half\nblock {orphan_hash}\nblock {missing}\nblock junk\n"),
        )
        .unwrap();
        let work = data.tmp_dir().join(format!("work-{dead}-xyz"));
        fs::create_dir_all(work.join("inner")).unwrap();

        // A run of this (live) process is left alone.
        let mut live = PublishJournal::create(&data, "live").unwrap();
        let live_block = b"live block".to_vec();
        live.record_block(&Sha256Hash::of(&live_block)).unwrap();
        store
            .put(&Sha256Hash::of(&live_block), &live_block)
            .unwrap();

        let recovered = recover(&data, &conn).unwrap();
        assert_eq!(recovered, Recovered { runs: 1, blocks: 1 });
        assert!(!store.contains(&orphan_hash));
        assert!(!data.title_dir("half").exists());
        assert!(!journal.exists());
        assert!(!work.exists());
        assert!(store.contains(&Sha256Hash::of(&live_block)));
        assert!(live.path.exists());
        live.finish();
        assert_eq!(fs::read_dir(data.tmp_dir()).unwrap().count(), 0);
        assert_eq!(recover(&data, &conn).unwrap(), Recovered::default());
    }
}
