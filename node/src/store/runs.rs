//! Runs on disk: what a node knows of each run, and the shards it holds,
//! so both survive a restart.
//!
//! ```text
//! DATA_DIR/runs/<run id>/run.cbor                 the run's record (core::runs::Run)
//! DATA_DIR/runs/<run id>/shards/<node>.<seq>.cbor one shard, as received
//! ```
//!
//! A shard is written once, under a name made of its key, so storing it
//! twice changes nothing. The record is rewritten whole. Both are written
//! by [`write_durably`] (aside, fsynced, renamed, the directory fsynced), so
//! a crash leaves the old file or the new one. At start, [`RunStore::load`]
//! reads each record but, of the shards, only their names and sizes and
//! each node's newest shard (which says whether it was the node's last):
//! a run's shards are read when something needs them ([`each_shard`]), so
//! tens of thousands of stored shards cost a node little memory or time at
//! start. It moves a record that is empty, too large or does not decode,
//! and a shard that is empty or too large (or a newest shard that does not
//! decode), aside (`run.cbor.corrupt`, `<node>.<seq>.cbor.corrupt`),
//! removes the temporary files of writes a crash cut short, and names each
//! in its list of problems; nothing there stops the node. A shard damaged
//! inside is named when its run is read.
//!
//! [`each_shard`]: RunStore::each_shard
//!
//! Runs on this machine (`fusi-node run --local`, a mesh of one) are kept
//! the same way, with their own record ([`crate::local::LocalRun`]), under
//! `DATA_DIR/local-runs/` ([`RunStore::local`]): apart from `runs/`, so a
//! node started on the same data dir never takes them for runs of its mesh.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, create_dir_durably, write_durably};
use crate::core::runs::Run;
use crate::core::shard::{Shard, ShardError, SparseShard};
use crate::core::wire;

/// The largest run record read back.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// What a damaged file is renamed to, after its own name.
const CORRUPT: &str = "corrupt";

/// Why a stored file was not read.
#[derive(Debug)]
enum Unread {
    /// It could not be read (a permission, an I/O error): left as it is.
    Io(String),
    /// It was read and is no record or shard (empty, torn, too large, of
    /// another run): moved aside at start.
    Damaged(String),
}

/// A stored file that was skipped, and why.
#[derive(Debug)]
struct Skipped {
    path: PathBuf,
    why: Unread,
}

impl Skipped {
    fn describe(&self) -> String {
        match &self.why {
            Unread::Io(why) | Unread::Damaged(why) => format!("{}: {why}", self.path.display()),
        }
    }

    /// Moves a damaged file aside, so it is reported once, not at every
    /// start; says what became of it.
    fn move_aside(&self) -> String {
        let Unread::Damaged(why) = &self.why else {
            return self.describe();
        };
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(".{CORRUPT}"));
        let aside = PathBuf::from(aside);
        match fs::rename(&self.path, &aside) {
            Ok(()) => format!(
                "{}: {why}; moved aside to {}",
                self.path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "{}: {why}; cannot move it aside to {}: {e}",
                self.path.display(),
                aside.display()
            ),
        }
    }
}

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

    /// The local runs of `data_dir` (`DATA_DIR/local-runs`), made only
    /// when the first one is saved.
    pub fn local(data_dir: &Path) -> RunStore {
        RunStore {
            dir: data_dir.join("local-runs"),
        }
    }

    /// The directory the runs are kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn run_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        wire::validate_run_id(id).map_err(|_| StoreError::Corrupt(self.dir.join("?")))?;
        Ok(self.dir.join(id))
    }

    /// Writes a run's record.
    pub fn save_run(&self, run: &Run) -> Result<(), StoreError> {
        self.save_record(&run.id, run)
    }

    /// Writes the record of run `id` (`run.cbor`), whole.
    pub fn save_record<T: Serialize>(&self, id: &str, record: &T) -> Result<(), StoreError> {
        let dir = self.run_dir(id)?;
        let path = dir.join("run.cbor");
        let io = |action, source| StoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        create_dir_durably(&dir).map_err(|e| io("cannot create the run directory for", e))?;
        write_durably(&path, &wire::encode(record))
            .map_err(|e| io("cannot write the run record", e))
    }

    /// The record of run `id`, read back: `None` when none is kept.
    pub fn read_record<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let path = self.run_dir(id)?.join("run.cbor");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_bounded(&path).map_err(|why| StoreError::Unreadable {
            why: match why {
                Unread::Io(why) | Unread::Damaged(why) => why,
            },
            path: path.clone(),
        })?;
        ciborium::from_reader(bytes.as_slice())
            .map(Some)
            .map_err(|e| StoreError::Unreadable {
                path,
                why: format!("not a run record: {e}"),
            })
    }

    /// Every record that reads, with the name of its directory, in the
    /// order of those names; the others are left as they are.
    pub fn records<T: DeserializeOwned>(&self) -> Vec<(String, T)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|id| wire::validate_run_id(id).is_ok())
            .collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| Some((id.clone(), self.read_record(&id).ok()??)))
            .collect()
    }

    /// Stores a shard's bytes, once. Returns whether it was new.
    pub fn save_shard(&self, shard: &Shard, bytes: &[u8]) -> Result<bool, StoreError> {
        self.save_shard_at(&shard.run_id, &shard.node, shard.seq, bytes)
    }

    /// Stores the bytes of shard `seq` of `node` in run `id`, once.
    /// Returns whether it was new.
    pub fn save_shard_at(
        &self,
        id: &str,
        node: &str,
        seq: u64,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        let dir = self.run_dir(id)?.join("shards");
        let path = dir.join(format!("{}.{seq}.cbor", safe(node)));
        if path.exists() {
            return Ok(false);
        }
        let io = |action, source| StoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        create_dir_durably(&dir).map_err(|e| io("cannot create the shards directory for", e))?;
        write_durably(&path, bytes).map_err(|e| io("cannot write the shard", e))?;
        Ok(true)
    }

    /// Removes a run's record and shards (best effort).
    pub fn remove_run(&self, id: &str) {
        if let Ok(dir) = self.run_dir(id) {
            let _ = fs::remove_dir_all(dir);
        }
    }

    /// Every run stored, at start, with what is known of its shards
    /// without reading them ([`StoredShards`]). Files that cannot be read
    /// are skipped; records that are damaged (empty, torn, too large, not
    /// decodable), shards that are empty or too large, and newest shards
    /// that do not decode are moved aside to `*.corrupt`; temporary files
    /// of writes a crash cut short are removed. Each is named, with its
    /// path, in the second list, so one bad file never stops a node.
    pub fn load(&self) -> (Vec<(Run, StoredShards)>, Vec<String>) {
        let mut runs = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (runs, problems);
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            remove_temporaries(&dir);
            remove_temporaries(&dir.join("shards"));
            let record = dir.join("run.cbor");
            if !record.exists() && has_aside(&record) {
                // Damaged and reported at an earlier start; its shards stay
                // for the run's next record (from a peer).
                continue;
            }
            let run = read_bounded(&record).and_then(|b| {
                ciborium::from_reader::<Run, _>(b.as_slice())
                    .map_err(|e| Unread::Damaged(format!("not a run record: {e}")))
            });
            let run = match run {
                Ok(run) if dir.file_name().is_some_and(|n| n == run.id.as_str()) => run,
                Ok(run) => {
                    let skipped = Skipped {
                        path: record,
                        why: Unread::Damaged(format!("the record of run {}", run.id)),
                    };
                    problems.push(skipped.move_aside());
                    continue;
                }
                Err(why) => {
                    problems.push(Skipped { path: record, why }.move_aside());
                    continue;
                }
            };
            let (shards, skipped) = self.stored_shards(&run.id);
            problems.extend(skipped.iter().map(Skipped::move_aside));
            runs.push((run, shards));
        }
        (runs, problems)
    }

    /// What a run's shard files say without reading them: their names and
    /// sizes, and each node's newest shard.
    fn stored_shards(&self, id: &str) -> (StoredShards, Vec<Skipped>) {
        let mut stored = StoredShards::default();
        let mut problems = Vec::new();
        let mut by_node: BTreeMap<String, Vec<(u64, PathBuf)>> = BTreeMap::new();
        for ((node, seq), path) in self.shard_files(id) {
            match fs::metadata(&path) {
                Ok(meta) if meta.len() == 0 => problems.push(Skipped {
                    path,
                    why: Unread::Damaged("empty (a write a crash cut short)".into()),
                }),
                Ok(meta) if meta.len() > MAX_RECORD_BYTES => problems.push(Skipped {
                    path,
                    why: Unread::Damaged(format!(
                        "{} bytes, over the {MAX_RECORD_BYTES}-byte limit",
                        meta.len()
                    )),
                }),
                Ok(_) => by_node.entry(node).or_default().push((seq, path)),
                Err(e) => problems.push(Skipped {
                    path,
                    why: Unread::Io(e.to_string()),
                }),
            }
        }
        for (name, mut files) in by_node {
            // The newest shard that reads says who the node is (the name is
            // its id made safe for a file name) and whether it was its last.
            let mut node = None;
            while let Some((seq, path)) = files.pop() {
                let decoded = read_bounded(&path)
                    .and_then(|b| Shard::decode(&b).map_err(|e| Unread::Damaged(e.to_string())));
                match decoded {
                    Ok(s) if s.run_id == id && safe(&s.node) == name && s.seq == seq => {
                        if s.last {
                            stored
                                .announced
                                .insert(s.node.clone(), seq.saturating_add(1));
                        }
                        stored.held.insert((s.node.clone(), seq));
                        node = Some(s.node);
                        break;
                    }
                    Ok(_) => problems.push(Skipped {
                        path,
                        why: Unread::Damaged("a shard of another run or node".into()),
                    }),
                    Err(why) => problems.push(Skipped { path, why }),
                }
            }
            if let Some(node) = node {
                stored
                    .held
                    .extend(files.into_iter().map(|(seq, _)| (node.clone(), seq)));
            }
        }
        (stored, problems)
    }

    /// A run's shard files, by (node as in the file name, sequence
    /// number), in that order.
    fn shard_files(&self, id: &str) -> Vec<((String, u64), PathBuf)> {
        let Ok(dir) = self.run_dir(id) else {
            return Vec::new();
        };
        let Ok(files) = fs::read_dir(dir.join("shards")) else {
            return Vec::new();
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
        keyed
    }
}

/// What a node knows of a run's stored shards before it reads them: which
/// are there, and how many each node announced (its last shard, if stored,
/// says so). Enough to tell peers what it holds; the shards themselves are
/// read when a report or a new shard needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredShards {
    held: BTreeSet<(String, u64)>,
    announced: BTreeMap<String, u64>,
}

impl StoredShards {
    /// The shards stored: `(node, seq)`.
    pub fn held(&self) -> &BTreeSet<(String, u64)> {
        &self.held
    }

    /// Shards stored of a node and the count it announced, if any (as
    /// [`Report::shards_of`](crate::core::report::Report::shards_of)).
    pub fn shards_of(&self, node: &str) -> (u64, Option<u64>) {
        let received = self
            .held
            .range((node.to_owned(), 0)..=(node.to_owned(), u64::MAX))
            .count();
        (
            u64::try_from(received).unwrap_or(u64::MAX),
            self.announced.get(node).copied(),
        )
    }
}

/// Removes the temporary files (`.NAME.PID.tmp`) in `dir`: a write cut
/// short by a crash, never renamed into place.
fn remove_temporaries(dir: &Path) {
    let Ok(files) = fs::read_dir(dir) else {
        return;
    };
    for path in files.flatten().map(|f| f.path()) {
        let temporary = path.extension().is_some_and(|e| e == "tmp")
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if temporary && path.is_file() {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!("removed {}, a write that a crash cut short", path.display())
                }
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// Whether a damaged `path` was moved aside before.
fn has_aside(path: &Path) -> bool {
    let mut aside = path.to_path_buf().into_os_string();
    aside.push(format!(".{CORRUPT}"));
    Path::new(&aside).exists()
}

impl RunStore {
    /// Calls `f` with each shard stored for a run, one at a time, in the
    /// order of (node, sequence number), so that a report of a long run
    /// never holds more than one decoded shard besides what it merged.
    /// Returns the files that were skipped, and why.
    pub fn each_shard(&self, id: &str, f: impl FnMut(Shard)) -> Vec<String> {
        let skipped = self.each_decoded(id, Shard::decode, |s| &s.run_id, f);
        skipped.iter().map(Skipped::describe).collect()
    }

    /// As [`each_shard`](RunStore::each_shard), with each shard read as a
    /// [`SparseShard`], as a report merges it.
    pub fn each_sparse_shard(&self, id: &str, f: impl FnMut(SparseShard)) -> Vec<String> {
        let skipped = self.each_decoded(id, SparseShard::decode, |s| &s.head.run_id, f);
        skipped.iter().map(Skipped::describe).collect()
    }

    fn each_decoded<T>(
        &self,
        id: &str,
        decode: fn(&[u8]) -> Result<T, ShardError>,
        run_of: fn(&T) -> &str,
        mut f: impl FnMut(T),
    ) -> Vec<Skipped> {
        let mut problems = Vec::new();
        for (_, path) in self.shard_files(id) {
            let decoded = read_bounded(&path)
                .and_then(|b| decode(&b).map_err(|e| Unread::Damaged(e.to_string())));
            match decoded {
                Ok(s) if run_of(&s) == id => f(s),
                Ok(_) => problems.push(Skipped {
                    path,
                    why: Unread::Damaged("a shard of another run".into()),
                }),
                Err(why) => problems.push(Skipped { path, why }),
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

fn read_bounded(path: &Path) -> Result<Vec<u8>, Unread> {
    let meta = fs::metadata(path).map_err(|e| Unread::Io(e.to_string()))?;
    if meta.len() > MAX_RECORD_BYTES {
        return Err(Unread::Damaged(format!(
            "{} bytes, over the {MAX_RECORD_BYTES}-byte limit",
            meta.len()
        )));
    }
    if meta.len() == 0 {
        return Err(Unread::Damaged("empty (a write a crash cut short)".into()));
    }
    fs::read(path).map_err(|e| Unread::Io(e.to_string()))
}

/// A peer id as a file name: it is base58, but it came from the wire.
fn safe(node: &str) -> String {
    node.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::assign::Candidate;
    use crate::core::metrics::SeriesSet;
    use crate::core::runs::{At, RunsConfig, RunsCore};
    use crate::core::spec::{Executor, RunSpec};
    use crate::core::wire::{Proposal, RUN_PROTOCOL, RunEnvelope, RunMessage};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fusi-runs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn run(id: &str) -> Run {
        let mut core = RunsCore::new("me".into(), RunsConfig::default());
        let env = RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: id.into(),
            body: RunMessage::Propose(Box::new(Proposal {
                proposer: "me".into(),
                spec: RunSpec::new(
                    "ab".repeat(32),
                    Executor::ConstantVus {
                        vus: 1,
                        duration: Duration::from_secs(1),
                    },
                ),
                weights: None,
                nodes: None,
                candidates: vec![Candidate {
                    id: "me".into(),
                    region: "fra".into(),
                    capacity: 1,
                }],
                members: None,
            })),
            sig: None,
        };
        let at = At {
            now: Duration::ZERO,
            wall_ns: 1,
        };
        core.on_message("me", env, at)
            .unwrap_or_else(|e| panic!("{e}"));
        core.get(id).cloned().unwrap_or_else(|| panic!("no run"))
    }

    fn shard(run: &str, seq: u64) -> Shard {
        Shard {
            notes: Vec::new(),
            run_id: run.into(),
            node: "n1".into(),
            name: "n1".into(),
            region: "fra".into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last: false,
            series: SeriesSet::new(),
        }
    }

    fn store(dir: &Path) -> RunStore {
        RunStore::open(dir).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn records_and_shards_come_back_and_leave_no_temporary_files() {
        let dir = temp("round-trip");
        let runs = store(&dir);
        runs.save_run(&run("r1")).unwrap_or_else(|e| panic!("{e}"));
        let s = shard("r1", 0);
        assert_eq!(runs.save_shard(&s, &s.encode()).ok(), Some(true));
        assert_eq!(runs.save_shard(&s, &s.encode()).ok(), Some(false));
        let (loaded, problems) = runs.load();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.id, "r1");
        assert_eq!(
            loaded[0].1.held().iter().collect::<Vec<_>>(),
            vec![&("n1".to_owned(), 0)]
        );
        assert_eq!(loaded[0].1.shards_of("n1"), (1, None));
        let mut encoded = Vec::new();
        assert!(
            runs.each_shard("r1", |s| encoded.push(s.encode()))
                .is_empty()
        );
        assert_eq!(encoded, vec![s.encode()]);
        let names = |d: PathBuf| -> Vec<String> {
            fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(dir.join("runs/r1")).len(), 2, "run.cbor and shards/");
        assert_eq!(names(dir.join("runs/r1/shards")), vec!["n1.0.cbor"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_of_any_kind_come_back_by_id_and_damaged_ones_are_named() {
        let dir = temp("records");
        let local = RunStore::local(&dir);
        assert!(!local.dir().exists(), "made only when a run is saved");
        assert!(matches!(local.read_record::<String>("r1"), Ok(None)));
        local
            .save_record("r1", &"one".to_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        local
            .save_record("r2", &"two".to_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.dir(), dir.join("local-runs"));
        assert_eq!(
            local.read_record::<String>("r1").ok().flatten().as_deref(),
            Some("one")
        );
        fs::write(dir.join("local-runs/r2/run.cbor"), b"\xff\x00torn")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = local
            .read_record::<String>("r2")
            .expect_err("damaged")
            .to_string();
        assert!(
            e.contains("local-runs/r2/run.cbor") && e.contains("not a run record"),
            "{e}"
        );
        assert_eq!(
            local.records::<String>(),
            vec![("r1".to_owned(), "one".to_owned())]
        );
        assert!(local.read_record::<String>("../r1").is_err());
        // The node's own runs are elsewhere.
        assert!(store(&dir).load().0.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_files_at_start_are_reported_moved_aside_and_the_rest_loads() {
        let dir = temp("torn");
        let runs = store(&dir);
        runs.save_run(&run("good"))
            .unwrap_or_else(|e| panic!("{e}"));
        let kept = shard("good", 0);
        assert!(runs.save_shard(&kept, &kept.encode()).is_ok());
        let shards = dir.join("runs/good/shards");
        // A zero-length shard and a torn one, as a power cut leaves them,
        // and a shard of another run under this one's name.
        fs::write(shards.join("n1.1.cbor"), b"").unwrap_or_else(|e| panic!("{e}"));
        let torn = shard("good", 2).encode();
        fs::write(shards.join("n1.2.cbor"), &torn[..torn.len() / 2])
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(shards.join("n1.3.cbor"), shard("other", 3).encode())
            .unwrap_or_else(|e| panic!("{e}"));
        // A write cut short before its rename.
        fs::write(shards.join(".n1.4.cbor.999.tmp"), b"half").unwrap_or_else(|e| panic!("{e}"));
        // An empty record, and one that is no CBOR.
        for (id, bytes) in [("empty", &b""[..]), ("garbage", &b"\xff\x00torn"[..])] {
            fs::create_dir_all(dir.join("runs").join(id)).unwrap_or_else(|e| panic!("{e}"));
            fs::write(dir.join("runs").join(id).join("run.cbor"), bytes)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (loaded, problems) = runs.load();
        assert_eq!(loaded.len(), 1, "{problems:?}");
        assert_eq!(loaded[0].0.id, "good");
        assert_eq!(loaded[0].1.shards_of("n1"), (1, None));
        let mut encoded = Vec::new();
        assert!(
            runs.each_shard("good", |s| encoded.push(s.encode()))
                .is_empty()
        );
        assert_eq!(encoded, vec![kept.encode()]);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        for (file, why) in [
            ("runs/empty/run.cbor", "empty"),
            ("runs/garbage/run.cbor", "not a run record"),
            ("runs/good/shards/n1.1.cbor", "empty"),
            ("runs/good/shards/n1.2.cbor", "shard"),
            ("runs/good/shards/n1.3.cbor", "another run"),
        ] {
            let path = dir.join(file);
            let aside = dir.join(format!("{file}.corrupt"));
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{}: ", path.display()))
                        && p.contains(why)
                        && p.ends_with(&format!("moved aside to {}", aside.display()))),
                "{file}: {problems:#?}"
            );
            assert!(!path.exists() && aside.exists(), "{file}");
        }
        assert!(!shards.join(".n1.4.cbor.999.tmp").exists());
        // Reported once: the next start finds nothing to say.
        let (loaded, problems) = runs.load();
        assert_eq!(loaded.len(), 1);
        assert!(problems.is_empty(), "{problems:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_start_reads_only_the_newest_shard_of_each_node_and_a_run_read_later_names_the_rest() {
        let dir = temp("lazy");
        let runs = store(&dir);
        runs.save_run(&run("r1")).unwrap_or_else(|e| panic!("{e}"));
        let mut shards: Vec<Shard> = (0..4).map(|seq| shard("r1", seq)).collect();
        shards[3].last = true;
        let mut other = shard("r1", 0);
        other.node = "n2".into();
        shards.push(other);
        for s in &shards {
            assert_eq!(runs.save_shard(s, &s.encode()).ok(), Some(true));
        }
        // An older shard damaged inside: a start does not read it.
        let torn = dir.join("runs/r1/shards/n1.1.cbor");
        fs::write(&torn, b"\xff\x00torn").unwrap_or_else(|e| panic!("{e}"));
        let (loaded, problems) = runs.load();
        assert!(problems.is_empty(), "{problems:?}");
        let stored = &loaded[0].1;
        assert_eq!(stored.held().len(), 5);
        assert_eq!(stored.shards_of("n1"), (4, Some(4)), "n1 announced 4");
        assert_eq!(stored.shards_of("n2"), (1, None));
        assert_eq!(stored.shards_of("n3"), (0, None));
        // Reading the run names it, and hands out the others in order.
        let mut read = Vec::new();
        let skipped = runs.each_shard("r1", |s| read.push((s.node, s.seq)));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].starts_with(&torn.display().to_string()),
            "{skipped:?}"
        );
        assert_eq!(
            read,
            vec![
                ("n1".to_owned(), 0),
                ("n1".to_owned(), 2),
                ("n1".to_owned(), 3),
                ("n2".to_owned(), 0)
            ]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_that_fails_names_the_path_and_the_os_error() {
        let dir = temp("fails");
        let runs = store(&dir);
        // The run's directory is taken by a file: every write under it fails.
        fs::write(dir.join("runs/r1"), b"in the way").unwrap_or_else(|e| panic!("{e}"));
        let e = runs
            .save_run(&run("r1"))
            .expect_err("cannot write")
            .to_string();
        assert!(
            e.contains(&dir.join("runs/r1/run.cbor").display().to_string()),
            "{e}"
        );
        assert!(e.contains("(os error "), "{e}");
        let s = shard("r1", 0);
        let e = runs
            .save_shard(&s, &s.encode())
            .expect_err("cannot write")
            .to_string();
        assert!(e.contains("runs/r1/shards/n1.0.cbor"), "{e}");
        assert!(e.contains("(os error "), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_durable_write_replaces_the_file_whole_and_cleans_up_after_a_failure() {
        let dir = temp("durable");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("f.cbor");
        write_durably(&path, b"one").unwrap_or_else(|e| panic!("{e}"));
        write_durably(&path, b"two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read(&path).ok(), Some(b"two".to_vec()));
        // A directory in the way of the rename: the error comes back and
        // the temporary file is gone.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap_or_else(|e| panic!("{e}"));
        assert!(write_durably(&blocked, b"x").is_err());
        let left: Vec<_> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}
