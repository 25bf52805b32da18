//! The HTTP target server.
//!
//! The load generator's tests need a server whose behaviour they control and
//! whose counters they can trust, running in-process and on loopback only.
//! It speaks HTTP/1.1 and cleartext HTTP/2 (detected per connection), so both
//! client paths of the generator can be exercised against the same routes.
//! With `tls` set it speaks HTTPS instead: HTTP/2 when the client picks `h2`
//! by ALPN, HTTP/1.1 otherwise, with a fresh self-signed certificate.
//!
//! Each counted request goes through the knobs in a fixed order: the stall
//! window, then the added latency (the same for everyone, plus that of the
//! client's source range), then error injection, then its route. The
//! response is counted when it is produced. The `/__fusi/stats` endpoint
//! bypasses all of that so that looking at the target does not disturb it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rand::Rng as _;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::TargetConfig;
use crate::stats::{ConnCounted, Counters, Stats, add};
use crate::tls::{HANDSHAKE_TIMEOUT, Tls};

/// Largest request body read; larger bodies get `413 Payload Too Large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most items `POST /items` keeps; the oldest are evicted first.
pub const MAX_ITEMS: usize = 10_000;
/// Most bytes of item bodies `POST /items` keeps; the oldest are evicted first.
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;
/// Longest delay `GET /delay/{ms}` accepts, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Largest body `GET /bytes/{n}` accepts.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Path of the statistics endpoint, which is never counted.
pub const STATS_PATH: &str = "/__fusi/stats";

/// How long shutdown waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type Resp = Response<Full<Bytes>>;

/// A running target server.
///
/// It runs on the tokio runtime that called [`Target::start`]. Call
/// [`Target::shutdown`] to stop it and wait; dropping it also stops it, in
/// the background.
#[derive(Debug)]
pub struct Target {
    addr: SocketAddr,
    tls: Option<Tls>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Target {
    /// Validates `cfg`, binds its address and starts serving on the current
    /// tokio runtime. The stall window's clock starts now. With `cfg.tls`, a
    /// fresh self-signed certificate is generated first (see
    /// [`certificate_der`](Self::certificate_der)).
    ///
    /// # Errors
    ///
    /// An invalid configuration (see [`TargetConfig::validate`]), a failure
    /// to make the certificate, or a failure to bind.
    pub async fn start(cfg: TargetConfig) -> anyhow::Result<Target> {
        cfg.validate()?;
        let tls = if cfg.tls {
            Some(Tls::self_signed().context("setting up TLS")?)
        } else {
            None
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding target to {}", cfg.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            first_request: OnceLock::new(),
            counters: Arc::new(Counters::default()),
            items: Mutex::new(Items::default()),
            rooms: websocket::Rooms::default(),
            shutdown: shutdown_rx.clone(),
            cfg,
        });
        info!(
            %addr,
            tls = tls.is_some(),
            latency = %shared.cfg.latency,
            source_latency = %shared
                .cfg
                .source_latency
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            stall = ?shared.cfg.stall,
            error_rate = shared.cfg.error_rate,
            error_status = shared.cfg.error_status,
            "target listening"
        );
        let task = tokio::spawn(accept_loop(
            listener,
            tls.as_ref().map(|tls| tls.acceptor.clone()),
            Arc::clone(&shared),
            shutdown_rx,
        ));
        Ok(Target {
            addr,
            tls,
            shared,
            shutdown_tx,
            task,
        })
    }

    /// The address the server is bound to (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`, or
    /// `https://127.0.0.1:41234` in TLS mode.
    pub fn url(&self) -> String {
        crate::tls::url(self.addr, self.tls.is_some())
    }

    /// In TLS mode, the DER encoding of the self-signed certificate the
    /// server presents (valid for `localhost` and `127.0.0.1`), for a client
    /// to trust; `None` without TLS.
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        self.tls.as_ref().map(|tls| tls.cert_der.to_vec())
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &TargetConfig {
        &self.shared.cfg
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Sets every counter to zero. Stored items and the stall window's clock
    /// are not affected.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// The shared counters, for [`TargetHandle`](crate::TargetHandle).
    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// Stops accepting, lets open connections finish (requests held by a
    /// stall, a latency or `/delay` are cut short with a 503), and waits for
    /// the server to stop. Connections still open after a few seconds are
    /// dropped. Returns the final counters.
    pub async fn shutdown(self) -> Stats {
        let Target {
            shutdown_tx,
            task,
            shared,
            ..
        } = self;
        // An error means every receiver is gone: the server already stopped.
        let _ = shutdown_tx.send(true);
        if let Err(e) = task.await {
            warn!("target task failed: {e}");
        }
        shared.counters.snapshot()
    }
}

/// State shared by every connection of one target.
#[derive(Debug)]
struct Shared {
    cfg: TargetConfig,
    /// When the first counted request arrived.
    first_request: OnceLock<Instant>,
    counters: Arc<Counters>,
    items: Mutex<Items>,
    /// The chat rooms and open sockets of the WebSocket routes.
    rooms: websocket::Rooms,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The stall window, as instants, if one is configured and representable.
    /// It is timed from the first counted request, so a test's stall lands
    /// inside its run however long the client took to start.
    fn stall_window(&self) -> Option<(Instant, Instant)> {
        let stall = self.cfg.stall?;
        let first = *self.first_request.get()?;
        let start = first.checked_add(stall.after)?;
        let end = start.checked_add(stall.duration)?;
        Some((start, end))
    }

    /// If now is inside the stall window, the instant the window ends.
    fn stalled_until(&self) -> Option<Instant> {
        let (start, end) = self.stall_window()?;
        let now = Instant::now();
        (start <= now && now < end).then_some(end)
    }

    /// Sleeps until `deadline`; returns `false` if the server began to shut
    /// down first.
    async fn pause_until(&self, deadline: Instant) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = crate::precise::sleep_until(deadline) => true,
            () = shutdown_signalled(&mut shutdown) => false,
        }
    }

    /// The latency to add to one request from `peer`: the common one plus
    /// that of the client's source range.
    fn latency_for(&self, peer: IpAddr) -> Duration {
        let common = self.cfg.latency.sample();
        common.saturating_add(self.cfg.source_latency_for(peer).sample())
    }

    /// Sleeps for `duration`; returns `false` if the server began to shut
    /// down first.
    async fn pause(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return true;
        }
        match Instant::now().checked_add(duration) {
            Some(deadline) => self.pause_until(deadline).await,
            None => false,
        }
    }
}

/// Resolves when shutdown is requested or the [`Target`] is dropped.
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns holds a read lock: drop it at once.
    let _ = rx.wait_for(|&stop| stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut conns = JoinSet::new();

    loop {
        tokio::select! {
            () = shutdown_signalled(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%peer, "set TCP_NODELAY failed: {e}");
                    }
                    conns.spawn(serve_connection(
                        Arc::clone(&builder),
                        stream,
                        tls.clone(),
                        peer,
                        Arc::clone(&shared),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }

    drop(listener);
    let open = conns.len();
    debug!(open, "target shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = conns.len(),
            "connections still open after {SHUTDOWN_GRACE:?}; dropping them"
        );
        conns.shutdown().await;
    }
    info!("target stopped");
}

/// Serves one accepted connection, after a TLS handshake in TLS mode.
///
/// A failed handshake (a plain-HTTP client, an untrusted certificate, no
/// common ALPN protocol, a client that says nothing) only ends the
/// connection: it carried no request, so nothing is counted.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        return serve_http(builder, stream, peer, shared, shutdown).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                return;
            }
        },
        () = shutdown_signalled(&mut shutdown) => return,
    };
    let alpn = stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(String::from_utf8_lossy);
    debug!(%peer, ?alpn, "TLS handshake done");
    // The auto builder detects HTTP/2 by its preface, which a client that
    // negotiated `h2` sends; anything else is served as HTTP/1.1.
    serve_http(builder, stream, peer, shared, shutdown).await;
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends or shutdown.
async fn serve_http<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counted = Arc::new(ConnCounted::default());
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let counted = Arc::clone(&counted);
        async move {
            if websocket::is_ws_path(req.uri().path()) {
                return Ok::<_, Infallible>(websocket::route(shared, req));
            }
            Ok(handle(&shared, &counted, peer.ip(), req).await)
        }
    });
    // With upgrades: the WebSocket routes take the connection over.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown_signalled(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, "connection ended with an error: {e}");
    }
}

/// Answers one request: the statistics endpoint, or a counted request.
async fn handle(
    shared: &Shared,
    counted: &ConnCounted,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Resp {
    if req.uri().path() == STATS_PATH {
        return stats_endpoint(shared, req.method());
    }
    shared.counters.count_connection(counted);

    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MAX_BODY_BYTES).await;
    let body_len = match &body {
        Ok(bytes) => bytes.len(),
        Err(rejected) => rejected.bytes_read,
    };
    add(&shared.counters.bytes_received, len_u64(body_len));

    let resp = respond_with_knobs(shared, &parts, body, peer).await;
    let body_len = resp.body().size_hint().exact().unwrap_or(0);
    shared
        .counters
        .count_response(resp.status().as_u16(), body_len);
    resp
}

/// Applies the stall window, the latency and error injection, then routes.
async fn respond_with_knobs(
    shared: &Shared,
    parts: &http::request::Parts,
    body: Result<Bytes, BodyRejected>,
    peer: IpAddr,
) -> Resp {
    let _ = shared.first_request.set(Instant::now());
    let mut stalled = false;
    if let Some(end) = shared.stalled_until() {
        stalled = true;
        add(&shared.counters.stalled, 1);
        if !shared.pause_until(end).await {
            return shutting_down();
        }
    }
    if !shared.pause(shared.latency_for(peer)).await {
        return shutting_down();
    }

    let error_rate = shared.cfg.error_rate;
    let resp = if error_rate > 0.0 && rand::rng().random::<f64>() < error_rate {
        add(&shared.counters.errors_injected, 1);
        injected_error(shared.cfg.error_status)
    } else {
        match body {
            Ok(body) => route(shared, parts, body).await,
            Err(rejected) => rejected.response,
        }
    };

    // A request in flight when the window opened is held until it closes.
    if let Some(end) = shared.stalled_until() {
        if !stalled {
            add(&shared.counters.stalled, 1);
        }
        if !shared.pause_until(end).await {
            return shutting_down();
        }
    }
    resp
}

/// The routes. Paths match exactly; see the crate docs for the list.
async fn route(shared: &Shared, parts: &http::request::Parts, body: Bytes) -> Resp {
    let method = &parts.method;
    let path = parts.uri.path();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        [""] | ["hello"] => only(method, &Method::GET, || {
            text(StatusCode::OK, Bytes::from_static(b"hello\n"))
        }),
        ["items"] => only(method, &Method::POST, || create_item(shared, body)),
        ["items", id] => only(method, &Method::GET, || get_item(shared, id)),
        ["status", code] => status_route(code),
        ["delay", ms] => delay_route(shared, ms).await,
        ["bytes", n] => only(method, &Method::GET, || bytes_route(n)),
        ["echo"] => echo(parts, &body),
        ["redirect", n] => sessions::redirect_chain(n),
        ["redirect-to"] => sessions::redirect_to(parts.uri.query()),
        ["cookies"] => only(method, &Method::GET, || sessions::cookies(parts)),
        ["cookies", "set"] => sessions::set_cookies(parts.uri.query()),
        ["login"] => only(method, &Method::POST, || {
            sessions::login(&body, |user| shared.counters.count_login(user))
        }),
        ["account"] => only(method, &Method::GET, || sessions::account(parts)),
        _ => error_json(StatusCode::NOT_FOUND, format!("no route for {path}")),
    }
}

/// Runs `f` if the method is `allowed`, else answers 405.
fn only(method: &Method, allowed: &Method, f: impl FnOnce() -> Resp) -> Resp {
    if method == allowed {
        return f();
    }
    let mut resp = error_json(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed; use {allowed}"),
    );
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        resp.headers_mut().insert(header::ALLOW, value);
    }
    resp
}

fn stats_endpoint(shared: &Shared, method: &Method) -> Resp {
    match *method {
        Method::GET => json(StatusCode::OK, &shared.counters.snapshot()),
        Method::DELETE => {
            let before = shared.counters.snapshot();
            shared.counters.reset();
            json(StatusCode::OK, &before)
        }
        _ => {
            let mut resp = error_json(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET to read the stats, DELETE to read and reset them".to_owned(),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, DELETE"));
            resp
        }
    }
}

/// Items posted to `/items`, with consecutive ids starting at 1.
#[derive(Debug)]
struct Items {
    /// Id of the front item; ids grow by one per item.
    first_id: u64,
    items: VecDeque<Bytes>,
    bytes: usize,
}

impl Default for Items {
    fn default() -> Self {
        Items {
            first_id: 1,
            items: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl Items {
    /// Stores an item, evicting the oldest beyond the limits; returns its id.
    fn insert(&mut self, item: Bytes) -> u64 {
        self.bytes += item.len();
        self.items.push_back(item);
        while self.items.len() > MAX_ITEMS || (self.bytes > MAX_ITEM_BYTES && self.items.len() > 1)
        {
            if let Some(evicted) = self.items.pop_front() {
                self.bytes -= evicted.len();
                self.first_id += 1;
            }
        }
        self.first_id + len_u64(self.items.len()) - 1
    }

    fn get(&self, id: u64) -> Option<Bytes> {
        let index = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.items.get(index).cloned()
    }
}

fn create_item(shared: &Shared, body: Bytes) -> Resp {
    // Validate without building a tree: the raw text is what gets stored.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return error_json(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
    }
    let id = shared
        .items
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(body.clone());
    let mut resp = item_response(StatusCode::CREATED, id, &body);
    if let Ok(location) = HeaderValue::from_str(&format!("/items/{id}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

fn get_item(shared: &Shared, id: &str) -> Resp {
    let Ok(id) = id.parse::<u64>() else {
        return error_json(StatusCode::BAD_REQUEST, format!("invalid item id `{id}`"));
    };
    let item = shared
        .items
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id);
    match item {
        Some(item) => item_response(StatusCode::OK, id, &item),
        None => error_json(StatusCode::NOT_FOUND, format!("no item {id}")),
    }
}

/// `{"id": N, "item": <raw JSON>}`, spliced so the item is not re-encoded.
fn item_response(status: StatusCode, id: u64, item: &[u8]) -> Resp {
    let prefix = format!("{{\"id\":{id},\"item\":");
    let mut out = BytesMut::with_capacity(prefix.len() + item.len() + 2);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(item);
    out.extend_from_slice(b"}\n");
    with_type(status, "application/json", out.freeze())
}

fn status_route(code: &str) -> Resp {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let Some(status) = status else {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("invalid status `{code}`: expected 200..=599"),
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return text(status, Bytes::new());
    }
    let reason = status.canonical_reason().unwrap_or("");
    text(
        status,
        Bytes::from(format!("{} {reason}\n", status.as_u16())),
    )
}

async fn delay_route(shared: &Shared, ms: &str) -> Resp {
    let Some(ms) = ms.parse::<u64>().ok().filter(|ms| *ms <= MAX_DELAY_MS) else {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("invalid delay `{ms}`: expected milliseconds in 0..={MAX_DELAY_MS}"),
        );
    };
    if !shared.pause(Duration::from_millis(ms)).await {
        return shutting_down();
    }
    text(StatusCode::OK, Bytes::from(format!("delayed {ms}ms\n")))
}

fn bytes_route(n: &str) -> Resp {
    let Some(n) = n.parse::<usize>().ok().filter(|n| *n <= MAX_BYTES) else {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("invalid length `{n}`: expected bytes in 0..={MAX_BYTES}"),
        );
    };
    // One shared buffer, sliced without copying.
    static PAYLOAD: OnceLock<Bytes> = OnceLock::new();
    let payload = PAYLOAD.get_or_init(|| {
        Bytes::from(
            (0..MAX_BYTES)
                .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[i % 37])
                .collect::<Vec<u8>>(),
        )
    });
    with_type(
        StatusCode::OK,
        "application/octet-stream",
        payload.slice(..n),
    )
}

#[derive(Serialize)]
struct EchoReply<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: String,
    headers: serde_json::Map<String, serde_json::Value>,
    body_len: usize,
}

fn echo(parts: &http::request::Parts, body: &Bytes) -> Resp {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined, as HTTP allows for most of them.
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    json(
        StatusCode::OK,
        &EchoReply {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            version: format!("{:?}", parts.version),
            headers,
            body_len: body.len(),
        },
    )
}

fn injected_error(status: u16) -> Resp {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = text(status, Bytes::from_static(b"injected error\n"));
    resp.headers_mut()
        .insert("x-fusi-injected", HeaderValue::from_static("error"));
    resp
}

fn shutting_down() -> Resp {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(b"target is shutting down\n"),
    )
}

/// A request body that was not read in full, and the answer to give.
#[derive(Debug)]
struct BodyRejected {
    bytes_read: usize,
    response: Resp,
}

/// Reads a request body of at most `limit` bytes.
async fn read_body<B>(mut body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, BodyRejected>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = |bytes_read| BodyRejected {
        bytes_read,
        response: error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        ),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > len_u64(limit)) {
        return Err(too_large(0));
    }

    let mut buf = BytesMut::new();
    let mut single: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let bytes_read = buf.len() + single.as_ref().map_or(0, Bytes::len);
                return Err(BodyRejected {
                    bytes_read,
                    response: error_json(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body failed: {e}"),
                    ),
                });
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let read = buf.len() + single.as_ref().map_or(0, Bytes::len) + data.len();
        if read > limit {
            return Err(too_large(read));
        }
        // The common single-frame body is kept without copying.
        match single.take() {
            None if buf.is_empty() => single = Some(data),
            None => buf.extend_from_slice(&data),
            Some(first) => {
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| buf.freeze()))
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: Bytes) -> Resp {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(status, "application/json", Bytes::from(body))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(format!("encoding JSON failed: {e}\n")),
        ),
    }
}

fn error_json(status: StatusCode, message: String) -> Resp {
    json(status, &serde_json::json!({ "error": message }))
}

mod sessions;
mod websocket;

#[cfg(test)]
mod tests;
