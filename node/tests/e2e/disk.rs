//! The data dir under pressure, on a real process: a disk that fills up
//! mid-run (a small tmpfs), and a restart over tens of thousands of stored
//! shards (`#[ignore]`d: a measurement, run by hand).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fusi_node::core::runs::Run;
use fusi_node::core::shard::Shard;
use fusi_node::core::wire;
use fusi_testnet::{Mesh, MeshConfig, TargetConfig, get_json};
use serde_json::Value;

use super::runs::{hello, node_bin, run_view, wait_for};
use super::{fusi_to, serial, target};

/// A tmpfs mounted for a test, unmounted (and its mount point removed)
/// when dropped, whatever the test did.
struct Tmpfs {
    base: PathBuf,
    mount: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) at `BASE/name`, under a
    /// fresh base directory. `None`, after saying loudly why, where this
    /// process may not mount (not root, no mount(8), a container without
    /// CAP_SYS_ADMIN); under `FUSI_REQUIRE_TMPFS=1` that fails the test.
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let base =
            std::env::temp_dir().join(format!("fusi-e2e-disk-{}-{}", std::process::id(), name));
        let mount = base.join(name);
        std::fs::create_dir_all(&mount)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", mount.display()));
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .output();
        let why = match out {
            Ok(out) if out.status.success() => return Some(Tmpfs { base, mount }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        let _ = std::fs::remove_dir_all(&base);
        assert!(
            std::env::var_os("FUSI_REQUIRE_TMPFS").is_none(),
            "cannot mount a tmpfs at {}: {why}",
            mount.display()
        );
        eprintln!(
            "SKIPPED: cannot mount a tmpfs at {} ({why}), so no disk can fill up here; \
             run the test as root (FUSI_REQUIRE_TMPFS=1 makes this a failure)",
            mount.display()
        );
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still has a file open there (a node that did not
            // stop): detach it, so no tmpfs outlives the test.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Fills the file system of `dir` to the last byte with `dir/filler`.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let chunk = vec![0x5a_u8; 64 << 10];
    // Large writes until one fails, then small ones for the last pages.
    for size in [chunk.len(), 512] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
    path
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report_of(api: std::net::SocketAddr, token: &str, id: &str) -> Value {
    get_json(api, token, &format!("/v1/runs/{id}/report")).unwrap_or(Value::Null)
}

/// Runs `hello` through a node's API for `duration` and returns its run id
/// and its report, as the node's API gives it once the run is over.
fn hello_run(api: std::net::SocketAddr, token: &str, url: &str, duration: &str) -> (String, Value) {
    let run = fusi_to(
        token,
        &[
            "run",
            &hello(),
            "--vus",
            "2",
            "--duration",
            duration,
            "--env",
            &format!("TARGET={url}"),
            "--api",
            &api.to_string(),
        ],
    );
    let id = super::runs::run_id_of(&run.stderr());
    assert_eq!(
        run.output.status.code(),
        Some(0),
        "run {id}:\n{}{}",
        run.stdout(),
        run.stderr()
    );
    let report = report_of(api, token, &id);
    (id, report)
}

fn shard_files(data_dir: &Path, id: &str) -> usize {
    std::fs::read_dir(data_dir.join("runs").join(id).join("shards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cbor"))
        .count()
}

/// The case: a node whose data dir is a 16 MiB tmpfs, filled to
/// the last byte between two runs. The node stays up and answers; its log
/// names the path and `No space left on device`; the second run's status
/// says the node cannot store it; its report is still complete (the shards
/// wait in memory); once there is room again they are stored, and after a
/// restart both runs' reports are what they were.
#[test]
fn a_full_disk_is_named_in_the_log_and_the_status_and_loses_nothing() {
    let _serial = serial();
    let Some(tmpfs) = Tmpfs::mount("fra-1", "16m") else {
        return;
    };
    let t = target(TargetConfig::default());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config.dir = Some(tmpfs.base.clone());
    let mut mesh = Mesh::start(config).expect("the node starts");
    let node = mesh.nodes()[0].clone();
    assert_eq!(node.data_dir, tmpfs.mount, "the data dir is the tmpfs");
    let token = mesh.api_token().to_owned();

    let (first, first_report) = hello_run(node.api, &token, &t.url(), "2s");
    let stored = shard_files(&node.data_dir, &first);
    assert!(stored > 0, "run {first} stored no shard");

    let filler = fill(&node.data_dir);
    t.reset_stats();
    let (second, second_report) = hello_run(node.api, &token, &t.url(), "2s");
    let served = t.stats().requests;
    eprintln!(
        "full disk: run {second} stored {} shards; the target served {served}, the report counts {}",
        shard_files(&node.data_dir, &second),
        second_report["summary"]["http"]["requests"]
    );

    // The node is up, answers, and says why it cannot store the run.
    assert!(mesh.poll_exits().is_empty(), "the node exited");
    let status = get_json(node.api, &token, "/v1/status").expect("the API answers");
    assert_eq!(status["name"], "fra-1", "{status}");
    let view = run_view(node.api, &token, &second);
    let problem = view["storage_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eprintln!("the run's status says: {problem}");
    assert!(
        problem.contains("No space left on device")
            && problem.contains(&node.data_dir.display().to_string()),
        "{view}"
    );
    let shown = fusi_to(&token, &["runs", &second, "--api", &node.api.to_string()]);
    assert!(
        shown.stdout().contains("No space left on device"),
        "`fusi-node runs {second}` does not say it:\n{}{}",
        shown.stdout(),
        shown.stderr()
    );
    let log = mesh.stderr_tail(0).join("\n");
    assert!(
        log.lines().any(|l| l.contains("No space left on device")
            && l.contains(&node.data_dir.display().to_string())),
        "the log does not name the path and the error:\n{log}"
    );
    // Nothing already stored is gone, and the report of the run the disk
    // had no room for counts every request the target served.
    assert_eq!(shard_files(&node.data_dir, &first), stored);
    assert_eq!(report_of(node.api, &token, &first), first_report);
    assert_eq!(
        second_report["summary"]["http"]["requests"].as_u64(),
        Some(served),
        "{}",
        second_report["summary"]["http"]
    );
    assert_eq!(report_of(node.api, &token, &second), second_report);

    // Room again: what waited in memory is stored, and the status clears.
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("cannot remove the filler: {e}"));
    assert!(
        wait_for(Duration::from_secs(20), || run_view(
            node.api, &token, &second
        )["storage_error"]
            .is_null()),
        "{}",
        run_view(node.api, &token, &second)
    );
    assert!(shard_files(&node.data_dir, &second) > 0);
    mesh.stop(0).expect("the node stops");
    mesh.restart(0).expect("the node restarts");
    let api = mesh.nodes()[0].api;
    assert_eq!(report_of(api, &token, &first), first_report);
    assert_eq!(report_of(api, &token, &second), second_report);
    drop(mesh);
    drop(tmpfs);
}

/// The goal for a restart: a node over 50,000 stored shards (50
/// runs of 1,000, each shard a real one of `hello` renamed) starts under
/// 200 MB of resident memory. A measurement, about a minute: run it with
/// `cargo test -p fusi-node --test e2e -- --ignored --nocapture
/// fifty_thousand`.
#[test]
#[ignore = "a measurement: writes 50,000 shards; run by hand"]
fn a_restart_over_fifty_thousand_stored_shards_stays_under_200_mb() {
    const RUNS: usize = 50;
    const SHARDS: u64 = 1000;
    let _serial = serial();
    let t = target(TargetConfig::default());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config.startup_timeout = Duration::from_secs(600);
    let mut mesh = Mesh::start(config).expect("the node starts");
    let node = mesh.nodes()[0].clone();
    let token = mesh.api_token().to_owned();
    let (template, _) = hello_run(node.api, &token, &t.url(), "3s");
    mesh.stop(0).expect("the node stops");

    let runs_dir = node.data_dir.join("runs");
    let read = |path: PathBuf| {
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let record: Run =
        ciborium::from_reader(read(runs_dir.join(&template).join("run.cbor")).as_slice())
            .unwrap_or_else(|e| panic!("the run record: {e}"));
    let mut shards: Vec<Shard> = std::fs::read_dir(runs_dir.join(&template).join("shards"))
        .unwrap_or_else(|e| panic!("the shards: {e}"))
        .flatten()
        .map(|e| Shard::decode(&read(e.path())).unwrap_or_else(|e| panic!("a shard: {e}")))
        .collect();
    shards.sort_by_key(|s| s.seq);
    // Whole intervals only: the last one may be partial.
    shards.retain(|s| !s.last);
    assert!(!shards.is_empty());
    std::fs::remove_dir_all(runs_dir.join(&template)).unwrap_or_else(|e| panic!("{e}"));
    let written = Instant::now();
    let mut bytes = 0;
    for r in 0..RUNS {
        let mut run = record.clone();
        run.id = format!("{template}x{r:02}");
        let dir = runs_dir.join(&run.id);
        std::fs::create_dir_all(dir.join("shards")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("run.cbor"), wire::encode(&run)).unwrap_or_else(|e| panic!("{e}"));
        for seq in 0..SHARDS {
            let mut shard = shards[(seq as usize) % shards.len()].clone();
            shard.run_id.clone_from(&run.id);
            shard.seq = seq;
            shard.start_ms = seq * 1000;
            shard.end_ms = (seq + 1) * 1000;
            shard.last = seq + 1 == SHARDS;
            let encoded = shard.encode();
            bytes += encoded.len();
            std::fs::write(
                dir.join("shards")
                    .join(format!("{}.{seq}.cbor", shard.node)),
                encoded,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    eprintln!(
        "wrote {RUNS} runs of {SHARDS} shards ({:.1} MB) in {:?}",
        bytes as f64 / 1e6,
        written.elapsed()
    );

    let started = Instant::now();
    mesh.restart(0).expect("the node restarts");
    let api = mesh.nodes()[0].api;
    let pid = mesh.nodes()[0].pid;
    assert!(
        wait_for(Duration::from_secs(600), || get_json(
            api, &token, "/v1/runs"
        )
        .is_ok_and(|v| v["runs"].as_array().is_some_and(|r| r.len() == RUNS))),
        "the node does not list {RUNS} runs"
    );
    let took = started.elapsed();
    let (rss, hwm) = memory_of(pid);
    eprintln!(
        "restart over {} shards: API answering with {RUNS} runs after {took:?}; \
         VmRSS {:.1} MB, VmHWM {:.1} MB",
        RUNS as u64 * SHARDS,
        rss as f64 / 1e6,
        hwm as f64 / 1e6
    );
    // A report still reads every shard of its run.
    let id = format!("{template}x07");
    let report = get_json(api, &token, &format!("/v1/runs/{id}/report"))
        .unwrap_or_else(|e| panic!("the report of {id}: {e}"));
    let (rss_after, hwm_after) = memory_of(pid);
    eprintln!(
        "after one report ({} shards received): VmRSS {:.1} MB, VmHWM {:.1} MB",
        report["completeness"]["shards_received"],
        rss_after as f64 / 1e6,
        hwm_after as f64 / 1e6
    );
    assert_eq!(
        report["completeness"]["shards_received"].as_u64(),
        Some(SHARDS),
        "{}",
        report["completeness"]
    );
    assert!(hwm < 200_000_000, "VmHWM {hwm} bytes at start");
}
