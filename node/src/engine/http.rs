//! The HTTP client on the measurement path.
//!
//! Each VU owns an [`HttpClient`], and each client owns its connections, one
//! per origin, the way oha does it: a deterministic number of connections
//! (one per VU and origin), kept alive across requests and iterations, and
//! reopened when the server closes them. No shared pool races connects
//! against idle connections, and nothing retries behind the scenario's back.
//!
//! HTTPS goes through rustls (ring provider), and ALPN picks HTTP/2 or
//! HTTP/1.1. Every request reports DNS, connect, TLS, waiting (time to first
//! byte) and receiving times, and the bytes that crossed the socket.
//!
//! The client also holds the VU's [`CookieJar`]: a request with options
//! (ABI 3) gets the jar's cookies unless it sets its own `Cookie` header,
//! and its response's `Set-Cookie` headers go into the jar. Redirects are
//! one request each; the host's `http_request` follows them (see
//! [`super::redirects`]).

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fusi_sdk::abi::wire::{Out, ResponseHead, ResponseWriter};
use fusi_sdk::abi::{ErrorKind, HttpError, HttpRequest, RequestOptions, Timings};
use http::HeaderMap;
use http::header::{COOKIE, HOST, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::backstop::Backstop;
use super::cookies::{CookieJar, CookieUrl};
use super::fields::Fields;
use super::h1;

/// Requests without a timeout of their own give up after this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response body kept; larger bodies are read and counted but
/// truncated, so one response cannot exhaust memory.
pub const MAX_BODY: usize = 32 << 20;

const USER_AGENT_VALUE: &str = concat!("fusi/", env!("CARGO_PKG_VERSION"));

/// TLS settings shared by every VU of a run (one session cache).
#[derive(Clone)]
pub struct ClientSettings {
    config: Arc<rustls::ClientConfig>,
    /// The same, offering only `http/1.1` by ALPN: a WebSocket upgrade is
    /// an HTTP/1.1 request.
    http1_config: Arc<rustls::ClientConfig>,
    source_ip: Option<std::net::IpAddr>,
    allow: Option<Arc<crate::core::allow::AllowList>>,
    /// Slots for new connections (`--max-connecting`), each held from the
    /// connect to the first response on it; `None` for no limit.
    opening: Option<Arc<tokio::sync::Semaphore>>,
}

impl ClientSettings {
    /// Makes connections leave from `ip` (a local address), as the nodes of
    /// one testnet region do from their own loopback range.
    pub fn with_source_ip(mut self, ip: Option<std::net::IpAddr>) -> ClientSettings {
        self.source_ip = ip;
        self
    }

    /// Refuses connections to hosts outside `allow` (the node's
    /// `--allow-target`): a scenario that sends elsewhere than the run
    /// declared gets `connect` errors, and no traffic leaves.
    pub fn with_allow(
        mut self,
        allow: Option<Arc<crate::core::allow::AllowList>>,
    ) -> ClientSettings {
        self.allow = allow;
        self
    }

    /// Lets at most `n` new connections open at once (0: no limit), each
    /// holding its slot until the first response on it arrives: thousands
    /// of VUs that start together would otherwise overflow the target's
    /// accept queue, whose dropped SYNs are retried only after 1 s, 3 s.
    /// The slots are shared by every client made from these settings.
    pub fn with_max_connecting(mut self, n: u32) -> ClientSettings {
        self.opening = (n > 0).then(|| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        self
    }

    /// Web PKI roots, or no verification at all when `insecure`.
    pub fn new(insecure: bool) -> Result<ClientSettings, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let mut http1_config = config.clone();
        http1_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ClientSettings {
            source_ip: None,
            allow: None,
            opening: None,
            config: Arc::new(config),
            http1_config: Arc::new(http1_config),
        })
    }
}

/// What a request did besides its response: for metrics.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Bytes written to the socket for this request (headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket for this request (headers included).
    pub bytes_received: u64,
    /// It opened a connection that waited for an opening slot.
    pub paced: bool,
}

/// A response as the client got it, or the reason there is none: what the
/// recorder measures and what the guest gets, encoded by [`Answer::encode`].
#[derive(Debug, Default)]
pub struct Answer {
    /// The HTTP status, or 0 when no response arrived (see `error`).
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2`; empty when no response arrived.
    pub protocol: &'static str,
    /// The response's header fields.
    pub headers: Fields,
    /// The body, at most [`MAX_BODY`] bytes of it.
    pub body: Vec<u8>,
    /// Where the time went.
    pub timings: Timings,
    /// Why no response arrived, if none did.
    pub error: Option<HttpError>,
}

impl Answer {
    /// Appends the answer in the ABI's encoding of a response (header
    /// values that are not UTF-8 get their invalid bytes replaced); with
    /// `url`, the final URL among its extras, for a request with options.
    pub fn encode<O: Out + ?Sized>(&self, out: &mut O, url: Option<&str>) {
        let head = ResponseHead {
            status: self.status,
            protocol: self.protocol,
            timings: &self.timings,
            error: self.error.as_ref(),
        };
        let mut w = ResponseWriter::new(out, head);
        let mut lower = String::new();
        for (name, value) in self.headers.iter() {
            // The guest gets names in lower case.
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower.clear();
                lower.push_str(&name);
                lower.make_ascii_lowercase();
                lower.as_str()
            } else {
                &name
            };
            w.header(name, &value);
        }
        w.finish(&self.body, url);
    }
}

/// A request's `name` tag: its own (the last `name` among its tags), or
/// its URL without the query and fragment.
pub fn request_name(req: &HttpRequest) -> &str {
    req.tags
        .iter()
        .rev()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| strip_query(&req.url))
}

/// A request's method, upper case (borrowed when it already is).
pub fn request_method(req: &HttpRequest) -> Cow<'_, str> {
    if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(req.method.to_ascii_uppercase())
    } else {
        Cow::Borrowed(&req.method)
    }
}

/// Where a connection goes: scheme, host and port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    /// Whether it speaks TLS (`https://`, `wss://`).
    pub(super) https: bool,
    /// The host name or IP address, without brackets.
    pub(super) host: String,
    /// The port, the scheme's default when the URL names none.
    pub(super) port: u16,
}

enum Sender {
    /// HTTP/1.1: the socket itself; the VU's task writes each request and
    /// reads its response ([`super::h1`]).
    H1(Opened),
    /// HTTP/2: a spawned task drives the connection, which may carry
    /// streams of several requests at once.
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Waits for a response and reads its whole body (up to [`MAX_BODY`] kept,
/// none of it when `discard`).
/// An opening slot held for a new connection (see
/// [`ClientSettings::with_max_connecting`]) is given back once the
/// response's head arrived.
async fn read_response(
    response: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
    discard: bool,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(http::response::Parts, Vec<u8>, Instant), Failure> {
    let response = response.await.map_err(classify_hyper)?;
    let first_byte = Instant::now();
    drop(slot);
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(classify_hyper)?;
        if discard {
            continue;
        }
        if let Ok(chunk) = frame.into_data() {
            let room = MAX_BODY.saturating_sub(data.len());
            data.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }
    Ok((parts, data, first_byte))
}

struct Connection {
    sender: Sender,
    meter: Arc<Meter>,
}

/// What a request needs of its URL, parsed once per URL.
struct Target {
    origin: Origin,
    /// The whole URL: the request target of HTTP/2.
    uri: Uri,
    /// The path and query: the request target of HTTP/1.1.
    path: Uri,
    /// The URL's authority: the `host` header of HTTP/1.1.
    host: Option<HeaderValue>,
    /// The header fields of an HTTP/1.1 request to this URL that names
    /// none of its own (`host`, `user-agent`): made once, not per request.
    h1_headers: HeaderMap,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Failure> {
        let (uri, origin) = parse_url(url)?;
        let path = uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| Failure(ErrorKind::InvalidRequest, "invalid path".into()))?;
        let host = uri.authority().map(|a| a.as_str()).unwrap_or(&origin.host);
        let host = HeaderValue::from_str(host).ok();
        let mut h1_headers = HeaderMap::with_capacity(2);
        if let Some(host) = &host {
            h1_headers.insert(HOST, host.clone());
        }
        h1_headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        Ok(Target {
            origin,
            uri,
            path,
            host,
            h1_headers,
        })
    }
}

impl Target {
    /// What the cookie jar matches this URL by.
    fn cookie_url(&self) -> CookieUrl<'_> {
        CookieUrl {
            https: self.origin.https,
            host: &self.origin.host,
            path: self.path.path(),
        }
    }
}

/// Seconds since the epoch, the cookie jar's clock (0 if the system clock
/// is before 1970).
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a request's task hands back: the client, the request, its answer
/// and what the exchange measured.
pub type Sent = Box<(HttpClient, HttpRequest, Answer, Exchange)>;

/// What a request whose task (or path) failed comes back as: `reset`,
/// with a client that has no connections.
#[cold]
#[inline(never)]
fn task_failed(tls: Arc<ClientSettings>, why: impl std::fmt::Display) -> Sent {
    let answer = Answer {
        error: Some(HttpError {
            kind: ErrorKind::Reset,
            message: format!("the request's task failed: {why}"),
        }),
        ..Answer::default()
    };
    Box::new((
        HttpClient::sharing(tls),
        HttpRequest::default(),
        answer,
        Exchange::default(),
    ))
}

/// Spawns `req`'s exchange on a task of its own (see
/// [`HttpClient::send_on_task`]). Not inlined: tokio's spawn path is deep,
/// and it runs on the VU's fiber stack.
#[inline(never)]
fn spawn_send(client: &mut HttpClient, req: HttpRequest, deadline: Instant) -> AbortOnDrop<Sent> {
    AbortOnDrop(tokio::spawn(client.handed(req, deadline)))
}

/// One VU's HTTP client: its own connections, one per origin.
pub struct HttpClient {
    /// Shared with the client a request leaves in its place: one count
    /// to raise, not one for each of its parts.
    tls: Arc<ClientSettings>,
    /// Open connections and their origins: a VU talks to a few origins, so
    /// a list, searched without hashing or allocating.
    connections: Vec<(Origin, Connection)>,
    /// The last URL requested and its parts: VUs mostly repeat their URLs.
    last: Option<(String, Arc<Target>)>,
    /// The VU's cookies: they live as long as the VU, across iterations,
    /// as k6's per-VU jar does.
    pub jar: CookieJar,
    /// The one timer behind every request's deadline.
    backstop: Backstop,
}

/// A failure with its class, before it becomes an ABI [`HttpError`].
pub(super) struct Failure(pub(super) ErrorKind, pub(super) String);

impl HttpClient {
    /// A client with no connections yet.
    pub fn new(tls: ClientSettings) -> HttpClient {
        HttpClient::sharing(Arc::new(tls))
    }

    fn sharing(tls: Arc<ClientSettings>) -> HttpClient {
        HttpClient {
            tls,
            connections: Vec::new(),
            last: None,
            jar: CookieJar::default(),
            backstop: Backstop::default(),
        }
    }

    /// The value of the cookie called `name` that a request to `url` would
    /// send, or why `url` is no URL.
    pub fn cookie(&self, url: &str, name: &str) -> Result<Option<String>, String> {
        let target = Target::parse(url).map_err(|Failure(_, message)| message)?;
        Ok(self
            .jar
            .get(target.cookie_url(), name, unix_now())
            .map(str::to_owned))
    }

    /// Open connections (for tests and gauges).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Drops every connection.
    pub fn close_all(&mut self) {
        self.connections.clear();
    }

    /// Like [`send`](Self::send), on a task of its own.
    ///
    /// A VU's host calls run on its fiber stack, and a stack keeps every
    /// page it ever touched: a request's path (connect, TLS, the exchange)
    /// is far deeper than the ~4 KiB of a VU that only sleeps (hyper's was
    /// ~44 KiB), and a VU that made one request kept that depth resident
    /// while it slept. On a task, it lives on the runtime's thread stacks,
    /// shared by every VU (docs/benchmarks.md, memory). The client and the
    /// request go to the task and come back.
    pub async fn send_on_task(&mut self, req: HttpRequest, deadline: Instant) -> Sent {
        // Aborted if this future is dropped (the VU stopped or was cut off
        // mid-request), so no request outlives its VU.
        // Both boxed: a task's future is passed by value down tokio's
        // spawn path, a copy at each step on the stack that spawns, here
        // the VU's fiber (the future was 1.7 KiB; boxing took a sleeping
        // VU's fiber from 20 KiB to 8). Boxed, only a pointer travels, and
        // the request's state is made on the runtime's thread, when the
        // task first runs.
        // The output is boxed too, and stays so: tokio moves a task's
        // output through its stages, and these four are almost 600 bytes,
        // which unboxed would also take that much of the fiber's stack.
        let mut task = spawn_send(self, req, deadline);
        match (&mut task.0).await {
            // The client comes back; the placeholder goes with the box.
            Ok(done) => self.take_back(Ok(done)),
            // Only a panic in hyper could get here; the request is lost
            // with its connections, and says so.
            Err(e) => task_failed(self.tls.clone(), e),
        }
    }

    /// `req`'s exchange as a future of its own, which takes the client
    /// with it and hands it back in its [`Sent`]; this VU is left a client
    /// with no connections meanwhile. Boxed: only a pointer travels, and
    /// the request's state is made where it is first polled. For a task
    /// ([`send_on_task`](Self::send_on_task)) or a
    /// [`Courier`](super::courier::Courier).
    #[inline(never)]
    pub fn handed(&mut self, req: HttpRequest, deadline: Instant) -> super::courier::Request {
        let client = std::mem::replace(self, HttpClient::sharing(self.tls.clone()));
        // The answer's box holds the client and the request while they are
        // used, so the request's future holds a pointer to them: small
        // enough (under 1 KiB) for the allocator's per-thread cache.
        let mut sent: Sent =
            super::boxed::boxed(|| (client, req, Answer::default(), Exchange::default()));
        Box::into_pin(super::boxed::boxed(|| async move {
            let (client, req, answer, exchange) = &mut *sent;
            client.send(req, deadline, answer, exchange).await;
            sent
        }))
    }

    /// Takes back the client that a [`handed`](Self::handed) request
    /// took; a request whose path panicked (`Err`, what it said) comes
    /// back failed, and this VU keeps a client with no connections.
    pub fn take_back(&mut self, done: Result<Sent, String>) -> Sent {
        match done {
            Ok(mut done) => {
                std::mem::swap(self, &mut done.0);
                done
            }
            Err(why) => task_failed(self.tls.clone(), why),
        }
    }

    /// Sends a request and reads the whole response, giving up at
    /// `deadline`. Failures come back inside the response.
    ///
    /// A stopping run does not abort a request in flight: it completes (or
    /// times out) and is recorded, so the report counts every request the
    /// target answered.
    ///
    /// The answer and what the exchange measured are written where the
    /// caller keeps them (both start as their defaults), not in the
    /// request's future.
    pub async fn send(
        &mut self,
        req: &HttpRequest,
        deadline: Instant,
        answer: &mut Answer,
        exchange: &mut Exchange,
    ) {
        let own = req
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_TIMEOUT);
        let started = Instant::now();
        let deadline = deadline.min(started + own);
        let timings = &mut answer.timings;
        let mut backstop = std::mem::take(&mut self.backstop);
        let result = {
            let exchanging = std::pin::pin!(self.exchange(req, started, timings, exchange));
            backstop.within(deadline, exchanging).await
        };
        self.backstop = backstop;
        // An exchange that ended says when, a clock read fewer.
        let (result, ended) = match result {
            Some(Ok((r, ended))) => (Ok(r), ended),
            Some(Err(e)) => (Err(e), Instant::now()),
            None => (
                Err(Failure(
                    ErrorKind::Timeout,
                    format!(
                        "no complete response within {} ms",
                        deadline.saturating_duration_since(started).as_millis()
                    ),
                )),
                Instant::now(),
            ),
        };
        timings.total_us = micros(ended.saturating_duration_since(started));
        match result {
            Ok(resp) => {
                let timings = answer.timings;
                *answer = resp;
                answer.timings = timings;
            }
            Err(Failure(kind, message)) => {
                // The connection may be half-used; never reuse it.
                if let Ok(origin) = origin_of(&req.url) {
                    self.connections.retain(|(o, _)| *o != origin);
                }
                answer.error = Some(HttpError { kind, message });
            }
        }
    }

    /// `req`'s exchange, begun at `begun`, and when it ended.
    async fn exchange(
        &mut self,
        req: &HttpRequest,
        begun: Instant,
        timings: &mut Timings,
        exchange: &mut Exchange,
    ) -> Result<(Answer, Instant), Failure> {
        let target = self.target(&req.url)?;
        // A version 2 request (no options) is sent as it always was: no
        // cookies, whole body.
        let session = match &req.options {
            Some(pairs) => Some(
                RequestOptions::parse(pairs).map_err(|e| Failure(ErrorKind::InvalidRequest, e))?,
            ),
            None => None,
        };
        let method = Method::from_bytes(request_method(req).as_bytes()).map_err(|_| {
            Failure(
                ErrorKind::InvalidRequest,
                format!("invalid method {:?}", req.method),
            )
        })?;
        let found = self
            .connections
            .iter()
            .position(|(o, _)| *o == target.origin);
        let reusable = match found {
            Some(i) if self.connections[i].1.ready().await => Some(i),
            Some(i) => {
                self.connections.swap_remove(i);
                None
            }
            None => None,
        };
        // A new connection holds an opening slot until its first response.
        let mut slot = None;
        let fresh = reusable.is_none();
        let i = match reusable {
            Some(i) => i,
            None => {
                if let Some(opening) = &self.tls.opening {
                    let taken = match opening.clone().try_acquire_owned() {
                        Ok(taken) => taken,
                        Err(_) => {
                            exchange.paced = true;
                            let waited = Instant::now();
                            let slot = opening.clone().acquire_owned().await.map_err(|_| {
                                Failure(ErrorKind::Connect, "the run is over".to_owned())
                            })?;
                            // Waiting for a slot is `blocked`, as k6's wait
                            // for a free connection is.
                            timings.dns_us += micros(waited.elapsed());
                            slot
                        }
                    };
                    slot = Some(taken);
                }
                // Boxed: the connect future (TLS state included) is large, and
                // would otherwise be copied around with every request's future.
                let conn = Box::pin(connect(&target.origin, &self.tls, timings)).await?;
                self.connections.push((target.origin.clone(), conn));
                self.connections.len() - 1
            }
        };
        let conn = &mut self.connections[i].1;
        let (sent0, recv0) = conn.meter.totals();

        let is_h2 = matches!(conn.sender, Sender::H2(_));
        // An HTTP/1.1 request with no header fields of its own and no
        // cookies to send has its URL's, made once.
        let own_headers =
            is_h2 || !req.headers.is_empty() || (session.is_some() && !self.jar.is_empty());
        // Boxed: a map is 96 bytes of every request's future otherwise.
        let mut headers = None;
        if own_headers {
            headers = Some(Box::new(request_headers(
                &target,
                req,
                is_h2,
                session.is_some().then_some(&mut self.jar),
            )?));
        }

        let discard = session.is_some_and(|o| o.discard_body);
        // An HTTP/1.1 request on a kept connection is sent as soon as its
        // head is written, a few hundred instructions after the send
        // began: that instant, a clock read fewer. A new connection's, or
        // HTTP/2's (whose sender may wait), is read now.
        let started = if fresh || is_h2 {
            Instant::now()
        } else {
            begun
        };
        let (status, headers, data, sent, first_byte, reusable) = match &mut conn.sender {
            Sender::H1(io) => {
                let request = h1::Request {
                    method: &method,
                    target: target.path.path_and_query().map_or("/", |p| p.as_str()),
                    headers: headers.as_deref().unwrap_or(&target.h1_headers),
                    body: &req.body,
                };
                // Not boxed: the request's future is, once.
                let r = h1::exchange(io, &request, discard, MAX_BODY, || drop(slot))
                    .await
                    .map_err(h1_failure)?;
                (
                    r.status,
                    r.headers,
                    r.body,
                    r.sent,
                    r.first_byte,
                    r.reusable,
                )
            }
            Sender::H2(tx) => {
                let mut request = http::Request::new(Full::new(Bytes::copy_from_slice(&req.body)));
                *request.method_mut() = method;
                *request.uri_mut() = target.uri.clone();
                *request.headers_mut() = headers.take().map(|h| *h).unwrap_or_default();
                // Boxed, as the HTTP/1.1 exchange is.
                let (parts, data, first_byte) =
                    Box::pin(read_response(tx.send_request(request), discard, slot)).await?;
                (
                    parts.status.as_u16(),
                    Fields::from_map(&parts.headers),
                    data,
                    started,
                    first_byte,
                    true,
                )
            }
        };
        timings.sending_us = micros(sent - started);
        timings.waiting_us = micros(first_byte.saturating_duration_since(sent));
        let ended = Instant::now();
        timings.receiving_us = micros(ended.saturating_duration_since(first_byte));
        timings.duration_us = timings.sending_us + timings.waiting_us + timings.receiving_us;
        let (sent1, recv1) = conn.meter.totals();
        exchange.bytes_sent = sent1 - sent0;
        exchange.bytes_received = recv1 - recv0;
        if !reusable {
            self.connections.swap_remove(i);
        }
        if session.is_some() && headers.contains("set-cookie") {
            let now = unix_now();
            for header in headers.get_all("set-cookie") {
                self.jar.store(target.cookie_url(), header, now);
            }
        }
        let answer = Answer {
            status,
            protocol: if is_h2 { "HTTP/2" } else { "HTTP/1.1" },
            headers,
            body: data,
            timings: Timings::default(),
            error: None,
        };
        Ok((answer, ended))
    }
}

/// The header fields of `req` to `target`: `host` (HTTP/1.1 only) and
/// `user-agent`, unless the request names its own, then the request's,
/// and the jar's cookies when `jar` is given and the request sets none.
fn request_headers(
    target: &Target,
    req: &HttpRequest,
    is_h2: bool,
    jar: Option<&mut CookieJar>,
) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    if !is_h2 && let Some(host) = &target.host {
        headers.insert(HOST, host.clone());
    }
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Failure(
                ErrorKind::InvalidRequest,
                format!("invalid header name {name:?}"),
            )
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            Failure(
                ErrorKind::InvalidRequest,
                format!("invalid value for header {name}"),
            )
        })?;
        if name == HOST || name == USER_AGENT {
            headers.insert(name, value);
        } else {
            headers.append(name, value);
        }
    }
    if let Some(jar) = jar
        && !jar.is_empty()
        && !headers.contains_key(COOKIE)
        && let Some(cookies) = jar.header(target.cookie_url(), unix_now())
        && let Ok(value) = HeaderValue::from_str(&cookies)
    {
        headers.insert(COOKIE, value);
    }
    Ok(headers)
}

impl HttpClient {
    /// The parts of `url`, from the last request's when it is the same URL.
    fn target(&mut self, url: &str) -> Result<Arc<Target>, Failure> {
        if let Some((last, target)) = &self.last
            && last == url
        {
            return Ok(target.clone());
        }
        let target = Arc::new(Target::parse(url)?);
        self.last = Some((url.to_owned(), target.clone()));
        Ok(target)
    }
}

impl Connection {
    /// Whether the connection can take another request.
    async fn ready(&mut self) -> bool {
        match &mut self.sender {
            Sender::H1(io) => !h1::idle_gone(io),
            Sender::H2(s) => s.ready().await.is_ok(),
        }
    }
}

fn strip_query(url: &str) -> &str {
    // memchr's vector search: a byte at a time was 5 instructions a byte
    // of every request's URL.
    match memchr::memchr2(b'?', b'#', url.as_bytes()) {
        // Both are ASCII, so the cut falls between characters.
        Some(at) => url.get(..at).unwrap_or(url),
        None => url,
    }
}

pub(super) fn origin_of(url: &str) -> Result<Origin, Failure> {
    parse_url(url).map(|(_, origin)| origin)
}

fn parse_url(url: &str) -> Result<(Uri, Origin), Failure> {
    let no_scheme = || {
        Failure(
            ErrorKind::InvalidRequest,
            format!(
                "invalid URL {url:?}: it has no scheme; write http://{0} or https://{0}",
                url.escape_debug()
            ),
        )
    };
    let uri: Uri = url.parse().map_err(|e| {
        if !url.contains("://") {
            return no_scheme();
        }
        Failure(
            ErrorKind::InvalidRequest,
            format!("invalid URL {url:?}: {e}"),
        )
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        None => return Err(no_scheme()),
        Some(_) => {
            return Err(Failure(
                ErrorKind::InvalidRequest,
                format!("invalid URL {url:?}: only http:// and https:// URLs are supported"),
            ));
        }
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| {
        Failure(
            ErrorKind::InvalidRequest,
            format!("invalid URL {url:?}: no host"),
        )
    })?;
    let origin = Origin {
        https,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
    };
    Ok((uri, origin))
}

/// Connects to `addr`, from `source` when given, on a local port from the
/// next window of [`ports`].
async fn connect_from(addr: SocketAddr, source: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let attempt = |window: Option<(u16, u16)>| async move {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(window) = window {
            // Best effort: a kernel without the option searches its whole
            // range, as it always did.
            let _ = ports::narrow(&socket, window);
        }
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(addr).await
    };
    let window = ports::next_window();
    match attempt(window).await {
        // Every port of the window is taken (by this node's connections to
        // the same address, or by others): let the kernel search them all.
        Err(e)
            if window.is_some()
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
                ) =>
        {
            attempt(None).await
        }
        other => other,
    }
}

/// Local ports for new connections, a window at a time.
///
/// To pick a local port for `connect`, Linux tries the ports of its
/// ephemeral range in turn until one makes a new 4-tuple, checking each
/// against the connections established: with thousands of connections open
/// to one target address, most ports it tries are taken, and the search
/// grows with every connection. 20,000 VUs opening their connections spent
/// a third of the client's CPU there (`__inet_check_established`,
/// docs/benchmarks.md). Each new socket gets its own window of 64 ports
/// (`IP_LOCAL_PORT_RANGE`, Linux 6.3), the windows taken in turn over the
/// range, so a search tries at most 64 ports; a socket whose window is
/// full is connected again without one. Elsewhere, and on kernels without
/// the option, nothing changes.
mod ports {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Ports in one window.
    pub(super) const WINDOW: u16 = 64;

    /// The ephemeral range, `ip_local_port_range`.
    pub(super) fn range() -> (u16, u16) {
        static RANGE: OnceLock<(u16, u16)> = OnceLock::new();
        *RANGE.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|text| parse_range(&text))
                .unwrap_or((32768, 60999))
        })
    }

    /// The next window of the range, first and last port; `None` when the
    /// range is too small to gain from windows.
    pub(super) fn next_window() -> Option<(u16, u16)> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        window(range(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Window `n` of `range`, counted round the range.
    pub(super) fn window((low, high): (u16, u16), n: u32) -> Option<(u16, u16)> {
        let windows = u32::from(high - low + 1) / u32::from(WINDOW);
        if windows < 4 {
            return None;
        }
        let first = u32::from(low) + n % windows * u32::from(WINDOW);
        let first = u16::try_from(first).ok()?;
        Some((first, first + (WINDOW - 1)))
    }

    /// Lets `socket` take its local port only from `first..=last`.
    #[cfg(target_os = "linux")]
    pub(super) fn narrow(
        socket: &tokio::net::TcpSocket,
        (first, last): (u16, u16),
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        /// `linux/in.h`; not in the libc crate yet.
        const IP_LOCAL_PORT_RANGE: libc::c_int = 51;
        let value: u32 = (u32::from(last) << 16) | u32::from(first);
        // SAFETY: the fd is the socket's own, and `value` outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_LOCAL_PORT_RANGE,
                (&value as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn narrow(_: &tokio::net::TcpSocket, _: (u16, u16)) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// `ip_local_port_range`: two ports, the first below the second.
    pub(super) fn parse_range(text: &str) -> Option<(u16, u16)> {
        let mut parts = text.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(low)), Some(Ok(high)), None) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        (low >= 1 && low < high).then_some((low, high))
    }
}

/// A socket [`open`] made: plain or TLS, counted by its [`Meter`].
pub(super) enum Opened {
    /// `http://`, `ws://`.
    Plain(Metered<TcpStream>),
    /// `https://`, `wss://`, with the protocol ALPN chose.
    Tls(Box<tokio_rustls::client::TlsStream<Metered<TcpStream>>>),
}

impl AsyncRead for Opened {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Opened::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Opened {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Opened::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Opened::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(io) => Pin::new(io).poll_flush(cx),
            Opened::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Opened::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Which protocols a TLS connection offers by ALPN.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    /// `h2` and `http/1.1`: the HTTP client's.
    Any,
    /// `http/1.1` only: a WebSocket's upgrade.
    Http1,
}

async fn connect(
    origin: &Origin,
    tls: &ClientSettings,
    timings: &mut Timings,
) -> Result<Connection, Failure> {
    let (opened, meter) = open(origin, tls, Alpn::Any, timings).await?;
    let sender = match opened {
        Opened::Tls(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            h2_handshake(TokioIo::new(stream)).await?
        }
        opened => Sender::H1(opened),
    };
    Ok(Connection { sender, meter })
}

/// Resolves `origin`, refuses it unless this node's `--allow-target`
/// allows it, connects (from the source address, if set) and, for a TLS
/// origin, makes the TLS handshake: every connection the engine makes, an
/// HTTP request's or a WebSocket's, starts here, so one rule decides where
/// traffic may go. Fills `timings`' DNS, connect and TLS phases.
pub(super) async fn open(
    origin: &Origin,
    tls: &ClientSettings,
    alpn: Alpn,
    timings: &mut Timings,
) -> Result<(Opened, Arc<Meter>), Failure> {
    let t = Instant::now();
    let addrs: Vec<SocketAddr> = match origin.host.parse::<std::net::IpAddr>() {
        // An IP address needs no lookup: blocked stays 0.
        Ok(ip) => vec![SocketAddr::new(ip, origin.port)],
        Err(_) => {
            let found = tokio::net::lookup_host((origin.host.as_str(), origin.port))
                .await
                .map_err(|e| {
                    Failure(
                        ErrorKind::Dns,
                        format!("cannot resolve {}: {e}", origin.host),
                    )
                })?
                .collect();
            timings.dns_us += micros(t.elapsed());
            found
        }
    };
    if let Some(allow) = &tls.allow
        && !allow.allows_host(&origin.host)
        && (addrs.is_empty() || !addrs.iter().all(|a| allow.allows_ip(a.ip())))
    {
        return Err(Failure(
            ErrorKind::Connect,
            format!(
                "{}:{} is not in this node's --allow-target list ({allow})",
                origin.host, origin.port
            ),
        ));
    }
    let t = Instant::now();
    let mut last = None;
    let mut tcp = None;
    for addr in &addrs {
        match connect_from(*addr, tls.source_ip).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            let kind = match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                io::ErrorKind::ConnectionReset => ErrorKind::Reset,
                _ => ErrorKind::Connect,
            };
            return Err(Failure(
                kind,
                format!("cannot connect to {}:{}: {e}", origin.host, origin.port),
            ));
        }
        (None, None) => {
            return Err(Failure(
                ErrorKind::Dns,
                format!("{} resolved to no address", origin.host),
            ));
        }
    };
    timings.connect_us = micros(t.elapsed());
    let _ = tcp.set_nodelay(true);
    let meter = Arc::new(Meter::default());
    let io = Metered {
        inner: tcp,
        meter: meter.clone(),
    };
    if !origin.https {
        return Ok((Opened::Plain(io), meter));
    }
    let t = Instant::now();
    let name = ServerName::try_from(origin.host.clone()).map_err(|e| {
        Failure(
            ErrorKind::InvalidRequest,
            format!("invalid TLS server name: {e}"),
        )
    })?;
    let config = match alpn {
        Alpn::Any => &tls.config,
        Alpn::Http1 => &tls.http1_config,
    };
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, io)
        .await
        .map_err(|e| {
            Failure(
                ErrorKind::Tls,
                format!("TLS handshake with {} failed: {e}", origin.host),
            )
        })?;
    timings.tls_us = micros(t.elapsed());
    Ok((Opened::Tls(Box::new(stream)), meter))
}

async fn h2_handshake<T>(io: TokioIo<T>) -> Result<Sender, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(io)
        .await
        .map_err(classify_hyper)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::H2(sender))
}

/// An HTTP/1.1 exchange's failure, classed as hyper's are.
fn h1_failure(e: h1::Error) -> Failure {
    let kind = match &e {
        h1::Error::Send(io) | h1::Error::Receive(io) => match io.kind() {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Reset,
        },
        h1::Error::Closed => ErrorKind::Reset,
        h1::Error::Protocol(_) => ErrorKind::Protocol,
    };
    Failure(kind, e.to_string())
}

fn classify_hyper(e: hyper::Error) -> Failure {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            let kind = match io.kind() {
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                _ => ErrorKind::Reset,
            };
            return Failure(kind, format!("{e}: {io}"));
        }
        source = s.source();
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_parse() || e.is_user() {
        ErrorKind::Protocol
    } else {
        // Closed, canceled or incomplete: the connection went away.
        ErrorKind::Reset
    };
    Failure(kind, e.to_string())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Bytes through one connection, both ways.
#[derive(Default)]
pub(super) struct Meter {
    written: AtomicU64,
    read: AtomicU64,
}

impl Meter {
    /// Bytes written and read so far.
    pub(super) fn totals(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }
}

/// A socket that counts what crosses it.
pub(super) struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.meter.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.meter.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.meter.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `--insecure-skip-tls-verify`: a verifier that accepts any certificate but
/// still checks handshake signatures.
mod insecure {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub struct AcceptAny(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `req`'s answer and what its exchange measured.
    async fn send(
        client: &mut HttpClient,
        req: &HttpRequest,
        deadline: Instant,
    ) -> (Answer, Exchange) {
        let (mut answer, mut exchange) = Default::default();
        client.send(req, deadline, &mut answer, &mut exchange).await;
        (answer, exchange)
    }

    #[test]
    fn origins_parse_and_reject_bad_urls() {
        let o = origin_of("http://127.0.0.1:8080/x?y").ok().expect("origin");
        assert_eq!(
            (o.https, o.host.as_str(), o.port),
            (false, "127.0.0.1", 8080)
        );
        let o = origin_of("https://[::1]/").ok().expect("origin");
        assert_eq!((o.https, o.host.as_str(), o.port), (true, "::1", 443));
        for bad in ["", "ftp://x/", "not a url", "http:///nohost", "/relative"] {
            assert!(origin_of(bad).is_err(), "{bad}");
        }
    }

    /// A request's future is boxed, once a request: within 1 KiB it comes
    /// from glibc's per-thread cache (requests up to 1,032 bytes) or
    /// mimalloc's small pages, hundreds of instructions fewer than past
    /// them (docs/benchmarks.md). A field that makes it grow past that
    /// belongs in the box of the answer, or in a box of its own.
    #[test]
    fn a_requests_future_fits_the_allocators_small_sizes() {
        let mut client = HttpClient::new(ClientSettings::new(false).expect("tls"));
        let request = client.handed(HttpRequest::default(), Instant::now());
        let size = std::mem::size_of_val(&*request);
        assert!(size <= 1024, "a request's future is {size} bytes");
    }

    #[test]
    fn names_drop_the_query() {
        assert_eq!(strip_query("http://h/p?q=1#f"), "http://h/p");
        assert_eq!(strip_query("http://h/p"), "http://h/p");
    }

    /// An HTTPS server that offers only HTTP/1.1 by ALPN and answers each
    /// request with the length of its body; counts its connections.
    async fn http1_tls_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tls.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + length {
                            let mut chunk = [0u8; 65536];
                            match tls.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let body = length.to_string();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tls.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn https_without_h2_is_http1_on_one_kept_connection_with_sending_timed() {
        let (addr, accepted) = http1_tls_server().await;
        let mut client = HttpClient::new(ClientSettings::new(true).expect("settings"));
        for (i, size) in [0usize, 100, 200_000].into_iter().enumerate() {
            let req = HttpRequest {
                method: "POST".into(),
                url: format!("https://{addr}/echo"),
                body: vec![b'x'; size],
                ..HttpRequest::default()
            };
            let (answer, exchange) =
                send(&mut client, &req, Instant::now() + Duration::from_secs(20)).await;
            assert!(answer.error.is_none(), "request {i}: {:?}", answer.error);
            assert_eq!(
                (answer.status, answer.protocol, answer.body.as_slice()),
                (200, "HTTP/1.1", size.to_string().as_bytes()),
                "request {i}"
            );
            assert!(exchange.bytes_sent > size as u64, "TLS bytes counted");
            if size == 200_000 {
                // Encrypting and writing 200 KB takes more than a microsecond.
                assert!(answer.timings.sending_us > 0, "{:?}", answer.timings);
            }
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one connection for all three"
        );
        assert_eq!(client.connection_count(), 1);
    }

    #[test]
    fn port_windows_go_round_the_range_and_a_small_range_has_none() {
        assert_eq!(ports::parse_range("32768\t60999\n"), Some((32768, 60999)));
        for bad in ["", "1", "60999 32768", "0 10", "1 2 3", "x 9", "1 70000"] {
            assert_eq!(ports::parse_range(bad), None, "{bad:?}");
        }
        // 28,232 ports: 441 whole windows of 64.
        let range = (32768, 60999);
        assert_eq!(ports::window(range, 0), Some((32768, 32831)));
        assert_eq!(ports::window(range, 1), Some((32832, 32895)));
        assert_eq!(ports::window(range, 440), Some((60928, 60991)));
        assert_eq!(ports::window(range, 441), Some((32768, 32831)));
        assert_eq!(ports::window((1024, 65535), u32::MAX), Some((17344, 17407)));
        assert_eq!(ports::window((40000, 40200), 0), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_takes_its_local_port_from_its_window() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("address");
        let range = ports::range();
        let window = ports::window(range, 7).expect("the ephemeral range has windows");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        match ports::narrow(&socket, window) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                eprintln!("this kernel has no IP_LOCAL_PORT_RANGE (Linux 6.3): nothing to check");
                return;
            }
            other => other.expect("setsockopt"),
        }
        let stream = socket.connect(addr).await.expect("connect");
        let port = stream.local_addr().expect("local address").port();
        assert!(
            (window.0..=window.1).contains(&port),
            "port {port} outside its window {window:?}"
        );
        // And through the client's own connect.
        let stream = connect_from(addr, None).await.expect("connect_from");
        let port = stream.local_addr().expect("local address").port();
        assert!((range.0..=range.1).contains(&port));
    }

    #[tokio::test]
    async fn refused_and_invalid_are_classified() {
        let mut client = HttpClient::new(ClientSettings::new(false).expect("tls"));
        let deadline = Instant::now() + Duration::from_secs(5);
        // Port 1 on loopback: nothing listens there.
        let req = HttpRequest {
            method: "GET".into(),
            url: "http://127.0.0.1:1/".into(),
            ..HttpRequest::default()
        };
        let (resp, _) = send(&mut client, &req, deadline).await;
        assert_eq!(resp.status, 0);
        assert_eq!(resp.error.map(|e| e.kind), Some(ErrorKind::Refused));
        let req = HttpRequest {
            method: "GET".into(),
            url: "gopher://x".into(),
            ..HttpRequest::default()
        };
        let (resp, _) = send(&mut client, &req, deadline).await;
        assert_eq!(resp.error.map(|e| e.kind), Some(ErrorKind::InvalidRequest));
        let req = HttpRequest {
            method: "G E T".into(),
            url: "http://127.0.0.1:1/".into(),
            ..HttpRequest::default()
        };
        let (resp, _) = send(&mut client, &req, deadline).await;
        assert_eq!(resp.error.map(|e| e.kind), Some(ErrorKind::InvalidRequest));
    }
}
