//! One fuzz target per decoder of bytes from outside: a peer (gossip and
//! request-response), the API (a submission), a scenario (its HTTP
//! requests through the ABI), a target (its `Set-Cookie` headers) or a
//! data file a peer sends for a run (`--data`).
//!
//! [`Target::run`] takes any bytes, decodes them as the node does, uses what
//! decodes as the node would, and checks what the decoder promises: it
//! returns for every input, and panics only when a promise is broken (a
//! finding). [`Target::seeds`] are valid encodings of real values, the
//! corpus a mutating fuzzer starts from.
//!
//! Two drivers run them:
//!
//! - the tests of this module: a fixed-count mutational fuzzer on stable
//!   Rust, part of `cargo test`, which also checks that no input makes a
//!   target hold far more memory than its bound; `FUSI_FUZZ_ITERATIONS`
//!   scales it for a long run;
//! - `fuzz/` at the repository root: a cargo-fuzz (libFuzzer,
//!   coverage-guided) target per [`Target`], outside the test command.
//!
//! docs/fuzzing.md says how to run both, and records the runs and what they
//! found.

use std::time::Duration;

use futures::io::Cursor;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec as _;

use crate::api::SubmitRequest;
use crate::core::assign::{Candidate, RegionWeight};
use crate::core::clock::{ClockFilter, Exchange};
use crate::core::data::{
    Cursor as DataCursor, DataFormat, DataMode, DataSpec, Draw, Exhausted, MAX_ROW_BYTES, MAX_ROWS,
    Rows,
};
use crate::core::leader::ranking;
use crate::core::membership::{self, Heartbeat};
use crate::core::mesh::{Health, LocalNode, MeshConfig, MeshCore};
use crate::core::metrics::{SeriesKey, SeriesSet, new_histogram};
use crate::core::report::Report;
use crate::core::runs::{Armed, At, EndedRun, MeshView, RunsConfig, RunsCore};
use crate::core::segment::ExecutionSegment;
use crate::core::shard::{self, Shard, SparseShard};
use crate::core::spec::{Executor, Rate, RunSpec, Stage};
use crate::core::sync::Have;
use crate::core::wire::{
    self, Assigned, Finish, Handoff, Outcome, Plan, Proposal, RUN_PROTOCOL, Request, Response,
    RunEnvelope, RunMessage, RunSignature,
};
use crate::engine::cookies::{self, CookieJar, CookieUrl};
use crate::engine::h1;
use crate::net::codec::WireCodec;
use fusi_sdk::abi::{HttpRequest, MetricKind, wire as abi_wire};
use serde_bytes::ByteBuf;

/// A decoder of bytes from outside, as a fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A heartbeat from gossip ([`wire::decode_heartbeat`]); what decodes
    /// goes to a membership table.
    Heartbeat,
    /// A run message from gossip ([`wire::decode_run`]); what decodes goes
    /// to the runs core of a candidate that leads the run.
    Run,
    /// A request-response question, read from a stream by the codec
    /// ([`WireCodec`], [`wire::decode_request`]).
    Request,
    /// A request-response answer, read by the codec
    /// ([`wire::decode_response`]); ended runs in it are adopted and shards
    /// in it decoded, as the node does.
    Response,
    /// A shard ([`Shard::decode`]), from gossip, an answer or the store, as
    /// sent and also with its bytes compressed (so that the CBOR inside is
    /// fuzzed too); what decodes is merged into a report.
    Shard,
    /// A shard read for a report ([`SparseShard::decode`]): it must refuse
    /// exactly what [`Shard::decode`] refuses and merge into the same report.
    SparseShard,
    /// A trend's HdrHistogram V2 bytes read as counts
    /// ([`shard::counts::read`]): it must agree with hdrhistogram's
    /// deserializer, on the bytes that one can read safely.
    TrendCounts,
    /// A `POST /v1/runs` body ([`SubmitRequest::decode`]).
    Submit,
    /// An HTTP request from a scenario through the ABI
    /// ([`abi_wire::decode_request`]): what decodes encodes back to the
    /// same bytes.
    ScenarioRequest,
    /// `Set-Cookie` headers from a target's response, one a line, stored in
    /// a VU's cookie jar ([`CookieJar::store`]): the jar stays within its
    /// bounds, and every `Cookie` header it makes is a valid header value.
    SetCookie,
    /// A data file from a peer ([`Rows::parse`]), as CSV, JSON and NDJSON:
    /// every row it keeps is JSON within the row bound, and the rows are
    /// read back in order; a unique draw over them takes each row once.
    DataFile,
    /// A target's HTTP/1.1 response (`engine::h1::exchange`) to a `GET`: its
    /// body is kept within its bound, and a connection with bytes left
    /// after the response is never used again.
    HttpResponse,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 12] = [
        Target::Heartbeat,
        Target::Run,
        Target::Request,
        Target::Response,
        Target::Shard,
        Target::SparseShard,
        Target::TrendCounts,
        Target::Submit,
        Target::ScenarioRequest,
        Target::SetCookie,
        Target::DataFile,
        Target::HttpResponse,
    ];

    /// The target's name, as in `fuzz/fuzz_targets/`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Heartbeat => "heartbeat",
            Target::Run => "run",
            Target::Request => "request",
            Target::Response => "response",
            Target::Shard => "shard",
            Target::SparseShard => "sparse_shard",
            Target::TrendCounts => "trend_counts",
            Target::Submit => "submit",
            Target::ScenarioRequest => "scenario_request",
            Target::SetCookie => "set_cookie",
            Target::DataFile => "data_file",
            Target::HttpResponse => "http_response",
        }
    }

    /// Decodes `bytes` and uses what decodes; returns whether they decoded.
    /// Panics only where a promise of the decoder is broken.
    pub fn run(self, bytes: &[u8]) -> bool {
        match self {
            Target::Heartbeat => heartbeat(bytes),
            Target::Run => run_message(bytes),
            Target::Request => request(bytes),
            Target::Response => response(bytes),
            Target::Shard => shard(bytes),
            Target::SparseShard => sparse_shard(bytes),
            Target::TrendCounts => trend_counts(bytes),
            Target::Submit => submit(bytes),
            Target::ScenarioRequest => scenario_request(bytes),
            Target::SetCookie => set_cookie(bytes),
            Target::DataFile => data_file(bytes),
            Target::HttpResponse => http_response(bytes),
        }
    }

    /// Valid encodings of real values: where a mutating fuzzer starts.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Heartbeat => heartbeats().iter().map(wire::encode).collect(),
            Target::Run => run_messages().iter().map(wire::encode).collect(),
            Target::Request => requests().iter().map(wire::encode).collect(),
            Target::Response => responses().iter().map(wire::encode).collect(),
            // The CBOR inside (which `run` also reads compressed), the
            // shards as a local run makes them, and as a mesh sends them
            // (signed; the signature is checked elsewhere).
            Target::Shard | Target::SparseShard => shards()
                .iter()
                .flat_map(|s| {
                    let sent = s.encode();
                    let signed = shard::signed(&[7; 64], &sent);
                    [s.encode_cbor(), sent, signed]
                })
                .collect(),
            Target::TrendCounts => histograms(),
            Target::Submit => submissions().iter().map(wire::encode).collect(),
            Target::ScenarioRequest => scenario_requests()
                .iter()
                .map(|r| {
                    let mut out = Vec::new();
                    abi_wire::encode_request(r, &mut out);
                    out
                })
                .collect(),
            Target::SetCookie => set_cookies(),
            Target::DataFile => data_files(),
            Target::HttpResponse => http_responses(),
        }
    }
}

/// The instant every target's cores are at.
const AT: At = At {
    now: Duration::from_secs(1000),
    wall_ns: 1_700_000_000_000_000_000,
};

/// A mesh where every peer is alive and every clock agrees.
struct Everyone;

impl MeshView for Everyone {
    fn alive(&self, _: &str) -> bool {
        true
    }

    fn offset(&self, _: &str) -> Option<(i64, i64)> {
        Some((0, 0))
    }
}

/// A lone mesh core, for what a response tells one.
fn mesh_core() -> MeshCore {
    let me = LocalNode {
        id: "me".into(),
        name: "me".into(),
        region: "fra".into(),
        boot: 1,
        cores: 1,
        vu_limit: 1,
        version: "fuzz".into(),
    };
    MeshCore::new(me, MeshConfig::default(), Vec::new(), AT.now)
}

fn heartbeat(bytes: &[u8]) -> bool {
    let Ok(hb) = wire::decode_heartbeat(bytes) else {
        return false;
    };
    assert_eq!(
        wire::decode_heartbeat(&wire::encode(&hb)).as_ref(),
        Ok(&hb),
        "an accepted heartbeat re-encodes to one that decodes the same"
    );
    let mut members = membership::Membership::new("me", membership::MembershipConfig::default());
    let _ = members.on_heartbeat(hb, AT.now);
    let _ = members.tick(AT.now + Duration::from_secs(3600));
    true
}

fn run_message(bytes: &[u8]) -> bool {
    let Ok(env) = wire::decode_run(bytes) else {
        return false;
    };
    assert_eq!(
        wire::decode_run(&wire::encode(&env)).as_ref(),
        Ok(&env),
        "an accepted run message re-encodes to one that decodes the same"
    );
    // To the leader of the run: a proposal it decoded, or the decoded
    // message after a proposal of its own that names the usual nodes.
    let (proposal, message) = match &env.body {
        RunMessage::Propose(p) => ((**p).clone(), None),
        _ => (
            proposal(spec(constant_vus()), &["a", "b", "c"]),
            Some(env.clone()),
        ),
    };
    let ids: Vec<String> = proposal.candidates.iter().map(|c| c.id.clone()).collect();
    let Some(leader) = ranking(&env.run, &ids).into_iter().next() else {
        return true;
    };
    let mut core = RunsCore::new(leader, RunsConfig::default());
    let propose = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: env.run.clone(),
        body: RunMessage::Propose(Box::new(proposal.clone())),
        sig: None,
    };
    let _ = core.on_message(&proposal.proposer, propose, AT);
    let _ = core.tick(AT, &Everyone);
    if let Some(message) = message {
        for from in ids.iter().take(3) {
            let _ = core.on_message(from, message.clone(), AT);
        }
    }
    for later in [0, 1, 60, 3600] {
        let at = At {
            now: AT.now + Duration::from_secs(later),
            wall_ns: AT.wall_ns + later as i64 * 1_000_000_000,
        };
        let _ = core.tick(at, &Everyone);
    }
    if let Some(run) = core.get(&env.run) {
        let _ = run.report_meta();
        let _ = run.ended();
    }
    true
}

/// The protocol and a stream of `bytes`, as the codec reads them.
fn stream(bytes: &[u8]) -> (StreamProtocol, Cursor<Vec<u8>>) {
    (
        StreamProtocol::new(wire::RPC_PROTOCOL),
        Cursor::new(bytes.to_vec()),
    )
}

fn request(bytes: &[u8]) -> bool {
    let (protocol, mut io) = stream(bytes);
    let read = futures::executor::block_on(WireCodec.read_request(&protocol, &mut io));
    let decoded = wire::decode_request(bytes);
    if bytes.len() <= wire::MAX_REQUEST_BYTES {
        assert_eq!(
            read.as_ref().ok(),
            decoded.as_ref().ok(),
            "the codec reads what the decoder decodes"
        );
    }
    let Ok(request) = read else {
        return false;
    };
    assert_eq!(
        wire::decode_request(&wire::encode(&request)).as_ref(),
        Ok(&request),
        "an accepted request re-encodes to one that decodes the same"
    );
    match request {
        Request::Shard { shard: bytes } => {
            shard(&bytes);
        }
        Request::Word { message } => {
            run_message(&message);
        }
        _ => {}
    }
    true
}

fn response(bytes: &[u8]) -> bool {
    let (protocol, mut io) = stream(bytes);
    let read = futures::executor::block_on(WireCodec.read_response(&protocol, &mut io));
    let decoded = wire::decode_response(bytes);
    // Compared by their encodings: a float field may be NaN (a run's
    // `min_delivered`, refused only where the run is adopted), which is
    // never equal to itself.
    if bytes.len() <= wire::MAX_MODULE_RESPONSE_BYTES {
        assert_eq!(
            read.as_ref().ok().map(wire::encode),
            decoded.as_ref().ok().map(wire::encode),
            "the codec reads what the decoder decodes"
        );
    }
    let Ok(response) = read else {
        return false;
    };
    assert_eq!(
        wire::decode_response(&wire::encode(&response)).map(|r| wire::encode(&r)),
        Ok(wire::encode(&response)),
        "an accepted response re-encodes to one that decodes the same"
    );
    match response {
        Response::Runs { runs } => {
            let mut core = RunsCore::new("me".into(), RunsConfig::default());
            for ended in runs {
                let id = ended.id.clone();
                if core.adopt(ended, AT) == Ok(true) {
                    let _ = core.get(&id).map(|run| run.report_meta());
                }
            }
            let _ = core.tick(AT, &Everyone);
        }
        Response::Shards { shards, .. } => {
            for bytes in shards {
                shard(&bytes);
            }
        }
        Response::Run { messages } => {
            for bytes in messages {
                run_message(&bytes);
            }
        }
        Response::Members {
            members, complete, ..
        } => {
            let mut core = mesh_core();
            let _ = core.on_members("peer", members, complete, AT.now);
            let _ = core.tick(AT.now + Duration::from_secs(10), Health::default());
        }
        Response::Clock {
            t1,
            t2,
            t3,
            pulse,
            yours,
        } => {
            let mut core = mesh_core();
            if let Some(pulse) = pulse {
                let _ = core.on_pulse("peer", *pulse, AT.now);
                let _ = core.tick(AT.now + Duration::from_secs(10), Health::default());
            }
            let mut filter = ClockFilter::new(8, Duration::from_secs(60));
            if let Some(sample) = (Exchange { t1, t2, t3, t4: t3 }).sample(AT.now) {
                filter.add(sample);
            }
            if let Some((offset_ns, bound_ns)) = yours {
                filter.told(offset_ns, bound_ns, AT.now);
            }
            let _ = filter.estimate(AT.now + Duration::from_secs(1));
        }
        Response::Kept
        | Response::Heard { .. }
        | Response::Module { .. }
        | Response::Refused { .. } => {}
    }
    true
}

fn shard(bytes: &[u8]) -> bool {
    let mut any = false;
    for bytes in [bytes.to_vec(), shard::compress(bytes)] {
        let Ok(decoded) = Shard::decode(&bytes) else {
            continue;
        };
        any = true;
        let again = Shard::decode(&decoded.encode())
            .unwrap_or_else(|e| panic!("an accepted shard re-encodes to one refused: {e}"));
        assert_eq!(
            (&again.run_id, &again.node, again.seq, again.end_ms),
            (&decoded.run_id, &decoded.node, decoded.seq, decoded.end_ms)
        );
        assert!(
            again.series.iter().eq(decoded.series.iter()),
            "an accepted shard re-encodes to the same series"
        );
        let mut report = base_report(&decoded.run_id);
        report.add(&decoded);
        let _ = report.summary("constant-vus");
        let _ = report.completeness();
    }
    any
}

fn sparse_shard(bytes: &[u8]) -> bool {
    let mut any = false;
    for bytes in [bytes.to_vec(), shard::compress(bytes)] {
        let (dense, sparse) = (Shard::decode(&bytes), SparseShard::decode(&bytes));
        assert_eq!(
            dense.is_ok(),
            sparse.is_ok(),
            "a sparse read refuses exactly what a dense read refuses: {dense:?} {sparse:?}"
        );
        let (Ok(dense), Ok(sparse)) = (dense, sparse) else {
            continue;
        };
        any = true;
        let (mut a, mut b) = (base_report(&dense.run_id), base_report(&dense.run_id));
        assert_eq!(a.add(&dense), b.add_sparse(&sparse));
        let json = |r: &Report| serde_json::to_string(&r.summary("x")).unwrap_or_default();
        assert_eq!(json(&a), json(&b), "a sparse read merges as a dense read");
    }
    any
}

/// A report that holds one shard of another node already.
fn base_report(run_id: &str) -> Report {
    let mut report = Report::new(run_id);
    if let Some(mut first) = shards().into_iter().next() {
        first.run_id = run_id.to_owned();
        first.node = "base".into();
        report.add(&first);
    }
    report
}

fn trend_counts(bytes: &[u8]) -> bool {
    use hdrhistogram::serialization::Deserializer;
    let mut counts = shard::counts::Counts::new();
    let read = shard::counts::read(bytes, &mut counts);
    // The reference reserves whatever payload a header claims, and panics
    // (where overflow is checked) on a zero run of i64::MIN, nine 0xff
    // bytes: it reads only bytes that are there and hold no such run.
    let claimed = bytes
        .get(4..8)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map_or(0, |len| u32::from_be_bytes(len) as usize);
    if read.is_none() && (claimed > bytes.len() || bytes.windows(9).any(|w| w == [0xff; 9])) {
        return false;
    }
    let reference: Result<hdrhistogram::Histogram<u64>, _> =
        Deserializer::new().deserialize(&mut &bytes[..]);
    match reference {
        Ok(h) => {
            assert!(read.is_some(), "refused what hdrhistogram decodes");
            let want: shard::counts::Counts = h
                .iter_recorded()
                .map(|v| {
                    (
                        h.lowest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    )
                })
                .collect();
            assert_eq!(counts, want, "the counts hdrhistogram decodes");
            let mut merged = new_histogram();
            shard::counts::add(&mut merged, &counts);
            true
        }
        Err(_) => {
            assert!(read.is_none(), "read what hdrhistogram refuses");
            false
        }
    }
}

fn submit(bytes: &[u8]) -> bool {
    let Ok(request) = SubmitRequest::decode(bytes) else {
        return false;
    };
    assert_eq!(
        SubmitRequest::decode(&wire::encode(&request)).as_ref(),
        Ok(&request),
        "an accepted submission re-encodes to one that decodes the same"
    );
    let _ = request.spec.max_vus();
    let _ = request.spec.duration();
    true
}

fn scenario_request(bytes: &[u8]) -> bool {
    let Ok(request) = abi_wire::decode_request(bytes) else {
        return false;
    };
    let mut out = Vec::new();
    abi_wire::encode_request(&request, &mut out);
    assert_eq!(out, bytes, "an accepted request encodes back to its bytes");
    true
}

fn data_file(bytes: &[u8]) -> bool {
    let mut any = false;
    for format in [DataFormat::Csv, DataFormat::Json, DataFormat::Ndjson] {
        let Ok(rows) = Rows::parse(format, bytes) else {
            continue;
        };
        any = true;
        assert!(
            !rows.is_empty() && rows.len() <= MAX_ROWS,
            "the row bounds hold"
        );
        for i in 0..rows.len().min(1000) {
            let row = rows
                .get(i)
                .unwrap_or_else(|| panic!("row {i} of {} is there", rows.len()));
            assert!(row.len() <= MAX_ROW_BYTES, "a row's bound holds");
            assert!(
                serde_json::from_slice::<serde_json::Value>(row).is_ok(),
                "every row is JSON"
            );
        }
        assert!(rows.get(rows.len()).is_none());
        let spec = DataSpec {
            name: "fuzz".into(),
            sha256: "0".repeat(64),
            format,
            rows: rows.len(),
            mode: DataMode::Unique,
            exhausted: Exhausted::Stop,
        };
        let halves = ExecutionSegment::split(&[1, 2]);
        let drawn: u64 = halves
            .iter()
            .map(|segment| {
                let mut cursor = DataCursor::new(&spec, rows.len(), *segment);
                let mut n = 0;
                while let Draw::Row(i) = cursor.draw() {
                    assert!(i < rows.len());
                    n += 1;
                }
                n
            })
            .sum();
        assert_eq!(drawn, rows.len(), "a unique draw takes every row once");
    }
    any
}

fn set_cookie(bytes: &[u8]) -> bool {
    const NOW: i64 = 1_800_000_000;
    let from = CookieUrl {
        https: true,
        host: "www.example.com",
        path: "/account/login",
    };
    let mut jar = CookieJar::default();
    for line in bytes.split(|&b| b == b'\n') {
        jar.store(from, line, NOW);
    }
    assert!(
        jar.len() <= cookies::MAX_PER_DOMAIN,
        "a domain's bound holds"
    );
    for (host, path) in [("www.example.com", "/account/x"), ("a.example.com", "/")] {
        let to = CookieUrl {
            https: true,
            host,
            path,
        };
        if let Some(header) = jar.header(to, NOW + 60) {
            assert!(
                http::HeaderValue::from_str(&header).is_ok(),
                "the jar made an invalid Cookie header: {header:?}"
            );
        }
    }
    !jar.is_empty()
}

// The seeds: real values of every kind and variant.

fn sample_heartbeat() -> Heartbeat {
    Heartbeat {
        protocol: membership::PROTOCOL,
        id: "12D3KooWExample".into(),
        name: "fra-1".into(),
        region: "fra".into(),
        boot: 1_700_000_000_000_000_000,
        seq: 42,
        cores: 16,
        vu_limit: 20_000,
        version: "0.1.0".into(),
        cpu: 0.25,
        sockets: 12,
        listen: vec!["/ip4/127.0.1.1/tcp/7400".into()],
        leaving: false,
        clock_epoch: 0,
        busy: false,
    }
}

fn heartbeats() -> Vec<Heartbeat> {
    let hb = sample_heartbeat();
    let leaving = Heartbeat {
        id: "12D3KooWOther".into(),
        region: "nrt-2".into(),
        listen: vec![
            "/ip4/10.0.0.1/tcp/7400".into(),
            "/ip6/::1/tcp/7400".into(),
            "/dns4/example.com/tcp/1".into(),
        ],
        leaving: true,
        cpu: 3.5,
        clock_epoch: 7,
        ..hb.clone()
    };
    vec![hb, leaving]
}

fn constant_vus() -> Executor {
    Executor::ConstantVus {
        vus: 10,
        duration: Duration::from_secs(30),
    }
}

fn spec(executor: Executor) -> RunSpec {
    let mut spec = RunSpec::new("ab".repeat(32), executor);
    spec.env.insert("BASE".into(), "https://example.com".into());
    spec.targets = vec!["example.com".into(), "api.example.com:8443".into()];
    spec.scenario = "hello.wasm".into();
    spec.thresholds = vec![
        "http_req_duration: p(95)<200".into(),
        "http_req_failed{region:fra}: rate<0.01".into(),
        "checks: rate>0.9".into(),
    ];
    spec
}

fn executors() -> Vec<Executor> {
    let stages = vec![
        Stage {
            duration: Duration::from_secs(10),
            target: 20.0,
        },
        Stage {
            duration: Duration::from_secs(5),
            target: 0.0,
        },
    ];
    vec![
        constant_vus(),
        Executor::RampingVus {
            start_vus: 1,
            stages: stages.clone(),
        },
        Executor::PerVuIterations {
            vus: 3,
            iterations: 100,
            max_duration: Duration::from_secs(60),
        },
        Executor::SharedIterations {
            vus: 3,
            iterations: 1000,
            max_duration: Duration::from_secs(60),
        },
        Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 50.0,
                per: Duration::from_secs(1),
            },
            duration: Duration::from_secs(20),
            pre_allocated_vus: 5,
            max_vus: 50,
        },
        Executor::RampingArrivalRate {
            start_rate: 1.0,
            time_unit: Duration::from_secs(1),
            stages,
            pre_allocated_vus: 5,
            max_vus: 50,
        },
    ]
}

fn proposal(spec: RunSpec, nodes: &[&str]) -> Proposal {
    Proposal {
        proposer: nodes.first().map_or_else(String::new, |n| (*n).to_owned()),
        spec,
        weights: Some(vec![
            RegionWeight {
                region: "fra".into(),
                weight: 2,
            },
            RegionWeight {
                region: "nrt".into(),
                weight: 1,
            },
        ]),
        nodes: Some(2),
        candidates: nodes
            .iter()
            .zip(["fra", "nrt", "fra"].iter().cycle())
            .map(|(id, region)| Candidate {
                id: (*id).to_owned(),
                region: (*region).to_owned(),
                capacity: 100,
            })
            .collect(),
        members: None,
    }
}

fn plan() -> Plan {
    let share = |node: &str, at: u64, first_vu_id| Assigned {
        node: node.into(),
        segment: ExecutionSegment::new(at, at + 1, 3).unwrap_or(ExecutionSegment::WHOLE),
        first_vu_id,
    };
    Plan {
        term: 0,
        id: (0, 1),
        shares: vec![share("a", 0, 1), share("b", 1, 5), share("c", 2, 8)],
    }
}

/// Node c's share handed on to a and b, 4.2 s after T0.
fn handoff() -> Handoff {
    let part = |node: &str, at: u64| Assigned {
        node: node.into(),
        segment: ExecutionSegment::new(at, at + 1, 6).unwrap_or(ExecutionSegment::WHOLE),
        first_vu_id: 8 + at - 4,
    };
    Handoff {
        term: 0,
        plan: (0, 1),
        from: "c".into(),
        since_ms: 4_200,
        to: vec![part("a", 4), part("b", 5)],
    }
}

fn run_messages() -> Vec<RunEnvelope> {
    let mut bodies: Vec<RunMessage> = executors()
        .into_iter()
        .map(|e| RunMessage::Propose(Box::new(proposal(spec(e), &["a", "b", "c"]))))
        .collect();
    bodies.extend([
        RunMessage::Assign(
            plan()
                .to_wire(&proposal(spec(executors()[0].clone()), &["a", "b", "c"]).candidates)
                .unwrap_or_else(|| panic!("a plan of candidates")),
        ),
        RunMessage::Ready { plan: (0, 1) },
        RunMessage::Refuse {
            reason: "the module does not compile".into(),
        },
        RunMessage::Arm {
            term: 0,
            plan: plan().id,
            digest: plan().digest(),
            t0_ns: AT.wall_ns + 2_000_000_000,
        },
        RunMessage::Started {
            at_ns: AT.wall_ns,
            bound_ns: 1_000_000,
        },
        RunMessage::Done {
            shards: 31,
            interrupted: false,
        },
        RunMessage::Stop { reason: None },
        RunMessage::Live(wire::Live {
            term: 0,
            scopes: vec![wire::LiveScope {
                scope: "all".into(),
                t_s: 3.0,
                vus: 10,
                rps: 950.5,
                p95_ms: 12.25,
                requests: 2851,
                failed: 3,
            }],
            ..wire::Live::heard(0, 4, |i| i != 2, |i| i == 0)
        }),
        RunMessage::Live(wire::Live::heard(1, 3, |_| true, |_| true)),
        RunMessage::Handoff(handoff()),
        RunMessage::Held(wire::Held {
            term: 1,
            plan: Some((1, (0, 1))),
            armed: Some((1, (0, 1))),
            t0_ns: Some(AT.wall_ns),
        }),
        RunMessage::Stop {
            reason: Some("http_req_failed: rate<0.01".into()),
        },
        RunMessage::Finish(Finish {
            term: 0,
            outcome: Outcome::Complete,
            lost: vec![],
            handoffs: vec![],
            words_digest: Some(ByteBuf::from(wire::words_digest(&words_of_three()))),
            words: words_of_three(),
        }),
        RunMessage::Finish(Finish {
            term: 1,
            outcome: Outcome::Stopped {
                by: "b".into(),
                reason: Some("abortOnFail".into()),
            },
            lost: vec!["c".into()],
            handoffs: vec![handoff()],
            words: vec![],
            words_digest: None,
        }),
        RunMessage::Finish(Finish {
            term: 2,
            outcome: Outcome::Failed {
                reason: "no node could run it".into(),
            },
            lost: vec![],
            handoffs: vec![],
            words: vec![],
            words_digest: None,
        }),
    ]);
    bodies
        .into_iter()
        .map(|body| RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: "r1".into(),
            body,
            sig: None,
        })
        .collect()
}

fn requests() -> Vec<Request> {
    vec![
        Request::Clock {
            t1: AT.wall_ns,
            known: Some((1, 2)),
            suspect: true,
            introduce: None,
        },
        Request::Members {
            digest: 7,
            heartbeat: sample_heartbeat(),
            after: Some("12D3KooWa".into()),
        },
        Request::Module {
            sha256: "ab".repeat(32),
        },
        Request::Runs {
            known: vec!["r1".into(), "r2".into()],
        },
        Request::Shards {
            run: "r1".into(),
            have: vec![
                Have {
                    node: "a".into(),
                    ranges: vec![(0, 3), (5, 9)],
                },
                Have {
                    node: "b".into(),
                    ranges: vec![(0, 0)],
                },
            ],
        },
        Request::Shard {
            shard: serde_bytes::ByteBuf::from(shards()[0].encode()),
        },
        Request::Run {
            run: "r0".into(),
            known: true,
        },
        Request::Word {
            message: serde_bytes::ByteBuf::from(wire::encode(&RunEnvelope {
                protocol: wire::RUN_PROTOCOL,
                run: "r0".into(),
                body: RunMessage::Done {
                    shards: 4,
                    interrupted: false,
                },
                sig: None,
            })),
        },
    ]
}

fn ended_run() -> EndedRun {
    EndedRun {
        id: "r0".into(),
        proposal: proposal(spec(constant_vus()), &["a", "b", "c"]),
        plan: plan(),
        armed: Some(Armed {
            term: 0,
            plan: (0, 1),
            t0_ns: AT.wall_ns - 60_000_000_000,
            by: "a".into(),
            sig: None,
        }),
        started: [("a".to_owned(), (AT.wall_ns - 60_000_000_000, 1_000))].into(),
        done: [("a".to_owned(), (30, false)), ("b".to_owned(), (29, true))].into(),
        finish: Finish {
            term: 0,
            outcome: Outcome::Complete,
            lost: vec!["c".into()],
            handoffs: vec![handoff()],
            words: vec![(None, Some((30, false))); 3],
            words_digest: Some(ByteBuf::from(wire::words_digest(
                &[(None, Some((30, false))); 3],
            ))),
        },
        // Signed by the node that leads run r0 at term 0 (the signature
        // itself is checked by the runtime, not by what is fuzzed here).
        finish_sig: ranking("r0", &["a".into(), "b".into(), "c".into()])
            .first()
            .map(|leader| RunSignature {
                signer: leader.clone(),
                bytes: vec![7; 64],
            }),
    }
}

fn words_of_three() -> Vec<wire::NodeWords> {
    vec![
        (Some((AT.wall_ns, 1_000)), Some((3, false))),
        (Some((AT.wall_ns + 2_000, 1_500)), Some((2, true))),
        (None, None),
    ]
}

fn responses() -> Vec<Response> {
    vec![
        Response::Clock {
            t1: 1,
            t2: 2,
            t3: 3,
            yours: Some((-3_000_000, 120_000)),
            pulse: Some(Box::new(membership::Pulse {
                boot: 1,
                seq: 2,
                cpu: 0.5,
                sockets: 3,
                heartbeat: Some(sample_heartbeat()),
            })),
        },
        Response::Members {
            members: vec![sample_heartbeat()],
            same: false,
            complete: true,
        },
        Response::Module {
            bytes: b"\0asm\x01\0\0\0".to_vec(),
        },
        Response::Runs {
            runs: vec![ended_run()],
        },
        Response::Shards {
            shards: shards()
                .iter()
                .map(|s| serde_bytes::ByteBuf::from(s.encode()))
                .collect(),
            more: true,
        },
        Response::Kept,
        Response::Heard { ago_ms: None },
        Response::Heard { ago_ms: Some(850) },
        Response::Run {
            messages: run_messages()
                .iter()
                .take(3)
                .map(|env| serde_bytes::ByteBuf::from(wire::encode(env)))
                .collect(),
        },
        Response::Refused {
            reason: "not a member".into(),
        },
    ]
}

fn shards() -> Vec<Shard> {
    let mut series = SeriesSet::new();
    let duration = SeriesKey::new(
        "http_req_duration",
        [
            ("status".to_string(), "200".to_string()),
            ("method".to_string(), "GET".to_string()),
        ],
    );
    for i in 0..500 {
        let _ = series.add(&duration, MetricKind::Trend, f64::from(i % 40) * 0.37);
    }
    let _ = series.add(&SeriesKey::new("http_reqs", []), MetricKind::Counter, 500.0);
    let _ = series.add(&SeriesKey::new("checks", []), MetricKind::Rate, 1.0);
    let _ = series.add(&SeriesKey::new("checks", []), MetricKind::Rate, 0.0);
    let _ = series.add(&SeriesKey::new("vus", []), MetricKind::Gauge, 7.0);
    let first = Shard {
        notes: Vec::new(),
        run_id: "r1".into(),
        node: "n1".into(),
        name: "fra-1".into(),
        region: "fra".into(),
        seq: 3,
        start_ms: 3000,
        end_ms: 4000,
        last: false,
        series,
    };
    let mut series = SeriesSet::new();
    let _ = series.add(
        &SeriesKey::new("iteration_duration", []),
        MetricKind::Trend,
        1.5e6,
    );
    let last = Shard {
        notes: Vec::new(),
        node: "n2".into(),
        region: "nrt".into(),
        seq: 9,
        last: true,
        series,
        ..first.clone()
    };
    vec![first, last]
}

fn histograms() -> Vec<Vec<u8>> {
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut wide = new_histogram();
    for v in [1u64, 2, 3, 1000, 1001, 65_000, 1 << 30] {
        let _ = wide.record_n(v, v % 7 + 1);
    }
    let mut bounded = hdrhistogram::Histogram::<u64>::new_with_bounds(10, 100_000, 2)
        .unwrap_or_else(|_| new_histogram());
    for v in 10..200 {
        let _ = bounded.record(v * 3);
    }
    [new_histogram(), wide, bounded]
        .iter()
        .map(|h| {
            let mut bytes = Vec::new();
            let _ = V2Serializer::new().serialize(h, &mut bytes);
            bytes
        })
        .collect()
}

fn submissions() -> Vec<SubmitRequest> {
    executors()
        .into_iter()
        .map(|e| SubmitRequest {
            spec: spec(e),
            module: b"\0asm\x01\0\0\0".to_vec(),
            weights: Some(vec![RegionWeight {
                region: "fra".into(),
                weight: 1,
            }]),
            nodes: Some(3),
            data: Vec::new(),
        })
        .collect()
}

fn data_files() -> Vec<Vec<u8>> {
    [
        &b"user,password\nann,\"a,1\"\nbob,b2\n"[..],
        br#"[{"id":1,"tags":["a","b"]},"two",3.5,null]"#,
        b"{\"user\":\"ann\"}\n\n{\"user\":\"bob\\u00e9\"}\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

/// The bytes of a target's connection: what it answers, read once, and
/// what the client writes, kept.
struct Scripted<'a> {
    answer: &'a [u8],
    written: usize,
}

impl tokio::io::AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // A few bytes a read, so that every state of the reader sees a
        // boundary.
        let n = self.answer.len().min(buf.remaining()).min(7);
        buf.put_slice(&self.answer[..n]);
        self.answer = &self.answer[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Scripted<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.written += buf.len();
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn http_response(bytes: &[u8]) -> bool {
    const KEEP: usize = 1 << 10;
    let mut io = Scripted {
        answer: bytes,
        written: 0,
    };
    let headers = http::HeaderMap::new();
    let request = h1::Request {
        method: &http::Method::GET,
        target: "/",
        headers: &headers,
        body: b"",
    };
    // Every read is ready, so the exchange never waits.
    let out = futures::executor::block_on(h1::exchange(&mut io, &request, false, KEEP, || {}));
    assert!(io.written > 0, "the request was written");
    match out {
        Ok(response) => {
            assert!(response.body.len() <= KEEP, "the body kept its bound");
            // Bytes past the response are not read by the exchange; the
            // check before the next request must see them and retire the
            // connection, or the next response would start with them.
            if response.reusable && !io.answer.is_empty() {
                assert!(
                    h1::idle_gone(&mut io),
                    "a connection with bytes left over would be reused"
                );
            }
            true
        }
        Err(_) => false,
    }
}

fn http_responses() -> Vec<Vec<u8>> {
    [
        &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"[..],
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;a=b\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nSet-Cookie: a=b; Path=/\r\n\r\nuntil the end",
        b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\nETag: \"x\"\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn set_cookies() -> Vec<Vec<u8>> {
    [
        &b"session=user-alice; Path=/; HttpOnly"[..],
        b"id=a3fWa; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Secure; HttpOnly\n\
          pref=dark; Domain=.example.com; Max-Age=3600; Path=/account; SameSite=Lax",
        b"gone=1; Max-Age=0\nlang=en-US; Path=/",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn scenario_requests() -> Vec<HttpRequest> {
    vec![
        HttpRequest {
            method: "GET".into(),
            url: "https://example.com/".into(),
            headers: vec![],
            body: vec![],
            timeout_ms: None,
            tags: vec![],
            options: None,
        },
        HttpRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:8080/items?id=7".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-trace".into(), "é".into()),
            ],
            body: br#"{"name":"fusi"}"#.to_vec(),
            timeout_ms: Some(5000),
            tags: vec![("name".into(), "create item".into())],
            options: Some(vec![
                ("redirects".into(), "0".into()),
                ("body".into(), "discard".into()),
            ]),
        },
    ]
}

#[cfg(test)]
mod tests;
