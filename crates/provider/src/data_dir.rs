//! The provider's data directory: where everything `publish` writes and `serve`
//! reads lives (layout in docs/DATA.md), and the provider's Ed25519 identity.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use rand::rngs::OsRng;
use telly_proto::ProviderPublicKey;

/// Used when neither `--data-dir` nor `TELLY_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "telly-data";
pub const DATA_DIR_ENV: &str = "TELLY_DATA_DIR";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a provider key (expected 64 hex characters)")]
    BadKey(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Paths inside one data directory. Creating it creates the directories.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (and creates, if need be) the data directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let dir = Self { root: root.into() };
        for path in [
            dir.root.clone(),
            dir.blocks_dir(),
            dir.titles_dir(),
            dir.tmp_dir(),
        ] {
            fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join("telly.db")
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("provider.key")
    }

    pub fn blocks_dir(&self) -> PathBuf {
        self.root.join("blocks")
    }

    pub fn titles_dir(&self) -> PathBuf {
        self.root.join("titles")
    }

    /// A title's own files (its poster). `id` must already be a valid title id.
    pub fn title_dir(&self, id: &str) -> PathBuf {
        self.titles_dir().join(id)
    }

    pub fn poster_path(&self, id: &str) -> PathBuf {
        self.title_dir(id).join("poster.jpg")
    }

    /// Scratch space (publish work directories); on the same file system as the
    /// blocks so that nothing large crosses devices.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The provider's signing key, created on first use.
    ///
    /// The key file holds the 32-byte Ed25519 seed as hex and is mode 0600. It is
    /// created under a temporary name and hard-linked into place, so two processes
    /// starting at once agree on one key and no reader ever sees a half-written file.
    pub fn provider_key(&self) -> Result<SigningKey, DataDirError> {
        let path = self.key_path();
        match read_key(&path) {
            Ok(key) => return Ok(key),
            Err(DataDirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let temp = self
            .tmp_dir()
            .join(format!("provider.key.{}", hex::encode(suffix)));
        {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)
                .map_err(io_at(&temp))?;
            writeln!(file, "{}", hex::encode(seed)).map_err(io_at(&temp))?;
            file.sync_all().map_err(io_at(&temp))?;
        }
        let linked = fs::hard_link(&temp, &path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created the provider's signing key");
                Ok(SigningKey::from_bytes(&seed))
            }
            // Another process won the race: its key is the key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key(&path),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    pub fn provider_public_key(&self) -> Result<ProviderPublicKey, DataDirError> {
        Ok(ProviderPublicKey(self.provider_key()?.verifying_key()))
    }
}

fn read_key(path: &Path) -> Result<SigningKey, DataDirError> {
    let text = fs::read_to_string(path).map_err(io_at(path))?;
    let mode = fs::metadata(path)
        .map_err(io_at(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
            "the provider key is readable by others; chmod 600 it");
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| DataDirError::BadKey(path.into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The data directory `--data-dir` names, else `$TELLY_DATA_DIR`, else `./telly-data`.
pub fn resolve(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_private_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path().join("d")).unwrap();
        let first = dir.provider_key().unwrap();
        let mode = fs::metadata(dir.key_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = DataDir::open(tmp.path().join("d"))
            .unwrap()
            .provider_key()
            .unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        assert_eq!(fs::read_dir(dir.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_key_is_an_error_not_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        fs::write(dir.key_path(), "not hex at all").unwrap();
        assert!(matches!(dir.provider_key(), Err(DataDirError::BadKey(_))));
        assert_eq!(
            fs::read_to_string(dir.key_path()).unwrap(),
            "not hex at all"
        );
    }
}
