//! How long the full report of a realistic run takes to build, from stored
//! shard bytes to the JSON a node serves: 10 nodes in 3 regions, 60
//! intervals each, the series the `hello` scenario records (two tag sets of
//! requests, seven timings each, iterations, checks, errors, data, VUs) and
//! a few thousand samples per latency histogram.
//!
//! Shards are read and merged as `ReportSource::build` does it, with
//! `SparseShard::decode` and `Report::add_sparse`. Ignored by default; run
//! it in a release build:
//!
//! ```text
//! cargo test --release -p fusi-node --lib -- --ignored --nocapture merge_timing
//! ```

use std::time::{Duration, Instant};

use fusi_sdk::abi::MetricKind;
use hdrhistogram::Histogram;

use super::{ExpectedNode, RunMeta, RunReport};
use crate::metrics::{SeriesKey, SeriesSet, Value, names, new_histogram};
use crate::report::Report;
use crate::rng::Rng;
use crate::shard::{Shard, SparseShard};

const NODES: u64 = 10;
const INTERVALS: u64 = 60;
const REGIONS: [&str; 3] = ["fra", "nrt", "ewr"];
const RUNS: usize = 5;

/// A sample in µs around `median_us`, with a long tail.
fn latency(rng: &mut Rng, median_us: u64) -> u64 {
    let spread = rng.below(1000);
    let tail = if rng.chance(0.01) { 20 } else { 1 };
    median_us / 2 + median_us * spread / 1000 * tail + rng.below(median_us / 4 + 1)
}

fn trend(rng: &mut Rng, samples: u64, median_us: u64, zero_share: f64) -> Value {
    let mut h: Histogram<u64> = new_histogram();
    for _ in 0..samples {
        let v = if rng.chance(zero_share) {
            0
        } else {
            latency(rng, median_us)
        };
        if h.record(v).is_err() {
            h.saturating_record(v);
        }
    }
    Value::Trend(h)
}

/// One node's interval, as its recorder would seal it, with about
/// `requests` requests.
fn series(rng: &mut Rng, requests: u64) -> SeriesSet {
    let mut set = SeriesSet::new();
    let url = "http://10.0.0.9:8080/hello";
    for (status, requests) in [
        ("200", requests * 5 / 6 + rng.below(requests / 3 + 1)),
        ("503", 1 + rng.below(requests / 100 + 1)),
    ] {
        let tags = SeriesKey::new(
            "",
            [
                ("method".to_owned(), "GET".to_owned()),
                ("name".to_owned(), url.to_owned()),
                ("scenario".to_owned(), "default".to_owned()),
                ("status".to_owned(), status.to_owned()),
            ],
        )
        .tags;
        let key = |metric: &str| SeriesKey {
            metric: metric.to_owned(),
            tags: tags.clone(),
        };
        let failed = if status == "200" { 0 } else { requests };
        let _ = set.merge(&key(names::HTTP_REQS), &Value::Counter(requests as f64));
        let _ = set.merge(
            &key(names::HTTP_REQ_FAILED),
            &Value::Rate {
                passes: failed,
                fails: requests - failed,
            },
        );
        for (metric, median_us, zero_share) in [
            (names::HTTP_REQ_DURATION, 2000, 0.0),
            (names::HTTP_REQ_BLOCKED, 5, 0.99),
            (names::HTTP_REQ_CONNECTING, 150, 0.99),
            (names::HTTP_REQ_TLS_HANDSHAKING, 0, 1.0),
            (names::HTTP_REQ_SENDING, 20, 0.0),
            (names::HTTP_REQ_WAITING, 1900, 0.0),
            (names::HTTP_REQ_RECEIVING, 60, 0.0),
        ] {
            let _ = set.merge(&key(metric), &trend(rng, requests, median_us, zero_share));
        }
        if status == "503" {
            let errors = SeriesKey::new(
                names::ERRORS,
                [
                    ("kind".to_owned(), "status_5xx".to_owned()),
                    ("name".to_owned(), url.to_owned()),
                ],
            );
            let _ = set.merge(&errors, &Value::Counter(requests as f64));
        }
    }
    let vu = [("scenario".to_owned(), "default".to_owned())];
    let iterations = requests * 5 / 6 + rng.below(requests / 3 + 1);
    let _ = set.merge(
        &SeriesKey::new(names::ITERATIONS, vu.clone()),
        &Value::Counter(iterations as f64),
    );
    let _ = set.merge(
        &SeriesKey::new(names::ITERATION_DURATION, vu.clone()),
        &trend(rng, iterations, 2100, 0.0),
    );
    let check = SeriesKey::new(
        names::CHECKS,
        [
            ("check".to_owned(), "status is 200".to_owned()),
            ("scenario".to_owned(), "default".to_owned()),
        ],
    );
    let fails = rng.below(iterations / 100 + 1);
    let _ = set.merge(
        &check,
        &Value::Rate {
            passes: iterations - fails,
            fails,
        },
    );
    for metric in [names::DATA_SENT, names::DATA_RECEIVED] {
        let _ = set.merge(
            &SeriesKey::new(metric, []),
            &Value::Counter((iterations * (90 + rng.below(10))) as f64),
        );
    }
    for metric in [names::VUS, names::VUS_MAX] {
        let _ = set.add(&SeriesKey::new(metric, []), MetricKind::Gauge, 50.0);
    }
    set
}

/// Node ids as long as peer ids.
fn node_id(n: u64) -> String {
    format!("12D3KooWNode{n:02}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
}

/// Every shard's bytes, in the order the store hands them out, with about
/// `requests` requests per node and interval.
fn stored_shards(requests: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut out = Vec::new();
    for n in 0..NODES {
        for seq in 0..INTERVALS {
            let shard = Shard {
                notes: Vec::new(),
                run_id: "run-timing".into(),
                node: node_id(n),
                name: format!("{}-{n}", REGIONS[(n % 3) as usize]),
                region: REGIONS[(n % 3) as usize].into(),
                seq,
                start_ms: seq * 1000,
                end_ms: (seq + 1) * 1000,
                last: seq == INTERVALS - 1,
                series: series(&mut rng, requests),
            };
            out.push(shard.encode());
        }
    }
    out
}

fn meta() -> RunMeta {
    RunMeta {
        data: Vec::new(),
        scenario: "hello.wasm".into(),
        executor: "constant-vus".into(),
        outcome: "complete".into(),
        expected: (0..NODES)
            .map(|n| ExpectedNode {
                id: node_id(n),
                region: REGIONS[(n % 3) as usize].into(),
                segment: None,
            })
            .collect(),
        lost: Vec::new(),
        thresholds: vec![
            "http_req_duration: p(95)<200ms".into(),
            "http_req_failed: rate<0.01".into(),
        ],
        aborted_by: None,
        load: None,
        moves: Vec::new(),
    }
}

/// FNV-1a, to tell whether two builds printed the same report.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

// The three phases, apart, so a profiler can tell them apart:
// `valgrind --tool=callgrind --toggle-collect='*timing::merge*' BINARY
// --ignored merge_timing` counts the instructions of one.

#[inline(never)]
fn decode(bytes: &[u8]) -> SparseShard {
    SparseShard::decode(bytes).expect("decodes")
}

#[inline(never)]
fn merge(report: &mut Report, shard: &SparseShard) {
    assert!(report.add_sparse(shard), "a new shard of the run");
}

#[inline(never)]
fn build(report: &Report, meta: &RunMeta) -> Vec<u8> {
    RunReport::build(report, meta).to_json()
}

/// Requests per node and interval: `hello` at 50 VUs on one core, and the
/// mesh bench's run (10 VUs over 10 nodes, each sleeping 100 ms).
const CASES: [(&str, u64); 2] = [("hello at 50 VUs", 3000), ("the mesh bench", 10)];

#[test]
#[ignore = "a measurement: run it in a release build"]
fn merge_timing() {
    for (name, requests) in CASES {
        println!("{name}: about {requests} requests per node and interval");
        measure(requests);
    }
}

fn measure(requests: u64) {
    let shards = stored_shards(requests);
    let bytes: usize = shards.iter().map(Vec::len).sum();
    let meta = meta();
    let mut runs: [Vec<f64>; 4] = Default::default();
    let mut digest = None;
    for _ in 0..RUNS {
        let (mut decode_time, mut merge_time) = (Duration::ZERO, Duration::ZERO);
        let start = Instant::now();
        let mut report = Report::new("run-timing");
        for b in &shards {
            let t = Instant::now();
            let shard = decode(b);
            let t2 = Instant::now();
            merge(&mut report, &shard);
            decode_time += t2 - t;
            merge_time += t2.elapsed();
        }
        let t = Instant::now();
        let json = build(&report, &meta);
        let build_time = t.elapsed();
        let total = start.elapsed();
        let d = (fnv(&json), json.len());
        assert!(digest.is_none_or(|x| x == d), "the same JSON every time");
        digest = Some(d);
        for (i, x) in [decode_time, merge_time, build_time, total]
            .into_iter()
            .enumerate()
        {
            runs[i].push(ms(x));
        }
    }
    println!(
        "{} shards, {bytes} bytes; JSON fnv {:016x}, {} bytes",
        shards.len(),
        digest.map_or(0, |d| d.0),
        digest.map_or(0, |d| d.1)
    );
    for (label, v) in ["decode", "merge", "build", "total"].iter().zip(runs) {
        let (med, lo, hi) = median(v);
        println!("{label:>6}: median {med:7.1} ms (min {lo:7.1}, max {hi:7.1}, {RUNS} runs)");
    }
}
