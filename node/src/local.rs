//! A run on this machine: a mesh of one.
//!
//! This is the path `fusi-node run` takes without a mesh, and it is the same
//! path a mesh run takes on each node: a [`RunSpec`], a share of it from
//! [`assign`] (here, one node takes the whole load), the same [`worker`]
//! that runs a share on a node of a mesh, shards sealed every interval and
//! carried through their wire encoding, and a [`Report`] that merges them.
//! Only where the share comes from and where the shards go differ in a mesh:
//! there the plan comes from the run's leader and the shards go to it, then
//! to every node.
//!
//! A node keeps its runs in its data dir; a local run is kept the same way
//! ([`Keeper`]: its record, [`LocalRun`], and its shards, under
//! `DATA_DIR/local-runs/`), so `fusi-node report ID` prints its report again
//! ([`report_again`]), byte for byte, with no node running. The newest
//! [`KEEP_LOCAL_RUNS`] are kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::assign::{Candidate, assign};
use crate::core::module_name::sha256_hex;
use crate::core::report::Report;
use crate::core::run_report::{ExpectedNode, LoadPlan, RunMeta, RunReport, abort_verdict};
use crate::core::segment::ExecutionSegment;
use crate::core::shard::Shard;
use crate::core::spec::{RunSpec, SpecError};
use crate::core::threshold::parse_all;
use crate::engine::executor::Progress;
use crate::engine::http::ClientSettings;
use crate::engine::module::LoadError;
use crate::store::StoreError;
use crate::store::runs::RunStore;
use crate::worker::{self, ShareJob, WorkerEvent};

/// The node name of a local run.
pub const LOCAL_NODE: &str = "local";

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The module is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The spec is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A VU could not start, or `setup` failed.
    #[error("{0}")]
    Start(String),
}

/// What a caller sees while a run goes on.
pub trait Observer: Send {
    /// Called with every shard, after it was merged into `report`.
    fn on_shard(&mut self, _shard: &Shard, _report: &Report, _progress: &Progress) {}
}

/// The most local runs a data dir keeps: a new one removes the oldest
/// beyond these (by start time).
pub const KEEP_LOCAL_RUNS: usize = 50;

/// What is kept of a local run besides its shards: what its report needs
/// ([`LocalRun::meta`]) and what `fusi-node runs` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRun {
    /// The run id.
    pub id: String,
    /// The spec it ran, without its `--env` values (they may hold secrets,
    /// and the report does not need them).
    pub spec: RunSpec,
    /// `running` while it runs (and after a crash), then `complete` or
    /// `stopped`.
    pub outcome: String,
    /// The `abortOnFail` threshold that stopped it, if one did.
    pub aborted_by: Option<String>,
    /// When it started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When it ended, ms since the Unix epoch.
    pub ended_unix_ms: Option<u64>,
}

impl LocalRun {
    /// What its report needs besides its shards: one node, `local`, with
    /// the whole load. The report at the end of the run and the one built
    /// again from the data dir both come from here.
    pub fn meta(&self) -> RunMeta {
        RunMeta {
            data: self.spec.data.clone(),
            scenario: self.spec.scenario.clone(),
            executor: self.spec.executor_name(),
            outcome: self.outcome.clone(),
            expected: vec![ExpectedNode {
                id: LOCAL_NODE.to_owned(),
                region: LOCAL_NODE.to_owned(),
                segment: Some(ExecutionSegment::WHOLE),
            }],
            lost: Vec::new(),
            thresholds: self.spec.thresholds.clone(),
            aborted_by: self.aborted_by.clone(),
            load: Some(LoadPlan::of(&self.spec)),
            moves: Vec::new(),
        }
    }
}

/// Keeps a local run in a data dir while it goes: its record at the start
/// and at the end, each shard as it comes. The first write that fails ends
/// the keeping (the run goes on) and removes what was kept of the run, since
/// its report could no longer be printed again whole.
pub struct Keeper {
    store: RunStore,
    failed: Option<StoreError>,
}

impl Keeper {
    /// Keeps runs in `DATA_DIR/local-runs/`.
    pub fn new(data_dir: &Path) -> Keeper {
        Keeper {
            store: RunStore::local(data_dir),
            failed: None,
        }
    }

    fn keep(&mut self, id: &str, write: impl FnOnce(&RunStore) -> Result<(), StoreError>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = write(&self.store) {
            self.store.remove_run(id);
            self.failed = Some(e);
        }
    }

    /// How the keeping of run `id` ended: the run is kept and the oldest
    /// beyond [`KEEP_LOCAL_RUNS`] are removed, or the first write that
    /// failed, with nothing of the run left.
    fn finish(self, id: &str) -> Result<(), StoreError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        for old in to_forget(&self.store.records::<LocalRun>(), KEEP_LOCAL_RUNS, id) {
            self.store.remove_run(&old);
        }
        Ok(())
    }
}

/// The runs to remove so that at most `keep` remain: the oldest by start
/// (then id), never `current`. Records whose id is not their directory's
/// name count as nothing and are left alone.
fn to_forget(records: &[(String, LocalRun)], keep: usize, current: &str) -> Vec<String> {
    let mut runs: Vec<&LocalRun> = records
        .iter()
        .filter(|(dir, run)| *dir == run.id)
        .map(|(_, run)| run)
        .collect();
    // Newest first; the current run is the newest whatever the clocks say.
    runs.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.id == current),
            std::cmp::Reverse(r.started_unix_ms),
            std::cmp::Reverse(r.id.clone()),
        )
    });
    runs.into_iter()
        .skip(keep.max(1))
        .map(|r| r.id.clone())
        .collect()
}

/// The report of a local run kept in `data_dir`, built again from its
/// record and shards: the same bytes as at the end of the run. `None` when
/// no run `id` is kept there; shards that cannot be read are named in the
/// log and left out.
pub fn report_again(data_dir: &Path, id: &str) -> Result<Option<RunReport>, StoreError> {
    let store = RunStore::local(data_dir);
    let Some(record) = store.read_record::<LocalRun>(id)? else {
        return Ok(None);
    };
    let mut report = Report::new(id);
    for problem in store.each_sparse_shard(id, |s| {
        report.add_sparse(&s);
    }) {
        tracing::warn!(run = %id, "a kept shard was skipped: {problem}");
    }
    Ok(Some(RunReport::build(&report, &record.meta())))
}

/// The local runs kept in `data_dir`, newest first.
pub fn kept_runs(data_dir: &Path) -> Vec<LocalRun> {
    let mut runs: Vec<LocalRun> = RunStore::local(data_dir)
        .records::<LocalRun>()
        .into_iter()
        .filter(|(dir, run)| *dir == run.id)
        .map(|(_, run)| run)
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse((r.started_unix_ms, r.id.clone())));
    runs
}

/// A local run's report, and whether it was kept.
pub struct Finished {
    /// The report.
    pub report: RunReport,
    /// `None` when it was not to be kept; else whether it was.
    pub kept: Option<Result<(), StoreError>>,
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An observer that watches nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// A fresh run id: time-ordered, unique enough for one machine and a mesh.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("r{:x}", mix)
}

/// Runs `spec` with the module `wasm` on this machine and returns its
/// report. Cancelling `interrupt` ends the run early (Ctrl-C): in-flight
/// iterations are interrupted, and the report of what was measured comes
/// back, with outcome `stopped`. With a `keeper`, the run is kept in its
/// data dir as it goes; a failure there never fails the run.
pub async fn run(
    wasm: Vec<u8>,
    data: Vec<Vec<u8>>,
    mut spec: RunSpec,
    observer: &mut dyn Observer,
    interrupt: CancellationToken,
    source_ip: Option<std::net::IpAddr>,
    mut keeper: Option<Keeper>,
) -> Result<Finished, RunError> {
    spec.validate()?;
    spec.module_sha256 = sha256_hex(&wasm);
    let run_id = new_run_id();
    let mut record = LocalRun {
        id: run_id.clone(),
        // Parameters may hold secrets: the record keeps none, the
        // scenarios' own neither.
        spec: RunSpec {
            env: BTreeMap::new(),
            scenarios: spec
                .scenarios
                .iter()
                .map(|s| crate::core::spec::ScenarioSpec {
                    env: BTreeMap::new(),
                    ..s.clone()
                })
                .collect(),
            ..spec.clone()
        },
        outcome: "running".to_owned(),
        aborted_by: None,
        started_unix_ms: unix_ms(),
        ended_unix_ms: None,
    };
    let settings = ClientSettings::new(spec.insecure_skip_tls_verify)
        .map_err(|e| RunError::Start(format!("TLS setup failed: {e}")))?
        .with_source_ip(source_ip);
    // The plan of a mesh of one: this node, the whole load.
    let me = Candidate {
        id: LOCAL_NODE.to_owned(),
        region: "local".to_owned(),
        capacity: 1,
    };
    let share = assign(&run_id, &[me], None, u64::from(spec.max_vus()))
        .map_err(|e| RunError::Start(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Start("no share for this node".into()))?;
    let executor = spec.executor_name();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut handle = worker::spawn(
        ShareJob {
            plan: (0, 1),
            spec: spec.clone(),
            share,
            name: LOCAL_NODE.to_owned(),
            region: LOCAL_NODE.to_owned(),
            wasm,
            data: data.into_iter().map(Arc::new).collect(),
            settings,
            fence: false,
        },
        events_tx,
    );
    let progress = handle.progress.clone();
    let mut report = Report::new(&run_id);
    let thresholds = parse_all(&spec.thresholds).map_err(|e| RunError::Start(e.to_string()))?;
    let mut aborted: Option<String> = None;
    loop {
        let event = tokio::select! {
            () = interrupt.cancelled(), if !interrupt.is_cancelled() => {
                handle.stop();
                continue;
            }
            event = events.recv() => event,
        };
        match event {
            Some(WorkerEvent::Prepared { .. }) => {
                tracing::info!(run = %run_id, executor, "run starting");
                if let Some(keeper) = &mut keeper {
                    record.started_unix_ms = unix_ms();
                    keeper.keep(&run_id, |store| store.save_record(&run_id, &record));
                }
                handle.start(Instant::now() + Duration::from_millis(20));
            }
            Some(WorkerEvent::Failed { reason, .. }) => {
                if let Some(keeper) = &keeper {
                    keeper.store.remove_run(&run_id);
                }
                return Err(RunError::Start(reason));
            }
            // Only a node's submissions run `setup` apart (`SetupRan`).
            Some(WorkerEvent::Started { .. } | WorkerEvent::SetupRan { .. }) => {}
            Some(WorkerEvent::Shard(shard)) => {
                // Shards go through their wire encoding even on one
                // machine, so a local run tests the format a mesh uses.
                let bytes = shard.encode();
                match Shard::decode(&bytes) {
                    Ok(decoded) => {
                        report.add(&decoded);
                        if let Some(keeper) = &mut keeper {
                            keeper.keep(&run_id, |store| {
                                store.save_shard(&decoded, &bytes).map(drop)
                            });
                        }
                        observer.on_shard(&decoded, &report, &progress);
                        if aborted.is_none()
                            && let Some(failed) = abort_verdict(&thresholds, &report)
                        {
                            aborted = Some(failed.threshold.clone());
                            tracing::warn!(
                                "threshold `{}` failed (abortOnFail): stopping the run",
                                failed.threshold
                            );
                            handle.stop();
                        }
                    }
                    Err(e) => tracing::error!("a shard did not survive its own encoding: {e}"),
                }
            }
            Some(WorkerEvent::Finished { .. }) | None => break,
        }
    }
    record.outcome = if interrupt.is_cancelled() || aborted.is_some() {
        "stopped"
    } else {
        "complete"
    }
    .to_owned();
    record.aborted_by = aborted;
    record.ended_unix_ms = Some(unix_ms());
    let kept = keeper.map(|mut keeper| {
        keeper.keep(&run_id, |store| store.save_record(&run_id, &record));
        keeper.finish(&run_id)
    });
    Ok(Finished {
        report: RunReport::build(&report, &record.meta()),
        kept,
    })
}

/// `--env` pairs as a map; a later value for a key wins.
pub fn env_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::{SeriesKey, SeriesSet, names};
    use crate::core::spec::Executor;
    use fusi_sdk::abi::MetricKind;

    fn record(id: &str, started_unix_ms: u64) -> LocalRun {
        LocalRun {
            id: id.to_owned(),
            spec: RunSpec::new(
                "ab".repeat(32),
                Executor::ConstantVus {
                    vus: 2,
                    duration: Duration::from_secs(3),
                },
            ),
            outcome: "complete".to_owned(),
            aborted_by: None,
            started_unix_ms,
            ended_unix_ms: Some(started_unix_ms + 3000),
        }
    }

    fn shard(id: &str, seq: u64) -> Shard {
        let mut series = SeriesSet::new();
        let reqs = SeriesKey::new(names::HTTP_REQS, [("status".into(), "200".into())]);
        let dur = SeriesKey::new(names::HTTP_REQ_DURATION, []);
        let _ = series.add(&reqs, MetricKind::Counter, 10.0);
        let _ = series.add(&dur, MetricKind::Trend, 3.0 + seq as f64);
        Shard {
            notes: Vec::new(),
            run_id: id.into(),
            node: LOCAL_NODE.into(),
            name: LOCAL_NODE.into(),
            region: LOCAL_NODE.into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last: seq == 2,
            series,
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fusi-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_oldest_runs_beyond_the_bound_are_forgotten_never_the_current_one() {
        let runs: Vec<(String, LocalRun)> = [("a", 10), ("b", 30), ("c", 20), ("d", 40)]
            .into_iter()
            .map(|(id, at)| (id.to_owned(), record(id, at)))
            .collect();
        assert_eq!(to_forget(&runs, 2, "d"), ["c", "a"]);
        assert_eq!(to_forget(&runs, 4, "d"), Vec::<String>::new());
        // A run that started by an earlier clock than the others is still
        // the one being kept.
        assert_eq!(to_forget(&runs, 2, "a"), ["b", "c"]);
        // A record under another run's directory counts as nothing.
        let mut odd = runs.clone();
        odd.push(("e".to_owned(), record("x", 50)));
        assert_eq!(to_forget(&odd, 2, "d"), ["c", "a"]);
    }

    #[test]
    fn a_kept_run_gives_the_same_report_bytes_again_and_the_history_is_bounded() {
        let dir = temp("kept");
        let shards: Vec<Shard> = (0..3).map(|seq| shard("r1", seq)).collect();
        let mut record = record("r1", 1_000);
        record.outcome = "stopped".to_owned();
        record.aborted_by = Some("http_req_duration: p(95)<1ms".to_owned());
        let mut keeper = Keeper::new(&dir);
        keeper.keep("r1", |store| store.save_record("r1", &record));
        // Shards kept in another order than they were merged.
        for s in shards.iter().rev() {
            keeper.keep("r1", |store| store.save_shard(s, &s.encode()).map(drop));
        }
        assert!(keeper.finish("r1").is_ok());
        let want = RunReport::build(&Report::from_shards("r1", shards), &record.meta()).to_json();
        let again = report_again(&dir, "r1")
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.to_json());
        assert_eq!(again.as_deref(), Some(want.as_slice()));
        assert!(matches!(report_again(&dir, "r2"), Ok(None)));
        // More runs than the bound: the oldest go, the newest stay.
        for n in 0..KEEP_LOCAL_RUNS {
            let id = format!("r{n}x");
            let mut keeper = Keeper::new(&dir);
            keeper.keep(&id, |store| {
                store.save_record(&id, &self::record(&id, 2_000 + n as u64))
            });
            assert!(keeper.finish(&id).is_ok());
        }
        let kept = kept_runs(&dir);
        assert_eq!(kept.len(), KEEP_LOCAL_RUNS);
        assert_eq!(
            kept[0].id,
            format!("r{}x", KEEP_LOCAL_RUNS - 1),
            "newest first"
        );
        assert!(kept.iter().all(|r| r.id != "r1"), "the oldest is gone");
        assert!(!dir.join("local-runs/r1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_keeper_that_cannot_write_says_why_and_leaves_nothing_of_the_run() {
        let dir = temp("blocked");
        std::fs::create_dir_all(dir.join("local-runs")).unwrap_or_else(|e| panic!("{e}"));
        let record = record("r1", 1);
        let mut keeper = Keeper::new(&dir);
        keeper.keep("r1", |store| store.save_record("r1", &record));
        // The shards' directory is taken by a file: the first shard fails.
        std::fs::write(dir.join("local-runs/r1/shards"), b"in the way")
            .unwrap_or_else(|e| panic!("{e}"));
        let s = shard("r1", 0);
        keeper.keep("r1", |store| store.save_shard(&s, &s.encode()).map(drop));
        keeper.keep("r1", |store| store.save_record("r1", &record));
        let e = keeper.finish("r1").expect_err("not kept").to_string();
        assert!(e.contains("local-runs/r1/shards/local.0.cbor"), "{e}");
        assert!(!dir.join("local-runs/r1").exists(), "nothing half kept");
        assert!(kept_runs(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
