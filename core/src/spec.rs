//! What a run is: the spec a user submits, the same for a run on one machine
//! and a run across a mesh.
//!
//! A [`RunSpec`] names the scenario module by its sha256 and describes the
//! *whole* load (all VUs, the whole rate). Each node runs the share of it that
//! its [`ExecutionSegment`](super::segment::ExecutionSegment) selects, so the
//! spec never changes with the number of nodes.

use super::data::{DataSpec, check_specs};
use super::statuses::ExpectedStatuses;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::segment::ExecutionSegment;

/// Everything needed to run a load test, independent of where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The scenario module's sha256, lower-case hex.
    pub module_sha256: String,
    /// The scenarios the run drives side by side, each with its executor
    /// (k6's `options.scenarios`): one, named [`DEFAULT_SCENARIO`], for a
    /// run given by flags; those of a run file's `[scenarios.NAME]`
    /// tables otherwise. Never empty in a valid spec. A spec written
    /// before runs had scenarios (its `executor` alone) reads as one
    /// [`DEFAULT_SCENARIO`].
    #[serde(alias = "executor", deserialize_with = "scenarios_or_executor")]
    pub scenarios: Vec<ScenarioSpec>,
    /// Run parameters (`--env K=V`), visible to the scenario.
    pub env: BTreeMap<String, String>,
    /// One iteration fails after this long (default 60 s).
    #[serde(with = "millis")]
    pub iteration_timeout: Duration,
    /// How long in-flight iterations may finish after the executor's end (default 30 s).
    #[serde(with = "millis")]
    pub graceful_stop: Duration,
    /// The most memory one VU's scenario instance may use, in bytes.
    pub vu_memory_limit: u64,
    /// Accept any TLS certificate (self-signed targets).
    pub insecure_skip_tls_verify: bool,
    /// The hosts the run sends to, as `host` or `host:port` (`--target`):
    /// a node started with `--allow-target` refuses a run that names a
    /// host outside its list, or none.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The scenario's file name, for reports on any node (`hello.wasm`).
    #[serde(default)]
    pub scenario: String,
    /// Thresholds in k6 syntax (`--threshold`, and those the scenario
    /// declares), judged on the merged measurements of every node.
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// The least fraction of the planned load a run must deliver to be
    /// `complete` (`--min-delivered`, default 0.99); below it, or when a
    /// node is lost with its share, the run is `short`.
    #[serde(default = "default_min_delivered")]
    pub min_delivered: f64,
    /// What the run does when a node of its plan is lost while it runs
    /// (`--on-loss`).
    #[serde(default)]
    pub on_loss: OnLoss,
    /// The statuses that count as success (`--expected-statuses`, default
    /// 200-399); the rest fail `http_req_failed`.
    #[serde(default)]
    pub expected_statuses: ExpectedStatuses,
    /// Test data shipped with the module (`--data NAME=FILE`), by sha256.
    #[serde(default)]
    pub data: Vec<DataSpec>,
    /// The most new connections each node opens at once, each holding its
    /// slot until its first response (`--max-connecting`); 0 for no limit.
    #[serde(default = "default_max_connecting")]
    pub max_connecting: u32,
    /// The module's `setup` already ran, once, on the node the run was
    /// submitted to: no node runs it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup_ran: bool,
    /// What that `setup` returned, for every VU on every node (at most
    /// [`fusi_sdk::abi::MAX_SETUP_DATA_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_data: Option<serde_bytes::ByteBuf>,
}

/// What a run does when a node of its plan is lost after T0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLoss {
    /// The leader hands the lost node's remaining share to the nodes still
    /// running (arrival rates: its rate; `constant-vus` and `ramping-vus`:
    /// its VUs), from the moment it judged the node lost; what the node
    /// missed before that counts as dropped. The run is `short` only when
    /// what was delivered falls below `--min-delivered`.
    #[default]
    Redistribute,
    /// The others go on; the run ends `short` (exit 97), with the node
    /// listed lost and what it delivered before.
    Continue,
    /// The leader stops the run on every node once a node has looked gone
    /// for 2 s (after the silence that makes it suspect); the run ends
    /// `short` (exit 97).
    Abort,
}

/// The default of [`RunSpec::min_delivered`]: 99 % of the plan.
pub const DEFAULT_MIN_DELIVERED: f64 = 0.99;

/// The default of [`RunSpec::max_connecting`]: under the accept backlog
/// of common servers (nginx's 511, tokio's 1024).
pub const DEFAULT_MAX_CONNECTING: u32 = 256;

/// The most `--max-connecting` may be.
pub const MAX_CONNECTING: u32 = 1_000_000;

fn default_max_connecting() -> u32 {
    DEFAULT_MAX_CONNECTING
}

fn default_min_delivered() -> f64 {
    DEFAULT_MIN_DELIVERED
}

/// `scenarios`, or the one `executor` of a spec stored or sent before runs
/// had scenarios.
fn scenarios_or_executor<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<ScenarioSpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Scenarios(Vec<ScenarioSpec>),
        Executor(Executor),
    }
    Ok(match Either::deserialize(d)? {
        Either::Scenarios(scenarios) => scenarios,
        Either::Executor(executor) => vec![ScenarioSpec::default_with(executor)],
    })
}

/// The name of the one scenario of a run given by flags, as k6 names it.
pub const DEFAULT_SCENARIO: &str = "default";

/// The most scenarios one run may have.
pub const MAX_SCENARIOS: usize = 32;

/// The most tags one scenario may give its samples.
pub const MAX_SCENARIO_TAGS: usize = 32;

/// The most env values one scenario may add to the run's.
pub const MAX_SCENARIO_ENV: usize = 256;

/// Tags a scenario's `tags` may not set: fusi sets them on every sample.
pub const RESERVED_SCENARIO_TAGS: [&str; 8] = [
    SCENARIO_TAG,
    "group",
    "name",
    "method",
    "status",
    "region",
    "check",
    "overflow",
];

/// The longest `start_time` a scenario may have: the longest a run lasts.
pub const MAX_START_TIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tag every sample of a run with named scenarios carries: the name of
/// the scenario whose VU measured it, so thresholds and reports can select
/// one (`http_req_duration{scenario:api}`).
pub const SCENARIO_TAG: &str = "scenario";

/// One scenario of a run: how its load is generated, which exported
/// function its VUs run, from when, and with which parameters and tags.
///
/// Every node runs every scenario on its own execution segment, so a
/// scenario's load splits across the mesh as a run's does, and test data
/// drawn in `unique` mode stays unique across scenarios and nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSpec {
    /// Its name: letters, digits, `_` and `-`, at most 64 (the `scenario`
    /// tag of its samples).
    pub name: String,
    /// How its load is generated.
    pub executor: Executor,
    /// The module's exported function its VUs run (k6's `exec`); `None`
    /// for `iteration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// When it starts, after the run's start (k6's `startTime`).
    #[serde(default, with = "millis", skip_serializing_if = "Duration::is_zero")]
    pub start_time: Duration,
    /// Parameters of its own, over the run's `env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Tags of every sample its VUs record, besides `scenario`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl ScenarioSpec {
    /// The scenario [`DEFAULT_SCENARIO`] with `executor`, running
    /// `iteration`.
    pub fn default_with(executor: Executor) -> ScenarioSpec {
        ScenarioSpec {
            name: DEFAULT_SCENARIO.to_owned(),
            executor,
            exec: None,
            start_time: Duration::ZERO,
            env: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// The exported function its VUs run.
    pub fn exec_name(&self) -> &str {
        self.exec
            .as_deref()
            .unwrap_or(fusi_sdk::abi::exports::ITERATION)
    }

    /// When it stops scheduling work, after the run's start.
    pub fn end(&self) -> Duration {
        self.start_time.saturating_add(self.executor.duration())
    }

    /// Checks its name, function, start and executor; the error names the
    /// scenario.
    fn validate(&self) -> Result<(), SpecError> {
        let named = |what: String| SpecError(format!("scenario {:?}: {what}", self.name));
        check_scenario_name(&self.name).map_err(named)?;
        if let Some(exec) = &self.exec {
            check_exec_name(exec).map_err(named)?;
        }
        if self.tags.len() > MAX_SCENARIO_TAGS || self.env.len() > MAX_SCENARIO_ENV {
            return Err(named(format!(
                "{} tags and {} env values: a scenario may have at most {MAX_SCENARIO_TAGS} and \
                 {MAX_SCENARIO_ENV}",
                self.tags.len(),
                self.env.len()
            )));
        }
        let long = |(k, v): (&String, &String)| k.len() > 128 || v.len() > 4096;
        if self.tags.iter().any(long) || self.env.iter().any(long) {
            return Err(named(
                "a tag or env key is longer than 128 bytes, or its value than 4096".into(),
            ));
        }
        if let Some(key) = self
            .tags
            .keys()
            .find(|k| RESERVED_SCENARIO_TAGS.contains(&k.as_str()))
        {
            return Err(named(format!(
                "the tag `{key}` is set by fusi itself: give the scenario's tags other names"
            )));
        }
        if self.start_time > MAX_START_TIME {
            return Err(named(format!(
                "start_time {} is past the 7 days a run may last",
                format_duration_exact(self.start_time)
            )));
        }
        self.executor.validate().map_err(|e| named(e.0))
    }
}

/// Checks a scenario's name: 1 to 64 letters, digits, `_` or `-`.
pub fn check_scenario_name(name: &str) -> Result<(), String> {
    if crate::printable::is_plain_name(name, 64) {
        Ok(())
    } else {
        Err(format!(
            "the name {:?} is not a scenario name: use 1 to 64 letters, digits, `_` or `-`",
            crate::printable::escape_controls(name.chars().take(80))
        ))
    }
}

/// Checks an `exec` function's name: an identifier of at most 64 bytes,
/// not one of the entry points fusi calls itself.
pub fn check_exec_name(exec: &str) -> Result<(), String> {
    use fusi_sdk::abi::exports;
    let identifier = exec.len() <= 64
        && exec
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && exec.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !identifier {
        return Err(format!(
            "exec {:?} is not a function name: give the name the scenario exports, an identifier of at most 64 letters, digits and `_`",
            crate::printable::escape_controls(exec.chars().take(80))
        ));
    }
    let reserved = [
        exports::SETUP,
        exports::INIT,
        exports::TEARDOWN,
        exports::ABI_VERSION,
        exports::MEMORY,
    ];
    if reserved.contains(&exec) {
        return Err(format!(
            "exec {exec:?} is an entry point fusi calls itself: give the function the scenario's VUs run"
        ));
    }
    Ok(())
}

impl RunSpec {
    /// The defaults for everything but the module and the executor, which
    /// is the run's one scenario, [`DEFAULT_SCENARIO`].
    pub fn new(module_sha256: String, executor: Executor) -> RunSpec {
        RunSpec {
            module_sha256,
            scenarios: vec![ScenarioSpec::default_with(executor)],
            env: BTreeMap::new(),
            iteration_timeout: Duration::from_secs(60),
            graceful_stop: Duration::from_secs(30),
            vu_memory_limit: 64 << 20,
            insecure_skip_tls_verify: false,
            targets: Vec::new(),
            scenario: String::new(),
            thresholds: Vec::new(),
            min_delivered: DEFAULT_MIN_DELIVERED,
            on_loss: OnLoss::Redistribute,
            expected_statuses: ExpectedStatuses::default(),
            data: Vec::new(),
            max_connecting: DEFAULT_MAX_CONNECTING,
            setup_ran: false,
            setup_data: None,
        }
    }
}

/// The `--iteration-timeout` a run may have: at least 1 ms (the wire
/// carries whole milliseconds, and a zero timeout fails every iteration),
/// at most a day.
pub const ITERATION_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(24 * 3600);

/// The `--graceful-stop` a run may have: none, up to an hour. Every node
/// waits this long past a run's end before it counts a silent node lost.
pub const GRACEFUL_STOP: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

/// The `--vu-memory-mib` a run may have, in MiB: each VU reserves its limit
/// of address space, so a forged terabyte would exhaust a node.
pub const VU_MEMORY_MIB: RangeInclusive<u64> = 1..=4096;

impl RunSpec {
    /// Checks the executor and the limits, whoever built the spec (the
    /// CLI, the API or a peer's proposal): the error names the flag, the
    /// spec field and the range allowed.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.check_scenarios()?;
        let duration_in = |value: Duration, range: &RangeInclusive<Duration>, flag, field| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(SpecError(format!(
                    "{flag} ({field}) of {} is out of range: give {} to {}",
                    format_duration_exact(value),
                    format_duration(*range.start()),
                    format_duration(*range.end())
                )))
            }
        };
        duration_in(
            self.iteration_timeout,
            &ITERATION_TIMEOUT,
            "--iteration-timeout",
            "iteration_timeout",
        )?;
        duration_in(
            self.graceful_stop,
            &GRACEFUL_STOP,
            "--graceful-stop",
            "graceful_stop",
        )?;
        let bytes = |mib: u64| mib << 20;
        let memory = bytes(*VU_MEMORY_MIB.start())..=bytes(*VU_MEMORY_MIB.end());
        if !memory.contains(&self.vu_memory_limit) {
            return Err(SpecError(format!(
                "--vu-memory-mib (vu_memory_limit) of {} bytes is out of range: give {} to {} MiB",
                self.vu_memory_limit,
                VU_MEMORY_MIB.start(),
                VU_MEMORY_MIB.end()
            )));
        }
        if !(0.0..=1.0).contains(&self.min_delivered) {
            return Err(SpecError(format!(
                "--min-delivered (min_delivered) of {} is out of range: give 0% to 100% (0 to 1)",
                self.min_delivered
            )));
        }
        check_specs(&self.data).map_err(|e| SpecError(format!("--data: {e}")))?;
        if self.max_connecting > MAX_CONNECTING {
            return Err(SpecError(format!(
                "--max-connecting (max_connecting) of {} is out of range: give 0 (no limit) to {MAX_CONNECTING}",
                self.max_connecting
            )));
        }
        if let Some(data) = &self.setup_data {
            let max = fusi_sdk::abi::MAX_SETUP_DATA_BYTES;
            if data.len() > max || !self.setup_ran {
                return Err(SpecError(format!(
                    "the setup data ({} bytes) is more than the {} KiB a run carries, or no setup ran",
                    data.len(),
                    max >> 10
                )));
            }
        }
        Ok(())
    }
}

impl RunSpec {
    /// Whether the run's scenarios are named: more than one, or one not
    /// called [`DEFAULT_SCENARIO`]. Then every sample carries the
    /// [`SCENARIO_TAG`], and reports break down by scenario; a run given
    /// by flags carries neither.
    pub fn has_named_scenarios(&self) -> bool {
        self.scenarios.len() > 1 || self.scenarios.iter().any(|s| s.name != DEFAULT_SCENARIO)
    }

    /// How long the run schedules work, before the graceful stop: to the
    /// end of its last scenario.
    pub fn duration(&self) -> Duration {
        self.scenarios
            .iter()
            .map(ScenarioSpec::end)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// How long the run lasts at the most from its start: its scenarios'
    /// work, then the graceful stop.
    pub fn longest(&self) -> Duration {
        self.duration().saturating_add(self.graceful_stop)
    }

    /// The most VUs the run may use, across all nodes: its scenarios'
    /// together (they may overlap).
    pub fn max_vus(&self) -> u32 {
        self.scenarios
            .iter()
            .fold(0u32, |n, s| n.saturating_add(s.executor.max_vus()))
    }

    /// The most VUs the share `segment` runs at once, over every scenario.
    pub fn share_vus(&self, segment: &ExecutionSegment) -> u64 {
        self.scenarios
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.executor.share_vus(segment)))
    }

    /// Whether part of a lost node's share can be handed on: when any of
    /// the run's scenarios can (see [`Executor::can_hand_on`]); the others
    /// hand nothing on.
    pub fn can_hand_on(&self) -> bool {
        self.scenarios.iter().any(|s| s.executor.can_hand_on())
    }

    /// Checks the share `segment` of every scenario together against the
    /// most VUs a node will run (`fusi-node up --max-vus`): a plan, from
    /// whichever leader, cannot make a node run more than it announced.
    pub fn check_node_limit(
        &self,
        segment: &ExecutionSegment,
        vu_limit: u32,
    ) -> Result<(), SpecError> {
        match self.scenarios.as_slice() {
            [one] => one.executor.check_node_limit(segment, vu_limit),
            _ => {
                let vus = self.share_vus(segment);
                if vus <= u64::from(vu_limit) {
                    return Ok(());
                }
                Err(SpecError(format!(
                    "its share is {vus} VUs ({} scenarios together), more than the {vu_limit} this \
                     node runs at most (fusi-node up --max-vus {vu_limit}); raise --max-vus or spread \
                     the run over more nodes",
                    self.scenarios.len()
                )))
            }
        }
    }

    /// The executor's k6 name, or the names of the scenarios' executors,
    /// joined by `,`.
    pub fn executor_name(&self) -> String {
        let names: Vec<&str> = self.scenarios.iter().map(|s| s.executor.name()).collect();
        names.join(",")
    }

    /// The first VU id of scenario `index` in the share `segment`: the
    /// scenarios' VU ids follow one another (each scenario's own split by
    /// the segments), so no two VUs of a run share one.
    pub fn first_vu_id(&self, index: usize, segment: &ExecutionSegment) -> u64 {
        let before: u64 = self
            .scenarios
            .iter()
            .take(index)
            .map(|s| u64::from(s.executor.max_vus()))
            .sum();
        let own = self
            .scenarios
            .get(index)
            .map_or(0, |s| u64::from(s.executor.max_vus()));
        before + segment.offset(own) + 1
    }

    /// Checks the scenarios: at least one, at most [`MAX_SCENARIOS`],
    /// names distinct, each valid, and together within a run's bounds.
    fn check_scenarios(&self) -> Result<(), SpecError> {
        if self.scenarios.is_empty() {
            return Err(SpecError(
                "the run has no scenario: give an executor's flags (--vus, --duration, --rate, --stages), or [scenarios.NAME] tables in a run file"
                    .into(),
            ));
        }
        if self.scenarios.len() > MAX_SCENARIOS {
            return Err(SpecError(format!(
                "{} scenarios, more than the {MAX_SCENARIOS} one run may have",
                self.scenarios.len()
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for scenario in &self.scenarios {
            scenario.validate()?;
            if !names.insert(scenario.name.as_str()) {
                return Err(SpecError(format!(
                    "two scenarios are named {:?}: give each its own name",
                    scenario.name
                )));
            }
        }
        const MAX_VUS: u32 = 1_000_000;
        if self.scenarios.len() > 1 && self.max_vus() > MAX_VUS {
            return Err(SpecError(format!(
                "the scenarios use {} VUs together, more than the {MAX_VUS} one run may use",
                self.max_vus()
            )));
        }
        const MAX_RUN: Duration = Duration::from_secs(7 * 24 * 3600);
        if self.duration() > MAX_RUN {
            return Err(SpecError(format!(
                "the run lasts {}, more than the 7 days one run may last",
                format_duration(self.duration())
            )));
        }
        Ok(())
    }
}

/// A duration for an error message: [`format_duration`] where that is
/// exact, else whole seconds and a remainder the user can recognize.
fn format_duration_exact(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format_duration(d)
    } else {
        format!("{d:?}")
    }
}

/// A target arrival rate: `iterations` started per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Iterations per time unit.
    pub iterations: f64,
    /// The time unit.
    #[serde(with = "millis")]
    pub per: Duration,
}

impl Rate {
    /// Iterations per second.
    pub fn per_second(self) -> f64 {
        if self.per.is_zero() {
            0.0
        } else {
            self.iterations / self.per.as_secs_f64()
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.iterations, format_duration(self.per))
    }
}

/// One stage of a ramp: move linearly to `target` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// How long the stage lasts.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// VUs (ramping-vus) or iterations per time unit (ramping-arrival-rate)
    /// reached at the end of the stage.
    pub target: f64,
}

/// How load is generated, named as in k6.
///
/// Closed-model executors (`constant-vus`, `ramping-vus`, `per-vu-iterations`,
/// `shared-iterations`) keep a number of VUs busy: a slow target slows the
/// load down. Open-model executors (`constant-arrival-rate`,
/// `ramping-arrival-rate`) start iterations on a schedule whatever the target
/// does, and measure each from its scheduled start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Executor {
    /// `vus` VUs loop over iterations for `duration`.
    ConstantVus {
        /// VUs, across all nodes.
        vus: u32,
        /// How long.
        #[serde(with = "millis")]
        duration: Duration,
    },
    /// The number of looping VUs follows `stages`, from `start_vus`.
    RampingVus {
        /// VUs at the start.
        start_vus: u32,
        /// The ramp.
        stages: Vec<Stage>,
    },
    /// Each of `vus` VUs runs `iterations` iterations.
    PerVuIterations {
        /// VUs, across all nodes.
        vus: u32,
        /// Iterations per VU.
        iterations: u64,
        /// Gives up after this long.
        #[serde(with = "millis")]
        max_duration: Duration,
    },
    /// `vus` VUs share `iterations` iterations, each taking the next one.
    SharedIterations {
        /// VUs, across all nodes.
        vus: u32,
        /// Iterations in all.
        iterations: u64,
        /// Gives up after this long.
        #[serde(with = "millis")]
        max_duration: Duration,
    },
    /// Starts `rate` iterations for `duration`.
    ConstantArrivalRate {
        /// The arrival rate, across all nodes.
        rate: Rate,
        /// How long.
        #[serde(with = "millis")]
        duration: Duration,
        /// VUs initialized before the start.
        pre_allocated_vus: u32,
        /// At most this many VUs.
        max_vus: u32,
    },
    /// The arrival rate follows `stages` (targets in iterations per `time_unit`).
    RampingArrivalRate {
        /// Iterations per `time_unit` at the start.
        start_rate: f64,
        /// The unit of `start_rate` and the stage targets.
        #[serde(with = "millis")]
        time_unit: Duration,
        /// The ramp.
        stages: Vec<Stage>,
        /// VUs initialized before the start.
        pre_allocated_vus: u32,
        /// At most this many VUs.
        max_vus: u32,
    },
}

impl Executor {
    /// The k6 name of this executor.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::ConstantVus { .. } => "constant-vus",
            Executor::RampingVus { .. } => "ramping-vus",
            Executor::PerVuIterations { .. } => "per-vu-iterations",
            Executor::SharedIterations { .. } => "shared-iterations",
            Executor::ConstantArrivalRate { .. } => "constant-arrival-rate",
            Executor::RampingArrivalRate { .. } => "ramping-arrival-rate",
        }
    }

    /// How long the executor schedules work, before the graceful stop.
    pub fn duration(&self) -> Duration {
        match self {
            Executor::ConstantVus { duration, .. }
            | Executor::ConstantArrivalRate { duration, .. } => *duration,
            Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. } => {
                // Saturating: stages may come from a peer.
                stages
                    .iter()
                    .fold(Duration::ZERO, |a, s| a.saturating_add(s.duration))
            }
            Executor::PerVuIterations { max_duration, .. }
            | Executor::SharedIterations { max_duration, .. } => *max_duration,
        }
    }

    /// Whether a lost node's share can be handed on (`--on-loss
    /// redistribute`): a rate or a number of VUs can, from any instant;
    /// iteration counts cannot, since what the lost node ran of them is not
    /// known until its shards are in.
    pub fn can_hand_on(&self) -> bool {
        matches!(
            self,
            Executor::ConstantVus { .. }
                | Executor::RampingVus { .. }
                | Executor::ConstantArrivalRate { .. }
                | Executor::RampingArrivalRate { .. }
        )
    }

    /// Whether it starts iterations at a rate (open model).
    pub fn is_arrival_rate(&self) -> bool {
        matches!(
            self,
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. }
        )
    }

    /// The most VUs this executor can use, across all nodes.
    pub fn max_vus(&self) -> u32 {
        match self {
            Executor::ConstantVus { vus, .. }
            | Executor::PerVuIterations { vus, .. }
            | Executor::SharedIterations { vus, .. } => *vus,
            Executor::RampingVus { start_vus, stages } => stages
                .iter()
                .map(|s| s.target.max(0.0).ceil() as u32)
                .fold(*start_vus, u32::max),
            Executor::ConstantArrivalRate {
                pre_allocated_vus,
                max_vus,
                ..
            }
            | Executor::RampingArrivalRate {
                pre_allocated_vus,
                max_vus,
                ..
            } => (*max_vus).max(*pre_allocated_vus),
        }
    }

    /// The most VUs the share `segment` of this executor runs at once: its
    /// VUs (closed executors), or at most its share of `max_vus` (and of
    /// the pre-allocated VUs, when more) for arrival-rate executors.
    pub fn share_vus(&self, segment: &ExecutionSegment) -> u64 {
        segment.scale(u64::from(self.max_vus()))
    }

    /// Checks the share `segment` against the most VUs a node will run
    /// (`fusi-node up --max-vus`): a plan, from whichever leader, cannot
    /// make a node run more than it announced.
    pub fn check_node_limit(
        &self,
        segment: &ExecutionSegment,
        vu_limit: u32,
    ) -> Result<(), SpecError> {
        let vus = self.share_vus(segment);
        if vus <= u64::from(vu_limit) {
            return Ok(());
        }
        Err(SpecError(format!(
            "its share is {vus} VUs ({}), more than the {vu_limit} this node runs at most \
             (fusi-node up --max-vus {vu_limit}); raise --max-vus or spread the run over more nodes",
            self.name()
        )))
    }

    /// VUs initialized before the start, across all nodes.
    pub fn initial_vus(&self) -> u32 {
        match self {
            Executor::ConstantArrivalRate {
                pre_allocated_vus, ..
            }
            | Executor::RampingArrivalRate {
                pre_allocated_vus, ..
            } => *pre_allocated_vus,
            other => other.max_vus(),
        }
    }

    /// The highest arrival rate, in iterations per second, of an arrival-rate
    /// executor; `None` for closed executors.
    pub fn peak_rate_per_second(&self) -> Option<f64> {
        match self {
            Executor::ConstantArrivalRate { rate, .. } => Some(rate.per_second()),
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                stages,
                ..
            } => {
                let unit = time_unit.as_secs_f64();
                let peak = stages.iter().map(|s| s.target).fold(*start_rate, f64::max);
                Some(if unit > 0.0 {
                    peak / unit
                } else {
                    f64::INFINITY
                })
            }
            _ => None,
        }
    }

    /// Checks the numbers; the error says which one is wrong and how to fix it.
    pub fn validate(&self) -> Result<(), SpecError> {
        const MAX_VUS: u32 = 1_000_000;
        let bad = |what: String| Err(SpecError(what));
        if self.max_vus() > MAX_VUS {
            return bad(format!(
                "{} VUs is more than the {MAX_VUS} one run may use",
                self.max_vus()
            ));
        }
        // The dispatcher counts every scheduled arrival, kept or dropped, so
        // an absurd rate would keep it busy long past the run's end.
        const MAX_RATE: f64 = 1_000_000.0;
        if let Some(peak) = self.peak_rate_per_second()
            && peak > MAX_RATE
        {
            return bad(format!(
                "an arrival rate of {peak:.0}/s is more than the {MAX_RATE:.0}/s one run may schedule; \
                 lower --rate or the stage targets"
            ));
        }
        const MAX_RUN: Duration = Duration::from_secs(7 * 24 * 3600);
        if self.duration() > MAX_RUN {
            return bad(format!(
                "the run lasts {}, more than the 7 days one run may last",
                format_duration(self.duration())
            ));
        }
        if let Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. } =
            self
            && stages.len() > 1000
        {
            return bad(format!("{} stages, more than 1000", stages.len()));
        }
        if self.duration().is_zero() {
            return bad(
                "the run has no duration: give --duration (for example 30s) or --stages".into(),
            );
        }
        match self {
            Executor::ConstantVus { vus: 0, .. }
            | Executor::PerVuIterations { vus: 0, .. }
            | Executor::SharedIterations { vus: 0, .. } => bad("--vus must be at least 1".into()),
            Executor::PerVuIterations { iterations: 0, .. }
            | Executor::SharedIterations { iterations: 0, .. } => {
                bad("--iterations must be at least 1".into())
            }
            Executor::SharedIterations {
                vus, iterations, ..
            } if u64::from(*vus) > *iterations => bad(format!(
                "{vus} VUs cannot share {iterations} iterations: give at most as many VUs as iterations"
            )),
            Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. }
                if stages.is_empty() =>
            {
                bad("ramping executors need --stages, for example 10s:100,30s:100,10s:0".into())
            }
            Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. }
                if stages
                    .iter()
                    .any(|s| !(s.target.is_finite() && s.target >= 0.0)) =>
            {
                bad("stage targets must be finite and not negative".into())
            }
            Executor::ConstantArrivalRate { rate, max_vus, .. } => {
                if !(rate.iterations.is_finite() && rate.iterations > 0.0) || rate.per.is_zero() {
                    bad(format!("--rate {rate} must be positive, for example 500/s"))
                } else if *max_vus == 0 {
                    bad(
                        "arrival-rate executors need at least one VU: give --vus or --max-vus"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                max_vus,
                ..
            } => {
                if !(start_rate.is_finite() && *start_rate >= 0.0) || time_unit.is_zero() {
                    bad("the start rate must be finite and not negative, with a time unit".into())
                } else if *max_vus == 0 {
                    bad(
                        "arrival-rate executors need at least one VU: give --vus or --max-vus"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// A spec that cannot run; the message names the problem and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// What one node runs of a [`RunSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// The run this share belongs to.
    pub run_id: String,
    /// The node that runs it.
    pub node: String,
    /// Its slice of the load.
    pub segment: ExecutionSegment,
    /// The first VU id of this share; ids are unique across the run.
    pub first_vu_id: u64,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`, `1.5s`, `250us`, or parts
/// summed such as `1m30s`. Units: `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`;
/// a number may have a fraction (kept to the nanosecond). A bare number is
/// refused, because its unit would be a guess; so is a total over a week.
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let text = text.trim();
    let err = |why: &str| {
        SpecError(format!(
            "invalid duration {text:?}: {why}; use a number with a unit, for example 500ms, 30s, 5m, 1h or 1m30s (units: h, m, s, ms, us, ns)"
        ))
    };
    if text.is_empty() {
        return Err(err("it is empty"));
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    if text.chars().all(is_number) {
        return Err(err(&format!(
            "a bare number has no unit: write {text}ms or {text}s"
        )));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !is_number(c))
            .ok_or_else(|| err("a number has no unit"))?;
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest.find(is_number).unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(err("bad number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("out of range"))?
        };
        // The fraction's first 18 digits are more than a nanosecond of an
        // hour needs; the rest cannot change the result.
        let kept = &fraction[..fraction.len().min(18)];
        let scale = 10u128.pow(kept.len() as u32);
        let fraction: u128 = if kept.is_empty() {
            0
        } else {
            kept.parse().map_err(|_| err("bad number"))?
        };
        let part = whole
            .checked_mul(unit_ns)
            .and_then(|ns| ns.checked_add(fraction * unit_ns / scale))
            .ok_or_else(|| err("out of range"))?;
        total = total.checked_add(part).ok_or_else(|| err("out of range"))?;
    }
    if total > 7 * 24 * 3_600_000_000_000 {
        return Err(err("longer than a week"));
    }
    Ok(Duration::from_nanos(
        u64::try_from(total).map_err(|_| err("out of range"))?,
    ))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0s".into()
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        if d.subsec_nanos().is_multiple_of(1000) {
            format!("{}us", d.as_micros())
        } else {
            format!("{}ns", d.as_nanos())
        }
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a rate: `500/s`, `30/m`, `10/100ms`, or `500` (per second).
pub fn parse_rate(text: &str) -> Result<Rate, SpecError> {
    let err = |why: &str| {
        SpecError(format!(
            "invalid rate {text:?}: {why}; use iterations per time unit, for example 500/s or 30/1m"
        ))
    };
    let (count, unit) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
    let iterations: f64 = count.trim().parse().map_err(|_| err("bad number"))?;
    if !(iterations.is_finite() && iterations > 0.0) {
        return Err(err("it must be positive"));
    }
    let unit = unit.trim();
    let per = match unit {
        "s" | "m" | "h" => parse_duration(&format!("1{unit}")),
        _ => parse_duration(unit),
    }
    .map_err(|_| err("bad time unit"))?;
    if per.is_zero() {
        return Err(err("the time unit is zero"));
    }
    Ok(Rate { iterations, per })
}

/// Parses stages: `10s:100,30s:100,10s:0` (duration:target, comma-separated).
pub fn parse_stages(text: &str) -> Result<Vec<Stage>, SpecError> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|stage| {
            let err = |why: String| {
                SpecError(format!(
                    "invalid stage {stage:?}: {why}; write DURATION:TARGET, for example 30s:100"
                ))
            };
            let (d, t) = stage.split_once(':').ok_or_else(|| err("no ':'".into()))?;
            let duration = parse_duration(d).map_err(|e| err(e.0))?;
            let target: f64 = t
                .trim()
                .parse()
                .map_err(|_| err(format!("{t:?} is not a number")))?;
            if !(target.is_finite() && target >= 0.0) {
                return Err(err("the target must not be negative".into()));
            }
            Ok(Stage { duration, target })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|stages| {
            if stages.is_empty() {
                Err(SpecError(format!(
                    "invalid stages {text:?}: none given; for example 10s:100,30s:100,10s:0"
                )))
            } else {
                Ok(stages)
            }
        })
}

/// Serializes a `Duration` as integer milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(".25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(
            parse_duration("1.0000000015s"),
            Ok(Duration::from_nanos(1_000_000_001))
        );
        assert_eq!(
            parse_duration(" 1h2m3s4ms\n"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert_eq!(
            parse_duration("168h"),
            Ok(Duration::from_secs(7 * 24 * 3600))
        );
        for bad in [
            "",
            "30",
            "s",
            "10x",
            "-1s",
            "1e9h",
            "1..2s",
            "ms5",
            ".s",
            "1 s",
            "1S",
            "5d",
            "1m30",
            "168h1ns",
            "99999999999999999999999999999999999999999s",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.0.contains("for example"), "{e}");
        }
    }

    #[test]
    fn durations_format_back() {
        for text in ["500ms", "30s", "5m", "1h", "0s", "250us", "7ns", "1500ms"] {
            assert_eq!(
                format_duration(parse_duration(text).unwrap_or_default()),
                text
            );
        }
    }

    #[test]
    fn rates_parse() {
        let r = parse_rate("500/s").expect("rate");
        assert_eq!(r.per_second(), 500.0);
        assert_eq!(parse_rate("30/m").expect("rate").per_second(), 0.5);
        assert_eq!(parse_rate("10/100ms").expect("rate").per_second(), 100.0);
        assert_eq!(parse_rate("200").expect("rate").per_second(), 200.0);
        for bad in ["", "x/s", "0/s", "-5/s", "5/0s", "5/parsec"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_parse() {
        let s = parse_stages("10s:100,30s:100,10s:0").expect("stages");
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].target, 100.0);
        assert_eq!(s[2].duration, Duration::from_secs(10));
        for bad in ["", "10s", "10s:x", "x:10", "10s:-1"] {
            assert!(parse_stages(bad).is_err(), "{bad}");
        }
    }

    fn valid_spec() -> RunSpec {
        RunSpec::new(
            "a".repeat(64),
            Executor::ConstantVus {
                vus: 1,
                duration: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn setup_data_is_bounded_and_comes_only_from_a_setup_that_ran() {
        let max = fusi_sdk::abi::MAX_SETUP_DATA_BYTES;
        let mut spec = valid_spec();
        spec.setup_ran = true;
        spec.setup_data = Some(serde_bytes::ByteBuf::from(vec![7; max]));
        assert_eq!(spec.validate(), Ok(()));
        spec.setup_data = Some(serde_bytes::ByteBuf::from(vec![7; max + 1]));
        assert!(spec.validate().is_err());
        spec.setup_data = Some(serde_bytes::ByteBuf::from(vec![7; 3]));
        spec.setup_ran = false;
        assert!(spec.validate().is_err(), "setup data with no setup run");
    }

    #[test]
    fn the_defaults_and_the_ends_of_each_range_are_valid() {
        assert_eq!(valid_spec().validate(), Ok(()));
        for (timeout, stop, mib) in [
            (
                ITERATION_TIMEOUT.start(),
                GRACEFUL_STOP.start(),
                VU_MEMORY_MIB.start(),
            ),
            (
                ITERATION_TIMEOUT.end(),
                GRACEFUL_STOP.end(),
                VU_MEMORY_MIB.end(),
            ),
        ] {
            let mut s = valid_spec();
            s.iteration_timeout = *timeout;
            s.graceful_stop = *stop;
            s.vu_memory_limit = mib << 20;
            assert_eq!(s.validate(), Ok(()), "{timeout:?} {stop:?} {mib}");
        }
    }

    #[test]
    fn a_hundred_year_graceful_stop_is_refused_naming_the_field_and_range() {
        let mut s = valid_spec();
        s.graceful_stop = Duration::from_secs(100 * 365 * 24 * 3600);
        let e = s.validate().expect_err("100 years");
        assert_eq!(
            e.0,
            "--graceful-stop (graceful_stop) of 876000h is out of range: give 0s to 1h"
        );
        s.graceful_stop = *GRACEFUL_STOP.end() + Duration::from_millis(1);
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_zero_or_sub_millisecond_iteration_timeout_is_refused() {
        let mut s = valid_spec();
        s.iteration_timeout = Duration::ZERO;
        let e = s.validate().expect_err("zero");
        assert_eq!(
            e.0,
            "--iteration-timeout (iteration_timeout) of 0s is out of range: give 1ms to 24h"
        );
        s.iteration_timeout = Duration::from_micros(500);
        assert!(s.validate().expect_err("500µs").0.contains("500µs"));
        s.iteration_timeout = *ITERATION_TIMEOUT.end() + Duration::from_secs(1);
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_terabyte_or_zero_vu_memory_limit_is_refused() {
        let mut s = valid_spec();
        s.vu_memory_limit = 1 << 40;
        let e = s.validate().expect_err("1 TiB");
        assert_eq!(
            e.0,
            "--vu-memory-mib (vu_memory_limit) of 1099511627776 bytes is out of range: \
             give 1 to 4096 MiB"
        );
        s.vu_memory_limit = 0;
        assert!(s.validate().is_err());
        s.vu_memory_limit = (1 << 20) - 1;
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_min_delivered_outside_zero_to_one_is_refused() {
        let mut s = valid_spec();
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            s.min_delivered = bad;
            let e = s.validate().expect_err("out of range");
            assert!(e.0.contains("--min-delivered"), "{e}");
        }
        s.min_delivered = 0.0;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn the_spec_check_includes_the_executor_check() {
        let mut s = valid_spec();
        s.scenarios[0].executor = Executor::ConstantVus {
            vus: 0,
            duration: Duration::from_secs(1),
        };
        assert!(s.validate().expect_err("0 vus").0.contains("--vus"));
    }

    #[test]
    fn a_share_above_the_nodes_max_vus_is_refused_naming_both_numbers() {
        let half = ExecutionSegment::new(0, 1, 2).expect("segment");
        let closed = Executor::ConstantVus {
            vus: 10,
            duration: Duration::from_secs(1),
        };
        assert_eq!(closed.share_vus(&half), 5);
        assert_eq!(closed.check_node_limit(&half, 5), Ok(()));
        let e = closed.check_node_limit(&half, 4).expect_err("5 > 4");
        assert!(e.0.contains("5 VUs"), "{e}");
        assert!(e.0.contains("--max-vus 4"), "{e}");
        // Arrival rate: the share of max VUs counts, not the pre-allocated ones.
        let open = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 10.0,
                per: Duration::from_secs(1),
            },
            duration: Duration::from_secs(1),
            pre_allocated_vus: 2,
            max_vus: 20,
        };
        assert_eq!(open.share_vus(&half), 10);
        let e = open.check_node_limit(&half, 9).expect_err("10 > 9");
        assert!(e.0.contains("10 VUs (constant-arrival-rate)"), "{e}");
        assert_eq!(open.check_node_limit(&half, 10), Ok(()));
        // More pre-allocated than max VUs: the larger counts.
        let pre = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 10.0,
                per: Duration::from_secs(1),
            },
            duration: Duration::from_secs(1),
            pre_allocated_vus: 30,
            max_vus: 20,
        };
        assert!(pre.check_node_limit(&half, 14).is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let e = Executor::ConstantVus {
            vus: 0,
            duration: Duration::from_secs(1),
        };
        assert!(e.validate().expect_err("0 vus").0.contains("--vus"));
        let e = Executor::SharedIterations {
            vus: 10,
            iterations: 5,
            max_duration: Duration::from_secs(1),
        };
        assert!(e.validate().is_err());
        let e = Executor::RampingVus {
            start_vus: 0,
            stages: vec![
                Stage {
                    duration: Duration::from_secs(1),
                    target: 7.0,
                },
                Stage {
                    duration: Duration::from_secs(1),
                    target: 3.0,
                },
            ],
        };
        assert_eq!(e.max_vus(), 7);
        let too_fast = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 1e9,
                per: Duration::from_secs(1),
            },
            duration: Duration::from_secs(2),
            pre_allocated_vus: 1,
            max_vus: 1,
        };
        assert!(
            too_fast
                .validate()
                .expect_err("too fast")
                .0
                .contains("--rate")
        );
        assert_eq!(e.duration(), Duration::from_secs(2));
        assert!(e.validate().is_ok());
    }

    #[test]
    fn scenarios_are_checked_and_their_vu_ids_never_overlap() {
        let constant = |vus| Executor::ConstantVus {
            vus,
            duration: Duration::from_secs(10),
        };
        let mut spec = RunSpec::new(String::new(), constant(3));
        assert!(!spec.has_named_scenarios());
        spec.scenarios[0].name = "api".into();
        spec.scenarios.push(ScenarioSpec {
            name: "chat".into(),
            exec: Some("chat".into()),
            start_time: Duration::from_secs(5),
            ..ScenarioSpec::default_with(constant(5))
        });
        assert_eq!(spec.validate(), Ok(()));
        assert!(spec.has_named_scenarios());
        assert_eq!(spec.duration(), Duration::from_secs(15));
        assert_eq!(spec.max_vus(), 8);
        assert_eq!(spec.executor_name(), "constant-vus,constant-vus");
        // Every VU id of both scenarios over three nodes, each once.
        let thirds = ExecutionSegment::split(&[1, 1, 1]);
        let mut ids = Vec::new();
        for (index, scenario) in spec.scenarios.iter().enumerate() {
            for segment in &thirds {
                let first = spec.first_vu_id(index, segment);
                let n = scenario.executor.share_vus(segment);
                ids.extend(first..first + n);
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
        let refused = |change: &dyn Fn(&mut RunSpec), says: &str| {
            let mut bad = spec.clone();
            change(&mut bad);
            let e = bad.validate().expect_err(says);
            assert!(e.0.contains(says), "{says}: {e}");
        };
        refused(
            &|s| s.scenarios[1].name = "api".into(),
            "two scenarios are named \"api\"",
        );
        refused(
            &|s| s.scenarios[1].name = "a b".into(),
            "not a scenario name",
        );
        refused(
            &|s| s.scenarios[1].exec = Some("teardown".into()),
            "entry point",
        );
        refused(
            &|s| s.scenarios[1].exec = Some("9lives".into()),
            "not a function name",
        );
        refused(
            &|s| s.scenarios[1].start_time = Duration::from_secs(8 * 24 * 3600),
            "start_time",
        );
        refused(&|s| s.scenarios.clear(), "no scenario");
        refused(
            &|s| s.scenarios[1].executor = constant(0),
            "scenario \"chat\": --vus must be at least 1",
        );
        refused(
            &|s| {
                let one = s.scenarios[1].clone();
                s.scenarios = (0..=MAX_SCENARIOS)
                    .map(|i| ScenarioSpec {
                        name: format!("s{i}"),
                        ..one.clone()
                    })
                    .collect();
            },
            "scenarios, more than",
        );
    }

    #[test]
    fn a_spec_written_before_scenarios_reads_as_one_default_scenario() {
        let spec = RunSpec::new(
            "ab".repeat(32),
            Executor::ConstantVus {
                vus: 3,
                duration: Duration::from_secs(10),
            },
        );
        let mut old = serde_json::to_value(&spec).expect("json");
        let executor = old["scenarios"][0]["executor"].clone();
        if let Some(fields) = old.as_object_mut() {
            fields.remove("scenarios");
            fields.insert("executor".into(), executor);
        }
        let read: RunSpec = serde_json::from_value(old).expect("an old spec reads");
        assert_eq!(read, spec);
        assert!(!read.has_named_scenarios());
        // And the stored form, CBOR, round-trips the new one.
        let mut bytes = Vec::new();
        ciborium::into_writer(&spec, &mut bytes).expect("cbor");
        let back: RunSpec = ciborium::from_reader(bytes.as_slice()).expect("cbor reads");
        assert_eq!(back, spec);
    }

    #[test]
    fn a_scenarios_tags_are_bounded_and_may_not_be_fusis_own() {
        let mut spec = RunSpec::new(
            String::new(),
            Executor::ConstantVus {
                vus: 1,
                duration: Duration::from_secs(1),
            },
        );
        spec.scenarios[0].tags.insert("team".into(), "api".into());
        assert_eq!(spec.validate(), Ok(()));
        for key in ["scenario", "group", "status"] {
            let mut bad = spec.clone();
            bad.scenarios[0].tags.insert(key.into(), "x".into());
            let e = bad.validate().expect_err(key);
            assert!(e.0.contains("set by fusi itself"), "{key}: {e}");
        }
        let mut many = spec.clone();
        many.scenarios[0].tags = (0..=MAX_SCENARIO_TAGS)
            .map(|i| (format!("t{i}"), "x".into()))
            .collect();
        assert!(many.validate().is_err());
        let mut long = spec.clone();
        long.scenarios[0].env.insert("K".into(), "v".repeat(5000));
        assert!(long.validate().is_err());
        let mut connecting = spec.clone();
        connecting.max_connecting = MAX_CONNECTING + 1;
        assert!(connecting.validate().is_err());
    }
}
