//! A mutational fuzzer on stable Rust: from each target's seeds, a fixed
//! number of deterministic mutations (bit flips, interesting bytes, inserts,
//! deletes, duplicated chunks, splices between inputs, truncations, inflated
//! lengths, swapped CBOR major types, indefinite lengths, deep nesting,
//! boundary numbers), each fed to the target. A mutation that decodes joins
//! the corpus, so later mutations start from it.
//!
//! Every run is checked for panics and for the memory it holds at its peak,
//! counted by a global allocator for the thread that runs it.
//!
//! `FUSI_FUZZ_ITERATIONS=N` runs N mutations per target instead of the
//! default; `FUSI_FUZZ_SEED=S` starts the generator elsewhere. The default
//! keeps each target under 2 s of the dev profile. docs/fuzzing.md records
//! a long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use super::Target;
use crate::core::metrics::{SeriesKey, SeriesSet};
use crate::core::rng::Rng;
use crate::core::shard::{MAX_SHARD_BYTES, Shard, ShardError, SparseShard};
use crate::core::wire::MAX_REQUEST_BYTES;
use fusi_sdk::abi::MetricKind;

/// The system allocator, counting the bytes each thread holds.
struct Counting;

thread_local! {
    /// Bytes this thread allocated and has not freed (negative when it
    /// frees what another thread allocated).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// The most [`LIVE`] was since the last [`peak_from`].
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn held(delta: i64) {
    // `try_with`: a thread being torn down has no counters left.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every call goes to `System` unchanged; the counters only add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            held(size(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            held(size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(p, layout) };
        held(-size(layout.size()));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            held(size(new_size) - size(layout.size()));
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Starts counting this thread's peak from now; returns what it holds now.
fn peak_from() -> i64 {
    let now = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(now));
    now
}

/// The most this thread held since [`peak_from`] returned `base`, above it.
fn peak_above(base: i64) -> u64 {
    u64::try_from(PEAK.with(Cell::get) - base).unwrap_or(0)
}

/// The most a target may hold at its peak for an input of `len` bytes: what
/// its decoder documents, with room for what the target does with the
/// value (a report, a runs core) and serde's preallocation (at most 1 MiB
/// per collection).
fn allocation_bound(target: Target, len: usize) -> u64 {
    const MIB: u64 = 1 << 20;
    let len = len as u64;
    match target {
        // A shard may inflate to MAX_SHARD_BYTES, and its histograms may
        // claim 256 MiB in all (`MAX_HISTOGRAM_BYTES`).
        Target::Shard | Target::SparseShard | Target::Response => {
            2 * MAX_SHARD_BYTES as u64 + 256 * MIB + 64 * len
        }
        // The reference deserializer allocates what a header claims: at
        // most 5 digits over the whole u64 range is 48 buckets of 2^17
        // counters of 8 bytes.
        Target::TrendCounts => 64 * MIB + 64 * len,
        Target::Heartbeat
        | Target::Run
        | Target::Request
        | Target::Submit
        | Target::ScenarioRequest
        | Target::SetCookie
        | Target::DataFile
        | Target::HttpResponse => 16 * MIB + 64 * len,
    }
}

/// Bytes that often mean something in CBOR, in HdrHistogram V2 headers and
/// in little-endian lengths: the ends of each additional-information range,
/// each major type's first and last headers, simple values, floats, break.
const INTERESTING: [u8; 29] = [
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1f, 0x20, 0x3f, 0x40, 0x5f, 0x60, 0x7f, 0x80,
    0x9f, 0xa0, 0xbf, 0xc0, 0xdf, 0xe0, 0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfb, 0xff,
];

/// The largest input the mutator makes (the seeds are a few KiB).
const MAX_INPUT: usize = 64 << 10;

/// Positions of CBOR headers of a byte string, text, array or map with a
/// definite length below 24 (one byte), or the whole input when none.
fn length_headers(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len())
        .filter(|&i| (0x40..0xc0).contains(&bytes[i]) && bytes[i] & 0x1f < 24)
        .collect()
}

/// One mutation of `b`, given the corpus to splice with.
fn mutate_once(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let at = |rng: &mut Rng, b: &Vec<u8>| rng.below(b.len() as u64 + 1) as usize;
    let inside = |rng: &mut Rng, b: &Vec<u8>| rng.below(b.len() as u64) as usize;
    match rng.below(13) {
        0 if !b.is_empty() => {
            let i = inside(rng, b);
            b[i] ^= 1 << rng.below(8);
        }
        1 if !b.is_empty() => {
            let i = inside(rng, b);
            b[i] = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
        }
        2 if !b.is_empty() => {
            let i = inside(rng, b);
            b[i] = rng.next_u64() as u8;
        }
        3 => {
            let i = at(rng, b);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, bytes);
        }
        4 if !b.is_empty() => {
            let i = inside(rng, b);
            let n = (1 + rng.below(16) as usize).min(b.len() - i);
            b.drain(i..i + n);
        }
        5 if !b.is_empty() => {
            let from = inside(rng, b);
            let n = (1 + rng.below(64) as usize).min(b.len() - from);
            let chunk = b[from..from + n].to_vec();
            let i = at(rng, b);
            b.splice(i..i, chunk);
        }
        6 => {
            let other = &corpus[rng.below(corpus.len() as u64) as usize];
            let i = at(rng, b);
            let j = rng.below(other.len() as u64 + 1) as usize;
            b.truncate(i);
            b.extend_from_slice(&other[j..]);
        }
        7 => {
            let i = at(rng, b);
            b.truncate(i);
        }
        8 => {
            // A length that claims far more than there is: a CBOR header
            // made 4 or 8 bytes long, or a 4-byte little-endian count.
            let headers = length_headers(b);
            if !headers.is_empty() && rng.chance(0.7) {
                let i = headers[rng.below(headers.len() as u64) as usize];
                let major = b[i] & 0xe0;
                let long: Vec<u8> = if rng.chance(0.5) {
                    let n =
                        [0x7fff_ffffu32, 0xffff_ffff, 0x0100_0000, 0x10000][rng.below(4) as usize];
                    std::iter::once(major | 0x1a)
                        .chain(n.to_be_bytes())
                        .collect()
                } else {
                    let n = [u64::MAX, 1 << 40, i64::MAX as u64][rng.below(3) as usize];
                    std::iter::once(major | 0x1b)
                        .chain(n.to_be_bytes())
                        .collect()
                };
                b.splice(i..=i, long);
            } else if b.len() >= 4 {
                let i = rng.below(b.len() as u64 - 3) as usize;
                let n = [u32::MAX, 0x7fff_ffff, 0x0001_0000][rng.below(3) as usize];
                b[i..i + 4].copy_from_slice(&n.to_le_bytes());
            }
        }
        9 if !b.is_empty() => {
            // Another major type, the same additional information.
            let i = inside(rng, b);
            b[i] = (b[i] & 0x1f) | ((rng.below(8) as u8) << 5);
        }
        10 => {
            // A definite length made indefinite, and a break somewhere.
            let headers = length_headers(b);
            if !headers.is_empty() {
                let i = headers[rng.below(headers.len() as u64) as usize];
                b[i] |= 0x1f;
                let j = at(rng, b);
                b.insert(j, 0xff);
            }
        }
        11 => {
            // Deep nesting: arrays or maps of one, or tags.
            let i = at(rng, b);
            let byte = [0x81, 0xa1, 0x9f, 0xc6][rng.below(4) as usize];
            let n = 1 + rng.below(600) as usize;
            b.splice(i..i, std::iter::repeat_n(byte, n));
        }
        12 if !b.is_empty() => {
            // A boundary number over 1 to 8 bytes, either byte order.
            let i = inside(rng, b);
            let width = [1usize, 2, 4, 8][rng.below(4) as usize].min(b.len() - i);
            let n: u64 =
                [0, 1, u64::MAX, 1 << 63, (1 << 63) - 1, 0x8000_0000][rng.below(6) as usize];
            let bytes = if rng.chance(0.5) {
                n.to_be_bytes()
            } else {
                n.to_le_bytes()
            };
            b[i..i + width].copy_from_slice(&bytes[..width]);
        }
        _ => {}
    }
}

/// What one target's fuzzing did.
#[derive(Debug)]
struct Outcome {
    executions: u64,
    decoded: u64,
    peak: u64,
}

/// Runs `target` on `bytes`, checking the memory it holds at its peak;
/// a panic names the input (hex), for a regression test.
fn execute(target: Target, bytes: &[u8], outcome: &mut Outcome) {
    let base = peak_from();
    let decoded = std::panic::catch_unwind(|| target.run(bytes)).unwrap_or_else(|panic| {
        eprintln!(
            "fuzz {}: a panic on {} bytes: {}",
            target.name(),
            bytes.len(),
            hex(bytes)
        );
        std::panic::resume_unwind(panic)
    });
    let peak = peak_above(base);
    let bound = allocation_bound(target, bytes.len());
    assert!(
        peak <= bound,
        "fuzz {}: held {peak} bytes (over {bound}) on {}",
        target.name(),
        hex(bytes)
    );
    outcome.executions += 1;
    outcome.decoded += u64::from(decoded);
    outcome.peak = outcome.peak.max(peak);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Fuzzes `target`: its seeds, every cut of them, random bytes, then
/// `iterations` mutations (or `FUSI_FUZZ_ITERATIONS`).
fn fuzz(target: Target, iterations: u64) -> Outcome {
    let iterations = env_number("FUSI_FUZZ_ITERATIONS").unwrap_or(iterations);
    let seed = env_number("FUSI_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15);
    let name_hash = target
        .name()
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = Rng(seed ^ name_hash | 1);
    let seeds = target.seeds();
    let mut outcome = Outcome {
        executions: 0,
        decoded: 0,
        peak: 0,
    };
    let started = Instant::now();
    for seed in &seeds {
        execute(target, seed, &mut outcome);
        assert!(
            target.run(seed),
            "fuzz {}: a seed does not decode: {}",
            target.name(),
            hex(seed)
        );
        for cut in (0..seed.len()).step_by(1 + seed.len() / 256) {
            execute(target, &seed[..cut], &mut outcome);
        }
    }
    for len in 0..64 {
        let junk: Vec<u8> = (0..len * 5).map(|_| rng.next_u64() as u8).collect();
        execute(target, &junk, &mut outcome);
    }
    let mut corpus = seeds.clone();
    for _ in 0..iterations {
        let mut input = corpus[rng.below(corpus.len() as u64) as usize].clone();
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut rng, &mut input, &corpus);
        }
        input.truncate(MAX_INPUT);
        let before = outcome.decoded;
        execute(target, &input, &mut outcome);
        if outcome.decoded > before {
            // A new shape that decodes: later mutations may start from it.
            if corpus.len() < 4 * seeds.len() + 32 {
                corpus.push(input);
            } else {
                let i = seeds.len() + rng.below((corpus.len() - seeds.len()) as u64) as usize;
                corpus[i] = input;
            }
        }
    }
    eprintln!(
        "fuzz {}: {} executions, {} decoded, peak {} KiB held, {:.1} s",
        target.name(),
        outcome.executions,
        outcome.decoded,
        outcome.peak >> 10,
        started.elapsed().as_secs_f64()
    );
    outcome
}

#[test]
fn every_target_has_seeds_that_decode_and_a_unique_name() {
    let mut names = std::collections::BTreeSet::new();
    for target in Target::ALL {
        assert!(names.insert(target.name()), "{target:?}");
        let seeds = target.seeds();
        assert!(seeds.len() >= 2, "{target:?}");
        for seed in seeds {
            assert!(target.run(&seed), "{target:?}: {}", hex(&seed));
        }
    }
}

#[test]
fn the_allocation_counter_sees_a_decoders_peak() {
    let base = peak_from();
    drop(std::hint::black_box(vec![1u8; 3 << 20]));
    assert!(peak_above(base) >= 3 << 20);
    let too_large = vec![0u8; MAX_REQUEST_BYTES + 1];
    let base = peak_from();
    let _ = crate::core::wire::decode_request(&too_large);
    assert!(
        peak_above(base) < 1 << 20,
        "a refused size allocates nothing"
    );
}

#[test]
fn heartbeats_survive_mutation() {
    let outcome = fuzz(Target::Heartbeat, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn run_messages_survive_mutation() {
    let outcome = fuzz(Target::Run, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn requests_survive_mutation() {
    let outcome = fuzz(Target::Request, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn responses_survive_mutation() {
    let outcome = fuzz(Target::Response, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn shards_survive_mutation() {
    let outcome = fuzz(Target::Shard, 6_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn sparse_shards_survive_mutation() {
    let outcome = fuzz(Target::SparseShard, 6_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn trend_counts_survive_mutation() {
    let outcome = fuzz(Target::TrendCounts, 100_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn submissions_survive_mutation() {
    let outcome = fuzz(Target::Submit, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn scenario_requests_survive_mutation() {
    let outcome = fuzz(Target::ScenarioRequest, 100_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn data_files_survive_mutation() {
    let outcome = fuzz(Target::DataFile, 20_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn http_responses_survive_mutation() {
    let outcome = fuzz(Target::HttpResponse, 50_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn set_cookies_survive_mutation() {
    let outcome = fuzz(Target::SetCookie, 100_000);
    assert!(outcome.decoded > 0);
}

#[test]
fn a_shard_at_the_size_limit_reserves_no_more_than_the_limit_to_inflate() {
    // It reserved 4 × its size (32 MiB) before reading a byte of it.
    let junk = vec![b'F'; MAX_SHARD_BYTES];
    let base = peak_from();
    assert!(Shard::decode(&junk).is_err());
    assert!(peak_above(base) <= 2 * MAX_SHARD_BYTES as u64);
}

/// A shard of one trend whose V2 header is `header` (40 bytes) followed
/// by `payload`.
fn shard_with_trend(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut series = SeriesSet::new();
    let _ = series.add(&SeriesKey::new("t", []), MetricKind::Trend, 1.0);
    let shard = Shard {
        notes: Vec::new(),
        run_id: "r1".into(),
        node: "n1".into(),
        name: "fra-1".into(),
        region: "fra".into(),
        seq: 0,
        start_ms: 0,
        end_ms: 1000,
        last: false,
        series,
    };
    let mut cbor = shard.encode_cbor();
    let at = cbor
        .windows(4)
        .position(|w| w == &header[..4])
        .unwrap_or_else(|| panic!("no V2 cookie"));
    // The trend's byte string: its CBOR header (0x58 and a 1-byte length)
    // precedes the cookie; the V2 bytes run to the series' end.
    let old_len = usize::from(cbor[at - 1]);
    let mut v2 = header.to_vec();
    v2.extend_from_slice(payload);
    let len = u8::try_from(v2.len()).unwrap_or(u8::MAX);
    cbor[at - 1] = len;
    cbor.splice(at..at + old_len, v2);
    crate::core::shard::compress(&cbor)
}

/// A V2 header of 3 digits over 1..2^31 whose payload is `len` bytes.
fn v2_header(len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x1c84_9313u32.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&3u32.to_be_bytes());
    h.extend_from_slice(&1u64.to_be_bytes());
    h.extend_from_slice(&0x7fff_ffffu64.to_be_bytes());
    h.extend_from_slice(&1.0f64.to_be_bytes());
    h
}

#[test]
fn a_trend_that_claims_a_payload_it_lacks_is_refused_without_reserving_it() {
    // Found by this fuzzer: hdrhistogram's deserializer reserved what the
    // header claims (up to 4 GiB; 256 MiB here) before reading the 4 bytes
    // that are there.
    let bytes = shard_with_trend(&v2_header(256 << 20), &[0xab, 0xd6, 0xa2, 0x02]);
    let base = peak_from();
    assert!(matches!(Shard::decode(&bytes), Err(ShardError::Invalid(_))));
    assert!(peak_above(base) < 16 << 20, "{} bytes", peak_above(base));
    assert!(SparseShard::decode(&bytes).is_err());
}

#[test]
fn a_trend_with_a_zero_run_of_i64_min_is_refused_not_a_panic() {
    // Found by this fuzzer: hdrhistogram's deserializer negates the run
    // unchecked, which panics where overflow is checked (the dev profile).
    let payload = [
        0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    let bytes = shard_with_trend(&v2_header(payload.len() as u32), &payload);
    assert!(matches!(Shard::decode(&bytes), Err(ShardError::Invalid(_))));
    assert!(SparseShard::decode(&bytes).is_err());
    let mut v2 = v2_header(payload.len() as u32);
    v2.extend_from_slice(&payload);
    assert!(
        !Target::TrendCounts.run(&v2),
        "refused, and not given to hdrhistogram"
    );
}

#[test]
fn a_trend_whose_counts_overflow_a_sum_is_refused() {
    // Found by cargo-fuzz (the shard target, from the seeds): five counts
    // of 2^62 made hdrhistogram's percentile walk overflow u64 (a panic
    // where overflow is checked) in the report's summary.
    let payload = [0x80u8; 45];
    let bytes = shard_with_trend(&v2_header(payload.len() as u32), &payload);
    assert!(matches!(Shard::decode(&bytes), Err(ShardError::Invalid(e)) if e.contains("samples")));
    assert!(SparseShard::decode(&bytes).is_err());
    assert!(!Target::Shard.run(&bytes));
}

/// Writes every target's seeds where cargo-fuzz looks for its corpus:
/// `cargo test -p fusi-node --lib write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/ for cargo-fuzz"]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in Target::ALL {
        let dir = root.join(target.name());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (i, seed) in target.seeds().iter().enumerate() {
            let path = dir.join(format!("seed-{i}"));
            std::fs::write(&path, seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
