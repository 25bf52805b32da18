//! Runs on disk: what a node knows of each run, and the shards it holds,
//! so both survive a restart.
//!
//! ```text
//! DATA_DIR/runs/<run id>/run.cbor                 the run's record (core::runs::Run)
//! DATA_DIR/runs/<run id>/shards/<node>.<seq>.cbor one shard, as received
//! ```
//!
//! A shard is written once, under a name made of its key, so storing it
//! twice changes nothing. The record is rewritten whole, aside and renamed,
//! so a crash leaves the old one or the new one.

use std::fs;
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::core::runs::Run;
use crate::core::shard::{Shard, ShardError, SparseShard};
use crate::core::wire;

/// The largest run record read back.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// The runs directory of a data dir.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// Opens (creates) `DATA_DIR/runs`.
    pub fn open(data_dir: &Path) -> Result<RunStore, StoreError> {
        let dir = data_dir.join("runs");
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "cannot create the runs directory",
            path: dir.clone(),
            source,
        })?;
        Ok(RunStore { dir })
    }

    fn run_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        wire::validate_run_id(id).map_err(|_| StoreError::Corrupt(self.dir.join("?")))?;
        Ok(self.dir.join(id))
    }

    /// Writes a run's record.
    pub fn save_run(&self, run: &Run) -> Result<(), StoreError> {
        let dir = self.run_dir(&run.id)?;
        let path = dir.join("run.cbor");
        let io = |action, source| StoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io("cannot create the run directory", e))?;
        let tmp = dir.join(format!(".run.{}.tmp", std::process::id()));
        fs::write(&tmp, wire::encode(run)).map_err(|e| io("cannot write the run", e))?;
        fs::rename(&tmp, &path).map_err(|e| io("cannot move the run into place", e))
    }

    /// Stores a shard's bytes, once. Returns whether it was new.
    pub fn save_shard(&self, shard: &Shard, bytes: &[u8]) -> Result<bool, StoreError> {
        let dir = self.run_dir(&shard.run_id)?.join("shards");
        let path = dir.join(format!("{}.{}.cbor", safe(&shard.node), shard.seq));
        if path.exists() {
            return Ok(false);
        }
        let io = |action, source| StoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io("cannot create the shards directory", e))?;
        let tmp = dir.join(format!(".shard.{}.tmp", std::process::id()));
        fs::write(&tmp, bytes).map_err(|e| io("cannot write a shard", e))?;
        fs::rename(&tmp, &path).map_err(|e| io("cannot move a shard into place", e))?;
        Ok(true)
    }

    /// Removes a run's record and shards (best effort).
    pub fn remove_run(&self, id: &str) {
        if let Ok(dir) = self.run_dir(id) {
            let _ = fs::remove_dir_all(dir);
        }
    }

    /// Every run stored, with its shards. Unreadable entries are skipped
    /// and named in the second list, so one bad file never stops a node.
    pub fn load(&self) -> (Vec<(Run, Vec<Shard>)>, Vec<String>) {
        let mut runs = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (runs, problems);
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let record = dir.join("run.cbor");
            let run: Run = match read_bounded(&record)
                .and_then(|b| ciborium::from_reader(b.as_slice()).map_err(|e| e.to_string()))
            {
                Ok(run) => run,
                Err(e) => {
                    problems.push(format!("{}: {e}", record.display()));
                    continue;
                }
            };
            let (shards, mut bad) = self.load_shards(&run.id);
            problems.append(&mut bad);
            runs.push((run, shards));
        }
        (runs, problems)
    }
}

impl RunStore {
    /// Every shard stored for a run. Unreadable files are skipped and named
    /// in the second list.
    pub fn load_shards(&self, id: &str) -> (Vec<Shard>, Vec<String>) {
        let mut shards = Vec::new();
        let problems = self.each_shard(id, |s| shards.push(s));
        (shards, problems)
    }

    /// Calls `f` with each shard stored for a run, one at a time, in the
    /// order of (node, sequence number), so that a report of a long run
    /// never holds more than one decoded shard besides what it merged.
    /// Returns the files that were skipped, and why.
    pub fn each_shard(&self, id: &str, f: impl FnMut(Shard)) -> Vec<String> {
        self.each_decoded(id, Shard::decode, |s| &s.run_id, f)
    }

    /// As [`each_shard`](RunStore::each_shard), with each shard read as a
    /// [`SparseShard`], as a report merges it.
    pub fn each_sparse_shard(&self, id: &str, f: impl FnMut(SparseShard)) -> Vec<String> {
        self.each_decoded(id, SparseShard::decode, |s| &s.head.run_id, f)
    }

    fn each_decoded<T>(
        &self,
        id: &str,
        decode: fn(&[u8]) -> Result<T, ShardError>,
        run_of: fn(&T) -> &str,
        mut f: impl FnMut(T),
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let Ok(dir) = self.run_dir(id) else {
            return problems;
        };
        let Ok(files) = fs::read_dir(dir.join("shards")) else {
            return problems;
        };
        let mut keyed: Vec<((String, u64), PathBuf)> = files
            .flatten()
            .map(|f| f.path())
            .filter_map(|path| {
                let stem = path.file_stem()?.to_str()?;
                let (node, seq) = stem.rsplit_once('.')?;
                let seq = seq.parse().ok()?;
                (path.extension()? == "cbor").then(|| ((node.to_owned(), seq), path.clone()))
            })
            .collect();
        keyed.sort();
        for (_, path) in keyed {
            match read_bounded(&path).and_then(|b| decode(&b).map_err(|e| e.to_string())) {
                Ok(s) if run_of(&s) == id => f(s),
                Ok(_) => problems.push(format!("{}: a shard of another run", path.display())),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        problems
    }

    /// One stored shard's bytes, as received.
    pub fn shard_bytes(&self, id: &str, node: &str, seq: u64) -> Option<Vec<u8>> {
        let path = self
            .run_dir(id)
            .ok()?
            .join("shards")
            .join(format!("{}.{seq}.cbor", safe(node)));
        read_bounded(&path).ok()
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_RECORD_BYTES}-byte limit",
            meta.len()
        ));
    }
    fs::read(path).map_err(|e| e.to_string())
}

/// A peer id as a file name: it is base58, but it came from the wire.
fn safe(node: &str) -> String {
    node.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(128)
        .collect()
}
