//! The full report of a run, as `fusi-node report` prints it in every
//! format: completeness first, the thresholds, then the summary of the whole
//! run, of each region and of each node, each with its timeline.
//!
//! A [`RunReport`] is a function of the shards a node holds and of facts
//! that every node agrees on once the run is over (the plan's nodes and
//! regions, the nodes the run's end declared lost, the thresholds of the run
//! spec). Nothing local to the node that prints it goes in: no clock reading,
//! no node name from its membership view. So two nodes that hold the same
//! shards print byte-identical JSON, which is what lets a user check one
//! node's report against another's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::data::{DataFormat, DataMode, DataSpec, Exhausted};
use super::report::{NodeCpu, Report, Scope, Summary};
use super::schedule::{ArrivalSchedule, ramp_area};
use super::segment::ExecutionSegment;
use super::spec::{Executor, RunSpec, ScenarioSpec};
use super::threshold::{Threshold, ThresholdResult};

/// A node the plan gave a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    /// Its id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Its part of the load, when the plan is known.
    pub segment: Option<ExecutionSegment>,
}

/// What a run's load is counted in, to weigh what was delivered against
/// what was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadUnit {
    /// Iterations (arrival-rate and iteration executors): each one the plan
    /// schedules counts once it ran, whether it passed, failed or was cut
    /// at the end. One that was dropped (no VU free) or never started (its
    /// node was gone) is missing.
    #[default]
    Iterations,
    /// VU-seconds (`constant-vus`, `ramping-vus`): each node's part of the
    /// VUs times the part of the run it measured, as its shards show.
    VuSeconds,
}

/// A run's planned load, as the report weighs delivery against it: one
/// part per scenario, each weighed on its own (a scenario's load may be
/// counted in iterations and another's in VU-seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Per scenario, in the spec's order.
    pub scenarios: Vec<ScenarioPlan>,
    /// The least fraction of each scenario's load that makes a run whole
    /// (`--min-delivered`), within `[0, 1]`.
    pub min_delivered: f64,
    /// Whether a lost node stops the run (`--on-loss abort`).
    pub abort_on_loss: bool,
    /// Whether the run's samples carry the scenario tag (see
    /// [`RunSpec::has_named_scenarios`]): then each scenario's iterations
    /// are counted apart.
    pub named: bool,
}

/// One scenario's planned load.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioPlan {
    /// The scenario's name.
    pub name: String,
    /// The function its VUs run.
    pub exec: String,
    /// When it starts, ms after T0.
    pub start_ms: u64,
    /// What it is counted in.
    pub unit: LoadUnit,
    /// The scenario's whole load, in `unit`.
    pub total: f64,
    /// How long its executor schedules load, ms.
    pub duration_ms: u64,
    /// For the split of iteration counts: the count the segments scale
    /// (VUs for `per-vu-iterations`, iterations or arrivals otherwise) and
    /// what each of them is worth.
    scaled: u64,
    each: u64,
    /// The executor, to count the part of a share after a handoff.
    executor: Executor,
}

/// Part of a lost node's share, handed on: from `since_ms` after T0,
/// `to` ran `segment` of the load besides its own share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// The node whose share moved (id).
    pub from: String,
    /// The node that took this part (id).
    pub to: String,
    /// From when, ms after T0.
    pub since_ms: u64,
    /// The part.
    pub segment: ExecutionSegment,
    /// The load of the part after `since_ms`, in the report's unit (0 for
    /// a run of several scenarios, whose units may differ: each
    /// scenario's report counts it).
    #[serde(default)]
    pub planned: f64,
}

impl LoadPlan {
    /// The plan of `spec`. A `min_delivered` outside `[0, 1]` (from a
    /// peer) is clamped into it.
    pub fn of(spec: &RunSpec) -> LoadPlan {
        let min_delivered = if spec.min_delivered.is_nan() {
            crate::spec::DEFAULT_MIN_DELIVERED
        } else {
            spec.min_delivered.clamp(0.0, 1.0)
        };
        LoadPlan {
            scenarios: spec.scenarios.iter().map(ScenarioPlan::of).collect(),
            min_delivered,
            abort_on_loss: spec.on_loss == crate::spec::OnLoss::Abort,
            named: spec.has_named_scenarios(),
        }
    }

    /// The load of `segment` from `since_ms` after T0 on, for a
    /// [`Move`]: its one scenario's (see [`ScenarioPlan::share_since`]);
    /// 0 for a run of several.
    pub fn share_since(&self, segment: &ExecutionSegment, since_ms: u64) -> f64 {
        match self.scenarios.as_slice() {
            [one] => one.share_since(segment, since_ms.saturating_sub(one.start_ms)),
            _ => 0.0,
        }
    }
}

impl ScenarioPlan {
    /// The plan of one scenario.
    pub fn of(scenario: &ScenarioSpec) -> ScenarioPlan {
        let executor = &scenario.executor;
        let duration_ms = u64::try_from(executor.duration().as_millis()).unwrap_or(u64::MAX);
        let secs = executor.duration().as_secs_f64();
        let plan = |unit, total, scaled, each| ScenarioPlan {
            name: scenario.name.clone(),
            exec: scenario.exec_name().to_owned(),
            start_ms: u64::try_from(scenario.start_time.as_millis()).unwrap_or(u64::MAX),
            unit,
            total,
            duration_ms,
            scaled,
            each,
            executor: executor.clone(),
        };
        let iterations = |scaled: u64, each: u64| {
            plan(
                LoadUnit::Iterations,
                scaled.saturating_mul(each) as f64,
                scaled,
                each,
            )
        };
        match executor {
            Executor::ConstantVus { vus, .. } => plan(
                LoadUnit::VuSeconds,
                f64::from(*vus) * secs,
                u64::from(*vus),
                0,
            ),
            Executor::RampingVus { start_vus, stages } => plan(
                LoadUnit::VuSeconds,
                ramp_area(f64::from(*start_vus), stages).max(0.0),
                0,
                0,
            ),
            Executor::PerVuIterations {
                vus, iterations: n, ..
            } => iterations(u64::from(*vus), *n),
            Executor::SharedIterations { iterations: n, .. } => iterations(*n, 1),
            arrival => iterations(
                ArrivalSchedule::for_executor(arrival).map_or(0, |s| s.total()),
                1,
            ),
        }
    }

    /// The executor's k6 name.
    pub fn executor_name(&self) -> &'static str {
        self.executor.name()
    }

    /// The part of the load a node with `segment` was given.
    pub fn share(&self, segment: &ExecutionSegment) -> f64 {
        match self.unit {
            // Arrivals go by ownership (see `ExecutionSegment::owns`),
            // iteration counts and VUs by scale.
            LoadUnit::Iterations if self.executor.is_arrival_rate() => {
                segment.owned_among(self.scaled) as f64
            }
            LoadUnit::Iterations => segment.scale(self.scaled).saturating_mul(self.each) as f64,
            LoadUnit::VuSeconds if self.scaled > 0 => {
                segment.scale(self.scaled) as f64 * self.duration_ms as f64 / 1000.0
            }
            LoadUnit::VuSeconds => self.total * segment.fraction(),
        }
    }

    /// The part of [`share`](Self::share) due from `since_ms` after the
    /// scenario's start on: the arrivals of `segment` scheduled from then,
    /// or for VU executors its VU-seconds from then (in proportion to the
    /// time left, for a ramp). Iteration executors hand nothing on: zero.
    pub fn share_since(&self, segment: &ExecutionSegment, since_ms: u64) -> f64 {
        match self.unit {
            LoadUnit::Iterations => {
                let Some(mut schedule) = ArrivalSchedule::for_executor(&self.executor) else {
                    return 0.0;
                };
                let since = std::time::Duration::from_millis(since_ms);
                let mut due = 0u64;
                while let Some((index, at)) = schedule.next_due() {
                    if at >= since && segment.owns(index) {
                        due += 1;
                    }
                }
                due as f64
            }
            LoadUnit::VuSeconds => {
                let left = self.duration_ms.saturating_sub(since_ms) as f64;
                self.share(segment) * left / self.duration_ms.max(1) as f64
            }
        }
    }

    /// VUs of `segment` on average, for a closed model's VU-seconds.
    fn vus_of(&self, segment: &ExecutionSegment) -> f64 {
        if self.scaled > 0 {
            segment.scale(self.scaled) as f64
        } else {
            self.total * segment.fraction() * 1000.0 / self.duration_ms.max(1) as f64
        }
    }
}

/// Planned against delivered load, for the run: what tells a run that did
/// its work from one that only ended.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadDelivery {
    /// What the figures count.
    pub unit: LoadUnit,
    /// The load the run was asked for.
    pub planned: f64,
    /// The load the shards held show was delivered.
    pub delivered: f64,
    /// `delivered / planned` (1 when nothing was planned).
    pub ratio: f64,
    /// The least ratio of a whole run (`--min-delivered`).
    pub min_ratio: f64,
    /// The run fell short: below `min_ratio`, or a node was lost with load
    /// still to send.
    pub short: bool,
    /// In a run of several scenarios, the one these figures are of: the
    /// one that delivered the least of its plan (`short` is any
    /// scenario's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// For an arrival-rate scenario, the most VUs it may run across all
    /// nodes (`--max-vus`, or `--vus` when more): set beside `vus_max` and
    /// `dropped_iterations`, it tells a run short of VUs from one whose
    /// nodes could not keep up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vus: Option<u64>,
}

/// What a report needs besides the shards.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// The scenario's file name.
    pub scenario: String,
    /// The executor's k6 name.
    pub executor: String,
    /// How the run ended (`complete`, `stopped`, `failed`), or `running`.
    pub outcome: String,
    /// The nodes with a share.
    pub expected: Vec<ExpectedNode>,
    /// The nodes the run's end declared lost.
    pub lost: Vec<String>,
    /// The run's thresholds, as given (`--threshold`, and the scenario's own).
    pub thresholds: Vec<String>,
    /// The `abortOnFail` threshold that stopped the run, if one did.
    pub aborted_by: Option<String>,
    /// The planned load, when the spec is known.
    pub load: Option<LoadPlan>,
    /// The parts of lost nodes' shares handed on (`--on-loss
    /// redistribute`), as the run's end lists them.
    pub moves: Vec<Move>,
    /// The run's data sets (`--data`).
    pub data: Vec<DataSpec>,
}

/// How much of the run a report holds. Printed first, because every number
/// after it is only as good as this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCompleteness {
    /// Every node with a share sent its last shard, and every shard it
    /// announced is here.
    pub complete: bool,
    /// Distinct shards held.
    pub shards_received: u64,
    /// Shards announced by the nodes that sent their last one.
    pub shards_announced: u64,
    /// Nodes given a share.
    pub nodes_expected: usize,
    /// Nodes with at least one shard here.
    pub nodes_reporting: usize,
    /// Nodes the run's end declared lost, by name (id where none).
    pub nodes_lost: Vec<String>,
    /// Nodes, not lost, whose shards are not all here yet, by name.
    pub nodes_incomplete: Vec<String>,
}

/// One node's part of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    pub id: String,
    /// Its name, as its shards give it.
    pub name: String,
    /// Its region.
    pub region: String,
    /// `complete`, `incomplete` (shards missing here), `lost` or `silent`
    /// (no shard here at all).
    pub state: String,
    /// Shards held.
    pub shards_received: u64,
    /// Shards it announced, once its last one is here.
    pub shards_announced: Option<u64>,
    /// The load its share was planned to send, in the report's load unit.
    #[serde(default)]
    pub planned: f64,
    /// The load it delivered, as far as its shards held here show.
    #[serde(default)]
    pub delivered: f64,
    /// What it measured (no timeline).
    pub summary: Summary,
    /// How busy its CPUs were, where its shards say (`node_cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<NodeCpu>,
}

/// The full report of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The run.
    pub run_id: String,
    /// The scenario's file name.
    pub scenario: String,
    /// The executor's k6 name.
    pub executor: String,
    /// How the run ended (`complete`, `short`: ended with less load than
    /// planned, `stopped`, `failed`), or `running`.
    pub outcome: String,
    /// Planned against delivered load.
    #[serde(default)]
    pub load: LoadDelivery,
    /// The `abortOnFail` threshold that stopped the run, if one did (as
    /// the run's finish says, the same on every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_by: Option<String>,
    /// How much of the run this report holds.
    pub completeness: RunCompleteness,
    /// Each threshold, judged on the merged measurements of every node.
    pub thresholds: Vec<ThresholdResult>,
    /// The whole run, with its timeline.
    pub summary: Summary,
    /// Per region, each with its timeline.
    pub regions: BTreeMap<String, Summary>,
    /// Per node, in id order.
    pub nodes: Vec<NodeReport>,
    /// Which parts of lost nodes' shares moved where, and from when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<Move>,
    /// The test data the run shipped (`--data`), and how much of it was
    /// drawn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataReport>,
    /// Per scenario, for a run with named scenarios (a run file's
    /// `[scenarios.NAME]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scenarios: BTreeMap<String, ScenarioReport>,
}

/// One scenario of a run with named scenarios: its load and what its VUs
/// measured (the samples tagged with its name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Its executor's k6 name.
    pub executor: String,
    /// The function its VUs ran.
    pub exec: String,
    /// When it started, seconds after the run's start.
    pub start_s: f64,
    /// Its load, planned against delivered.
    pub load: LoadDelivery,
    /// What its VUs measured: no timeline, no VU counts, no first failures
    /// (those are the run's).
    pub summary: Summary,
}

/// One data set of a run, and how much of it the draws used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReport {
    /// The set's name.
    pub name: String,
    /// How its file is written.
    pub format: DataFormat,
    /// `shared` or `unique`.
    pub mode: DataMode,
    /// What a node did when its rows ran out: `stop` or `wrap`.
    pub exhausted: Exhausted,
    /// Rows in the set.
    pub rows: u64,
    /// Rows drawn, over every node (in `unique` mode each a different row,
    /// unless a node wrapped around).
    pub used: u64,
    /// Draws that found a node's rows gone: the data ran out on some node,
    /// which then started no more iterations (`stop`).
    pub ran_out: u64,
}

impl RunReport {
    /// The report of `report`'s shards.
    pub fn build(report: &Report, meta: &RunMeta) -> RunReport {
        let names: BTreeMap<&str, &str> = report
            .nodes()
            .map(|(id, name, _)| (id, name))
            .filter(|(_, name)| !name.is_empty())
            .collect();
        let label = |id: &str| names.get(id).copied().unwrap_or(id).to_owned();
        let mut nodes = Vec::new();
        // Per node, per scenario: planned and delivered load.
        let mut per_node: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut incomplete = Vec::new();
        let mut announced_total = 0;
        let mut complete = true;
        let segments: BTreeMap<&str, &ExecutionSegment> = meta
            .expected
            .iter()
            .filter_map(|n| Some((n.id.as_str(), n.segment.as_ref()?)))
            .collect();
        let mut ids: BTreeMap<&str, &str> = meta
            .expected
            .iter()
            .map(|n| (n.id.as_str(), n.region.as_str()))
            .collect();
        for (id, _, region) in report.nodes() {
            ids.entry(id).or_insert(region);
        }
        for (id, planned_region) in ids {
            let (received, announced) = report.shards_of(id);
            let lost = meta.lost.iter().any(|l| l == id);
            let whole = announced == Some(received);
            complete &= whole;
            announced_total += announced.unwrap_or(0);
            let state = if whole {
                "complete"
            } else if lost {
                "lost"
            } else if received == 0 {
                "silent"
            } else {
                "incomplete"
            };
            if !whole && !lost {
                incomplete.push(label(id));
            }
            let region = report
                .nodes()
                .find(|(n, _, _)| *n == id)
                .map(|(_, _, r)| r)
                .unwrap_or(planned_region);
            let summary = report.summary_of(&meta.executor, Scope::Node(id));
            per_node.push(
                meta.load
                    .iter()
                    .flat_map(|plan| {
                        plan.scenarios.iter().map(|sp| {
                            node_load(
                                sp,
                                plan.named,
                                id,
                                report,
                                segments.get(id).copied(),
                                &meta.moves,
                            )
                        })
                    })
                    .collect::<Vec<(f64, f64)>>(),
            );
            nodes.push(NodeReport {
                id: id.to_owned(),
                name: names.get(id).copied().unwrap_or_default().to_owned(),
                region: region.to_owned(),
                state: state.to_owned(),
                shards_received: received,
                shards_announced: announced,
                planned: 0.0,
                delivered: 0.0,
                summary,
                cpu: report.cpu_of(id),
            });
        }
        let regions = report
            .regions()
            .into_iter()
            .map(|r| {
                (
                    r.to_owned(),
                    report.summary_of(&meta.executor, Scope::Region(r)),
                )
            })
            .collect();
        let summary = report.summary(&meta.executor);
        let thresholds = judge(&meta.thresholds, report);
        let deliveries = deliveries(meta, &nodes, &per_node);
        // The run's load is its weakest scenario's (the one that decides
        // whether it fell short); each node's figures are that scenario's.
        let weakest = deliveries
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.ratio.total_cmp(&b.ratio))
            .map(|(i, _)| i);
        let load = match weakest {
            Some(i) => {
                for (node, loads) in nodes.iter_mut().zip(&per_node) {
                    if let Some((planned, delivered)) = loads.get(i) {
                        node.planned = *planned;
                        node.delivered = *delivered;
                    }
                }
                let mut load = deliveries[i].clone();
                load.short = deliveries.iter().any(|d| d.short);
                if deliveries.len() > 1 {
                    load.scenario = meta
                        .load
                        .as_ref()
                        .and_then(|p| p.scenarios.get(i))
                        .map(|sp| sp.name.clone());
                }
                load
            }
            None => {
                // No plan known: a node's delivery is what it ran.
                for node in &mut nodes {
                    node.delivered = report.iterations_of(&node.id, None) as f64;
                }
                LoadDelivery {
                    ratio: 1.0,
                    ..LoadDelivery::default()
                }
            }
        };
        let scenarios = match &meta.load {
            Some(plan) if plan.named => plan
                .scenarios
                .iter()
                .zip(&deliveries)
                .map(|(sp, load)| {
                    (
                        sp.name.clone(),
                        ScenarioReport {
                            executor: sp.executor_name().to_owned(),
                            exec: sp.exec.clone(),
                            start_s: sp.start_ms as f64 / 1000.0,
                            load: load.clone(),
                            summary: report
                                .summary_of(sp.executor_name(), Scope::Scenario(&sp.name)),
                        },
                    )
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        // A run stopped because a node was lost (`--on-loss abort`) fell
        // short as well: it did not deliver its plan.
        let stopped_by_loss = meta.outcome == "stopped"
            && meta.aborted_by.is_none()
            && !meta.lost.is_empty()
            && meta.load.as_ref().is_some_and(|l| l.abort_on_loss);
        let outcome = if (meta.outcome == "complete" || stopped_by_loss) && load.short {
            "short".to_owned()
        } else {
            meta.outcome.clone()
        };
        let data = meta
            .data
            .iter()
            .map(|set| {
                let drawn = summary.data.get(&set.name).copied().unwrap_or_default();
                DataReport {
                    name: set.name.clone(),
                    format: set.format,
                    mode: set.mode,
                    exhausted: set.exhausted,
                    rows: set.rows,
                    used: drawn.used,
                    ran_out: drawn.ran_out,
                }
            })
            .collect();
        RunReport {
            run_id: summary.run_id.clone(),
            scenario: meta.scenario.clone(),
            executor: meta.executor.clone(),
            outcome,
            load,
            aborted_by: meta.aborted_by.clone(),
            completeness: RunCompleteness {
                complete: complete && !nodes.is_empty(),
                shards_received: summary.completeness.shards_received,
                shards_announced: announced_total,
                nodes_expected: meta.expected.len(),
                nodes_reporting: summary.completeness.nodes,
                nodes_lost: meta.lost.iter().map(|id| label(id)).collect(),
                nodes_incomplete: incomplete,
            },
            thresholds,
            summary,
            regions,
            nodes,
            moves: meta.moves.clone(),
            data,
            scenarios,
        }
    }

    /// Whether the run ended with less load than planned (see
    /// [`LoadDelivery::short`]).
    pub fn load_short(&self) -> bool {
        self.outcome == "short"
    }

    /// Whether any threshold failed, or one stopped the run.
    pub fn thresholds_failed(&self) -> bool {
        self.aborted_by.is_some() || self.thresholds.iter().any(|t| !t.pass)
    }

    /// The report as JSON, the same bytes on every node holding the same
    /// shards.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs of strings, numbers and maps with string keys
        // always encode.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The timeline as CSV: one row per interval for the whole run
    /// (`scope` = `all`), then per region (`region:fra`).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "scope,t_s,requests,rps,failed,p50_ms,p95_ms,p99_ms,iterations,dropped,vus\n",
        );
        let scopes = std::iter::once(("all".to_owned(), &self.summary))
            .chain(self.regions.iter().map(|(r, s)| (format!("region:{r}"), s)));
        for (scope, summary) in scopes {
            for p in &summary.timeline {
                let _ = writeln!(
                    out,
                    "{scope},{:.3},{},{:.3},{},{:.3},{:.3},{:.3},{},{},{}",
                    p.t_s,
                    p.requests,
                    p.rps,
                    p.failed,
                    p.p50_ms,
                    p.p95_ms,
                    p.p99_ms,
                    p.iterations,
                    p.dropped,
                    p.vus
                );
            }
        }
        out
    }
}

/// One node's planned and delivered load of one scenario: its own share
/// up to a handoff of it, and the parts it took from others after theirs.
fn node_load(
    plan: &ScenarioPlan,
    named: bool,
    id: &str,
    report: &Report,
    segment: Option<&ExecutionSegment>,
    moves: &[Move],
) -> (f64, f64) {
    // Handoffs are timed from T0, the scenario's load from its start.
    let since = |ms: u64| ms.saturating_sub(plan.start_ms);
    let moved_at = moves.iter().find(|m| m.from == id).map(|m| m.since_ms);
    let taken: Vec<&Move> = moves.iter().filter(|m| m.to == id).collect();
    let own = segment.map_or(0.0, |segment| {
        plan.share(segment) - moved_at.map_or(0.0, |t| plan.share_since(segment, since(t)))
    });
    let planned = own
        + taken
            .iter()
            .map(|m| plan.share_since(&m.segment, since(m.since_ms)))
            .sum::<f64>();
    let delivered = match plan.unit {
        LoadUnit::VuSeconds => {
            // The time the node measured within the scenario.
            let measured = report
                .active_ms_of(id)
                .saturating_sub(plan.start_ms)
                .min(plan.duration_ms) as f64;
            let own_vus = segment.map_or(0.0, |s| plan.vus_of(s));
            let vu_ms = own_vus * measured
                + taken
                    .iter()
                    .map(|m| {
                        plan.vus_of(&m.segment) * (measured - since(m.since_ms) as f64).max(0.0)
                    })
                    .sum::<f64>();
            (vu_ms / 1000.0).min(planned)
        }
        LoadUnit::Iterations => {
            report.iterations_of(id, named.then_some(plan.name.as_str())) as f64
        }
    };
    (planned, delivered)
}

/// Each scenario's load, planned against delivered. A scenario is short
/// when it delivered less than `min_delivered` of its plan, or when a node
/// was lost before its share was done (its load was not handed on): lost,
/// and its shards here are not all it announced. A node declared lost
/// whose last shard did arrive (only its `Done` was missed) is weighed by
/// its load alone.
fn deliveries(
    meta: &RunMeta,
    nodes: &[NodeReport],
    per_node: &[Vec<(f64, f64)>],
) -> Vec<LoadDelivery> {
    let Some(plan) = &meta.load else {
        return Vec::new();
    };
    let lost_unmoved = nodes
        .iter()
        .any(|n| n.state == "lost" && !meta.moves.iter().any(|m| m.from == n.id));
    plan.scenarios
        .iter()
        .enumerate()
        .map(|(i, sp)| {
            let delivered: f64 = per_node
                .iter()
                .filter_map(|loads| loads.get(i))
                .map(|l| l.1)
                .sum();
            let ratio = if sp.total > 0.0 {
                delivered / sp.total
            } else {
                1.0
            };
            // Rounded as the report prints it, so that what the user reads
            // and the verdict agree, and every node computes the same.
            let ratio = (ratio * 1e6).round() / 1e6;
            LoadDelivery {
                unit: sp.unit,
                planned: sp.total,
                delivered,
                ratio,
                min_ratio: plan.min_delivered,
                short: ratio < plan.min_delivered || lost_unmoved,
                scenario: None,
                max_vus: sp
                    .executor
                    .is_arrival_rate()
                    .then(|| u64::from(sp.executor.max_vus())),
            }
        })
        .collect()
}

/// The thresholds judged on a report's totals. One that does not parse
/// (a run spec is checked at submission, so only a newer node's syntax) fails,
/// with the parse error as its problem.
pub fn judge(thresholds: &[String], report: &Report) -> Vec<ThresholdResult> {
    let duration_s = report.end_ms() as f64 / 1000.0;
    thresholds
        .iter()
        .map(|text| match Threshold::parse(text) {
            Ok(t) => t.judge(report.totals(), duration_s),
            Err(e) => ThresholdResult {
                threshold: text.clone(),
                metric: String::new(),
                observed: None,
                pass: false,
                problem: Some(e.to_string()),
                abort_on_fail: false,
            },
        })
        .collect()
}

/// The first threshold with `abortOnFail` that fails on the measurements
/// merged so far, once its `delayAbortEval` has passed in the run. A
/// threshold with no samples yet (no requests in the first interval) does
/// not abort: it has not failed, it has not been measured.
pub fn abort_verdict(thresholds: &[Threshold], report: &Report) -> Option<ThresholdResult> {
    let elapsed_ms = report.end_ms();
    let duration_s = elapsed_ms as f64 / 1000.0;
    thresholds
        .iter()
        .filter(|t| t.abort_on_fail && u128::from(elapsed_ms) >= t.delay_abort_eval.as_millis())
        .map(|t| t.judge(report.totals(), duration_s))
        .find(|r| !r.pass && r.observed.is_some())
}

#[cfg(test)]
mod timing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SeriesKey, SeriesSet, names};
    use crate::shard::Shard;
    use fusi_sdk::abi::MetricKind;

    fn shard(node: &str, region: &str, seq: u64, last: bool) -> Shard {
        let mut series = SeriesSet::new();
        let _ = series.add(
            &SeriesKey::new(names::HTTP_REQS, [("status".into(), "200".into())]),
            MetricKind::Counter,
            10.0,
        );
        let _ = series.add(
            &SeriesKey::new(names::HTTP_REQ_DURATION, []),
            MetricKind::Trend,
            3.0,
        );
        Shard {
            notes: Vec::new(),
            run_id: "r".into(),
            node: node.into(),
            name: format!("{region}-{node}"),
            region: region.into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last,
            series,
        }
    }

    fn meta(lost: &[&str]) -> RunMeta {
        RunMeta {
            data: Vec::new(),
            scenario: "hello.wasm".into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: ["a", "b", "c", "d"]
                .iter()
                .map(|id| ExpectedNode {
                    id: (*id).into(),
                    region: if *id == "a" { "fra" } else { "nrt" }.into(),
                    segment: None,
                })
                .collect(),
            lost: lost.iter().map(|s| (*s).to_owned()).collect(),
            thresholds: vec![
                "http_reqs: count==50".into(),
                "http_req_duration{region:nrt}: p(95)<1ms".into(),
                "http_reqs: p95<1".into(),
            ],
            aborted_by: None,
            load: None,
            moves: Vec::new(),
        }
    }

    #[test]
    fn completeness_names_lost_incomplete_and_silent_nodes() {
        let shards = vec![
            shard("a", "fra", 0, false),
            shard("a", "fra", 1, true),
            shard("b", "nrt", 0, false),
            shard("b", "nrt", 2, true),
            shard("c", "nrt", 0, false),
        ];
        let report = RunReport::build(&Report::from_shards("r", shards), &meta(&["c"]));
        let c = &report.completeness;
        assert!(!c.complete);
        assert_eq!((c.shards_received, c.shards_announced), (5, 5));
        assert_eq!((c.nodes_expected, c.nodes_reporting), (4, 3));
        assert_eq!(c.nodes_lost, vec!["nrt-c".to_owned()]);
        assert_eq!(c.nodes_incomplete, vec!["nrt-b".to_owned(), "d".to_owned()]);
        let states: Vec<(&str, &str)> = report
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.state.as_str()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("a", "complete"),
                ("b", "incomplete"),
                ("c", "lost"),
                ("d", "silent")
            ]
        );
        assert_eq!(
            report.nodes[3].region, "nrt",
            "a silent node keeps its planned region"
        );
        assert_eq!(report.regions.len(), 2);
        assert_eq!(report.regions["nrt"].http.requests, 30);
        assert_eq!(report.summary.http.requests, 50);
        let verdicts: Vec<bool> = report.thresholds.iter().map(|t| t.pass).collect();
        assert_eq!(
            verdicts,
            vec![true, false, false],
            "{:?}",
            report.thresholds
        );
        let observed = report.thresholds[1].observed.unwrap_or(0.0);
        assert!((observed - 3.0).abs() < 0.01, "nrt's p95 alone: {observed}");
        assert!(
            report.thresholds[2]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("p(95)")),
            "{:?}",
            report.thresholds[2]
        );
        assert!(report.thresholds_failed());
    }

    /// A shard of `iterations` completed and `failed` failed iterations
    /// over `[seq, seq + 1)` s.
    fn iterations_shard(node: &str, seq: u64, last: bool, iterations: f64, failed: f64) -> Shard {
        let mut s = shard(node, "fra", seq, last);
        let _ = s.series.add(
            &SeriesKey::new(names::ITERATIONS, []),
            MetricKind::Counter,
            iterations,
        );
        let _ = s.series.add(
            &SeriesKey::new(
                names::ITERATIONS_FAILED,
                [("reason".into(), "timeout".into())],
            ),
            MetricKind::Counter,
            failed,
        );
        s
    }

    fn thirds_meta(spec: &RunSpec, lost: &[&str]) -> RunMeta {
        let thirds = ExecutionSegment::split(&[1, 1, 1]);
        RunMeta {
            data: Vec::new(),
            scenario: "arrival.wasm".into(),
            executor: spec.executor_name(),
            outcome: "complete".into(),
            expected: ["a", "b", "c"]
                .iter()
                .zip(thirds)
                .map(|(id, segment)| ExpectedNode {
                    id: (*id).into(),
                    region: "fra".into(),
                    segment: Some(segment),
                })
                .collect(),
            lost: lost.iter().map(|s| (*s).to_owned()).collect(),
            thresholds: Vec::new(),
            aborted_by: None,
            load: Some(LoadPlan::of(spec)),
            moves: Vec::new(),
        }
    }

    fn arrival_spec() -> RunSpec {
        RunSpec::new(
            String::new(),
            Executor::ConstantArrivalRate {
                rate: crate::spec::Rate {
                    iterations: 300.0,
                    per: std::time::Duration::from_secs(1),
                },
                duration: std::time::Duration::from_secs(10),
                pre_allocated_vus: 10,
                max_vus: 10,
            },
        )
    }

    #[test]
    fn a_lost_share_handed_on_moves_its_plan_and_the_run_is_whole_if_the_load_was() {
        let spec = arrival_spec();
        let mut meta = thirds_meta(&spec, &["c"]);
        let plan = LoadPlan::of(&spec);
        let c = ExecutionSegment::split(&[1, 1, 1])[2];
        let parts = c.subdivide(&[1, 1]).expect("fits");
        meta.moves = ["a", "b"]
            .iter()
            .zip(parts)
            .map(|(to, segment)| Move {
                from: "c".into(),
                to: (*to).into(),
                since_ms: 3_500,
                segment,
                planned: plan.share_since(&segment, 3_500),
            })
            .collect();
        // c ran 3 s (300) and missed 3.0-3.5 s; a and b each took 325 of
        // its 650 arrivals from 3.5 s on.
        let handed_on = || -> Vec<Shard> {
            ["a", "b", "c"]
                .iter()
                .flat_map(|n| {
                    let (intervals, each) = match *n {
                        "c" => (3, 100.0),
                        _ => (10, 132.5),
                    };
                    (0..intervals).map(move |i| iterations_shard(n, i, i == 9, each, 0.0))
                })
                .collect()
        };
        let report = RunReport::build(&Report::from_shards("r", handed_on()), &meta);
        let by_id: BTreeMap<&str, (f64, f64)> = report
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), (n.planned, n.delivered)))
            .collect();
        // Arrivals go by ownership, each node's count within a few of its
        // fraction, and the plan adds up exactly.
        let near = |got: f64, ideal: f64| (got - ideal).abs() <= 13.0;
        assert!(
            near(by_id["c"].0, 350.0),
            "c's plan stops where its share moved: {by_id:?}"
        );
        assert!(near(by_id["a"].0, 1325.0), "{by_id:?}");
        assert!(near(by_id["b"].0, 1325.0), "{by_id:?}");
        assert_eq!(by_id.values().map(|p| p.0).sum::<f64>(), 3000.0);
        assert_eq!(report.load.planned, 3000.0);
        assert_eq!(report.load.delivered, 2950.0);
        assert_eq!(report.outcome, "short", "2950 of 3000 is under 99 %");
        assert_eq!(report.moves.len(), 2);
        // With a tolerance that covers the missed half second, whole:
        // a lost node whose share moved does not make a run short by itself.
        let mut spec = spec.clone();
        spec.min_delivered = 0.98;
        meta.load = Some(LoadPlan::of(&spec));
        let report = RunReport::build(&Report::from_shards("r", handed_on()), &meta);
        assert_eq!(report.outcome, "complete", "{:?}", report.load);
        // Without the move, the same loss is short whatever the tolerance.
        meta.moves.clear();
        let shards: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| {
                let intervals = if *n == "c" { 3 } else { 10 };
                (0..intervals).map(move |i| iterations_shard(n, i, i == 9, 100.0, 0.0))
            })
            .collect();
        let report = RunReport::build(&Report::from_shards("r", shards), &meta);
        assert_eq!(report.outcome, "short");
    }

    /// A run of two scenarios: `api`, 300 arrivals a second for 10 s, and
    /// `chat`, 30 VUs for 5 s from 5 s in.
    fn two_scenarios() -> RunSpec {
        let mut spec = arrival_spec();
        spec.scenarios[0].name = "api".into();
        spec.scenarios.push(crate::spec::ScenarioSpec {
            start_time: std::time::Duration::from_secs(5),
            ..crate::spec::ScenarioSpec::default_with(Executor::ConstantVus {
                vus: 30,
                duration: std::time::Duration::from_secs(5),
            })
        });
        spec.scenarios[1].name = "chat".into();
        spec
    }

    /// A node's shards over `[0, 10)` s: each interval `api` and `chat`
    /// iterations, tagged with their scenario.
    fn scenario_shards(api: f64, chat: f64) -> Vec<Shard> {
        ["a", "b", "c"]
            .iter()
            .flat_map(|n| {
                (0..10).map(move |i| {
                    let mut s = shard(n, "fra", i, i == 9);
                    for (name, count) in [("api", api), ("chat", chat)] {
                        let _ = s.series.add(
                            &SeriesKey::new(
                                names::ITERATIONS,
                                [(crate::spec::SCENARIO_TAG.into(), name.into())],
                            ),
                            MetricKind::Counter,
                            count,
                        );
                    }
                    s
                })
            })
            .collect()
    }

    #[test]
    fn each_scenario_is_weighed_on_its_own_samples_and_the_weakest_decides() {
        let spec = two_scenarios();
        assert!(spec.has_named_scenarios());
        let meta = thirds_meta(&spec, &[]);
        let report = RunReport::build(
            &Report::from_shards("r", scenario_shards(100.0, 50.0)),
            &meta,
        );
        assert_eq!(report.outcome, "complete", "{:?}", report.load);
        let api = &report.scenarios["api"];
        assert_eq!(
            (api.load.unit, api.load.planned, api.load.delivered),
            (LoadUnit::Iterations, 3000.0, 3000.0),
            "api counts its own iterations, not the chat's"
        );
        assert_eq!(api.summary.iterations.completed, 3000);
        assert_eq!(api.executor, "constant-arrival-rate");
        let chat = &report.scenarios["chat"];
        assert_eq!(chat.start_s, 5.0);
        assert_eq!(
            (chat.load.unit, chat.load.planned, chat.load.delivered),
            (LoadUnit::VuSeconds, 150.0, 150.0),
            "30 VUs for the 5 s each node measured after the chat's start"
        );
        assert_eq!(chat.summary.iterations.completed, 1500);
        assert!(chat.summary.timeline.is_empty());
        assert_eq!(report.summary.iterations.completed, 4500);
        // api fell 10 % short: the run is short, and its load line is api's.
        let report = RunReport::build(
            &Report::from_shards("r", scenario_shards(90.0, 50.0)),
            &meta,
        );
        assert_eq!(report.outcome, "short");
        assert_eq!(report.load.scenario.as_deref(), Some("api"));
        assert_eq!(
            (report.load.planned, report.load.delivered),
            (3000.0, 2700.0)
        );
        assert!(report.scenarios["api"].load.short && !report.scenarios["chat"].load.short);
        assert_eq!(
            report.nodes.iter().map(|n| n.delivered).sum::<f64>(),
            2700.0
        );
        // A run of one unnamed scenario has no breakdown, and its JSON no
        // `scenarios` key: reports of earlier runs read the same.
        let one = RunReport::build(
            &Report::from_shards("r", scenario_shards(100.0, 0.0)),
            &thirds_meta(&arrival_spec(), &[]),
        );
        assert!(one.scenarios.is_empty() && one.load.scenario.is_none());
        assert!(!String::from_utf8_lossy(&one.to_json()).contains("\"scenarios\""));
    }

    #[test]
    fn a_run_that_delivered_its_plan_is_complete_and_one_that_lost_a_node_is_short() {
        let spec = arrival_spec();
        // Each node ran its 1000 arrivals over 10 intervals, 3 of them failing.
        let whole: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| (0..10).map(move |i| iterations_shard(n, i, i == 9, 97.0, 3.0)))
            .collect();
        let report = RunReport::build(&Report::from_shards("r", whole), &thirds_meta(&spec, &[]));
        assert_eq!(report.outcome, "complete");
        assert_eq!(report.load.unit, LoadUnit::Iterations);
        assert_eq!(
            (report.load.planned, report.load.delivered),
            (3000.0, 3000.0)
        );
        assert!(!report.load.short && !report.load_short());
        assert!(
            report
                .nodes
                .iter()
                .all(|n| (n.planned - 1000.0).abs() <= 13.0),
            "each third owns about 1000 arrivals"
        );
        assert_eq!(report.nodes.iter().map(|n| n.planned).sum::<f64>(), 3000.0);

        // Node c was killed at 3 s: 300 of its 1000, and the finish names it lost.
        let cut: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| {
                let intervals = if *n == "c" { 3 } else { 10 };
                (0..intervals).map(move |i| iterations_shard(n, i, i == 9, 100.0, 0.0))
            })
            .collect();
        let report = RunReport::build(&Report::from_shards("r", cut), &thirds_meta(&spec, &["c"]));
        assert_eq!(report.outcome, "short");
        assert!(report.load_short());
        assert_eq!(report.load.delivered, 2300.0);
        assert!((report.load.ratio - 2300.0 / 3000.0).abs() < 1e-6);
        let c = report.nodes.iter().find(|n| n.id == "c").expect("c");
        assert_eq!(
            (c.planned, c.delivered, c.state.as_str()),
            (
                ExecutionSegment::split(&[1, 1, 1])[2].owned_among(3000) as f64,
                300.0,
                "lost"
            )
        );

        // A node declared lost whose every shard arrived (only its Done was
        // missed) delivered its share: the run is whole.
        let whole: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| (0..10).map(move |i| iterations_shard(n, i, i == 9, 100.0, 0.0)))
            .collect();
        let report = RunReport::build(
            &Report::from_shards("r", whole),
            &thirds_meta(&spec, &["c"]),
        );
        assert_eq!(report.outcome, "complete", "{:?}", report.load);

        // Dropped iterations alone make a run short too, unless the user's
        // tolerance covers them.
        let dropped: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| (0..10).map(move |i| iterations_shard(n, i, i == 9, 97.0, 0.0)))
            .collect();
        let report = RunReport::build(
            &Report::from_shards("r", dropped.clone()),
            &thirds_meta(&spec, &[]),
        );
        assert_eq!(report.outcome, "short", "97 % < 99 %");
        let mut lenient = spec.clone();
        lenient.min_delivered = 0.95;
        let report = RunReport::build(
            &Report::from_shards("r", dropped),
            &thirds_meta(&lenient, &[]),
        );
        assert_eq!(report.outcome, "complete", "97 % >= 95 %");
    }

    #[test]
    fn closed_models_count_vu_seconds_from_how_long_each_node_measured() {
        let spec = RunSpec::new(
            String::new(),
            Executor::ConstantVus {
                vus: 30,
                duration: std::time::Duration::from_secs(10),
            },
        );
        let shards: Vec<Shard> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| {
                let intervals = if *n == "b" { 4 } else { 10 };
                (0..intervals).map(move |i| iterations_shard(n, i, i == intervals - 1, 5.0, 0.0))
            })
            .collect();
        let report = RunReport::build(&Report::from_shards("r", shards), &thirds_meta(&spec, &[]));
        assert_eq!(report.load.unit, LoadUnit::VuSeconds);
        assert_eq!(report.load.planned, 300.0);
        assert_eq!(report.load.delivered, 100.0 + 40.0 + 100.0);
        assert_eq!(report.outcome, "short");
        let stopped = RunMeta {
            outcome: "stopped".into(),
            ..thirds_meta(&spec, &[])
        };
        let shards: Vec<Shard> = (0..4)
            .map(|i| iterations_shard("a", i, i == 3, 5.0, 0.0))
            .collect();
        let report = RunReport::build(&Report::from_shards("r", shards), &stopped);
        assert_eq!(report.outcome, "stopped", "a stopped run stays stopped");
    }

    #[test]
    fn abort_waits_for_its_delay_and_for_samples() {
        let parse = |t: &str| Threshold::parse(t).expect("parses");
        let thresholds = vec![
            parse("http_req_duration: p(95)<1ms abortOnFail delayAbortEval=2s"),
            parse("iterations: count>5"),
            parse("http_req_failed: rate<0.5 abortOnFail"),
        ];
        let mut report = Report::new("r");
        report.add(&shard("a", "fra", 0, false));
        assert!(
            abort_verdict(&thresholds, &report).is_none(),
            "p(95) fails but its delay has not passed; http_req_failed has no samples"
        );
        report.add(&shard("a", "fra", 1, false));
        let verdict = abort_verdict(&thresholds, &report).expect("aborts after 2 s");
        assert!(verdict.threshold.starts_with("http_req_duration"));
        assert!(verdict.abort_on_fail);
    }

    #[test]
    fn a_whole_run_is_complete_and_its_csv_has_a_row_per_interval_and_scope() {
        let shards = vec![
            shard("a", "fra", 0, false),
            shard("a", "fra", 1, true),
            shard("b", "nrt", 0, true),
        ];
        let mut m = meta(&[]);
        m.expected.truncate(2);
        let report = RunReport::build(&Report::from_shards("r", shards), &m);
        assert!(report.completeness.complete);
        assert!(report.completeness.nodes_incomplete.is_empty());
        let csv = report.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("scope,t_s,requests,rps"));
        // all: 2 intervals; fra: 2; nrt: 1.
        assert_eq!(lines.len(), 1 + 2 + 2 + 1, "{csv}");
        assert!(lines[1].starts_with("all,0.000,20,"), "{}", lines[1]);
        assert!(lines[5].starts_with("region:nrt,0.000,10,"), "{}", lines[5]);
    }
}
