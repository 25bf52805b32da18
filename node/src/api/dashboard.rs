//! The live dashboard every node serves: a web page at `/` and one stream
//! of server-sent events, `GET /v1/events`, that feeds it.
//!
//! A run's leader holds every shard of the run as it goes (the workers send
//! it theirs), and every node holds every shard once it has ended: so the
//! leader shows the whole run merged, live, whichever node the run was
//! submitted to, another node its own share until the end, and any node
//! the whole run after it. The page is drawn by the same script as the HTML report
//! (`report.js`), so a run under way looks like its final report, growing.
//!
//! The page, its scripts and its style are embedded in the binary and
//! served without a token: they hold no data and make no request
//! elsewhere. Everything with data goes through the API's token, which the
//! page takes from the address `fusi-node dashboard` prints
//! (`http://127.0.0.1:7401/#token=HEX`: a fragment, which the browser never
//! sends) and sends as `Authorization: Bearer`, reading the event stream with
//! `fetch`; an `EventSource` could only carry it in the URL. Every asset
//! goes out with a Content-Security-Policy that lets the page load scripts
//! from the node alone, connect to the node alone, and be framed by no one.
//! The API's other defences (no `Origin`, a loopback `Host`) hold for these
//! routes too: the page's own same-origin `GET`s carry no `Origin`.
//!
//! The stream sends, every [`EVERY`], a `mesh` event ([`MeshEvent`]) and,
//! when the shown run's merged report changed, a `report` event
//! ([`ReportEvent`]). The run shown is `?run=ID`, or else the newest run
//! under way, else the newest run. A finished run's report is rebuilt at
//! most every [`SETTLED_EVERY`], in case late shards arrive. Building a
//! report reads every shard the node holds of the run, which for a long run
//! of many nodes takes a while: so a report is built again only after
//! [`COST_FACTOR`] times as long as the last build took, which keeps a
//! dashboard's share of a core at a tenth or less, however long the run (a
//! node that generates load must not be slowed by being watched). At most
//! [`MAX_STREAMS`] streams are open at once; a client that stops reading
//! for [`SEND_TIMEOUT`] loses its stream.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{PeerView, Query, RunView, StatusView};
use crate::core::run_report::RunReport;
use crate::html::{REPORT_CSS, REPORT_JS};

/// The body of every API response: whole, or a stream of events.
pub type ApiBody = UnsyncBoxBody<Bytes, Infallible>;

/// How often the stream sends the mesh, and the shown run's report when it
/// changed.
pub const EVERY: Duration = Duration::from_secs(1);

/// How often a finished run's report is built again.
pub const SETTLED_EVERY: Duration = Duration::from_secs(10);

/// A report is built again no sooner than this many times the last build's
/// duration after it.
pub const COST_FACTOR: u32 = 10;

/// Event streams open at once.
pub const MAX_STREAMS: usize = 8;

/// How long an event may wait for a client that stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The runs a `mesh` event lists, newest first.
pub const MAX_RUNS_LISTED: usize = 20;

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// The page's own script.
const SCRIPT: &str = include_str!("dashboard.js");

/// What the page may load and where it may connect: the node only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The embedded file at `path`, if there is one: `/` and `/ui/...`.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/" | "/index.html" => (PAGE, "text/html; charset=utf-8"),
        "/ui/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/report.js" => (REPORT_JS, "text/javascript; charset=utf-8"),
        "/ui/report.css" => (REPORT_CSS, "text/css; charset=utf-8"),
        _ => return None,
    })
}

/// Whether `path` is one of the dashboard's files, served without a token.
pub fn is_asset(path: &str) -> bool {
    asset(path).is_some()
}

/// The dashboard's file at `path` (which [`is_asset`]), or 405 for a method
/// other than `GET`.
pub fn serve_asset(method: &Method, path: &str) -> Response<ApiBody> {
    let Some((body, media)) = asset(path) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard's files take GET",
        );
    }
    let mut response = Response::new(whole(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(media),
    );
    secure(headers);
    response
}

/// The headers every dashboard response carries.
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
}

fn plain(status: StatusCode, text: &'static str) -> Response<ApiBody> {
    let mut response = Response::new(whole(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// A body sent whole.
pub fn whole(bytes: Bytes) -> ApiBody {
    Full::new(bytes).boxed_unsync()
}

/// A `mesh` event: this node, its peers and the newest runs.
#[derive(Debug, Serialize)]
pub struct MeshEvent {
    /// This node.
    pub status: StatusView,
    /// The other members.
    pub peers: Vec<PeerView>,
    /// The newest [`MAX_RUNS_LISTED`] runs, newest first.
    pub runs: Vec<RunView>,
}

/// A `report` event: the shown run and its report, merged from the shards
/// this node holds now.
#[derive(Debug, Serialize)]
pub struct ReportEvent<'a> {
    /// The run.
    pub run: &'a RunView,
    /// Its report so far.
    pub report: &'a RunReport,
}

/// One server-sent event: `event: NAME`, the value as one line of JSON
/// (JSON escapes every line break inside strings), then a blank line.
fn event<T: Serialize>(name: &str, value: &T) -> Bytes {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    // Views of plain strings, numbers and maps always encode.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Whether a run in `phase` has ended.
fn ended(phase: &str) -> bool {
    matches!(phase, "complete" | "stopped" | "failed")
}

/// The run to show: `picked` when the node knows it, else the newest run
/// under way, else the newest.
fn shown<'a>(runs: &'a [RunView], picked: Option<&str>) -> Option<&'a RunView> {
    match picked {
        Some(id) => runs.iter().find(|r| r.id == id),
        None => runs
            .iter()
            .find(|r| !ended(&r.phase))
            .or_else(|| runs.first()),
    }
}

/// `GET /v1/events[?run=ID]`: the stream, fed by a task of its own until
/// the client goes, the node shuts down or a send times out. `permit` is
/// the stream's slot among [`MAX_STREAMS`].
pub fn events(
    queries: mpsc::Sender<Query>,
    picked: Option<String>,
    permit: OwnedSemaphorePermit,
) -> Response<ApiBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        feed(&queries, picked.as_deref(), &tx).await;
        drop(permit);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    secure(headers);
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Asks the event loop; `None` once it is gone.
async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    queries.send(query(tx)).await.ok()?;
    rx.await.ok()
}

/// What was last sent of the shown run's report.
struct Sent {
    run: String,
    hash: u64,
    /// When the report may be built again.
    next: Instant,
}

async fn feed(queries: &mpsc::Sender<Query>, picked: Option<&str>, tx: &mpsc::Sender<Bytes>) {
    let send = |bytes: Bytes| async move {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, tx.send(bytes)).await,
            Ok(Ok(()))
        )
    };
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: Option<Sent> = None;
    loop {
        let at = tick.tick().await.into_std();
        let (Some(status), Some(peers), Some(mut runs)) = (
            ask(queries, Query::Status).await,
            ask(queries, Query::Peers).await,
            ask(queries, Query::Runs).await,
        ) else {
            return;
        };
        let run = shown(&runs.runs, picked).cloned();
        runs.runs.truncate(MAX_RUNS_LISTED);
        let mesh = MeshEvent {
            status,
            peers: peers.peers,
            runs: runs.runs,
        };
        if !send(event("mesh", &mesh)).await {
            return;
        }
        let Some(run) = run else {
            continue;
        };
        let fresh = sent
            .as_ref()
            .is_none_or(|s| s.run != run.id || at >= s.next);
        if !fresh {
            continue;
        }
        let Some(Some(source)) = ask(queries, |tx| Query::Report(run.id.clone(), tx)).await else {
            continue;
        };
        let building = Instant::now();
        let Ok(report) = tokio::task::spawn_blocking(move || source.build()).await else {
            continue;
        };
        let took = building.elapsed();
        let bytes = event(
            "report",
            &ReportEvent {
                run: &run,
                report: &report,
            },
        );
        // The run's view changes every second (its elapsed time); the
        // report only when shards arrive.
        let mut hasher = DefaultHasher::new();
        report.to_json().hash(&mut hasher);
        run.phase.hash(&mut hasher);
        let hash = hasher.finish();
        let changed = sent
            .as_ref()
            .is_none_or(|s| s.run != run.id || s.hash != hash);
        let every = if ended(&run.phase) {
            SETTLED_EVERY
        } else {
            EVERY
        };
        sent = Some(Sent {
            run: run.id.clone(),
            hash,
            next: at + every.max(took * COST_FACTOR),
        });
        if changed && !send(bytes).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, phase: &str) -> RunView {
        RunView {
            id: id.into(),
            phase: phase.into(),
            reason: None,
            executor: "constant-vus".into(),
            module_sha256: String::new(),
            scenario: String::new(),
            proposer: String::new(),
            leader: None,
            term: 0,
            weights: None,
            t0_unix_ms: None,
            elapsed_s: None,
            duration_s: 1.0,
            start_skew_ms: None,
            clock_bound_ms: None,
            storage_error: None,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn the_run_shown_is_the_picked_one_else_the_newest_under_way_else_the_newest() {
        let runs = [
            run("r3", "complete"),
            run("r2", "running"),
            run("r1", "running"),
        ];
        let id = |r: Option<&RunView>| r.map(|r| r.id.clone());
        assert_eq!(id(shown(&runs, None)), Some("r2".into()));
        assert_eq!(id(shown(&runs, Some("r1"))), Some("r1".into()));
        assert_eq!(id(shown(&runs, Some("r9"))), None);
        assert_eq!(id(shown(&runs[..1], None)), Some("r3".into()));
        assert_eq!(id(shown(&[], None)), None);
    }

    #[test]
    fn an_event_is_one_data_line_whatever_the_text_holds() {
        let bytes = event("mesh", &serde_json::json!({ "name": "a\nb\r\n\ndata: x" }));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("event: mesh\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        assert!(!text.contains('\r'), "{text}");
    }

    #[test]
    fn only_the_embedded_files_are_served_without_a_token() {
        for path in ["/", "/ui/dashboard.js", "/ui/report.js", "/ui/report.css"] {
            assert!(is_asset(path), "{path}");
            let response = serve_asset(&Method::GET, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let csp = response.headers().get(header::CONTENT_SECURITY_POLICY);
            assert!(
                csp.is_some_and(|v| v.as_bytes().starts_with(b"default-src 'none'")),
                "{path}"
            );
        }
        for path in ["/v1/status", "/ui/", "/ui/../v1/status", "//", "/ui/x.js"] {
            assert!(!is_asset(path), "{path}");
        }
        assert_eq!(
            serve_asset(&Method::POST, "/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [("page", PAGE), ("script", SCRIPT)] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "the {name} refers to {scheme}");
            }
        }
        for src in PAGE
            .split("src=\"")
            .skip(1)
            .chain(PAGE.split("href=\"").skip(1))
        {
            let url = src.split('"').next().unwrap_or_default();
            assert!(
                url.starts_with("/ui/") || url == "data:,",
                "the page loads {url}"
            );
        }
    }
}
