//! Scenario modules and data files on disk, named by the sha256 of their
//! bytes.
//!
//! A run names its module and its data files (`--data`) by hash, and every
//! node taking part gets the bytes from a peer (distributed runs) and keeps
//! them here, as `modules/<sha256>.wasm` and `modules/<sha256>.data`. The name is checked to be 64 lower-case hex
//! digits before it touches a path (names come from peers), a write goes
//! through [`super::write_durably`] (a crash never leaves half a module
//! under a valid name), and a read checks the hash again (a corrupted file is
//! reported, not run).

use std::fs;
use std::path::{Path, PathBuf};

use crate::core::data::MAX_DATA_BYTES;
use crate::core::module_name::{MAX_MODULE_BYTES, check_name, sha256_hex};
use crate::store::StoreError;

/// The modules of one data directory.
#[derive(Debug, Clone)]
pub struct ModuleStore {
    dir: PathBuf,
}

impl ModuleStore {
    /// The store under `data_dir/modules`, created if needed.
    pub fn open(data_dir: &Path) -> Result<ModuleStore, StoreError> {
        let dir = data_dir.join("modules");
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "cannot create the module directory",
            path: dir.clone(),
            source,
        })?;
        Ok(ModuleStore { dir })
    }

    fn path(&self, sha256: &str, kind: Kind) -> PathBuf {
        self.dir.join(format!("{sha256}.{}", kind.ext))
    }

    /// Keeps `bytes`, and returns their name. Keeping the same bytes twice
    /// is a no-op; a damaged copy is replaced.
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.put_as(bytes, MODULE)
    }

    /// The module named `sha256`, checked against its name; `None` when it
    /// is not here.
    pub fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_as(sha256, MODULE)
    }

    /// Keeps a data file's bytes, as [`Self::put`] keeps a module's.
    pub fn put_data(&self, bytes: &[u8]) -> Result<String, StoreError> {
        self.put_as(bytes, DATA)
    }

    /// The data file named `sha256`, as [`Self::get`] reads a module.
    pub fn get_data(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_as(sha256, DATA)
    }

    fn put_as(&self, bytes: &[u8], kind: Kind) -> Result<String, StoreError> {
        if bytes.len() > kind.max {
            return Err(StoreError::TooLarge {
                what: kind.what,
                len: bytes.len(),
                max: kind.max,
            });
        }
        let name = sha256_hex(bytes);
        if let Ok(Some(_)) = self.get_as(&name, kind) {
            return Ok(name);
        }
        let path = self.path(&name, kind);
        super::write_durably(&path, bytes).map_err(|source| StoreError::Io {
            action: kind.write,
            path,
            source,
        })?;
        Ok(name)
    }

    fn get_as(&self, sha256: &str, kind: Kind) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(sha256).map_err(StoreError::BadName)?;
        let path = self.path(sha256, kind);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    action: kind.read,
                    path,
                    source,
                });
            }
        };
        if sha256_hex(&bytes) != sha256 {
            return Err(StoreError::Corrupt(path));
        }
        Ok(Some(bytes))
    }
}

/// What the store keeps: a module or a data file.
#[derive(Clone, Copy)]
struct Kind {
    ext: &'static str,
    what: &'static str,
    max: usize,
    write: &'static str,
    read: &'static str,
}

const MODULE: Kind = Kind {
    ext: "wasm",
    what: "module",
    max: MAX_MODULE_BYTES,
    write: "cannot write the module",
    read: "cannot read the module",
};

const DATA: Kind = Kind {
    ext: "data",
    what: "data file",
    max: MAX_DATA_BYTES,
    write: "cannot write the data file",
    read: "cannot read the data file",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_kept_by_hash_checked_and_names_from_outside_are_refused() {
        let dir = std::env::temp_dir().join(format!("fusi-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = ModuleStore::open(&dir).unwrap();
        let name = store.put(b"\0asm module bytes").unwrap();
        assert_eq!(store.put(b"\0asm module bytes").unwrap(), name);
        assert_eq!(
            store.get(&name).unwrap().as_deref(),
            Some(&b"\0asm module bytes"[..])
        );
        let absent = "0".repeat(64);
        assert_eq!(store.get(&absent).unwrap(), None);
        for bad in [
            "../../etc/passwd",
            "",
            &"A".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
        ] {
            assert!(
                matches!(store.get(bad), Err(StoreError::BadName(_))),
                "{bad}"
            );
        }
        fs::write(
            dir.join("modules").join(format!("{name}.wasm")),
            b"tampered",
        )
        .unwrap();
        assert!(matches!(store.get(&name), Err(StoreError::Corrupt(_))));
        assert_eq!(store.put(b"\0asm module bytes").unwrap(), name);
        let data = store.put_data(b"user\nann\n").unwrap();
        assert_eq!(store.get(&data).unwrap(), None, "a data file is no module");
        assert_eq!(
            store.get_data(&data).unwrap().as_deref(),
            Some(&b"user\nann\n"[..])
        );
        assert!(
            store.get(&name).unwrap().is_some(),
            "put repairs a damaged copy"
        );
        let big = vec![0u8; MAX_MODULE_BYTES + 1];
        assert!(matches!(store.put(&big), Err(StoreError::TooLarge { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
