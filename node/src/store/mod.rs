//! What a node keeps on disk, in its data directory.
//!
//! - `identity.key`: the node's ed25519 key (libp2p protobuf encoding), made
//!   on first start and kept, so the node's peer id survives restarts;
//! - `api.token`: the local API's token ([`crate::api::token`]), made on
//!   first start (mode 0600) and kept; the CLI on this host reads it;
//! - `node.lock`: held (an advisory file lock) while a node runs, so two
//!   nodes never share one directory and with it one peer id.
//!
//! - `modules/<sha256>.wasm`: scenario modules by hash ([`modules`]; used by
//!   distributed runs, which come next).
//!
//! - `runs/<run id>/`: each run's record and shards ([`runs`]).
//! - `local-runs/<run id>/`: the same for runs on this machine (`fusi-node
//!   run --local`), the newest [`crate::local::KEEP_LOCAL_RUNS`] of them.
//!
//! Every file is written by [`write_durably`]: a temporary file beside it,
//! fsynced, renamed over it, and the directory fsynced, so a crash or a
//! power cut leaves the old file or the new one, whole, never an empty or
//! torn one. What a node finds damaged at start anyway is moved aside and
//! named in its log ([`runs::RunStore::load`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::api::token::{ApiToken, TOKEN_FILE};

mod boot;
pub mod modules;
pub mod runs;

/// A failure to use the data directory, with the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or a file in it could not be made, read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "another fusi-node is using the data directory {0}; stop it, or give this node its own --data-dir"
    )]
    Locked(PathBuf),
    /// More bytes than a stored thing may have.
    #[error("{what} of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name that cannot be a stored thing's.
    #[error(transparent)]
    BadName(#[from] crate::core::module_name::BadModuleName),
    /// A stored file that is not what it should be (empty, torn, too
    /// large, not decodable).
    #[error("cannot read {path}: {why}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A stored file whose bytes no longer match its hash.
    #[error("{0} does not match its hash: the file was changed or damaged; remove it")]
    Corrupt(PathBuf),
    /// The identity file exists but is not a key.
    #[error("{0} is not a fusi-node identity key ({1}); move it away to start with a new peer id")]
    BadIdentity(PathBuf, String),
    /// The API token file exists but holds no token.
    #[error(
        "{0} is not an API token ({1}); remove it, and the node makes a new one when it starts \
         (CLIs that use the old one need the new one)"
    )]
    BadToken(PathBuf, crate::api::token::BadToken),
    /// Users other than the owner may read the API token file.
    #[error(
        "the API token {path} can be read by other users (mode {mode:03o}), who could then use \
         the node's API; run `chmod 600 {path}` (and, since they may have read it, remove the \
         file and restart the node to make a new token)"
    )]
    TokenExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and locks it for this process.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let io = |action, source| StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(path).map_err(|e| io("cannot create the data directory", e))?;
        let lock_path = path.join("node.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open the lock file in", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io("cannot lock", e)),
        }
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's identity: read from `identity.key`, or made and saved
    /// (readable by this user only) on first start.
    pub fn identity(&self) -> Result<Keypair, StoreError> {
        let file = self.path.join("identity.key");
        match fs::read(&file) {
            Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| StoreError::BadIdentity(file, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|e| StoreError::BadIdentity(file.clone(), e.to_string()))?;
                // Written aside and renamed, so a crash never leaves half a key.
                let tmp = self.path.join(".identity.key.tmp");
                let _ = fs::remove_file(&tmp);
                write_private(&tmp, &bytes)
                    .and_then(|()| fs::rename(&tmp, &file))
                    .map_err(|source| StoreError::Io {
                        action: "cannot write the identity key",
                        path: file,
                        source,
                    })?;
                Ok(key)
            }
            Err(source) => Err(StoreError::Io {
                action: "cannot read the identity key",
                path: file,
                source,
            }),
        }
    }

    /// The local API's token: read from `api.token` ([`read_api_token`]),
    /// or made and saved (readable by this user only) on first start.
    pub fn api_token(&self) -> Result<ApiToken, StoreError> {
        let file = self.path.join(TOKEN_FILE);
        match fs::symlink_metadata(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = ApiToken::generate();
                // Written aside and renamed, so a crash never leaves half a token.
                let tmp = self.path.join(".api.token.tmp");
                let _ = fs::remove_file(&tmp);
                write_private(&tmp, format!("{}\n", token.to_hex()).as_bytes())
                    .and_then(|()| fs::rename(&tmp, &file))
                    .map_err(|source| StoreError::Io {
                        action: "cannot write the API token",
                        path: file,
                        source,
                    })?;
                Ok(token)
            }
            _ => read_api_token(&self.path),
        }
    }
}

/// Reads the API token file `dir/api.token`: refused when other users may
/// read it or it holds no token.
pub fn read_api_token(dir: &Path) -> Result<ApiToken, StoreError> {
    let file = dir.join(TOKEN_FILE);
    let io = |source| StoreError::Io {
        action: "cannot read the API token",
        path: file.clone(),
        source,
    };
    let meta = fs::metadata(&file).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::TokenExposed { path: file, mode });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = fs::read_to_string(&file).map_err(io)?;
    ApiToken::parse(&text).map_err(|e| StoreError::BadToken(file, e))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, whole: to a temporary file beside it (`.NAME.PID.tmp`), fsynced,
/// renamed over `path`, then the directory fsynced so the rename survives
/// too. A failed write (no space left, say) removes its temporary file and
/// returns the error, with its errno, for the caller to name the path.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ));
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Creates `dir` (and its parents) if it is missing, and fsyncs its parent
/// so the new entry survives a crash.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Fsyncs a directory: its entries (a rename, a new file) are on disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a new file that only this user may read (mode 0600 on Unix).
/// Refuses to replace an existing file.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fusi-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_identity_survives_a_reopen_and_the_directory_is_exclusive() {
        let dir = temp("identity");
        let first = {
            let store = DataDir::open(&dir).unwrap();
            assert!(matches!(DataDir::open(&dir), Err(StoreError::Locked(_))));
            store.identity().unwrap().public().to_peer_id()
        };
        let store = DataDir::open(&dir).unwrap();
        assert_eq!(store.identity().unwrap().public().to_peer_id(), first);
        drop(store);
        fs::write(dir.join("identity.key"), b"garbage").unwrap();
        let store = DataDir::open(&dir).unwrap();
        let err = store.identity().unwrap_err().to_string();
        assert!(err.contains("not a fusi-node identity key"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_api_token_is_made_private_kept_and_refused_when_exposed_or_malformed() {
        let dir = temp("token");
        let file = dir.join(TOKEN_FILE);
        let first = DataDir::open(&dir).unwrap().api_token().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            fs::read_to_string(&file).unwrap().trim(),
            first.to_hex(),
            "the file holds the token in hex"
        );
        assert_eq!(DataDir::open(&dir).unwrap().api_token().unwrap(), first);
        assert_eq!(read_api_token(&dir).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
            let err = DataDir::open(&dir).unwrap().api_token().unwrap_err();
            assert!(
                matches!(err, StoreError::TokenExposed { mode: 0o640, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::write(&file, "not a token").unwrap();
        let err = DataDir::open(&dir).unwrap().api_token().unwrap_err();
        assert!(err.to_string().contains("is not an API token"), "{err}");
        let err = read_api_token(&temp("no-token")).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the API token"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
