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

use super::report::{Report, Scope, Summary};
use super::threshold::{Threshold, ThresholdResult};

/// A node the plan gave a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    /// Its id.
    pub id: String,
    /// Its region.
    pub region: String,
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
    /// What it measured (no timeline).
    pub summary: Summary,
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
    /// How the run ended, or `running`.
    pub outcome: String,
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
        let mut incomplete = Vec::new();
        let mut announced_total = 0;
        let mut complete = true;
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
            nodes.push(NodeReport {
                id: id.to_owned(),
                name: names.get(id).copied().unwrap_or_default().to_owned(),
                region: region.to_owned(),
                state: state.to_owned(),
                shards_received: received,
                shards_announced: announced,
                summary: report.summary_of(&meta.executor, Scope::Node(id)),
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
        RunReport {
            run_id: summary.run_id.clone(),
            scenario: meta.scenario.clone(),
            executor: meta.executor.clone(),
            outcome: meta.outcome.clone(),
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
        }
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
    use crate::core::metrics::{SeriesKey, SeriesSet, names};
    use crate::core::shard::Shard;
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
            scenario: "hello.wasm".into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: ["a", "b", "c", "d"]
                .iter()
                .map(|id| ExpectedNode {
                    id: (*id).into(),
                    region: if *id == "a" { "fra" } else { "nrt" }.into(),
                })
                .collect(),
            lost: lost.iter().map(|s| (*s).to_owned()).collect(),
            thresholds: vec![
                "http_reqs: count==50".into(),
                "http_req_duration{region:nrt}: p(95)<1ms".into(),
                "http_reqs: p95<1".into(),
            ],
            aborted_by: None,
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
