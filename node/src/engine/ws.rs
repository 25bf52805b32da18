//! The per-VU WebSocket client behind the `ws_*` imports (ABI 4).
//!
//! A socket starts as an HTTP connection does: [`super::http::open`]
//! resolves the host, checks it against `--allow-target`, connects from the
//! run's source address and makes the TLS handshake for `wss://` (offering
//! only `http/1.1`, since the upgrade is an HTTP/1.1 request). Then
//! tungstenite makes the upgrade and speaks the protocol. The upgrade
//! carries the VU's cookies unless the scenario sets its own `Cookie`
//! header, and its answer's `Set-Cookie` headers go into the VU's jar, as
//! for an HTTP request with options.
//!
//! Everything is bounded: [`ws::MAX_SOCKETS`] sockets per VU, messages of
//! at most [`ws::MAX_MESSAGE`] bytes both ways (a peer that sends a larger
//! one fails its socket, before the host buffers it), a connect timeout,
//! and a close that waits at most [`CLOSE_WAIT`] for the peer. A socket the
//! iteration leaves open is closed when it ends ([`WsClient::close_all`]).
//!
//! Metrics have k6's names: `ws_connecting` and `ws_sessions` when a
//! socket opens, `ws_msgs_sent` and `ws_msgs_received` per message,
//! `ws_session_duration` (from the connect's start) when it closes, the
//! socket's bytes in `data_sent` and `data_received`, and a failed connect
//! or socket in `errors` by kind. They carry the VU's tags, the connect
//! request's tags and a `name` tag: the request's own, or its URL without
//! the query.

use std::sync::Arc;
use std::time::Duration;

use fusi_sdk::abi::{ErrorKind, HttpRequest, ws};
use futures::{SinkExt as _, StreamExt as _};
use http::HeaderValue;
use http::header::{COOKIE, HeaderName, SET_COOKIE, USER_AGENT};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use super::cookies::{CookieJar, CookieUrl};
use super::http::{
    Alpn, ClientSettings, Failure, Meter, Opened, Origin, open, origin_of, request_name, unix_now,
};
use super::recorder::Recorder;
use crate::core::metrics::names;

/// How long a close waits for the peer's close frame and the end of the
/// connection.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The read buffer of a socket: tungstenite's default (128 KiB) times 16
/// sockets times thousands of VUs would be gigabytes.
const READ_BUFFER: usize = 16 << 10;

/// What a socket runs over: a plain or TLS stream, counted.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = WebSocketStream<Box<dyn Io>>;

/// A message, as the guest gets it.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message (UTF-8).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// Why a `ws_*` call did nothing: what the guest gets as a negative code.
#[derive(Debug, PartialEq, Eq)]
pub enum WsFailure {
    /// Nothing arrived within the guest's timeout.
    Timeout,
    /// The socket is closed; the peer's close code and reason, if it sent
    /// them.
    Closed(Option<(u16, String)>),
    /// The connect or the socket failed.
    Failed(ErrorKind, String),
    /// The iteration's deadline passed first: the call traps.
    Deadline,
    /// The run stopped: the call traps.
    Stopped,
}

impl From<Failure> for WsFailure {
    fn from(Failure(kind, message): Failure) -> WsFailure {
        WsFailure::Failed(kind, message)
    }
}

/// One open socket.
struct Socket {
    handle: i32,
    stream: Stream,
    meter: Arc<Meter>,
    /// Bytes of `meter` already recorded, written and read.
    recorded: (u64, u64),
    /// When its connect started: `ws_session_duration` counts from there.
    started: Instant,
    /// Its metrics' tags, sorted: the VU's, the request's and `name`.
    tags: Vec<(String, String)>,
    /// Its `name` tag, for `errors`.
    name: String,
}

impl Socket {
    /// Records the bytes that crossed since the last call.
    fn record_bytes(&mut self, m: &Recorder) {
        let (sent, received) = self.meter.totals();
        m.bytes(sent - self.recorded.0, received - self.recorded.1);
        self.recorded = (sent, received);
    }

    /// Records the end of the session (and any bytes left).
    fn record_end(&mut self, m: &Recorder) {
        self.record_bytes(m);
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        m.ws_sample(names::WS_SESSION_DURATION, &self.tags, ms);
    }

    /// Sends a close frame with `code` and waits until `until` (at most
    /// [`CLOSE_WAIT`]) for the peer to close too. Messages that arrive
    /// meanwhile count in `ws_msgs_received` (they crossed the wire) but
    /// reach no scenario. Errors only mean the peer went first.
    async fn close(&mut self, code: u16, until: Instant, m: &Recorder) {
        let until = until.min(Instant::now() + CLOSE_WAIT);
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(""),
        };
        let _ = tokio::time::timeout_at(until, async {
            if self.stream.close(Some(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(message)) = self.stream.next().await {
                if message.is_text() || message.is_binary() {
                    m.ws_count(names::WS_MSGS_RECEIVED, &self.tags);
                }
            }
        })
        .await;
    }
}

/// One VU's WebSockets.
pub struct WsClient {
    tls: ClientSettings,
    sockets: Vec<Socket>,
    /// The next handle: handles are never reused, so a stale one is closed.
    next_handle: i32,
}

impl WsClient {
    /// A client with no socket open.
    pub fn new(tls: ClientSettings) -> WsClient {
        WsClient {
            tls,
            sockets: Vec::new(),
            next_handle: 0,
        }
    }

    /// Open sockets.
    pub fn open_count(&self) -> usize {
        self.sockets.len()
    }

    fn find(&mut self, handle: i32) -> Option<usize> {
        self.sockets.iter().position(|s| s.handle == handle)
    }

    /// Opens a socket to `req.url` with `req`'s headers and tags (the VU's
    /// are `base`), giving up at `req`'s timeout or `deadline`; returns its
    /// handle. A failure is recorded in `errors` and comes back as
    /// [`WsFailure::Failed`].
    pub async fn connect(
        &mut self,
        req: &HttpRequest,
        base: &[(String, String)],
        jar: &mut CookieJar,
        deadline: Instant,
        m: &Recorder,
    ) -> Result<i32, WsFailure> {
        let name = request_name(req).to_owned();
        let result = self.connect_inner(req, base, &name, jar, deadline, m).await;
        if let Err(WsFailure::Failed(kind, _)) = &result {
            m.ws_error(kind.as_str(), &name);
        }
        result
    }

    async fn connect_inner(
        &mut self,
        req: &HttpRequest,
        base: &[(String, String)],
        name: &str,
        jar: &mut CookieJar,
        deadline: Instant,
        m: &Recorder,
    ) -> Result<i32, WsFailure> {
        if self.sockets.len() >= ws::MAX_SOCKETS {
            return Err(WsFailure::Failed(
                ErrorKind::InvalidRequest,
                format!(
                    "this VU has {} WebSockets open, the most it may: close one first",
                    ws::MAX_SOCKETS
                ),
            ));
        }
        let (origin, path) = parse_ws_url(&req.url)?;
        let mut request = req.url.as_str().into_client_request().map_err(|e| {
            WsFailure::Failed(
                ErrorKind::InvalidRequest,
                format!("invalid WebSocket URL {:?}: {e}", req.url),
            )
        })?;
        let headers = request.headers_mut();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("fusi/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &req.headers {
            let invalid = || {
                WsFailure::Failed(
                    ErrorKind::InvalidRequest,
                    format!("invalid header {name:?} for the WebSocket upgrade"),
                )
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            headers.insert(name, value);
        }
        let cookie_url = CookieUrl {
            https: origin.https,
            host: &origin.host,
            path: &path,
        };
        if !jar.is_empty()
            && !headers.contains_key(COOKIE)
            && let Some(cookies) = jar.header(cookie_url, unix_now())
            && let Ok(value) = HeaderValue::from_str(&cookies)
        {
            headers.insert(COOKIE, value);
        }
        let own = req
            .timeout_ms
            .filter(|ms| *ms != fusi_sdk::abi::wire::NO_TIMEOUT)
            .map_or(ws::DEFAULT_CONNECT_TIMEOUT_MS, |ms| ms);
        let until = deadline.min(Instant::now() + Duration::from_millis(own));
        let started = Instant::now();
        let tls = self.tls.clone();
        let to = origin.clone();
        // On a task of its own: the TLS handshake's stack is deep, and a
        // VU's fiber stack keeps every page it touched (see
        // `HttpClient::send_on_task`).
        let task = tokio::spawn(async move {
            let connecting = async {
                let mut timings = fusi_sdk::abi::Timings::default();
                let (opened, meter) = open(&to, &tls, Alpn::Http1, &mut timings).await?;
                let io: Box<dyn Io> = match opened {
                    Opened::Plain(io) => Box::new(io),
                    Opened::Tls(io) => Box::new(io),
                };
                let handshake =
                    tokio_tungstenite::client_async_with_config(request, io, Some(config())).await;
                Ok::<_, Failure>((handshake, meter))
            };
            match tokio::time::timeout_at(until, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Failure(
                    ErrorKind::Timeout,
                    format!(
                        "no WebSocket connection to {} within {} ms",
                        to.host,
                        until.saturating_duration_since(started).as_millis()
                    ),
                )),
            }
        });
        let (handshake, meter) = match task.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(WsFailure::Failed(
                    ErrorKind::Reset,
                    format!("the WebSocket connect's task failed: {e}"),
                ));
            }
        };
        let (sent, received) = meter.totals();
        m.bytes(sent, received);
        let (stream, response) = handshake.map_err(|e| {
            let (kind, message) = classify(&e);
            WsFailure::Failed(
                kind,
                format!("the WebSocket upgrade of {} failed: {message}", req.url),
            )
        })?;
        let now = unix_now();
        for header in response.headers().get_all(SET_COOKIE) {
            jar.store(cookie_url, header.as_bytes(), now);
        }
        let connecting_ms = started.elapsed().as_secs_f64() * 1000.0;
        let tags = socket_tags(base, req, name);
        m.ws_sample(names::WS_CONNECTING, &tags, connecting_ms);
        m.ws_count(names::WS_SESSIONS, &tags);
        let handle = self.next_handle;
        self.next_handle = self.next_handle.checked_add(1).unwrap_or(0);
        self.sockets.push(Socket {
            handle,
            stream,
            meter,
            recorded: (sent, received),
            started,
            tags,
            name: name.to_owned(),
        });
        Ok(handle)
    }

    /// Sends one message on socket `handle`; `text` messages must be
    /// UTF-8. A send that fails closes the socket.
    pub async fn send(
        &mut self,
        handle: i32,
        kind: i32,
        data: Vec<u8>,
        deadline: Instant,
        m: &Recorder,
    ) -> Result<(), WsFailure> {
        let Some(i) = self.find(handle) else {
            return Err(WsFailure::Closed(None));
        };
        if data.len() > ws::MAX_MESSAGE {
            return Err(WsFailure::Failed(
                ErrorKind::InvalidRequest,
                format!(
                    "a message of {} bytes is larger than the {} a WebSocket message may be",
                    data.len(),
                    ws::MAX_MESSAGE
                ),
            ));
        }
        let message = match kind {
            ws::TEXT => Message::Text(Utf8Bytes::try_from(data).map_err(|_| {
                WsFailure::Failed(
                    ErrorKind::InvalidRequest,
                    "a text message must be UTF-8; send bytes as binary".to_owned(),
                )
            })?),
            ws::BINARY => Message::Binary(Bytes::from(data)),
            other => {
                return Err(WsFailure::Failed(
                    ErrorKind::InvalidRequest,
                    format!(
                        "{other} is no message kind: {} is text, {} binary",
                        ws::TEXT,
                        ws::BINARY
                    ),
                ));
            }
        };
        let socket = &mut self.sockets[i];
        match tokio::time::timeout_at(deadline, socket.stream.send(message)).await {
            Ok(Ok(())) => {
                m.ws_count(names::WS_MSGS_SENT, &socket.tags);
                socket.record_bytes(m);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(i, &e, m)),
            Err(_) => Err(WsFailure::Deadline),
        }
    }

    /// Waits up to `timeout` (and not past `deadline`, nor the run's
    /// `stop`) for the next message on socket `handle`. Pings are answered
    /// and pongs skipped on the way; a close from the peer, the end of the
    /// connection or an error closes the socket.
    pub async fn recv(
        &mut self,
        handle: i32,
        timeout: Duration,
        deadline: Instant,
        stop: &tokio_util::sync::CancellationToken,
        m: &Recorder,
    ) -> Result<Received, WsFailure> {
        let Some(i) = self.find(handle) else {
            return Err(WsFailure::Closed(None));
        };
        let wake = Instant::now() + timeout;
        let (until, cut) = if wake > deadline {
            (deadline, WsFailure::Deadline)
        } else {
            (wake, WsFailure::Timeout)
        };
        let socket = &mut self.sockets[i];
        let next = async {
            loop {
                match socket.stream.next().await {
                    Some(Ok(Message::Text(text))) => break Ok(Received::Text(text)),
                    Some(Ok(Message::Binary(bytes))) => break Ok(Received::Binary(bytes)),
                    Some(Ok(Message::Close(frame))) => {
                        break Err(Ok(frame.map(|f| (u16::from(f.code), f.reason.to_string()))));
                    }
                    // Pings are answered by tungstenite as it reads.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(e)) => break Err(Err(e)),
                    None => break Err(Ok(None)),
                }
            }
        };
        let got = tokio::select! {
            got = tokio::time::timeout_at(until, next) => got,
            () = stop.cancelled() => return Err(WsFailure::Stopped),
        };
        match got {
            Ok(Ok(message)) => {
                let socket = &mut self.sockets[i];
                m.ws_count(names::WS_MSGS_RECEIVED, &socket.tags);
                socket.record_bytes(m);
                Ok(message)
            }
            Ok(Err(Ok(close))) => {
                let mut socket = self.sockets.swap_remove(i);
                // Sends the answer to the peer's close, which tungstenite
                // queued.
                socket.close(1000, deadline, m).await;
                socket.record_end(m);
                Err(WsFailure::Closed(close))
            }
            Ok(Err(Err(e))) => Err(self.fail(i, &e, m)),
            Err(_) => Err(cut),
        }
    }

    /// Closes socket `handle` with close `code` (1000 when it is no code a
    /// scenario may send); a closed handle is ignored.
    pub async fn close(&mut self, handle: i32, code: i32, deadline: Instant, m: &Recorder) {
        let Some(i) = self.find(handle) else {
            return;
        };
        let mut socket = self.sockets.swap_remove(i);
        let code = u16::try_from(code)
            .ok()
            .filter(|c| (1000..=4999).contains(c) && !matches!(c, 1004..=1006 | 1015))
            .unwrap_or(1000);
        socket.close(code, deadline, m).await;
        socket.record_end(m);
    }

    /// Closes every socket left open (close code 1001, "going away"),
    /// waiting at most [`CLOSE_WAIT`] for them all; with `stopping`, drops
    /// them without a close frame. Each session's end is recorded.
    pub async fn close_all(&mut self, stopping: bool, m: &Recorder) {
        if self.sockets.is_empty() {
            return;
        }
        let until = Instant::now() + CLOSE_WAIT;
        for mut socket in std::mem::take(&mut self.sockets) {
            if !stopping {
                socket.close(1001, until, m).await;
            }
            socket.record_end(m);
        }
    }

    /// Drops socket `i` after `e`, recording it; the failure to return.
    fn fail(&mut self, i: usize, e: &WsError, m: &Recorder) -> WsFailure {
        let mut socket = self.sockets.swap_remove(i);
        socket.record_end(m);
        let (kind, message) = classify(e);
        m.ws_error(kind.as_str(), &socket.name);
        WsFailure::Failed(kind, message)
    }
}

/// The socket settings: bounded messages and a small read buffer.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(ws::MAX_MESSAGE))
        .max_frame_size(Some(ws::MAX_MESSAGE))
}

/// The origin and path of a `ws://` or `wss://` URL: an `http://` or
/// `https://` one's, by [`origin_of`], the one parser of URLs.
fn parse_ws_url(url: &str) -> Result<(Origin, String), WsFailure> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let http = if scheme.eq_ignore_ascii_case("ws") {
        format!("http://{rest}")
    } else if scheme.eq_ignore_ascii_case("wss") {
        format!("https://{rest}")
    } else {
        return Err(WsFailure::Failed(
            ErrorKind::InvalidRequest,
            format!("invalid WebSocket URL {url:?}: use ws:// or wss://"),
        ));
    };
    let origin = origin_of(&http)?;
    let path = http::Uri::try_from(http.as_str())
        .ok()
        .map_or_else(|| "/".to_owned(), |uri| uri.path().to_owned());
    Ok((origin, path))
}

/// The tags of a socket's metrics: the VU's, then the request's, then
/// `name`, a later value for a key winning, sorted.
fn socket_tags(base: &[(String, String)], req: &HttpRequest, name: &str) -> Vec<(String, String)> {
    let tags = base
        .iter()
        .chain(&req.tags)
        .cloned()
        .chain([("name".to_owned(), name.to_owned())]);
    crate::core::metrics::SeriesKey::new("", tags).tags
}

/// The class and text of a WebSocket error.
fn classify(e: &WsError) -> (ErrorKind, String) {
    let kind = match e {
        WsError::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            _ => ErrorKind::Reset,
        },
        WsError::ConnectionClosed | WsError::AlreadyClosed => ErrorKind::Reset,
        WsError::Tls(_) => ErrorKind::Tls,
        WsError::Url(_) | WsError::HttpFormat(_) => ErrorKind::InvalidRequest,
        WsError::Capacity(_)
        | WsError::Protocol(_)
        | WsError::Http(_)
        | WsError::Utf8(_)
        | WsError::WriteBufferFull(_)
        | WsError::AttackAttempt => ErrorKind::Protocol,
    };
    let message = match e {
        WsError::Http(response) => format!(
            "the server answered {} instead of 101 Switching Protocols",
            response.status()
        ),
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => format!(
            "the peer sent a message of {size} bytes, more than the {max_size} allowed; the socket \
             is closed"
        ),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            "the peer closed the connection without a close frame".to_owned()
        }
        other => other.to_string(),
    };
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_map_to_the_origins_of_http_urls() {
        let (o, path) = parse_ws_url("ws://127.0.0.1:8080/ws/chat?room=a").expect("ws");
        assert_eq!(
            (o.https, o.host.as_str(), o.port, path.as_str()),
            (false, "127.0.0.1", 8080, "/ws/chat")
        );
        let (o, _) = parse_ws_url("WSS://[::1]/").expect("wss");
        assert_eq!((o.https, o.host.as_str(), o.port), (true, "::1", 443));
        for bad in ["http://h/", "h/ws", "", "ws://", "wss:///x"] {
            assert!(
                matches!(
                    parse_ws_url(bad),
                    Err(WsFailure::Failed(ErrorKind::InvalidRequest, _))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn socket_tags_put_name_last_and_sort() {
        let base = vec![("a".to_owned(), "1".to_owned())];
        let req = HttpRequest {
            tags: vec![
                ("name".to_owned(), "mine".to_owned()),
                ("z".to_owned(), "2".to_owned()),
            ],
            ..HttpRequest::default()
        };
        let tags = socket_tags(&base, &req, "chat");
        let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "name", "z"]);
        assert_eq!(tags[1].1, "chat");
    }

    #[tokio::test]
    async fn a_vu_opens_at_most_16_sockets_and_every_session_is_recorded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        // An echo server that keeps every socket until its client closes.
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if (message.is_text() || message.is_binary())
                            && socket.send(message).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let recorder = Recorder::new();
        let m = &recorder;
        let mut client = WsClient::new(ClientSettings::new(false).expect("tls"));
        let mut jar = CookieJar::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let req = HttpRequest {
            url: format!("ws://{addr}/x?id=1"),
            ..HttpRequest::default()
        };
        let mut handles = Vec::new();
        for _ in 0..ws::MAX_SOCKETS {
            let handle = client.connect(&req, &[], &mut jar, deadline, m).await;
            handles.push(handle.expect("a socket within the bound opens"));
        }
        let over = client.connect(&req, &[], &mut jar, deadline, m).await;
        assert!(
            matches!(&over, Err(WsFailure::Failed(ErrorKind::InvalidRequest, e)) if e.contains("16")),
            "{over:?}"
        );
        let first = handles[0];
        let sent = client
            .send(first, ws::TEXT, b"hi".to_vec(), deadline, m)
            .await;
        assert_eq!(sent, Ok(()));
        let stop = tokio_util::sync::CancellationToken::new();
        let got = client
            .recv(first, Duration::from_secs(5), deadline, &stop, m)
            .await;
        assert_eq!(got, Ok(Received::Text(Utf8Bytes::from_static("hi"))));
        let quiet = client
            .recv(first, Duration::from_millis(20), deadline, &stop, m)
            .await;
        assert_eq!(quiet, Err(WsFailure::Timeout));
        client.close(first, 1000, deadline, m).await;
        let stale = client
            .send(first, ws::TEXT, b"late".to_vec(), deadline, m)
            .await;
        assert_eq!(
            stale,
            Err(WsFailure::Closed(None)),
            "a closed handle stays closed"
        );
        client.close_all(false, m).await;
        assert_eq!(client.open_count(), 0);

        let set = recorder.seal();
        let total = |metric: &str| match set.fold(metric, |_| true) {
            Some(crate::core::metrics::Value::Counter(n)) => n,
            Some(crate::core::metrics::Value::Trend(h)) => h.len() as f64,
            _ => 0.0,
        };
        assert_eq!(total(names::WS_SESSIONS), 16.0);
        assert_eq!(total(names::WS_CONNECTING), 16.0);
        assert_eq!(total(names::WS_SESSION_DURATION), 16.0);
        assert_eq!(total(names::WS_MSGS_SENT), 1.0);
        assert_eq!(total(names::WS_MSGS_RECEIVED), 1.0);
        assert_eq!(total(names::ERRORS), 1.0, "the 17th connect");
        assert!(total(names::DATA_SENT) > 0.0 && total(names::DATA_RECEIVED) > 0.0);
        let named = set.iter().any(|(k, _)| {
            k.metric == names::WS_SESSIONS && k.tag("name") == Some(&*format!("ws://{addr}/x"))
        });
        assert!(named, "the name tag is the URL without its query");
    }

    #[test]
    fn handshake_and_frame_errors_are_classified() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong {
            size: 2 << 20,
            max_size: 1 << 20,
        });
        let (kind, text) = classify(&too_long);
        assert_eq!(kind, ErrorKind::Protocol);
        assert!(text.contains("2097152 bytes"), "{text}");
        let refused = WsError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(classify(&refused).0, ErrorKind::Refused);
    }
}
