//! WebSockets from a scenario (ABI 4).
//!
//! A socket starts like an HTTP request: the URL must be one the node may
//! reach (`--allow-target`), the upgrade carries the VU's cookies, and
//! `wss://` uses the run's TLS settings. A connect that fails does not
//! panic: it returns [`WsError::Failed`] and counts in `errors`. Every
//! socket is closed when the value is dropped, and any socket still open at
//! the end of the iteration is closed by the host.
//!
//! The metrics are k6's: `ws_connecting`, `ws_sessions`,
//! `ws_session_duration`, `ws_msgs_sent` and `ws_msgs_received`.
//!
//! ```ignore
//! use fusi_sdk::prelude::*;
//!
//! let mut socket = match ws::connect("ws://127.0.0.1:8080/ws/echo") {
//!     Ok(socket) => socket,
//!     Err(e) => {
//!         check("connected", false);
//!         log(Level::Warn, &e.to_string());
//!         return;
//!     }
//! };
//! socket.send_text("hello").ok();
//! match socket.recv(Duration::from_secs(5)) {
//!     Ok(ws::Message::Text(text)) => check("echoed", text == "hello"),
//!     Ok(ws::Message::Binary(_)) | Err(_) => check("echoed", false),
//! };
//! socket.close();
//! ```

use std::time::Duration;

use super::sys;
use crate::abi::wire::{self, NO_TIMEOUT};
use crate::abi::{ErrorKind, HttpRequest, RequestOptions, ws};

/// A message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// Why a WebSocket call did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// No message arrived within the timeout; the socket stays open.
    Timeout,
    /// The socket is closed: by the peer (with its close code and reason,
    /// if it sent them), by [`WebSocket::close`], or by the host at the end
    /// of an iteration.
    Closed {
        /// The peer's close code, if it sent one.
        code: Option<u16>,
        /// The peer's reason, if it sent one.
        reason: String,
    },
    /// The connect or the socket failed (refused, not in `--allow-target`,
    /// an upgrade the server declined, a message over 1 MiB, ...); the
    /// socket, if any, is closed.
    Failed {
        /// What class of failure (the `kind` tag of `errors`).
        kind: ErrorKind,
        /// What happened, as the host says it.
        message: String,
    },
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Timeout => write!(f, "no WebSocket message within the timeout"),
            WsError::Closed {
                code: Some(code),
                reason,
            } => write!(f, "the WebSocket is closed ({code} {reason})"),
            WsError::Closed { code: None, .. } => write!(f, "the WebSocket is closed"),
            WsError::Failed { kind, message } => {
                write!(f, "the WebSocket failed ({}): {message}", kind.as_str())
            }
        }
    }
}

impl std::error::Error for WsError {}

/// What a negative return code of a `ws_*` import means, with what the
/// host left in the result buffer.
fn error(code: i32) -> WsError {
    match code {
        ws::TIMEOUT => WsError::Timeout,
        ws::CLOSED => {
            let raw = sys::take_result(ws::MAX_ERROR_MESSAGE + 2);
            match raw.split_first_chunk::<2>() {
                Some((code, reason)) => WsError::Closed {
                    code: Some(u16::from_be_bytes(*code)),
                    reason: String::from_utf8_lossy(reason).into_owned(),
                },
                None => WsError::Closed {
                    code: None,
                    reason: String::new(),
                },
            }
        }
        _ => {
            let raw = sys::take_result(ws::MAX_ERROR_MESSAGE + 1);
            let (kind, message) = raw.split_first().map_or((0, &[][..]), |(k, m)| (*k, m));
            WsError::Failed {
                kind: ErrorKind::from_code(kind).unwrap_or(ErrorKind::Protocol),
                message: String::from_utf8_lossy(message).into_owned(),
            }
        }
    }
}

/// Opens a WebSocket to a `ws://` or `wss://` URL.
pub fn connect(url: &str) -> Result<WebSocket, WsError> {
    Connect::new(url).open()
}

/// A WebSocket connect under construction: headers, tags and a timeout.
///
/// ```ignore
/// let socket = ws::Connect::new("wss://example.com/chat?room=a")
///     .header("Authorization", "Bearer t0ken")
///     .tag("name", "chat")
///     .timeout(Duration::from_secs(5))
///     .open()?;
/// ```
#[derive(Debug, Clone)]
#[must_use = "a connect does nothing until .open()"]
pub struct Connect {
    inner: HttpRequest,
}

impl Connect {
    /// A connect to `url`, `ws://` or `wss://`.
    pub fn new(url: &str) -> Self {
        Connect {
            inner: HttpRequest {
                method: "GET".to_owned(),
                url: url.to_owned(),
                options: Some(RequestOptions::default().to_pairs()),
                ..HttpRequest::default()
            },
        }
    }

    /// Adds a header to the upgrade request (a `Cookie` header replaces
    /// the VU's cookies).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Gives up opening after `timeout` (by default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(NO_TIMEOUT - 1);
        self.inner.timeout_ms = Some(ms.min(NO_TIMEOUT - 1));
        self
    }

    /// Adds a tag to the socket's metrics. A `name` tag replaces the URL,
    /// which keeps URLs with ids from making one series each.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.inner.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Opens the socket.
    pub fn open(self) -> Result<WebSocket, WsError> {
        let mut req = Vec::new();
        wire::encode_request(&self.inner, &mut req);
        // SAFETY: the pointer and length describe a live Vec.
        let handle = unsafe { sys::ws_connect(req.as_ptr(), req.len()) };
        if handle < 0 {
            return Err(error(handle));
        }
        Ok(WebSocket { handle })
    }
}

/// An open WebSocket; dropping it closes it (close code 1000).
#[derive(Debug)]
pub struct WebSocket {
    handle: i32,
}

impl WebSocket {
    fn send(&mut self, kind: i32, data: &[u8]) -> Result<(), WsError> {
        // SAFETY: the pointer and length describe a live slice.
        let code = unsafe { sys::ws_send(self.handle, kind, data.as_ptr(), data.len()) };
        if code < 0 { Err(error(code)) } else { Ok(()) }
    }

    /// Sends a text message (at most 1 MiB).
    pub fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.send(ws::TEXT, text.as_bytes())
    }

    /// Sends a binary message (at most 1 MiB).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.send(ws::BINARY, data)
    }

    /// Waits up to `timeout` for the next message. [`WsError::Timeout`]
    /// leaves the socket open; a wait past the iteration's timeout fails
    /// the iteration, as a request does.
    pub fn recv(&mut self, timeout: Duration) -> Result<Message, WsError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: plain integer arguments.
        let n = unsafe { sys::ws_recv(self.handle, ms) };
        let Ok(n) = usize::try_from(n) else {
            return Err(error(n));
        };
        let raw = sys::take_result(n);
        match raw.split_first() {
            Some((&kind, payload)) if kind as i32 == ws::BINARY => {
                Ok(Message::Binary(payload.to_vec()))
            }
            Some((_, payload)) => Ok(Message::Text(String::from_utf8_lossy(payload).into_owned())),
            None => Ok(Message::Binary(Vec::new())),
        }
    }

    /// Closes the socket with close code 1000 and waits briefly for the
    /// peer's answer.
    pub fn close(self) {
        drop(self);
    }

    /// Closes the socket with close `code` (1000..=4999; another sends
    /// 1000).
    pub fn close_with(self, code: u16) {
        // SAFETY: plain integer arguments.
        unsafe { sys::ws_close(self.handle, i32::from(code)) };
        std::mem::forget(self);
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        // SAFETY: plain integer arguments.
        unsafe { sys::ws_close(self.handle, 1000) };
    }
}
