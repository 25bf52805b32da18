//! The scenario ABI: what crosses the boundary between a scenario module and the
//! fusi host.
//!
//! This module is the one definition of that boundary. The host (`fusi-node`)
//! and the guest side of this SDK both use these types and constants, so they
//! cannot drift apart; docs/scenario-abi.md describes the same thing in prose
//! for authors who target the ABI from another language.
//!
//! Plain numbers cross as wasm values. Everything else crosses as bytes in guest
//! memory: strings as UTF-8 `(ptr, len)` pairs, structured values (an HTTP
//! request and its response) in the binary encoding of [`wire`]. An HTTP
//! response goes straight into a buffer the guest names, when it fits; other
//! values that the host returns are left in a per-VU *result buffer*, and the
//! guest learns their length from the call, then copies them into its own
//! memory with [`imports::RESULT_READ`]. The host never calls into the guest's
//! allocator.

use serde::{Deserialize, Serialize};

pub mod wire;

/// The ABI version this SDK speaks. A host refuses a module whose
/// [`exports::ABI_VERSION`] export returns a number outside
/// [`OLDEST_ABI_VERSION`]`..=`[`ABI_VERSION`].
///
/// Version 1 passed requests and responses as CBOR, and `http_request` took
/// no response buffer; version 2 is [`wire`]'s binary encoding. Version 3
/// adds sessions: a request ends with its options (redirects, discarded
/// bodies; see [`RequestOptions`]), which turn on the cookie jar and
/// redirects for it, its response ends with its final URL, and the
/// [`imports::COOKIES_CLEAR`] and [`imports::COOKIE_GET`] imports exist.
/// Version 4 adds test data (the [`imports::DATA_LEN`],
/// [`imports::DATA_ROW`] and [`imports::DATA_NEXT`] imports) and setup
/// data ([`imports::SETUP_DATA_SET`], [`imports::SETUP_DATA_GET`]), and
/// WebSocket (the `ws_*` imports, see [`ws`]).
pub const ABI_VERSION: u32 = 4;

/// The oldest ABI version a host still runs. A version 2 module's requests
/// carry no options: the host sends them as it always did (no cookie jar,
/// no redirects followed) and answers without the final URL.
pub const OLDEST_ABI_VERSION: u32 = 2;

/// The wasm import module that holds every host function.
pub const IMPORT_MODULE: &str = "fusi";

/// The wasm custom section in which a scenario declares its thresholds.
///
/// Its payload is UTF-8 text: thresholds in k6 syntax, one per line (for
/// example `http_req_duration: p(95)<200ms`). A module may hold several
/// sections of this name (the linker keeps one per declaration); the host
/// reads them all, in order, as one text. Blank lines are ignored. Write it
/// with [`crate::thresholds!`].
pub const THRESHOLDS_SECTION: &str = "fusi.thresholds";

/// The wasm custom section in which a scenario declares its custom
/// metrics, so that thresholds on them are checked before a run.
///
/// Its payload is UTF-8 text: one `KIND NAME` a line (`counter
/// items_created`), kind `counter`, `rate`, `trend` or `gauge`. Several
/// sections add up, as for [`THRESHOLDS_SECTION`]. Write it with
/// [`crate::metrics!`]. When a module declares any, a threshold on a
/// custom metric it does not declare is refused before the run.
pub const METRICS_SECTION: &str = "fusi.metrics";

/// The most bytes `setup` may hand on to the VUs
/// ([`imports::SETUP_DATA_SET`]): they travel with the run to every node.
pub const MAX_SETUP_DATA_BYTES: usize = 256 << 10;

/// The most thresholds a module may declare.
pub const MAX_DECLARED_THRESHOLDS: usize = 100;

/// The most bytes of threshold text a module may declare, over all its
/// [`THRESHOLDS_SECTION`] sections.
pub const MAX_THRESHOLDS_BYTES: usize = 64 * 1024;

/// Names of the functions a scenario module exports.
pub mod exports {
    /// `() -> i32`, required: returns [`super::ABI_VERSION`].
    pub const ABI_VERSION: &str = "fusi_abi_version";
    /// `() -> ()`, required: one iteration of the scenario.
    pub const ITERATION: &str = "iteration";
    /// `() -> ()`, optional: runs once per run, before any VU starts.
    pub const SETUP: &str = "setup";
    /// `() -> ()`, optional: runs once in each VU, before its first iteration.
    pub const INIT: &str = "init";
    /// `() -> ()`, optional: runs once per run, after the last iteration.
    pub const TEARDOWN: &str = "teardown";
    /// The linear memory the host reads arguments from and writes results to.
    pub const MEMORY: &str = "memory";
}

/// Names of the host functions in the [`super::IMPORT_MODULE`] module.
///
/// Signatures use wasm types: `i32` pointers and lengths, `i64` integers, `f64`
/// metric values.
pub mod imports {
    /// `(req_ptr: i32, req_len: i32, buf_ptr: i32, buf_len: i32) -> i32`:
    /// sends the [`super::HttpRequest`] encoded at `req_ptr` (see
    /// [`super::wire`]), waits for the answer, and returns the length `n` of
    /// the encoded [`super::HttpResponse`]. When `n <= buf_len` the response
    /// is at `buf_ptr`; otherwise it waits in the result buffer. Network
    /// failures are reported in the response, never as a trap.
    pub const HTTP_REQUEST: &str = "http_request";
    /// `(ptr: i32, len: i32) -> i32`: copies up to `len` bytes of the result
    /// buffer to `ptr`, empties the buffer and returns the number copied.
    pub const RESULT_READ: &str = "result_read";
    /// `(ms: i64) -> ()`: sleeps; the VU yields while it waits.
    pub const SLEEP_MS: &str = "sleep_ms";
    /// `(name_ptr: i32, name_len: i32, passed: i32) -> ()`: records a check.
    pub const CHECK: &str = "check";
    /// `(name_ptr: i32, name_len: i32) -> ()`: enters a group; groups nest.
    pub const GROUP_ENTER: &str = "group_enter";
    /// `() -> ()`: leaves the innermost group.
    pub const GROUP_EXIT: &str = "group_exit";
    /// `(key_ptr, key_len, value_ptr, value_len: i32) -> ()`: sets a VU tag
    /// that is added to every metric this VU records from now on.
    pub const TAG_SET: &str = "tag_set";
    /// `(key_ptr: i32, key_len: i32) -> ()`: removes a VU tag.
    pub const TAG_REMOVE: &str = "tag_remove";
    /// `(kind: i32, name_ptr: i32, name_len: i32, value: f64) -> ()`: adds a
    /// sample to a custom metric; `kind` is a [`super::MetricKind`] code.
    pub const METRIC_ADD: &str = "metric_add";
    /// `() -> i64`: this VU's id, from 1, unique within the run.
    pub const VU_ID: &str = "vu_id";
    /// `() -> i64`: this VU's iteration number, from 0.
    pub const ITERATION_NUMBER: &str = "iteration_number";
    /// `(key_ptr: i32, key_len: i32) -> i32`: looks up a run parameter
    /// (`--env K=V`). Returns -1 when it is not set, else the length of the
    /// UTF-8 value left in the result buffer.
    pub const ENV_GET: &str = "env_get";
    /// `(level: i32, ptr: i32, len: i32) -> ()`: logs a UTF-8 message;
    /// level 0 error, 1 warn, 2 info, 3 debug; level
    /// [`super::PANIC_LEVEL`] is the scenario's panic message instead.
    pub const LOG: &str = "log";
    /// `() -> ()`: empties this VU's cookie jar (ABI 3).
    pub const COOKIES_CLEAR: &str = "cookies_clear";
    /// `(url_ptr: i32, url_len: i32, name_ptr: i32, name_len: i32) -> i32`
    /// (ABI 3): the value of the cookie named `name` that this VU's jar
    /// would send to `url`, left in the result buffer; returns its length,
    /// or -1 when there is none.
    pub const COOKIE_GET: &str = "cookie_get";
    /// `(name_ptr: i32, name_len: i32) -> i64` (ABI 4): how many rows the
    /// run's data set `name` (`--data NAME=FILE`) has, or -1 when the run
    /// has no such set.
    pub const DATA_LEN: &str = "data_len";
    /// `(name_ptr: i32, name_len: i32, index: i64) -> i32` (ABI 4): row
    /// `index` (from 0) of the data set `name`, as JSON, left in the result
    /// buffer; returns its length, -1 when the run has no such set, or -2
    /// when the set has no such row.
    pub const DATA_ROW: &str = "data_row";
    /// `(name_ptr: i32, name_len: i32) -> i64` (ABI 4): draws the next row
    /// of the data set `name` for this node (`--data-mode`: every row in
    /// turn, or in `unique` mode only rows no other node draws) and returns
    /// its index, for [`DATA_ROW`]; -1 when the run has no such set, -2
    /// when this node's rows ran out (`--data-exhausted stop`: no
    /// iteration starts on this node after this one).
    pub const DATA_NEXT: &str = "data_next";
    /// `(ptr: i32, len: i32) -> ()` (ABI 4), during `setup` only: what
    /// `setup` returned, at most [`super::MAX_SETUP_DATA_BYTES`] bytes,
    /// for every VU's `iteration` and `teardown` on every node.
    pub const SETUP_DATA_SET: &str = "setup_data_set";
    /// `() -> i32` (ABI 4): what `setup` returned, left in the result
    /// buffer; returns its length, or -1 when `setup` returned nothing.
    pub const SETUP_DATA_GET: &str = "setup_data_get";
    /// `(ptr: i32, len: i32) -> ()`: sets the statuses this VU's requests
    /// expect from now on, as UTF-8 text such as `200-299,404` (an empty
    /// text restores the run's, `--expected-statuses`); a request with
    /// any other status fails `http_req_failed`. Text that is no such
    /// list traps.
    pub const EXPECTED_STATUSES: &str = "expected_statuses";
    /// `(req_ptr: i32, req_len: i32) -> i32` (ABI 4): opens a WebSocket.
    /// The [`super::HttpRequest`] encoded at `req_ptr` (see [`super::wire`])
    /// names the `ws://` or `wss://` URL, the headers of the upgrade
    /// request, the connect timeout and the tags of the socket's metrics;
    /// its method and body are ignored. Returns the socket's handle (`>= 0`)
    /// or a negative [`super::ws`] code: [`super::ws::FAILED`], with the
    /// reason in the result buffer, when it could not connect.
    pub const WS_CONNECT: &str = "ws_connect";
    /// `(handle: i32, kind: i32, ptr: i32, len: i32) -> i32` (ABI 4): sends
    /// the `len` bytes at `ptr` as one message of `kind`
    /// ([`super::ws::TEXT`] or [`super::ws::BINARY`]). Returns 0, or
    /// [`super::ws::CLOSED`] or [`super::ws::FAILED`].
    pub const WS_SEND: &str = "ws_send";
    /// `(handle: i32, timeout_ms: i64) -> i32` (ABI 4): waits up to
    /// `timeout_ms` for the next message. Returns its length `n + 1`: the
    /// result buffer holds its kind as one byte, then its `n` bytes. Or
    /// [`super::ws::TIMEOUT`], [`super::ws::CLOSED`] or
    /// [`super::ws::FAILED`].
    pub const WS_RECV: &str = "ws_recv";
    /// `(handle: i32, code: i32) -> ()` (ABI 4): closes the socket with a
    /// close `code` (1000 for a normal close; a code outside
    /// `1000..=4999` sends 1000) and waits briefly for the peer's answer.
    /// A handle already closed is ignored.
    pub const WS_CLOSE: &str = "ws_close";
}

/// The constants of the WebSocket imports (ABI 4).
///
/// A VU has at most [`MAX_SOCKETS`] sockets open. A socket its iteration
/// leaves open is closed by the host (close code 1001, "going away") when
/// the iteration ends, as k6 closes them at the end of a VU's session;
/// its handle then answers [`CLOSED`]. An instance never gets a handle
/// twice, so a stale handle answers [`CLOSED`] too.
///
/// Negative return values say why a call did nothing:
/// - [`TIMEOUT`]: no message within the time asked.
/// - [`CLOSED`]: the socket is closed. When the peer closed it, the result
///   buffer holds its close code (two bytes, big-endian) and reason
///   (UTF-8), or nothing if it sent no code.
/// - [`FAILED`]: the connect or the socket failed; the result buffer holds
///   an [`super::ErrorKind`] code (one byte) and a UTF-8 message of at most
///   [`MAX_ERROR_MESSAGE`] bytes. The socket, if any, is closed.
pub mod ws {
    /// A text message (UTF-8).
    pub const TEXT: i32 = 0;
    /// A binary message.
    pub const BINARY: i32 = 1;
    /// Nothing arrived within the timeout.
    pub const TIMEOUT: i32 = -1;
    /// The socket is closed.
    pub const CLOSED: i32 = -2;
    /// The connect or the socket failed.
    pub const FAILED: i32 = -3;
    /// The most sockets one VU has open at once; a connect past it fails
    /// (`invalid_request`).
    pub const MAX_SOCKETS: usize = 16;
    /// The largest message sent or received, in bytes (1 MiB); a larger
    /// one received fails the socket (`protocol`), a larger one sent fails
    /// the send (`invalid_request`).
    pub const MAX_MESSAGE: usize = 1 << 20;
    /// The connect timeout when the request gives none: 10 s, for the TCP
    /// and TLS handshakes and the upgrade together.
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// The longest message a [`FAILED`] leaves, in bytes.
    pub const MAX_ERROR_MESSAGE: usize = 1024;
}

/// The [`imports::LOG`] level that hands the host the message of a panic
/// under way, rather than a line for the log: the host keeps it as the
/// reason the current call fails (`panic` in `iterations_failed`) and says
/// it with that failure, once for the first few, instead of the module
/// writing it to stderr in every VU. The SDK's panic hook sends it. A
/// host older than this level logs it at debug, which is hidden by
/// default.
pub const PANIC_LEVEL: i32 = 4;

/// The kind of a custom metric, as passed to [`imports::METRIC_ADD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A sum (code 0): requests, bytes, anything counted.
    Counter,
    /// A distribution (code 1): latencies and sizes, kept in an HdrHistogram.
    Trend,
    /// A fraction of non-zero samples (code 2): error rates, check results.
    Rate,
    /// A level that goes up and down (code 3): VUs in use.
    Gauge,
}

impl MetricKind {
    /// The wire code of this kind.
    pub fn code(self) -> i32 {
        match self {
            MetricKind::Counter => 0,
            MetricKind::Trend => 1,
            MetricKind::Rate => 2,
            MetricKind::Gauge => 3,
        }
    }

    /// The kind for a wire code, if it is one.
    pub fn from_code(code: i32) -> Option<MetricKind> {
        match code {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Trend),
            2 => Some(MetricKind::Rate),
            3 => Some(MetricKind::Gauge),
            _ => None,
        }
    }
}

/// An HTTP request, as the guest hands it to [`imports::HTTP_REQUEST`]
/// (encoded by [`wire::encode_request`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... (any token).
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The request body; empty for none.
    #[serde(default, with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Gives up after this many milliseconds; `None` (or
    /// [`wire::NO_TIMEOUT`]) uses the host's default (60 s), and the
    /// iteration timeout always applies.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Extra tags for this request's metrics. A `name` tag replaces the URL in
    /// metric tags, which keeps URLs with ids from making one series each.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The request's options as key and value (ABI 3, see
    /// [`RequestOptions`]), in the order encoded; `None` for a version 2
    /// request, which the host sends without the cookie jar and without
    /// following redirects. Unknown keys are kept and ignored, so a newer
    /// SDK's options reach an older host harmlessly.
    #[serde(default)]
    pub options: Option<Vec<(String, String)>>,
}

/// The options of a version 3 request, read from
/// [`HttpRequest::options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// The most redirects followed (key [`RequestOptions::REDIRECTS`],
    /// a decimal number; default [`RequestOptions::DEFAULT_REDIRECTS`], as
    /// k6's `maxRedirects`); 0 returns the redirect itself.
    pub max_redirects: u32,
    /// Whether the host reads the body without handing it over (key
    /// [`RequestOptions::BODY`], value `discard`), as k6's
    /// `responseType: 'none'`.
    pub discard_body: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            max_redirects: RequestOptions::DEFAULT_REDIRECTS,
            discard_body: false,
        }
    }
}

impl RequestOptions {
    /// The key of [`RequestOptions::max_redirects`].
    pub const REDIRECTS: &'static str = "redirects";
    /// The key of [`RequestOptions::discard_body`].
    pub const BODY: &'static str = "body";
    /// Redirects followed when a request does not say: 10, as k6.
    pub const DEFAULT_REDIRECTS: u32 = 10;
    /// The most redirects a request may ask to follow.
    pub const MAX_REDIRECTS: u32 = 100;

    /// Reads options from their keys and values (the last of a key wins;
    /// unknown keys are ignored). A known key with a value that means
    /// nothing is an error that names it.
    pub fn parse(pairs: &[(String, String)]) -> Result<RequestOptions, String> {
        let mut options = RequestOptions::default();
        for (key, value) in pairs {
            match key.as_str() {
                RequestOptions::REDIRECTS => {
                    options.max_redirects = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= RequestOptions::MAX_REDIRECTS)
                        .ok_or_else(|| {
                            format!(
                                "the option `redirects` is {value:?}, not a number of redirects in 0..={}",
                                RequestOptions::MAX_REDIRECTS
                            )
                        })?;
                }
                RequestOptions::BODY => {
                    options.discard_body = match value.as_str() {
                        "discard" => true,
                        "keep" => false,
                        _ => {
                            return Err(format!(
                                "the option `body` is {value:?}, not `discard` or `keep`"
                            ));
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(options)
    }

    /// The keys and values of the options that differ from the defaults.
    pub fn to_pairs(self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if self.max_redirects != RequestOptions::DEFAULT_REDIRECTS {
            pairs.push((
                RequestOptions::REDIRECTS.to_owned(),
                self.max_redirects.to_string(),
            ));
        }
        if self.discard_body {
            pairs.push((RequestOptions::BODY.to_owned(), "discard".to_owned()));
        }
        pairs
    }
}

/// The answer to an [`HttpRequest`], as the host returns it (encoded by
/// [`wire::ResponseWriter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HttpResponse {
    /// The HTTP status, or 0 when no response arrived (see `error`).
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2`; empty when no response arrived.
    #[serde(default)]
    pub protocol: String,
    /// Response header names (lower case) and values, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The whole response body.
    #[serde(default, with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Where the time went.
    #[serde(default)]
    pub timings: Timings,
    /// Why no response arrived, if none did.
    #[serde(default)]
    pub error: Option<HttpError>,
    /// The URL of the last request made (after redirects), when the host
    /// says it: in answer to a version 3 request.
    #[serde(default)]
    pub url: Option<String>,
}

/// Per-request timings in microseconds, in the order they happen.
///
/// Phases that did not happen (no new connection, no TLS) are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// Resolving the host name.
    pub dns_us: u64,
    /// Establishing the TCP connection.
    pub connect_us: u64,
    /// The TLS handshake.
    pub tls_us: u64,
    /// Writing the request.
    pub sending_us: u64,
    /// From the request written to the first byte of the response (TTFB).
    pub waiting_us: u64,
    /// Reading the response body.
    pub receiving_us: u64,
    /// `sending + waiting + receiving`: k6's `http_req_duration`.
    pub duration_us: u64,
    /// Everything, connection setup included.
    pub total_us: u64,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// What class of failure it was.
    pub kind: ErrorKind,
    /// A human-readable description.
    pub message: String,
}

/// Classes of request failure. They are also the `kind` tag of the `errors`
/// metric, next to `status_4xx` and `status_5xx` for answered requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host name did not resolve.
    Dns,
    /// The connection was refused.
    Refused,
    /// The request or connection timed out.
    Timeout,
    /// The connection was reset or closed mid-request.
    Reset,
    /// The TLS handshake failed.
    Tls,
    /// Another connect failure (unreachable network, no route).
    Connect,
    /// The URL, method or a header was invalid.
    InvalidRequest,
    /// The peer broke the HTTP protocol.
    Protocol,
    /// A redirect was still the answer after the most redirects the
    /// request allowed (ABI 3 only: a version 2 request follows none).
    TooManyRedirects,
}

impl ErrorKind {
    const ALL: [ErrorKind; 9] = [
        ErrorKind::Dns,
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Tls,
        ErrorKind::Connect,
        ErrorKind::InvalidRequest,
        ErrorKind::Protocol,
        ErrorKind::TooManyRedirects,
    ];

    /// The wire code of this kind, from 1 in the order of the variants (0
    /// means no error).
    pub fn code(self) -> u8 {
        match self {
            ErrorKind::Dns => 1,
            ErrorKind::Refused => 2,
            ErrorKind::Timeout => 3,
            ErrorKind::Reset => 4,
            ErrorKind::Tls => 5,
            ErrorKind::Connect => 6,
            ErrorKind::InvalidRequest => 7,
            ErrorKind::Protocol => 8,
            ErrorKind::TooManyRedirects => 9,
        }
    }

    /// The kind for a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The tag value used in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Tls => "tls",
            ErrorKind::Connect => "connect",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Protocol => "protocol",
            ErrorKind::TooManyRedirects => "too_many_redirects",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_kind_codes_round_trip() {
        for kind in [
            MetricKind::Counter,
            MetricKind::Trend,
            MetricKind::Rate,
            MetricKind::Gauge,
        ] {
            assert_eq!(MetricKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(MetricKind::from_code(9), None);
    }

    #[test]
    fn error_kind_codes_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code(0), None);
        assert_eq!(ErrorKind::from_code(10), None);
    }

    #[test]
    fn request_options_read_what_they_write_and_name_bad_values() {
        let none = RequestOptions::parse(&[]);
        assert_eq!(none, Ok(RequestOptions::default()));
        let set = RequestOptions {
            max_redirects: 0,
            discard_body: true,
        };
        assert_eq!(RequestOptions::parse(&set.to_pairs()), Ok(set));
        assert!(RequestOptions::default().to_pairs().is_empty());
        let pair = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(
            RequestOptions::parse(&pair("future", "x")),
            Ok(RequestOptions::default()),
            "unknown keys are ignored"
        );
        for bad in [
            pair("redirects", "-1"),
            pair("redirects", "101"),
            pair("body", "drop"),
        ] {
            let e = RequestOptions::parse(&bad).err().unwrap_or_default();
            assert!(e.contains(&bad[0].0), "{e}");
        }
    }
}
