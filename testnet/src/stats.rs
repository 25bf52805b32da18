//! What the target has seen, so tests can check the load generator's claims.
//!
//! A load generator reports what it *thinks* it sent; the target's counters
//! are the independent ground truth. They are lock-free atomics so that
//! counting does not become the bottleneck a benchmark measures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the target's counters.
///
/// Requests to the `/__fusi/stats` endpoint are never counted, and a
/// connection is counted once it carries its first counted request, so
/// observing the target does not change what it reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered (every counted response, injected errors included).
    pub requests: u64,
    /// Connections that carried at least one counted request.
    pub connections: u64,
    /// Responses by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses replaced by an injected error (`error_rate`).
    pub errors_injected: u64,
    /// Requests held by the stall window.
    pub stalled: u64,
    /// Request body bytes read (headers not included).
    pub bytes_received: u64,
    /// Response body bytes produced (headers not included).
    pub bytes_sent: u64,
    /// When the first counted request since the start (or the last reset)
    /// was answered, in milliseconds since the Unix epoch: benchmarks take
    /// the time from a command to its first request from it.
    #[serde(default)]
    pub first_request_unix_ms: Option<u64>,
    /// `POST /login`s answered, by user: a test checks that no test user
    /// logged in twice. At most [`MAX_USERS`] users are kept; the logins of
    /// any others count under the empty name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logins: BTreeMap<String, u64>,
    /// WebSocket upgrades accepted (`/ws/echo`, `/ws/chat`); they are not
    /// in `requests`.
    #[serde(default)]
    pub ws_sessions: u64,
    /// WebSocket messages (text and binary) received from clients.
    #[serde(default)]
    pub ws_msgs_received: u64,
    /// WebSocket messages (text and binary) sent to clients.
    #[serde(default)]
    pub ws_msgs_sent: u64,
}

/// The most users [`Stats::logins`] keeps apart.
pub const MAX_USERS: usize = 100_000;

/// Status codes are `100..=999` in `http::StatusCode`; index by code.
const STATUS_SLOTS: usize = 1000;

/// The live counters behind [`Stats`].
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) errors_injected: AtomicU64,
    pub(crate) stalled: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) ws_sessions: AtomicU64,
    pub(crate) ws_msgs_received: AtomicU64,
    pub(crate) ws_msgs_sent: AtomicU64,
    /// Unix milliseconds of the first counted response; 0 until then.
    first_request: AtomicU64,
    by_status: Box<[AtomicU64]>,
    logins: Mutex<BTreeMap<String, u64>>,
    /// Bumped by every reset, so a connection counted before a reset is
    /// counted again when it carries a request after it.
    epoch: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            errors_injected: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            ws_sessions: AtomicU64::new(0),
            ws_msgs_received: AtomicU64::new(0),
            ws_msgs_sent: AtomicU64::new(0),
            first_request: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            logins: Mutex::new(BTreeMap::new()),
            epoch: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Per-connection memory of when the connection was last counted.
#[derive(Debug)]
pub(crate) struct ConnCounted(AtomicU64);

impl Default for ConnCounted {
    fn default() -> Self {
        ConnCounted(AtomicU64::new(u64::MAX))
    }
}

impl Counters {
    /// Counts the connection unless it was already counted since the last
    /// reset.
    pub(crate) fn count_connection(&self, conn: &ConnCounted) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        if conn.0.swap(epoch, Ordering::Relaxed) != epoch {
            add(&self.connections, 1);
        }
    }

    /// Counts one response with this status and body length.
    pub(crate) fn count_response(&self, status: u16, body_len: u64) {
        add(&self.requests, 1);
        add(&self.bytes_sent, body_len);
        if self.first_request.load(Ordering::Relaxed) == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
                });
            let _ =
                self.first_request
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            add(slot, 1);
        }
    }

    /// Counts a login of `user`.
    pub(crate) fn count_login(&self, user: &str) {
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let key = if logins.len() < MAX_USERS || logins.contains_key(user) {
            user
        } else {
            ""
        };
        *logins.entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Takes a snapshot.
    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: load(&self.requests),
            connections: load(&self.connections),
            by_status: self
                .by_status
                .iter()
                .enumerate()
                .filter_map(|(code, n)| {
                    let n = load(n);
                    let code = u16::try_from(code).ok()?;
                    (n > 0).then_some((code, n))
                })
                .collect(),
            errors_injected: load(&self.errors_injected),
            stalled: load(&self.stalled),
            bytes_received: load(&self.bytes_received),
            bytes_sent: load(&self.bytes_sent),
            first_request_unix_ms: Some(load(&self.first_request)).filter(|&ms| ms > 0),
            logins: self
                .logins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            ws_sessions: load(&self.ws_sessions),
            ws_msgs_received: load(&self.ws_msgs_received),
            ws_msgs_sent: load(&self.ws_msgs_sent),
        }
    }

    /// Sets every counter to zero.
    pub(crate) fn reset(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        for c in [
            &self.requests,
            &self.connections,
            &self.errors_injected,
            &self.stalled,
            &self.bytes_received,
            &self.bytes_sent,
            &self.first_request,
            &self.ws_sessions,
            &self.ws_msgs_received,
            &self.ws_msgs_sent,
        ]
        .into_iter()
        .chain(self.by_status.iter())
        {
            c.store(0, Ordering::Relaxed);
        }
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
