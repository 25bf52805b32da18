//! `fusi-testnet`: run fusi's local test servers from the command line.
//!
//! Scripts and the demo start a target as a separate process, so its
//! interface is meant for machines as much as for people: one line on stdout
//! with the URL once it is listening, the final counters as one JSON line on
//! stdout when it stops, and logs on stderr. `fusi-testnet up` starts a
//! local mesh of `fusi-node` processes (see `up.rs`).

mod bench;
mod up;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fusi_testnet::{Latency, SourceLatency, StallWindow, Target, TargetConfig, parse_duration};
use tracing_subscriber::EnvFilter;

/// fusi's local testnet: servers to point the load generator at.
#[derive(Debug, Parser)]
#[command(
    name = "fusi-testnet",
    version,
    propagate_version = true,
    after_help = "Run `fusi-testnet target --help` for the target's knobs, \
                  `fusi-testnet up --help` for the local mesh."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an HTTP target server with latency, stall and error knobs.
    ///
    /// Serves HTTP/1.1 and cleartext HTTP/2 on one port; with --tls, HTTPS
    /// instead (HTTP/2 or HTTP/1.1 chosen by ALPN) with a fresh self-signed
    /// certificate for localhost and 127.0.0.1. Routes: GET / and /hello,
    /// POST /items, GET /items/{id}, /status/{code}, /delay/{ms},
    /// GET /bytes/{len}, /echo, /redirect/{n}, /redirect-to?url=URL,
    /// GET /cookies, /cookies/set?NAME=VALUE, POST /login, GET /account,
    /// the WebSockets GET /ws/echo, /ws/chat?room=NAME and /ws/bytes/{n}, and
    /// GET /__fusi/stats (counters as JSON, not counted; DELETE resets
    /// them).
    ///
    /// Prints `target listening on http://ADDR` (`https://` with --tls) on
    /// stdout once listening, and the final counters as one JSON line on
    /// stdout after SIGINT or SIGTERM.
    /// Logs go to stderr (RUST_LOG sets the level; default info).
    #[command(after_help = TARGET_EXAMPLES)]
    Target(TargetArgs),

    /// Start a local mesh of fusi-node processes on loopback, one address
    /// range per region, and optionally a target.
    ///
    /// Region R (1-based, in --regions order) gets the loopback range
    /// 127.0.R.0/24: its node i is named REGION-i, listens for peers on
    /// 127.0.R.i and sends its load from 127.0.R.i, so a target can tell
    /// the regions apart. All of 127.0.0.0/8 is local on Linux. Every node's
    /// local API is on 127.0.0.1 with a free port. The first node starts
    /// alone, the others bootstrap from it; all share a fresh pre-shared
    /// mesh key.
    ///
    /// Prints a table of the nodes (name, region, IP, API address, peer
    /// address), the mesh key file and, with --target, the target's URL,
    /// then runs until SIGINT (Ctrl-C) or SIGTERM, and stops every node.
    /// A node that exits on its own is reported on stderr. Set
    /// FUSI_TESTNET_LOGS=1 to see every node's output on stderr, prefixed
    /// with [name]; RUST_LOG is passed on to the nodes.
    #[command(after_help = up::EXAMPLES)]
    Up(up::UpArgs),

    /// Run one of the benchmarks of docs/benchmarks.md and print its
    /// figures as a Markdown table: each round runs every client once, in
    /// an order that rotates every round, and the table gives the median
    /// and the spread (min–max) of the rounds.
    ///
    /// Needs release builds of fusi-node (next to this executable, or
    /// --node-bin) and of the example scenarios; `scripts/bench NAME` builds
    /// both and then runs this. wrk and oha are installed when missing
    /// (apt-get as root; cargo install) unless --no-install. Only 127.0.0.1
    /// is ever loaded, and every load is bounded in time.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::BenchArgs),
}

const TARGET_EXAMPLES: &str = "\
Examples:
  fusi-testnet target
  fusi-testnet target --listen 127.0.0.1:8080 --latency 50ms
  fusi-testnet target --latency 20ms..80ms --error-rate 0.1 --error-status 500
  fusi-testnet target --stall-after 2s --stall-for 1s
  fusi-testnet target --latency 5ms --latency-from 127.0.2.0/24=60ms,127.0.3.0/24=120ms
  fusi-testnet target --tls";

#[derive(Debug, Args)]
struct TargetArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Allow a --listen address that is not loopback. The target is an
    /// unauthenticated test server: keep it off the network unless you mean it.
    #[arg(long)]
    allow_non_loopback: bool,

    /// Serve HTTPS with a fresh self-signed certificate (for localhost and
    /// 127.0.0.1); HTTP/2 or HTTP/1.1 is chosen by ALPN.
    #[arg(long)]
    tls: bool,

    /// Latency added to every request: `none`, a duration (`50ms`) or a
    /// uniform range (`20ms..80ms`).
    #[arg(long, value_name = "LATENCY", default_value = "none", value_parser = parse_latency)]
    latency: Latency,

    /// Extra latency for clients in an IPv4 range, added to --latency:
    /// RANGE=LATENCY, e.g. `127.0.2.0/24=60ms` or `127.0.3.0/24=20ms..80ms`.
    /// Repeat the flag or separate entries with commas; the first range
    /// that holds the client's address applies. In `fusi-testnet up`,
    /// region R sends from 127.0.R.0/24.
    #[arg(long, value_name = "RANGE=LATENCY", value_delimiter = ',',
          value_parser = parse_source_latency)]
    latency_from: Vec<SourceLatency>,

    /// Open a stall window this long after the first request (e.g. `2s`); requests are
    /// held until it ends. Needs --stall-for.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "stall_for")]
    stall_after: Option<Duration>,

    /// How long the stall window lasts (e.g. `1s`). Needs --stall-after.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "stall_after")]
    stall_for: Option<Duration>,

    /// Fraction of requests, 0.0 to 1.0, answered with --error-status.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_rate)]
    error_rate: f64,

    /// Status of injected errors (200..=599).
    #[arg(long, value_name = "CODE", default_value_t = 503,
          value_parser = clap::value_parser!(u16).range(200..=599))]
    error_status: u16,
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse().map_err(|e: anyhow::Error| format!("{e:#}"))
}

fn parse_source_latency(s: &str) -> Result<SourceLatency, String> {
    s.parse().map_err(|e: anyhow::Error| format!("{e:#}"))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{e:#}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number; expected a fraction such as 0.1"))?;
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{s} is out of range: expected a fraction in 0.0..=1.0"
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = match cli.command {
        Command::Target(args) => run_target(args),
        Command::Up(args) => up::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fusi-testnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_target(args: TargetArgs) -> anyhow::Result<()> {
    fusi_testnet::raise_open_files();
    let stall = match (args.stall_after, args.stall_for) {
        (Some(after), Some(duration)) => Some(StallWindow { after, duration }),
        _ => None,
    };
    let cfg = TargetConfig {
        listen: args.listen,
        latency: args.latency,
        source_latency: args.latency_from,
        stall,
        error_rate: args.error_rate,
        error_status: args.error_status,
        allow_non_loopback: args.allow_non_loopback,
        tls: args.tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        let mut signals = Signals::new()?;
        let target = Target::start(cfg).await?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "target listening on {}", target.url())
                .and_then(|()| stdout.flush())
                .context("writing to stdout")?;
        }
        let signal = signals.recv().await;
        tracing::info!("received {signal}; shutting down");
        // Taken after shutdown so that requests cut short by it are included.
        let stats = target.shutdown().await;
        let line = serde_json::to_string(&stats).context("encoding the stats")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), caught from the moment this is
/// made, so that a signal during a slow startup still leads to a clean
/// shutdown. Needs a tokio runtime context.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
                terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!("waiting for Ctrl-C failed: {e}");
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn target_flags_parse() {
        let cli = Cli::try_parse_from([
            "fusi-testnet",
            "target",
            "--latency",
            "20ms..80ms",
            "--stall-after",
            "2s",
            "--stall-for",
            "1m30s",
            "--error-rate",
            "0.1",
        ])
        .expect("valid flags");
        let Command::Target(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(
            args.latency,
            Latency::Uniform {
                min: Duration::from_millis(20),
                max: Duration::from_millis(80)
            }
        );
        assert_eq!(args.stall_for, Some(Duration::from_secs(90)));
        assert_eq!(args.error_status, 503);
        assert!(!args.tls);

        let cli = Cli::try_parse_from(["fusi-testnet", "target", "--tls"]).expect("valid flags");
        let Command::Target(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert!(args.tls);

        let cli = Cli::try_parse_from([
            "fusi-testnet",
            "target",
            "--latency-from",
            "127.0.2.0/24=60ms,127.0.3.0/24=20ms..80ms",
            "--latency-from",
            "127.0.4.7=1s",
        ])
        .expect("valid flags");
        let Command::Target(args) = cli.command else {
            panic!("parsed as another command")
        };
        let ranges: Vec<String> = args.latency_from.iter().map(ToString::to_string).collect();
        assert_eq!(
            ranges,
            [
                "127.0.2.0/24=60ms",
                "127.0.3.0/24=20ms..80ms",
                "127.0.4.7/32=1s"
            ]
        );

        for bad in [
            &["--latency", "50"][..],
            &["--latency-from", "127.0.2.0/24"],
            &["--latency-from", "127.0.2.0/33=60ms"],
            &["--latency-from", "127.0.2.0/24=60"],
            &["--latency-from", "fra=60ms"],
            &["--stall-after", "2s"],
            &["--error-rate", "1.5"],
            &["--error-status", "99"],
            &["--listen", "localhost"],
        ] {
            let argv = ["fusi-testnet", "target"]
                .into_iter()
                .chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
