//! The origin copy of every sealed block and init segment, content-addressed on disk.
//!
//! Invariant: the file `blocks/<first two hex digits>/<sha256 hex>` holds exactly the
//! bytes whose SHA-256 is its name. [`BlockStore::put`] checks the digest before
//! writing and makes the file appear atomically (temporary file, fsync, rename), so
//! a reader never sees a partial block and a crash leaves at worst a stray
//! temporary file (named `.tmp-<pid>-*`, never a valid hash), which
//! [`BlockStore::remove_temporaries_of`] deletes once that process is gone.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use rand::rngs::OsRng;
use telly_proto::Sha256Hash;

#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    #[error("block {claimed} does not hash to its name (its bytes hash to {actual})")]
    HashMismatch {
        claimed: Sha256Hash,
        actual: Sha256Hash,
    },
    #[error("block store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<BlockStoreError> for io::Error {
    fn from(e: BlockStoreError) -> Self {
        match e {
            BlockStoreError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Clone, Debug)]
pub struct BlockStore {
    root: PathBuf,
}

/// Whether [`BlockStore::put`] created the file or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    Written,
    AlreadyPresent,
}

impl BlockStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path_of(&self, hash: &Sha256Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, hash: &Sha256Hash) -> bool {
        self.path_of(hash).is_file()
    }

    /// Stores `sealed` under `hash` unless a block of that name is already there.
    pub fn put(&self, hash: &Sha256Hash, sealed: &[u8]) -> Result<Put, BlockStoreError> {
        let actual = Sha256Hash::of(sealed);
        if actual != *hash {
            return Err(BlockStoreError::HashMismatch {
                claimed: *hash,
                actual,
            });
        }
        let path = self.path_of(hash);
        if path.is_file() {
            return Ok(Put::AlreadyPresent);
        }
        let shard = path.parent().expect("a block path has a shard directory");
        fs::create_dir_all(shard).map_err(io_at(shard))?;
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let temp = shard.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(suffix)
        ));
        let written = write_synced(&temp, sealed).and_then(|()| fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_at(&path)(e));
        }
        // The rename is durable only once the directory entry is.
        if let Ok(dir) = fs::File::open(shard) {
            let _ = dir.sync_all();
        }
        Ok(Put::Written)
    }

    /// Deletes the temporary files that processes for which `is_dead(pid)` holds
    /// left behind; returns how many.
    pub fn remove_temporaries_of(&self, is_dead: impl Fn(u32) -> bool) -> usize {
        let mut removed = 0;
        let Ok(shards) = fs::read_dir(&self.root) else {
            return 0;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(TEMP_PREFIX))
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok());
                if pid.is_some_and(&is_dead) && fs::remove_file(file.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes a block; a block that is already gone is not an error.
    pub fn remove(&self, hash: &Sha256Hash) -> Result<(), BlockStoreError> {
        let path = self.path_of(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&path)(e)),
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlockStoreError + '_ {
    move |source| BlockStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let bytes = b"sealed bytes".to_vec();
        let hash = Sha256Hash::of(&bytes);
        assert_eq!(store.put(&hash, &bytes).unwrap(), Put::Written);
        assert_eq!(store.put(&hash, &bytes).unwrap(), Put::AlreadyPresent);
        let path = store.path_of(&hash);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            &hash.to_hex()[..2]
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        store.remove(&hash).unwrap();
        assert!(!store.contains(&hash));
        store.remove(&hash).unwrap();
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let bytes = b"kept".to_vec();
        let hash = Sha256Hash::of(&bytes);
        store.put(&hash, &bytes).unwrap();
        let shard = store.path_of(&hash).parent().unwrap().to_owned();
        fs::write(shard.join(".tmp-77-abcd"), b"half").unwrap();
        fs::write(shard.join(".tmp-78-abcd"), b"half").unwrap();
        assert_eq!(store.remove_temporaries_of(|pid| pid == 77), 1);
        assert!(!shard.join(".tmp-77-abcd").exists());
        assert!(shard.join(".tmp-78-abcd").exists());
        assert!(store.contains(&hash));
    }

    #[test]
    fn refuses_bytes_that_do_not_match_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let hash = Sha256Hash::of(b"one thing");
        let err = store.put(&hash, b"another").unwrap_err();
        assert!(matches!(err, BlockStoreError::HashMismatch { .. }));
        assert!(!store.contains(&hash));
    }
}
