//! The HTML report, opened in a real browser: a real run writes
//! `--out report.html`, headless Chromium loads it from file:// (with sync,
//! QUIC, component updates and background networking off, so the browser
//! itself does not go looking for the network) and dumps the DOM after the
//! page's script ran, then takes a screenshot. The DOM shows that the script
//! drew every chart; the screenshot, over five times the size of a blank
//! page's, that something was painted.
//!
//! Chromium is found through `FUSI_CHROMIUM`, `/usr/bin/chromium` or
//! `chromium` on PATH. Without it the test skips loudly, unless
//! `FUSI_REQUIRE_CHROMIUM=1` (as scripts/test sets once it has installed
//! Debian's package), in which case it fails.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fusi_testnet::{Latency, TargetConfig};
use serde_json::Value;

use super::{fusi_out, kill_group, num, scenario, serial, target, tempfile_path};

/// How long one Chromium invocation may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Headless, and with sync, QUIC, component updates and background
/// networking off, so that the browser itself does not go looking for the
/// network.
pub(super) const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

pub(super) fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSI_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `extra` flags, in a fresh profile
/// under `dir`, stdout to `stdout`; killed (its whole process group) after
/// [`CHROMIUM_TIMEOUT`]. Returns how long it took.
fn chromium(bin: &Path, dir: &Path, name: &str, extra: &[&str], page: &Path) -> Duration {
    let profile = dir.join(format!("profile-{name}"));
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    let file = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(file(&stdout))
        .stderr(file(&stderr))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < CHROMIUM_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                kill_group(child.id());
                let _ = child.wait();
                panic!(
                    "chromium {name} did not finish in {CHROMIUM_TIMEOUT:?}; its stderr is in {}",
                    stderr.display()
                );
            }
        }
    };
    let took = started.elapsed();
    // A browser can leave helpers behind; its group goes with it.
    kill_group(child.id());
    assert!(
        status.success(),
        "chromium {name} exited with {status}; stderr:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    took
}

/// The `d` attribute of every `path.series` in the chart `kind` of a DOM
/// as Chromium serializes it.
fn series_paths(dom: &str, kind: &str) -> Vec<String> {
    let open = format!("<svg class=\"chart\" data-chart=\"{kind}\"");
    let Some(start) = dom.find(&open) else {
        return Vec::new();
    };
    let chart = &dom[start..];
    let chart = &chart[..chart.find("</svg>").unwrap_or(chart.len())];
    chart
        .split("<path class=\"series\"")
        .skip(1)
        .map(|path| {
            let tag = &path[..path.find('>').unwrap_or(path.len())];
            tag.split_once(" d=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(d, _)| d.to_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Points in a path's `d`: one per move or line command.
fn points(d: &str) -> usize {
    d.chars().filter(|c| matches!(c, 'M' | 'L')).count()
}

fn png_len(path: &Path) -> usize {
    let png =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot {}: {e}", path.display()));
    assert!(
        png.starts_with(PNG_SIGNATURE),
        "{} is not a PNG",
        path.display()
    );
    png.len()
}

#[test]
fn the_html_report_draws_its_charts_in_chromium() {
    let Some(bin) = find_chromium() else {
        let required = std::env::var("FUSI_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FUSI_REQUIRE_CHROMIUM=1 but no chromium (FUSI_CHROMIUM, /usr/bin/chromium, \
             PATH): install Debian's chromium package (apt-get install chromium)"
        );
        eprintln!(
            "\n*** SKIPPED the_html_report_draws_its_charts_in_chromium: no chromium \
             (install Debian's chromium package, or set FUSI_CHROMIUM) ***\n"
        );
        return;
    };
    let _g = serial();
    let dir = tempfile_path("html");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let page = dir.join("report.html");
    let t = target(TargetConfig {
        latency: Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(10),
        },
        ..TargetConfig::default()
    });
    let run = fusi_out(
        &[
            "run",
            scenario("hello").to_str().unwrap_or_default(),
            "--vus",
            "3",
            "--duration",
            "3s",
            "--env",
            &format!("TARGET={}", t.url()),
        ],
        &page,
    );
    assert!(run.output.status.success(), "{}", run.stderr());

    // The page carries the report as JSON, which reads back.
    let html = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("no report.html: {e}"));
    let open = "<script id=\"fusi-report\" type=\"application/json\">";
    let json = html
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no fusi-report script in the page"));
    let report: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        num(&report, &["summary", "http", "requests"]) as u64,
        t.stats().requests
    );
    for scheme in ["http://", "https://"] {
        assert!(
            !html.replace(json, "").contains(scheme),
            "the page refers to a {scheme} URL"
        );
    }

    let dom_took = chromium(&bin, &dir, "dom", &["--dump-dom"], &page);
    let dom = std::fs::read_to_string(dir.join("dom.stdout")).unwrap_or_default();
    assert!(
        dom.contains("id=\"report\" data-state=\"ok\""),
        "the page's script did not finish: {dom}"
    );
    assert!(!dom.contains("class=\"fusi-error\""), "{dom}");
    assert!(
        dom.contains("id=\"completeness\" class=\"banner complete\""),
        "a whole local run is complete: {dom}"
    );
    assert!(dom.contains("id=\"thresholds\""), "{dom}");
    assert!(
        dom.contains("id=\"verdict\"><span class=\"badge"),
        "no threshold verdict: {dom}"
    );
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 3, "{dom}");
    for kind in ["rps", "latency", "region-p95"] {
        let paths = series_paths(&dom, kind);
        assert!(!paths.is_empty(), "chart {kind} has no series: {dom}");
        assert!(
            paths.iter().all(|d| !d.is_empty()),
            "chart {kind}: {paths:?}"
        );
        assert!(
            paths.iter().any(|d| points(d) >= 3),
            "chart {kind} has no line through 3 points of a 3 s run: {paths:?}"
        );
    }
    assert_eq!(series_paths(&dom, "latency").len(), 3, "p50, p95, p99");
    assert!(dom.contains("No custom metrics."), "{dom}");
    // The node's row says how busy its CPUs were, as a percentage.
    assert!(dom.contains("<th class=\"n\">CPU (most)</th>"), "{dom}");
    let nodes = dom.split("CPU (most)").nth(1).unwrap_or_default();
    let row = nodes.split("</tr>").nth(1).unwrap_or_default();
    assert!(
        row.rsplit("<td class=\"n\">")
            .next()
            .is_some_and(|cell| cell.contains('%')),
        "{row}"
    );

    // A scenario with groups and custom metrics: each is drawn, with the
    // checks made in each group.
    let probe_page = dir.join("probe.html");
    let probe = fusi_out(
        &[
            "run",
            scenario("abi_probe").to_str().unwrap_or_default(),
            "--executor",
            "per-vu-iterations",
            "--vus",
            "2",
            "--iterations",
            "3",
            "--env",
            &format!("TARGET={}", t.url()),
        ],
        &probe_page,
    );
    assert!(probe.output.status.code().is_some(), "{}", probe.stderr());
    chromium(&bin, &dir, "probe", &["--dump-dom"], &probe_page);
    let dom = std::fs::read_to_string(dir.join("probe.stdout")).unwrap_or_default();
    assert!(dom.contains("id=\"report\" data-state=\"ok\""), "{dom}");
    for shown in [
        "<span class=\"mono\">::outer</span>",
        ">Checks in <span class=\"mono\">::outer::inner</span>",
        "<span class=\"mono\">probe_counter</span>",
        "<span class=\"mono\">probe_rate</span>",
        "<span class=\"mono\">probe_trend</span>",
        ">Counters<",
        ">Rates<",
        ">Trends<",
    ] {
        assert!(dom.contains(shown), "{shown} is not drawn: {dom}");
    }
    assert!(
        dom.contains("id=\"scenarios\" hidden"),
        "a run of one scenario has no Scenarios table: {dom}"
    );

    // A run of two scenarios: its Scenarios table, a row each.
    let _ = scenario("shop_mix");
    let mix_page = dir.join("mix.html");
    let run_file = super::repo().join("scenarios/shop-mix/run.toml");
    let mix = fusi_out(
        &[
            "run",
            "--config",
            run_file.to_str().unwrap_or_default(),
            "--env",
            &format!("TARGET={}", t.url()),
        ],
        &mix_page,
    );
    assert!(mix.output.status.success(), "{}", mix.stderr());
    chromium(&bin, &dir, "mix", &["--dump-dom"], &mix_page);
    let dom = std::fs::read_to_string(dir.join("mix.stdout")).unwrap_or_default();
    assert!(dom.contains("id=\"report\" data-state=\"ok\""), "{dom}");
    assert!(!dom.contains("id=\"scenarios\" hidden"), "{dom}");
    for shown in [
        "<span class=\"mono\">api</span>",
        "<span class=\"mono\">chat</span>",
        "ramping-arrival-rate · api",
        "constant-vus · chat",
    ] {
        assert!(dom.contains(shown), "{shown} is not drawn: {dom}");
    }

    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!doctype html><title>blank</title>\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let shot = |name: &str, page: &Path| {
        let png = dir.join(format!("{name}.png"));
        let took = chromium(
            &bin,
            &dir,
            name,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1200,2000",
            ],
            page,
        );
        (png_len(&png), took)
    };
    let (blank_len, blank_took) = shot("blank", &blank);
    let (report_len, report_took) = shot("report", &page);
    eprintln!(
        "chromium: DOM in {dom_took:?}, screenshots in {report_took:?} (report, {report_len} bytes) \
         and {blank_took:?} (blank, {blank_len} bytes)"
    );
    assert!(
        report_len > 5 * blank_len,
        "the report's screenshot ({report_len} bytes) is not much larger than a blank page's \
         ({blank_len} bytes): was anything drawn? See {}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
