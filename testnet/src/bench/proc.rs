//! Processes of a benchmark: the peers (wrk, oha) and how to get them, CPU
//! pinning, the target, and running a client with a time limit.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The peers found on this machine (after installing what was missing).
#[derive(Debug, Default)]
pub struct Tools {
    /// wrk, when there is one.
    pub wrk: Option<PathBuf>,
    /// oha, when there is one.
    pub oha: Option<PathBuf>,
}

impl Tools {
    /// Finds oha (and, with `want_wrk`, wrk), installing what is missing
    /// when `install` says so: wrk from Debian's packages (as root), oha
    /// with `cargo install oha --locked`. A peer that stays missing is left
    /// out, with a note on stderr saying how to get it.
    pub fn find(install: bool, want_wrk: bool) -> Tools {
        let mut tools = Tools {
            wrk: want_wrk.then(|| which("wrk")).flatten(),
            oha: which("oha").or_else(|| cargo_bin("oha")),
        };
        if want_wrk && tools.wrk.is_none() {
            if install {
                eprintln!("wrk is missing: installing Debian's package (apt-get install wrk)");
                let ok = Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends", "wrk"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("apt-get install wrk failed; trying after apt-get update");
                    let _ = Command::new("apt-get").arg("update").status();
                    let _ = Command::new("apt-get")
                        .args(["install", "-y", "--no-install-recommends", "wrk"])
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .status();
                }
                tools.wrk = which("wrk");
            }
            if tools.wrk.is_none() {
                eprintln!(
                    "note: no wrk; it is left out (install it: `apt-get install wrk` as root)"
                );
            }
        }
        if tools.oha.is_none() {
            if install {
                eprintln!("oha is missing: `cargo install oha --locked` (a few minutes)");
                let _ = Command::new("cargo")
                    .args(["install", "oha", "--locked"])
                    .status();
                tools.oha = which("oha").or_else(|| cargo_bin("oha"));
            }
            if tools.oha.is_none() {
                eprintln!(
                    "note: no oha; it is left out (install it: `cargo install oha --locked`)"
                );
            }
        }
        tools
    }
}

/// `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `program` in cargo's bin directory ($CARGO_HOME/bin or ~/.cargo/bin).
fn cargo_bin(program: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let path = home.join("bin").join(program);
    path.is_file().then_some(path)
}

/// Which CPUs the target and the clients run on.
#[derive(Debug, Clone)]
pub struct Pinning {
    target: Option<String>,
    client: Option<String>,
}

impl Pinning {
    /// From the flags; by default the target gets CPU 0 and the clients the
    /// rest, on a machine with 2 or more cores and `taskset`.
    ///
    /// # Errors
    ///
    /// A CPU list given without `taskset` on the machine.
    pub fn new(target: Option<String>, client: Option<String>) -> anyhow::Result<Pinning> {
        let have_taskset = which("taskset").is_some();
        if !have_taskset {
            if target.is_some() || client.is_some() {
                bail!(
                    "--target-cores and --client-cores need `taskset` (Debian package \
                     util-linux), which is not on PATH"
                );
            }
            return Ok(Pinning {
                target: None,
                client: None,
            });
        }
        for list in target.iter().chain(client.iter()) {
            if list.is_empty()
                || !list
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
            {
                bail!("invalid CPU list {list:?}: expected a list such as 0 or 0-5 or 0,2,4");
            }
        }
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let target = target.or_else(|| (cores >= 2).then(|| "0".to_owned()));
        let client = client.or_else(|| match cores {
            0..=1 => None,
            2 => Some("1".to_owned()),
            n => Some(format!("1-{}", n - 1)),
        });
        Ok(Pinning { target, client })
    }

    /// `target on CPU 0, clients on CPU 1`.
    pub fn describe(&self) -> String {
        let cpus = |c: &Option<String>| {
            c.as_ref()
                .map_or("any CPU".to_owned(), |c| format!("CPU {c}"))
        };
        format!(
            "target on {}, clients on {}",
            cpus(&self.target),
            cpus(&self.client)
        )
    }

    /// A command for `program` pinned where the target runs.
    pub fn target_command(&self, program: &Path) -> Command {
        pinned(self.target.as_deref(), program)
    }

    /// A command for `program` pinned where the clients run.
    pub fn client_command(&self, program: &Path) -> Command {
        pinned(self.client.as_deref(), program)
    }

    /// How many CPUs the clients have.
    pub fn client_cpus(&self) -> usize {
        self.client.as_deref().map_or_else(
            || thread::available_parallelism().map_or(1, |n| n.get()),
            count_cpus,
        )
    }
}

/// The CPUs in a `taskset -c` list.
fn count_cpus(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

fn pinned(cpus: Option<&str>, program: &Path) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The output of a client that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How it exited.
    pub status: ExitStatus,
    /// How long it ran.
    pub took: Duration,
    /// CPU time it used in user space and in the kernel.
    pub cpu: (Duration, Duration),
}

/// User and system CPU time of this process's waited-for children.
fn children_cpu() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a valid, exclusive pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// Runs `cmd` to its end, killing it after `limit`.
///
/// # Errors
///
/// It could not start, or ran past `limit` (then it is killed).
pub fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> anyhow::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    // A child's CPU is counted once it is waited for: the difference over
    // this wait is this client's (the target is not waited for until the
    // end, and the bench runs one client at a time).
    let cpu_before = children_cpu();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} ran past {limit:?} and was killed");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let cpu_after = children_cpu();
    Ok(Finished {
        cpu: (
            cpu_after.0.saturating_sub(cpu_before.0),
            cpu_after.1.saturating_sub(cpu_before.1),
        ),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        status,
        took,
    })
}

/// Reads a pipe to its end on a thread, so the child never blocks on it.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Like [`run_bounded`], and the client must exit with status 0.
///
/// # Errors
///
/// As [`run_bounded`], or another exit status (the error shows the end of
/// its stderr).
pub fn run_ok(cmd: Command, limit: Duration, what: &str) -> anyhow::Result<Finished> {
    let done = run_bounded(cmd, limit, what)?;
    if !done.status.success() {
        let tail: Vec<&str> = done.stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", done.status, tail.join("\n"));
    }
    Ok(done)
}

/// A `fusi-testnet target` running as a child process; killed on drop.
#[derive(Debug)]
pub struct TargetProc {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl TargetProc {
    /// Starts `testnet target` on 127.0.0.1 with a free port, pinned where
    /// targets run, and waits for its URL.
    ///
    /// # Errors
    ///
    /// It did not start or print its URL within 10 s.
    pub fn start(testnet: &Path, pin: &Pinning, extra: &[&str]) -> anyhow::Result<TargetProc> {
        let mut cmd = pin.target_command(testnet);
        cmd.args(["target", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().context("cannot start fusi-testnet target")?;
        let stdout = child.stdout.take().context("no stdout from the target")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let url = lines
                .next()
                .and_then(Result::ok)
                .and_then(|line| line.strip_prefix("target listening on ").map(str::to_owned));
            let _ = tx.send(url);
            // Keep reading, so the target never blocks on a full pipe.
            for _ in lines {}
        });
        let mut target = TargetProc {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(url)) => target.url = url,
            _ => bail!("the target did not print its URL within 10 s"),
        }
        Ok(target)
    }
}

impl Drop for TargetProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
