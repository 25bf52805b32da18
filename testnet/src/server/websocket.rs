//! The WebSocket routes: an echo, chat rooms, and a server that sends one
//! message of a size the test picks (to check a client's limit).
//!
//! Upgrades are HTTP/1.1 only, and they skip the knobs (latency, stalls,
//! error injection): those are per request, and a socket carries many
//! messages. They are counted apart from requests ([`Stats::ws_sessions`],
//! [`Stats::ws_msgs_received`], [`Stats::ws_msgs_sent`]): a message a
//! client sent counts once the server read it, one the server sent once it
//! was written, so a client that reads until the server's close frame
//! received exactly what the server counted as sent.
//!
//! Bounded like the rest of the target: at most [`MAX_SESSIONS`] open
//! sockets, [`MAX_ROOMS`] rooms of at most [`MAX_ROOM_CLIENTS`] clients,
//! messages of at most [`MAX_MESSAGE`] bytes ([`MAX_CHAT_MESSAGE`] in a
//! room), and a room's backlog of [`ROOM_BACKLOG`] messages (a client that
//! falls further behind misses the oldest, which are not counted as sent).
//!
//! [`Stats::ws_sessions`]: crate::Stats::ws_sessions
//! [`Stats::ws_msgs_received`]: crate::Stats::ws_msgs_received
//! [`Stats::ws_msgs_sent`]: crate::Stats::ws_msgs_sent

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::debug;

use super::sessions::{find, parse_form};
use super::{MAX_BYTES, Resp, Shared, error_json, shutdown_signalled};
use crate::stats::{Counters, add};

/// The most WebSockets open at once; more are answered 503.
pub const MAX_SESSIONS: u64 = 4096;
/// The most chat rooms at once; a client for another room gets 503.
pub const MAX_ROOMS: usize = 64;
/// The most clients in one room; more get 503.
pub const MAX_ROOM_CLIENTS: usize = 1024;
/// The largest message a client may send (1 MiB, as fusi's own limit).
pub const MAX_MESSAGE: usize = 1 << 20;
/// The largest message a chat room passes on; a larger one closes its
/// sender's socket (close code 1009, "message too big").
pub const MAX_CHAT_MESSAGE: usize = 16 << 10;
/// Messages a room holds for its slowest client.
pub const ROOM_BACKLOG: usize = 128;
/// The longest room name.
const MAX_ROOM_NAME: usize = 64;

/// Whether `path` is a WebSocket route, which [`route`] answers.
pub(super) fn is_ws_path(path: &str) -> bool {
    path.starts_with("/ws/")
}

/// The chat rooms, by name.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    /// Open sockets, of every route.
    open: AtomicU64,
}

#[derive(Debug)]
struct Room {
    tx: broadcast::Sender<Message>,
    clients: usize,
}

/// A client's place in a room: it leaves when this is dropped.
struct Seat {
    shared: Arc<Shared>,
    name: String,
    /// Where its messages go: to everyone in the room, itself included.
    tx: broadcast::Sender<Message>,
    /// Everyone's messages.
    rx: broadcast::Receiver<Message>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut rooms = self
            .shared
            .rooms
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(room) = rooms.get_mut(&self.name) {
            room.clients -= 1;
            if room.clients == 0 {
                rooms.remove(&self.name);
            }
        }
    }
}

/// An open socket, counted in [`Rooms::open`] while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.rooms.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a socket does once upgraded.
enum Kind {
    Echo,
    Chat(Seat),
    /// Sends one binary message of this many bytes, then echoes.
    Bytes(usize),
}

/// Answers a request for a WebSocket route: `101 Switching Protocols` and
/// the socket's task, or why not.
pub(super) fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    let Some(key) = upgrade_key(&req) else {
        let mut resp = error_json(
            StatusCode::UPGRADE_REQUIRED,
            "this route is a WebSocket: send an HTTP/1.1 GET with `Upgrade: websocket`".into(),
        );
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    };
    let kind = match segments.as_slice() {
        ["echo"] => Kind::Echo,
        ["chat"] => match join(&shared, req.uri().query()) {
            Ok(seat) => Kind::Chat(seat),
            Err((status, why)) => return error_json(status, why),
        },
        ["bytes", n] => match n.parse::<usize>().ok().filter(|n| *n <= MAX_BYTES) {
            Some(n) => Kind::Bytes(n),
            None => {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    format!("invalid length `{n}`: expected bytes in 0..={MAX_BYTES}"),
                );
            }
        },
        _ => return error_json(StatusCode::NOT_FOUND, format!("no route for {path}")),
    };
    if shared.rooms.open.fetch_add(1, Ordering::Relaxed) >= MAX_SESSIONS {
        drop(Open(Arc::clone(&shared)));
        return error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the target has {MAX_SESSIONS} WebSockets open, the most it keeps"),
        );
    }
    let open = Open(Arc::clone(&shared));
    add(&shared.counters.ws_sessions, 1);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!("WebSocket upgrade failed: {e}");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(16 << 10)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let stream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let counters = Arc::clone(&open.0.counters);
        let shutdown = open.0.shutdown.clone();
        let mut socket = Socket {
            stream,
            counters,
            shutdown,
        };
        match kind {
            Kind::Echo => socket.echo().await,
            Kind::Chat(seat) => socket.chat(seat).await,
            Kind::Bytes(n) => {
                let payload = Bytes::from(vec![b'x'; n]);
                if socket.send(Message::Binary(payload)).await {
                    socket.echo().await;
                }
            }
        }
        drop(open);
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// The request's `Sec-WebSocket-Key`; `None` for a request that is no
/// WebSocket upgrade.
fn upgrade_key(req: &Request<Incoming>) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    match key {
        Some(key)
            if req.version() == Version::HTTP_11
                && req.method() == http::Method::GET
                && has(header::UPGRADE, "websocket")
                && has(header::CONNECTION, "upgrade")
                && has(header::SEC_WEBSOCKET_VERSION, "13") =>
        {
            Some(key.to_owned())
        }
        _ => None,
    }
}

/// A seat in the room the query names (`room=NAME`), or the status and
/// reason why not.
fn join(shared: &Arc<Shared>, query: Option<&str>) -> Result<Seat, (StatusCode, String)> {
    let pairs = parse_form(query.unwrap_or("").as_bytes());
    let name = find(&pairs, "room").unwrap_or("");
    if name.is_empty() || name.len() > MAX_ROOM_NAME {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("name the room: `?room=NAME`, 1 to {MAX_ROOM_NAME} bytes"),
        ));
    }
    let mut rooms = shared
        .rooms
        .rooms
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let full = |what: String| Err((StatusCode::SERVICE_UNAVAILABLE, what));
    let count = rooms.len();
    let tx = match rooms.get_mut(name) {
        Some(room) if room.clients >= MAX_ROOM_CLIENTS => {
            return full(format!(
                "the room is full: at most {MAX_ROOM_CLIENTS} clients"
            ));
        }
        Some(room) => {
            room.clients += 1;
            room.tx.clone()
        }
        None if count >= MAX_ROOMS => {
            return full(format!(
                "the target has {MAX_ROOMS} rooms, the most it keeps"
            ));
        }
        None => {
            let (tx, _) = broadcast::channel(ROOM_BACKLOG);
            rooms.insert(
                name.to_owned(),
                Room {
                    tx: tx.clone(),
                    clients: 1,
                },
            );
            tx
        }
    };
    Ok(Seat {
        shared: Arc::clone(shared),
        name: name.to_owned(),
        rx: tx.subscribe(),
        tx,
    })
}

/// One upgraded socket and what it counts in.
struct Socket {
    stream: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
}

impl Socket {
    /// Sends `message`, counting it once written; false when the socket
    /// is gone.
    async fn send(&mut self, message: Message) -> bool {
        let ok = self.stream.send(message).await.is_ok();
        if ok {
            add(&self.counters.ws_msgs_sent, 1);
        }
        ok
    }

    /// The next text or binary message from the client, counted; `None`
    /// when it closed, failed, or the server shuts down (pings are answered
    /// on the way).
    async fn next(&mut self) -> Option<Message> {
        loop {
            let next = tokio::select! {
                next = self.stream.next() => next,
                () = shutdown_signalled(&mut self.shutdown) => return None,
            };
            match next {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    add(&self.counters.ws_msgs_received, 1);
                    return Some(message);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            }
        }
    }

    /// Sends each message back until the client closes.
    async fn echo(&mut self) {
        while let Some(message) = self.next().await {
            if !self.send(message).await {
                return;
            }
        }
        self.finish().await;
    }

    /// Passes each message of the client to everyone in its room (itself
    /// included), and everyone's to it, until it closes; then gives up its
    /// seat.
    async fn chat(&mut self, mut seat: Seat) {
        enum Next {
            FromClient(Option<Message>),
            ToClient(Result<Message, broadcast::error::RecvError>),
        }
        loop {
            let next = tokio::select! {
                m = self.next() => Next::FromClient(m),
                m = seat.rx.recv() => Next::ToClient(m),
            };
            match next {
                Next::FromClient(None)
                | Next::ToClient(Err(broadcast::error::RecvError::Closed)) => {
                    break;
                }
                Next::FromClient(Some(message)) => {
                    if message.len() > MAX_CHAT_MESSAGE {
                        let frame = CloseFrame {
                            code: CloseCode::Size,
                            reason: Utf8Bytes::from_static("a chat message is 16 KiB at most"),
                        };
                        let _ = self.stream.close(Some(frame)).await;
                        break;
                    }
                    // Fails only when no one listens, and the sender does.
                    let _ = seat.tx.send(message);
                }
                Next::ToClient(Ok(message)) => {
                    if !self.send(message).await {
                        return;
                    }
                }
                Next::ToClient(Err(broadcast::error::RecvError::Lagged(n))) => {
                    debug!("a chat client fell {n} messages behind; they are skipped");
                }
            }
        }
        drop(seat);
        self.finish().await;
    }

    /// Answers the client's close (or sends one at shutdown) and waits
    /// briefly for the connection to end.
    async fn finish(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.close(None).await;
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}
