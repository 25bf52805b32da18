//! `fusi-testnet up`: a local mesh of `fusi-node` processes, and a target.
//!
//! A thin shell over [`Mesh`]: parse and check the flags, start the mesh
//! (and a target whose latency depends on the client's region), print
//! where everything is, then watch the nodes until a signal and tear it all
//! down.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use fusi_testnet::{
    API_TOKEN_ENV, API_TOKEN_FILE, Latency, MAX_REGIONS, Mesh, MeshConfig, STARTUP_TIMEOUT,
    SourceLatency, TargetConfig, TargetHandle, region_range, spawn_target, validate_region,
};

use crate::Signals;

/// Examples shown by `fusi-testnet up --help`.
pub const EXAMPLES: &str = "\
Examples:
  fusi-testnet up --nodes 3
  fusi-testnet up --regions fra:2,nrt:2,ewr:1 --latency fra-nrt=120ms,fra-ewr=40ms,nrt-ewr=90ms
  fusi-testnet up --nodes 5 --regions fra:2,nrt:2,ewr:1 --latency fra-nrt=120ms,fra>nrt=70ms \\
      --target --target-latency fra=10ms,nrt=80ms,ewr=20ms..40ms
  fusi-testnet up --nodes 2 --dir ./testnet-data -- --some-node-flag";

/// How often the nodes are checked for unexpected exits.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How many stderr lines of a node that exited are shown.
const EXIT_TAIL_LINES: usize = 10;
/// The region of every node when --regions is not given.
const DEFAULT_REGION: &str = "local";

/// Flags of `fusi-testnet up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes to start. Without --regions they are all in region
    /// `local`; with it, this must equal the sum of its counts (and may be
    /// left out).
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,

    /// The regions, in order, with their node counts: NAME:COUNT entries
    /// separated by commas (or repeat the flag), e.g. `fra:2,nrt:2,ewr:1`.
    /// Names are 1 to 32 of a-z, 0-9 and '-'. Region R (1 for the first)
    /// gets the addresses 127.0.R.0/24.
    #[arg(long, value_name = "NAME:COUNT,...", value_delimiter = ',',
          value_parser = parse_region_count)]
    regions: Vec<RegionCount>,

    /// Emulated one-way latency between regions, passed to every node as
    /// --emulate-latency. Entries separated by commas: `a-b=D` delays both
    /// directions between regions a and b by D, `a>b=D` only messages from
    /// a to b; a later entry overrides an earlier one, so
    /// `fra-nrt=120ms,fra>nrt=70ms` is 70 ms from fra to nrt and 120 ms
    /// back. Nodes of one region, and pairs not named, get no delay.
    #[arg(long, value_name = "SPEC")]
    latency: Option<String>,

    /// The fusi-node binary [default: fusi-node next to this executable].
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,

    /// Directory for the mesh key (DIR/mesh.key) and the nodes' data
    /// (DIR/NAME/). It is kept, and an existing key in it is reused.
    /// Default: a fresh temporary directory, removed on exit.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Also start an HTTP target (as `fusi-testnet target` does) on
    /// 127.0.0.1 with a free port, and print its URL.
    #[arg(long)]
    target: bool,

    /// Latency the target adds to requests from each region's nodes:
    /// REGION=LATENCY entries separated by commas, e.g.
    /// `fra=10ms,nrt=80ms`; a latency may be a range (`20ms..80ms`).
    /// Regions not named get none. Needs --target.
    #[arg(long, value_name = "REGION=LATENCY,...", value_delimiter = ',',
          value_parser = parse_region_latency, requires = "target")]
    target_latency: Vec<RegionLatency>,

    /// Arguments appended to every `fusi-node up`, after `--`.
    #[arg(last = true, value_name = "NODE_ARGS")]
    node_args: Vec<String>,
}

/// One `--regions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RegionCount {
    name: String,
    count: usize,
}

/// One `--target-latency` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RegionLatency {
    region: String,
    latency: Latency,
}

fn parse_region_count(s: &str) -> Result<RegionCount, String> {
    let s = s.trim();
    let Some((name, count)) = s.split_once(':') else {
        return Err(format!(
            "`{s}` has no node count: write NAME:COUNT, e.g. fra:2"
        ));
    };
    validate_region(name).map_err(|e| format!("{e:#}"))?;
    let count = count
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!(
                "`{s}`: the node count `{count}` is not a whole number of at least 1, e.g. fra:2"
            )
        })?;
    Ok(RegionCount {
        name: name.to_owned(),
        count,
    })
}

fn parse_region_latency(s: &str) -> Result<RegionLatency, String> {
    let s = s.trim();
    let Some((region, latency)) = s.split_once('=') else {
        return Err(format!(
            "`{s}` is not REGION=LATENCY: write e.g. fra=10ms or nrt=20ms..80ms"
        ));
    };
    validate_region(region).map_err(|e| format!("{e:#}"))?;
    let latency = latency
        .parse::<Latency>()
        .map_err(|e| format!("`{s}`: {e:#}"))?;
    Ok(RegionLatency {
        region: region.to_owned(),
        latency,
    })
}

/// The regions to start, from --nodes and --regions.
fn plan_regions(
    nodes: Option<usize>,
    regions: &[RegionCount],
) -> anyhow::Result<Vec<(String, usize)>> {
    if regions.is_empty() {
        let Some(nodes) = nodes else {
            bail!(
                "say how many nodes to start: --nodes N (all in region `{DEFAULT_REGION}`), \
                 or --regions NAME:COUNT,... (e.g. --regions fra:2,nrt:1)"
            );
        };
        ensure!(nodes > 0, "--nodes 0: start at least one node");
        return Ok(vec![(DEFAULT_REGION.to_owned(), nodes)]);
    }
    for (i, region) in regions.iter().enumerate() {
        ensure!(
            !regions[..i].iter().any(|other| other.name == region.name),
            "--regions lists `{}` twice: list each region once, with its node count",
            region.name
        );
    }
    ensure!(
        regions.len() <= MAX_REGIONS,
        "--regions lists {} regions: at most {MAX_REGIONS} (each gets a 127.0.R.0/24 range)",
        regions.len()
    );
    let sum: usize = regions.iter().map(|r| r.count).sum();
    if let Some(nodes) = nodes {
        ensure!(
            nodes == sum,
            "--nodes {nodes} does not match --regions, whose counts sum to {sum}: \
             fix one of them, or leave --nodes out"
        );
    }
    Ok(regions.iter().map(|r| (r.name.clone(), r.count)).collect())
}

/// The target's source latencies: each named region's range, with its
/// latency.
fn target_sources(
    regions: &[(String, usize)],
    entries: &[RegionLatency],
) -> anyhow::Result<Vec<SourceLatency>> {
    let known = || {
        regions
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sources = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        ensure!(
            !entries[..i]
                .iter()
                .any(|other| other.region == entry.region),
            "--target-latency names region `{}` twice: give each region one latency",
            entry.region
        );
        let position = regions
            .iter()
            .position(|(name, _)| *name == entry.region)
            .with_context(|| {
                format!(
                    "--target-latency names region `{}`, which is not started: \
                     the regions are {}",
                    entry.region,
                    known()
                )
            })?;
        let r = u8::try_from(position + 1).context("too many regions")?;
        sources.push(SourceLatency {
            from: region_range(r),
            latency: entry.latency,
        });
    }
    Ok(sources)
}

/// Regions named in an --emulate-latency spec that are not started (read
/// as the node reads it: each entry's pair splits at its first `>`, else
/// its first `-`).
fn unknown_latency_regions(spec: &str, regions: &[(String, usize)]) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for entry in spec.split(',') {
        let pair = entry.split_once('=').map_or(entry, |(pair, _)| pair);
        let Some((a, b)) = pair.split_once('>').or_else(|| pair.split_once('-')) else {
            continue;
        };
        for name in [a.trim(), b.trim()] {
            if !regions.iter().any(|(known, _)| known == name) && !unknown.iter().any(|u| u == name)
            {
                unknown.push(name.to_owned());
            }
        }
    }
    unknown
}

/// `fusi-node` next to this executable.
fn default_node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context(
        "finding this executable, to look for fusi-node next to it; pass --node-bin PATH",
    )?;
    let bin = exe
        .parent()
        .map(|dir| dir.join(format!("fusi-node{}", std::env::consts::EXE_SUFFIX)));
    match bin {
        Some(bin) if bin.is_file() => Ok(bin),
        _ => bail!(
            "fusi-node was not found next to {}: build it with `cargo build -p fusi-node` \
             (add --release if this is a release build), or pass --node-bin PATH",
            exe.display()
        ),
    }
}

/// Runs `fusi-testnet up`.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let regions = plan_regions(args.nodes, &args.regions)?;
    let sources = target_sources(&regions, &args.target_latency)?;
    if let Some(spec) = &args.latency {
        for name in unknown_latency_regions(spec, &regions) {
            tracing::warn!("--latency names region `{name}`, which is not started");
        }
    }
    let node_bin = match args.node_bin {
        Some(bin) => bin,
        None => default_node_bin()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let _context = runtime.enter();
    // Caught from now on: a signal during startup stops what was started.
    let mut signals = Signals::new()?;

    let mut mesh = Mesh::start(MeshConfig {
        node_bin,
        regions,
        latency: args.latency,
        dir: args.dir,
        extra_args: args.node_args,
        env: Vec::new(),
        startup_timeout: STARTUP_TIMEOUT,
        netns: false,
    })?;
    let target = if args.target {
        Some(spawn_target(TargetConfig {
            source_latency: sources,
            ..TargetConfig::default()
        })?)
    } else {
        None
    };
    print_summary(&mesh, target.as_ref()).context("writing to stdout")?;
    tracing::info!("the mesh is up; Ctrl-C or SIGTERM stops it");

    let signal = runtime.block_on(watch(&mut mesh, &mut signals));
    tracing::info!("received {signal}; stopping the mesh");
    drop(target);
    drop(mesh);
    Ok(())
}

/// Reports nodes that exit, until a signal; returns its name.
async fn watch(mesh: &mut Mesh, signals: &mut Signals) -> &'static str {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            signal = signals.recv() => return signal,
            _ = tick.tick() => {
                for (index, status) in mesh.poll_exits() {
                    let name = &mesh.nodes()[index].name;
                    let tail = mesh.stderr_tail(index);
                    let mut msg = format!("fusi-testnet: node {name} exited unexpectedly ({status})");
                    if !tail.is_empty() {
                        msg.push_str("; its stderr ended with:");
                        for line in &tail[tail.len().saturating_sub(EXIT_TAIL_LINES)..] {
                            msg.push_str("\n    ");
                            msg.push_str(line);
                        }
                    }
                    eprintln!("{msg}");
                }
            }
        }
    }
}

/// Prints the node table, the key, the directory, the regions' ranges and
/// the target.
fn print_summary(mesh: &Mesh, target: Option<&TargetHandle>) -> std::io::Result<()> {
    let mut rows = vec![["NAME", "REGION", "IP", "API", "P2P"].map(String::from)];
    rows.extend(mesh.nodes().iter().map(|node| {
        [
            node.name.clone(),
            node.region.clone(),
            node.ip.to_string(),
            node.api.to_string(),
            node.p2p.clone(),
        ]
    }));
    let mut out = format_table(&rows);
    out.push('\n');
    let mut regions: Vec<String> = Vec::new();
    for node in mesh.nodes() {
        if let Some(range) = mesh.region_range(&node.region) {
            let entry = format!("{} {range}", node.region);
            if !regions.contains(&entry) {
                regions.push(entry);
            }
        }
    }
    out.push_str(&format!("regions   {}\n", regions.join(", ")));
    out.push_str(&format!("mesh key  {}\n", mesh.key_file().display()));
    out.push_str(&format!("data dir  {}\n", mesh.dir().display()));
    let token_file = mesh.dir().join(API_TOKEN_FILE);
    out.push_str(&format!(
        "api token {} (for the CLI: export {API_TOKEN_ENV}=$(cat {}))\n",
        token_file.display(),
        token_file.display()
    ));
    if let Some(target) = target {
        out.push_str(&format!("target    {}\n", target.url()));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()
}

/// Rows as left-aligned columns separated by two spaces, one line each.
fn format_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn up(args: &[&str]) -> Result<UpArgs, String> {
        let argv = ["fusi-testnet", "up"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Up(args),
            }) => Ok(args),
            Ok(other) => panic!("parsed as another command: {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn plan(args: &[&str]) -> anyhow::Result<Vec<(String, usize)>> {
        let args = up(args).map_err(anyhow::Error::msg)?;
        plan_regions(args.nodes, &args.regions)
    }

    fn regions(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|&(n, c)| (n.to_owned(), c)).collect()
    }

    #[test]
    fn regions_parse_and_must_match_nodes() -> anyhow::Result<()> {
        let want = regions(&[("fra", 2), ("nrt", 2), ("ewr", 1)]);
        assert_eq!(
            plan(&["--nodes", "5", "--regions", "fra:2,nrt:2,ewr:1"])?,
            want
        );
        assert_eq!(
            plan(&["--regions", "fra:2,nrt:2", "--regions", "ewr:1"])?,
            want
        );
        assert_eq!(plan(&["--nodes", "3"])?, regions(&[("local", 3)]));
        assert_eq!(
            plan(&["--regions", "us-east-1:1"])?,
            regions(&[("us-east-1", 1)])
        );

        let err = |args: &[&str]| match plan(args) {
            Ok(plan) => panic!("{args:?} should be rejected, got {plan:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err(&["--nodes", "4", "--regions", "fra:2,nrt:1"]).contains("sum to 3"));
        assert!(err(&[]).contains("--nodes N"));
        assert!(err(&["--nodes", "0"]).contains("at least one"));
        assert!(err(&["--regions", "fra:1,fra:2"]).contains("twice"));
        assert!(err(&["--regions", "fra"]).contains("NAME:COUNT"));
        assert!(err(&["--regions", "fra:0"]).contains("at least 1"));
        assert!(err(&["--regions", "fra:x"]).contains("at least 1"));
        assert!(err(&["--regions", "Fra:1"]).contains("a-z, 0-9"));
        assert!(err(&["--regions", ":1"]).contains("a-z, 0-9"));
        assert!(err(&["--nodes", "x"]).contains("--nodes"));
        Ok(())
    }

    #[test]
    fn target_latency_maps_regions_to_their_ranges() -> anyhow::Result<()> {
        let args = up(&[
            "--regions",
            "fra:2,nrt:2,ewr:1",
            "--target",
            "--target-latency",
            "nrt=80ms,fra=10ms",
            "--target-latency",
            "ewr=20ms..40ms",
        ])
        .map_err(anyhow::Error::msg)?;
        assert!(args.target);
        let plan = plan_regions(args.nodes, &args.regions)?;
        let sources: Vec<String> = target_sources(&plan, &args.target_latency)?
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            sources,
            [
                "127.0.2.0/24=80ms",
                "127.0.1.0/24=10ms",
                "127.0.3.0/24=20ms..40ms"
            ]
        );

        let unknown = [RegionLatency {
            region: "syd".into(),
            latency: Latency::None,
        }];
        let msg = format!("{:#}", target_sources(&plan, &unknown).unwrap_err());
        assert!(
            msg.contains("`syd`") && msg.contains("fra, nrt, ewr"),
            "{msg}"
        );
        let fra = RegionLatency {
            region: "fra".into(),
            latency: Latency::None,
        };
        let twice = [fra.clone(), fra];
        assert!(format!("{:#}", target_sources(&plan, &twice).unwrap_err()).contains("twice"));

        for bad in [
            &["--target-latency", "fra=10ms"][..],
            &["--target", "--target-latency", "fra"],
            &["--target", "--target-latency", "fra=10"],
            &["--target", "--target-latency", "FRA=10ms"],
            &["--target", "--target-latency", "fra=80ms..20ms"],
        ] {
            let msg = up(bad).expect_err("should be rejected");
            assert!(msg.contains("--target"), "{bad:?}: {msg}");
        }
        Ok(())
    }

    #[test]
    fn flag_errors_name_the_flag_and_the_fix() {
        let msg = up(&["--nodes", "1", "--target", "--target-latency", "fra=10"])
            .expect_err("a duration without a unit");
        assert!(
            msg.contains("--target-latency") && msg.contains("write 10ms or 10s"),
            "{msg}"
        );
        let msg = up(&["--regions", "fra"]).expect_err("no count");
        assert!(msg.contains("--regions") && msg.contains("fra:2"), "{msg}");
    }

    #[test]
    fn other_flags_parse() -> Result<(), String> {
        let args = up(&[
            "--nodes",
            "2",
            "--latency",
            "fra-nrt=120ms,fra>nrt=70ms",
            "--node-bin",
            "/opt/fusi-node",
            "--dir",
            "data",
            "--",
            "--flag",
            "value",
        ])?;
        assert_eq!(args.latency.as_deref(), Some("fra-nrt=120ms,fra>nrt=70ms"));
        assert_eq!(args.node_bin, Some(PathBuf::from("/opt/fusi-node")));
        assert_eq!(args.dir, Some(PathBuf::from("data")));
        assert_eq!(args.node_args, ["--flag", "value"]);
        assert!(!args.target && args.target_latency.is_empty());
        Ok(())
    }

    #[test]
    fn latency_spec_regions_are_checked() {
        let plan = regions(&[("fra", 1), ("nrt", 1), ("us-east", 1)]);
        assert!(unknown_latency_regions("fra-nrt=120ms,fra>nrt=70ms", &plan).is_empty());
        assert_eq!(
            unknown_latency_regions("fra-syd=1ms, syd>fra=2ms,ewr-fra=3ms", &plan),
            ["syd", "ewr"]
        );
        assert_eq!(
            unknown_latency_regions("fra>us-east=1ms,garbage", &plan),
            Vec::<String>::new()
        );
    }

    #[test]
    fn table_columns_line_up() {
        let rows = [
            ["NAME", "IP", "P2P"].map(String::from),
            ["fra-1", "127.0.1.1", "/ip4/x"].map(String::from),
            ["nrt-10", "127.0.2.10", ""].map(String::from),
        ];
        assert_eq!(
            format_table(&rows),
            "NAME    IP          P2P\n\
             fra-1   127.0.1.1   /ip4/x\n\
             nrt-10  127.0.2.10\n"
        );
    }
}
