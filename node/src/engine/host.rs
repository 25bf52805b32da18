//! The host functions a scenario imports from the `fusi` module.
//!
//! Each one validates what the guest passes (bounds, UTF-8, encodings, sizes): a
//! broken or hostile scenario gets a trap that fails its iteration, never a
//! panic in the node. The names and signatures are those of
//! [`fusi_sdk::abi::imports`], the one definition of the ABI.

use std::time::Duration;

use fusi_sdk::abi::{self, ErrorKind, MetricKind, imports, wire};
use tokio::time::Instant;
use wasmtime::{Caller, Linker, Memory};

use super::data::Drawn;
use super::http::{Answer, Exchange, Sent, request_method, request_name};
use super::recorder::RequestTags;
use super::redirects;
use super::vu::{HostTrap, VuState};
use super::ws::{Received, WsFailure};
use crate::core::metrics::{SeriesKey, names, valid_metric_name};
use crate::core::printable::escape_controls;

/// Every import the host provides, for telling a newer module's imports apart.
pub const IMPORTS: [&str; 25] = [
    imports::HTTP_REQUEST,
    imports::RESULT_READ,
    imports::SLEEP_MS,
    imports::CHECK,
    imports::GROUP_ENTER,
    imports::GROUP_EXIT,
    imports::TAG_SET,
    imports::TAG_REMOVE,
    imports::METRIC_ADD,
    imports::VU_ID,
    imports::ITERATION_NUMBER,
    imports::ENV_GET,
    imports::LOG,
    imports::EXPECTED_STATUSES,
    imports::COOKIES_CLEAR,
    imports::COOKIE_GET,
    imports::DATA_LEN,
    imports::DATA_ROW,
    imports::DATA_NEXT,
    imports::SETUP_DATA_SET,
    imports::SETUP_DATA_GET,
    imports::WS_CONNECT,
    imports::WS_SEND,
    imports::WS_RECV,
    imports::WS_CLOSE,
];

/// The largest request a scenario may hand to `http_request`.
const MAX_REQUEST_BYTES: u32 = 64 << 20;
/// The longest URL `cookie_get` takes.
const MAX_URL: u32 = 64 << 10;
/// The longest name, tag key or tag value.
const MAX_NAME: u32 = 1024;
/// The most VU tags.
const MAX_TAGS: usize = 32;
/// A result buffer larger than this is not kept for the next call.
const KEEP_RESULT_BYTES: usize = 64 << 10;
/// The longest log message kept.
const MAX_LOG: u32 = 64 << 10;

/// The most of a panic message kept for the failure it explains.
const MAX_PANIC_MESSAGE: usize = 1024;

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
/// Tags the host (or the report, for `region`; the run, for `scenario`)
/// sets itself; a scenario may not set them as VU tags.
const RESERVED_TAGS: [&str; 8] = [
    crate::core::spec::SCENARIO_TAG,
    "name",
    crate::core::report::REGION_TAG,
    "method",
    "status",
    "group",
    "check",
    "kind",
];

type HostResult<T> = wasmtime::Result<T>;

fn abi_error(what: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostTrap::Abi(what.into()))
}

/// The module's exported memory, which the loader made sure exists.
fn memory(caller: &Caller<'_, VuState>) -> HostResult<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| abi_error("the module exports no memory"))
}

/// The `len` bytes at `ptr` in `data` (the guest's memory), at most `max`.
fn slice<'a>(data: &'a [u8], ptr: u32, len: u32, max: u32, what: &str) -> HostResult<&'a [u8]> {
    if len > max {
        return Err(abi_error(format!(
            "{what} is {len} bytes, more than the {max} allowed"
        )));
    }
    let start = ptr as usize;
    let end = start + len as usize;
    data.get(start..end).ok_or_else(|| {
        abi_error(format!(
            "{what} at {ptr}+{len} is outside the module's memory"
        ))
    })
}

/// The UTF-8 string of at most [`MAX_NAME`] bytes at `ptr` in `data`.
fn str_at<'a>(data: &'a [u8], ptr: u32, len: u32, what: &str) -> HostResult<&'a str> {
    let bytes = slice(data, ptr, len, MAX_NAME, what)?;
    std::str::from_utf8(bytes).map_err(|_| abi_error(format!("{what} is not UTF-8")))
}

fn read(
    caller: &mut Caller<'_, VuState>,
    ptr: u32,
    len: u32,
    max: u32,
    what: &str,
) -> HostResult<Vec<u8>> {
    let memory = memory(caller)?;
    slice(memory.data(&caller), ptr, len, max, what).map(<[u8]>::to_vec)
}

fn read_str(
    caller: &mut Caller<'_, VuState>,
    ptr: u32,
    len: u32,
    what: &str,
) -> HostResult<String> {
    let bytes = read(caller, ptr, len, MAX_NAME, what)?;
    String::from_utf8(bytes).map_err(|_| abi_error(format!("{what} is not UTF-8")))
}

/// Records one request (one hop of a redirected one) and says the first
/// few failures of each kind.
fn record(state: &mut VuState, req: &abi::HttpRequest, answer: &Answer, exchange: &Exchange) {
    let tags = RequestTags {
        method: &request_method(req),
        name: request_name(req),
        tags: &req.tags,
    };
    let expected = state
        .expected_statuses
        .as_ref()
        .unwrap_or(&state.run.expected_statuses);
    state
        .run
        .recorder
        .http(state.base_tags(), tags, answer, exchange, expected);
    if let Some(error) = &answer.error {
        note_request_error(state, tags.method, &req.url, error);
    }
}

/// Says a failed request in the log and the run's notes, the first few of
/// each kind. Out of line: see [`http_hop`].
#[cold]
#[inline(never)]
fn note_request_error(state: &VuState, method: &str, url: &str, error: &abi::HttpError) {
    if !state.run.request_errors.note(error.kind.as_str()) {
        return;
    }
    let text = format!("{} {}: {}", method, url.escape_debug(), error.message);
    tracing::warn!(
        "request failed ({}): {}",
        error.kind.as_str(),
        escape_controls(text.chars())
    );
    state
        .run
        .recorder
        .note(format!("http:{}", error.kind.as_str()), text);
}

/// The deadlines and the redirect budget of an HTTP host call.
struct Hops {
    /// The iteration's deadline.
    deadline: Instant,
    /// Every hop's: the request's own timeout, from its first hop, within
    /// the iteration's deadline (k6 shares it among hops too).
    chain_deadline: Instant,
    max_redirects: u32,
}

// The HTTP host call's steps before, between and after its sends. Each is
// a function of its own, not inlined into the call's future: the future is
// polled on the VU's fiber stack, a stack keeps every page it ever
// touched, and a future's poll frame is as large as everything inlined
// into it (2 KiB when it was one block). Split so, a request takes the
// stack 1.3 KiB less deep; the pages it still touches below a sleeping
// VU's are given back when the VU sleeps ([`super::stack`]).

/// Reads and checks the guest's request; a bad request or response buffer
/// traps before anything is sent.
#[inline(never)]
fn http_begin(
    caller: &mut Caller<'_, VuState>,
    req_ptr: u32,
    req_len: u32,
    buf_ptr: u32,
    buf_len: u32,
) -> HostResult<(abi::HttpRequest, Hops)> {
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    let bytes = slice(data, req_ptr, req_len, MAX_REQUEST_BYTES, "the request")?;
    let req = wire::decode_request(bytes)
        .map_err(|e| abi_error(format!("the request does not decode: {e}")))?;
    slice(data, buf_ptr, buf_len, u32::MAX, "the response buffer")?;
    let state = caller.data();
    if state.run.stop.is_cancelled() || !state.run.gate.open() {
        return Err(wasmtime::Error::new(HostTrap::Stopped));
    }
    let deadline = state.deadline;
    let max_redirects = match &req.options {
        Some(pairs) => {
            fusi_sdk::abi::RequestOptions::parse(pairs)
                .map_err(|e| abi_error(format!("the request does not decode: {e}")))?
                .max_redirects
        }
        None => 0,
    };
    let own = req
        .timeout_ms
        .map_or(super::http::DEFAULT_TIMEOUT, Duration::from_millis);
    let hops = Hops {
        deadline,
        chain_deadline: deadline.min(Instant::now() + own),
        max_redirects,
    };
    Ok((req, hops))
}

/// Records one hop's exchange and says where to go next, if anywhere.
/// `first_url` is set when the first redirect is followed: a request that
/// is not redirected copies nothing.
#[inline(never)]
fn http_hop(
    state: &mut VuState,
    done: &mut Sent,
    hop: u32,
    max_redirects: u32,
    first_url: &mut Option<String>,
) -> Option<abi::HttpRequest> {
    let (_, req, answer, exchange) = &mut **done;
    // A stopping run follows no more redirects: the scenario gets the
    // redirect it has. Asked only of a redirect.
    let run = &state.run;
    let stopping = || run.stop.is_cancelled() || !run.gate.open();
    let to = redirects::next_hop(req, answer, hop, max_redirects, stopping);
    if to.is_some() {
        first_url.get_or_insert_with(|| req.url.clone());
    }
    if let Some(first_url) = first_url
        && let Some(error) = &mut answer.error
    {
        error.message = format!(
            "redirect {hop} from {first_url}, to {}: {}",
            req.url, error.message
        );
    }
    record(state, req, answer, exchange);
    to
}

/// Hands the guest its response: in its buffer when it fits, else in the
/// result buffer for `result_read`; returns the response's length. A
/// request cut by the iteration's deadline traps.
///
/// The response is written straight into the guest's buffer: the result
/// buffer, a VU's own and cold by its next request, is written only for a
/// response that does not fit.
#[inline(never)]
fn http_end(
    caller: &mut Caller<'_, VuState>,
    deadline: Instant,
    req: &abi::HttpRequest,
    answer: &Answer,
    buf_ptr: u32,
    buf_len: u32,
) -> HostResult<i32> {
    let cut = answer
        .error
        .as_ref()
        .is_some_and(|e| e.kind == ErrorKind::Timeout);
    if cut && Instant::now() >= deadline {
        return Err(wasmtime::Error::new(HostTrap::Timeout));
    }
    let url = req.options.is_some().then_some(req.url.as_str());
    let (data, state) = memory(caller)?.data_and_store_mut(&mut *caller);
    let start = buf_ptr as usize;
    let buf = data
        .get_mut(start..start + buf_len as usize)
        .ok_or_else(|| {
            abi_error(format!(
                "the response buffer at {buf_ptr}+{buf_len} is outside the module's memory"
            ))
        })?;
    let mut filling = wire::Filling::new(buf);
    answer.encode(&mut filling, url);
    let n = match filling.written() {
        Some(n) => {
            state.result.clear();
            if state.result.capacity() > KEEP_RESULT_BYTES {
                state.result = Vec::new();
            }
            n
        }
        None => {
            let mut out = std::mem::take(&mut state.result);
            out.clear();
            answer.encode(&mut out, url);
            let n = out.len();
            state.result = out;
            n
        }
    };
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

/// What a `ws_*` call returns to the guest for `result`, leaving what
/// goes with it in the result buffer (see [`abi::ws`]); a failure's first
/// few of each kind are said, with `what` (the URL of a connect) before
/// the reason. A call cut by the iteration's deadline or the run's stop
/// traps.
fn ws_answer(state: &mut VuState, result: Result<i32, WsFailure>, what: &str) -> HostResult<i32> {
    match result {
        Ok(n) => Ok(n),
        Err(WsFailure::Timeout) => Ok(abi::ws::TIMEOUT),
        Err(WsFailure::Closed(close)) => {
            state.result.clear();
            if let Some((code, reason)) = close {
                state.result.extend_from_slice(&code.to_be_bytes());
                state.result.extend_from_slice(reason.as_bytes());
            }
            Ok(abi::ws::CLOSED)
        }
        Err(WsFailure::Failed(kind, mut message)) => {
            if !what.is_empty() {
                message = format!("{what}: {message}");
            }
            if state.run.socket_errors.note(kind.as_str()) {
                tracing::warn!(
                    "WebSocket failed ({}): {}",
                    kind.as_str(),
                    escape_controls(message.chars())
                );
                state
                    .run
                    .recorder
                    .note(format!("ws:{}", kind.as_str()), message.clone());
            }
            truncate_at_char(&mut message, abi::ws::MAX_ERROR_MESSAGE);
            state.result.clear();
            state.result.push(kind.code());
            state.result.extend_from_slice(message.as_bytes());
            Ok(abi::ws::FAILED)
        }
        Err(WsFailure::Deadline) => Err(wasmtime::Error::new(HostTrap::Timeout)),
        Err(WsFailure::Stopped) => Err(wasmtime::Error::new(HostTrap::Stopped)),
    }
}

/// Whether the run stops, or this share may no longer send.
fn stopping(state: &VuState) -> bool {
    state.run.stop.is_cancelled() || !state.run.gate.open()
}

/// Registers the WebSocket imports (ABI 4).
fn add_ws_to_linker(linker: &mut Linker<VuState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;

    linker.func_wrap_async(
        m,
        imports::WS_CONNECT,
        |mut caller: Caller<'_, VuState>, (req_ptr, req_len): (u32, u32)| {
            super::boxed::boxed(|| async move {
                let memory = memory(&caller)?;
                let bytes = slice(
                    memory.data(&caller),
                    req_ptr,
                    req_len,
                    MAX_URL * 4,
                    "the WebSocket request",
                )?;
                let req = wire::decode_request(bytes).map_err(|e| {
                    abi_error(format!("the WebSocket request does not decode: {e}"))
                })?;
                let state = caller.data_mut();
                if stopping(state) {
                    return Err(wasmtime::Error::new(HostTrap::Stopped));
                }
                let run = state.run.clone();
                let base = state.base_tags().to_vec();
                let deadline = state.deadline;
                let result = state
                    .ws
                    .connect(&req, &base, &mut state.http.jar, deadline, &run.recorder)
                    .await;
                ws_answer(state, result, &req.url)
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::WS_SEND,
        |mut caller: Caller<'_, VuState>, (handle, kind, ptr, len): (i32, i32, u32, u32)| {
            super::boxed::boxed(|| async move {
                let data = read(&mut caller, ptr, len, u32::MAX, "the WebSocket message")?;
                let state = caller.data_mut();
                if stopping(state) {
                    return Err(wasmtime::Error::new(HostTrap::Stopped));
                }
                let run = state.run.clone();
                let deadline = state.deadline;
                let result = state
                    .ws
                    .send(handle, kind, data, deadline, &run.recorder)
                    .await;
                ws_answer(state, result.map(|()| 0), "")
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::WS_RECV,
        |mut caller: Caller<'_, VuState>, (handle, timeout_ms): (i32, i64)| {
            super::boxed::boxed(|| async move {
                let state = caller.data_mut();
                let run = state.run.clone();
                let timeout =
                    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0).min(86_400_000));
                let deadline = state.deadline;
                let result = state
                    .ws
                    .recv(handle, timeout, deadline, &run.stop, &run.recorder)
                    .await;
                let result = result.map(|message| {
                    let (kind, payload): (i32, &[u8]) = match &message {
                        Received::Text(text) => (abi::ws::TEXT, text.as_bytes()),
                        Received::Binary(bytes) => (abi::ws::BINARY, bytes),
                    };
                    state.result.clear();
                    state.result.push(kind as u8);
                    state.result.extend_from_slice(payload);
                    i32::try_from(state.result.len()).unwrap_or(i32::MAX)
                });
                ws_answer(state, result, "")
            })
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::WS_CLOSE,
        |mut caller: Caller<'_, VuState>, (handle, code): (i32, i32)| {
            super::boxed::boxed(|| async move {
                let state = caller.data_mut();
                let run = state.run.clone();
                let deadline = state.deadline;
                state.ws.close(handle, code, deadline, &run.recorder).await;
                Ok(())
            })
        },
    )?;

    Ok(())
}

/// Registers every host function.
pub fn add_to_linker(linker: &mut Linker<VuState>) -> wasmtime::Result<()> {
    add_ws_to_linker(linker)?;
    let m = abi::IMPORT_MODULE;

    linker.func_wrap_async(
        m,
        imports::HTTP_REQUEST,
        |mut caller: Caller<'_, VuState>,
         (req_ptr, req_len, buf_ptr, buf_len): (u32, u32, u32, u32)| {
            super::boxed::boxed(|| async move {
                let (mut next, hops) = http_begin(&mut caller, req_ptr, req_len, buf_ptr, buf_len)?;
                let mut hop = 0u32;
                let mut first_url: Option<String> = None;
                let done = loop {
                    let state = caller.data_mut();
                    let mut done = if state.driven {
                        state
                            .courier
                            .hand(state.http.handed(next, hops.chain_deadline));
                        let courier = &caller.data().courier;
                        let done = std::future::poll_fn(|_| courier.take()).await;
                        caller.data_mut().http.take_back(done)
                    } else {
                        state.http.send_on_task(next, hops.chain_deadline).await
                    };
                    match http_hop(
                        caller.data_mut(),
                        &mut done,
                        hop,
                        hops.max_redirects,
                        &mut first_url,
                    ) {
                        Some(to) => next = to,
                        None => break done,
                    }
                    hop += 1;
                };
                http_end(
                    &mut caller,
                    hops.deadline,
                    &done.1,
                    &done.2,
                    buf_ptr,
                    buf_len,
                )
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::RESULT_READ,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32| -> HostResult<i32> {
            let result = std::mem::take(&mut caller.data_mut().result);
            let n = result.len().min(len as usize);
            memory(&caller)?
                .write(&mut caller, ptr as usize, &result[..n])
                .map_err(|_| {
                    abi_error(format!(
                        "result_read at {ptr}+{n} is outside the module's memory"
                    ))
                })?;
            Ok(i32::try_from(n).unwrap_or(i32::MAX))
        },
    )?;

    linker.func_wrap_async(
        m,
        imports::SLEEP_MS,
        |caller: Caller<'_, VuState>, (ms,): (i64,)| {
            if ms >= super::stack::RELEASE_SLEEP_MS {
                let _ = super::stack::release_below();
            }
            super::boxed::boxed(|| async move {
                let state = caller.data();
                let stop = state.run.stop.clone();
                let deadline = state.deadline;
                let wanted = Duration::from_millis(u64::try_from(ms).unwrap_or(0).min(86_400_000));
                let wake = Instant::now() + wanted;
                let (until, on_time) = if wake > deadline {
                    (deadline, false)
                } else {
                    (wake, true)
                };
                tokio::select! {
                    () = stop.cancelled() => Err(wasmtime::Error::new(HostTrap::Stopped)),
                    () = tokio::time::sleep_until(until) => {
                        if on_time { Ok(()) } else { Err(wasmtime::Error::new(HostTrap::Timeout)) }
                    }
                }
            })
        },
    )?;

    linker.func_wrap(
        m,
        imports::CHECK,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32, passed: i32| -> HostResult<()> {
            let memory = memory(&caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let name = str_at(data, ptr, len, "the check name")?;
            state
                .run
                .recorder
                .check(state.base_tags(), name, passed != 0);
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::GROUP_ENTER,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32| -> HostResult<()> {
            let name = read_str(&mut caller, ptr, len, "the group name")?;
            if name.is_empty() || name.contains("::") {
                return Err(abi_error(format!(
                    "invalid group name {name:?}: it must be non-empty and contain no '::'"
                )));
            }
            let state = caller.data_mut();
            if state.group_depth() >= 16 {
                return Err(abi_error("groups nest more than 16 deep"));
            }
            let path = format!("{}::{name}", state.group_path());
            state.enter_group(path);
            Ok(())
        },
    )?;

    linker.func_wrap(m, imports::GROUP_EXIT, |mut caller: Caller<'_, VuState>| {
        let state = caller.data_mut();
        if let Some((path, started)) = state.exit_group() {
            let tags = state.tags_with_group(&path);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            state.run.recorder.add(
                SeriesKey::new(names::GROUP_DURATION, tags),
                MetricKind::Trend,
                ms,
            );
        }
    })?;

    linker.func_wrap(
        m,
        imports::TAG_SET,
        |mut caller: Caller<'_, VuState>, kp: u32, kl: u32, vp: u32, vl: u32| -> HostResult<()> {
            let key = read_str(&mut caller, kp, kl, "the tag key")?;
            let value = read_str(&mut caller, vp, vl, "the tag value")?;
            if key.is_empty() || RESERVED_TAGS.contains(&key.as_str()) {
                return Err(abi_error(format!(
                    "the tag key {key:?} is empty or reserved (reserved: {})",
                    RESERVED_TAGS.join(", ")
                )));
            }
            let state = caller.data_mut();
            if state.tags().len() >= MAX_TAGS && !state.tags().contains_key(&key) {
                return Err(abi_error(format!("a VU may set at most {MAX_TAGS} tags")));
            }
            state.set_tag(key, value);
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::TAG_REMOVE,
        |mut caller: Caller<'_, VuState>, kp: u32, kl: u32| -> HostResult<()> {
            let key = read_str(&mut caller, kp, kl, "the tag key")?;
            // The `scenario` tag is the run's: per-scenario counts rely on it.
            if key != crate::core::spec::SCENARIO_TAG {
                caller.data_mut().remove_tag(&key);
            }
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::METRIC_ADD,
        |mut caller: Caller<'_, VuState>, kind: i32, ptr: u32, len: u32, value: f64| -> HostResult<()> {
            let kind = MetricKind::from_code(kind).ok_or_else(|| abi_error(format!("unknown metric kind {kind}")))?;
            let name = read_str(&mut caller, ptr, len, "the metric name")?;
            if !valid_metric_name(&name) || crate::core::report::is_builtin(&name) {
                return Err(abi_error(format!(
                    "invalid metric name {name:?}: use letters, digits, '_' and '.', not starting with a digit, \
                     and not the name of a built-in metric"
                )));
            }
            if !value.is_finite() {
                return Err(abi_error(format!(
                    "metric {name} got the value {value}: record finite numbers"
                )));
            }
            let state = caller.data();
            state
                .run
                .recorder
                .add(SeriesKey::new(&name, state.base_tags().to_vec()), kind, value);
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::DATA_LEN,
        |mut caller: Caller<'_, VuState>, np: u32, nl: u32| -> HostResult<i64> {
            let name = read_str(&mut caller, np, nl, "the data set's name")?;
            let rows = caller.data().run.data.len(&name);
            Ok(rows.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)))
        },
    )?;

    linker.func_wrap(
        m,
        imports::DATA_ROW,
        |mut caller: Caller<'_, VuState>, np: u32, nl: u32, index: i64| -> HostResult<i32> {
            let name = read_str(&mut caller, np, nl, "the data set's name")?;
            let state = caller.data_mut();
            let data = state.run.data.clone();
            let Some(row) = data.row(&name, u64::try_from(index).unwrap_or(u64::MAX)) else {
                return Ok(-1);
            };
            let Some(row) = row else {
                return Ok(-2);
            };
            state.result.clear();
            state.result.extend_from_slice(row);
            Ok(i32::try_from(row.len()).unwrap_or(i32::MAX))
        },
    )?;

    linker.func_wrap(
        m,
        imports::DATA_NEXT,
        |mut caller: Caller<'_, VuState>, np: u32, nl: u32| -> HostResult<i64> {
            let name = read_str(&mut caller, np, nl, "the data set's name")?;
            let state = caller.data();
            let (metric, answer) = match state.run.data.draw(&name) {
                Drawn::NoSet => return Ok(-1),
                Drawn::Row(i) => (names::DATA_ROWS_USED, i64::try_from(i).unwrap_or(i64::MAX)),
                Drawn::RanOut => (names::DATA_EXHAUSTED, -2),
            };
            let key = SeriesKey::new(metric, [("data".to_owned(), name)]);
            state.run.recorder.add(key, MetricKind::Counter, 1.0);
            Ok(answer)
        },
    )?;

    linker.func_wrap(
        m,
        imports::SETUP_DATA_SET,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32| -> HostResult<()> {
            if caller.data().vu_id != 0 {
                return Err(abi_error("only `setup` may hand on setup data"));
            }
            let max = u32::try_from(abi::MAX_SETUP_DATA_BYTES).unwrap_or(u32::MAX);
            if len > max {
                return Err(abi_error(format!(
                    "setup returned {len} bytes, more than the {} KiB that travel with a run: \
                     return less (an id, a token), or ship the data with --data",
                    max >> 10
                )));
            }
            let bytes = read(&mut caller, ptr, len, max, "the setup data")?;
            caller.data_mut().setup_out = Some(bytes);
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::SETUP_DATA_GET,
        |mut caller: Caller<'_, VuState>| -> i32 {
            let state = caller.data_mut();
            let data = match (&state.setup_out, &state.run.setup_data) {
                (Some(own), _) => own.clone(),
                (None, Some(run)) => run.to_vec(),
                (None, None) => return -1,
            };
            state.result = data;
            i32::try_from(state.result.len()).unwrap_or(i32::MAX)
        },
    )?;

    linker.func_wrap(m, imports::VU_ID, |caller: Caller<'_, VuState>| -> i64 {
        i64::try_from(caller.data().vu_id).unwrap_or(i64::MAX)
    })?;

    linker.func_wrap(
        m,
        imports::ITERATION_NUMBER,
        |caller: Caller<'_, VuState>| -> i64 {
            i64::try_from(caller.data().iteration).unwrap_or(i64::MAX)
        },
    )?;

    linker.func_wrap(
        m,
        imports::ENV_GET,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32| -> HostResult<i32> {
            let key = read_str(&mut caller, ptr, len, "the env key")?;
            let state = caller.data_mut();
            match state.scenario.env.get(&key) {
                Some(v) => {
                    state.result = v.clone().into_bytes();
                    Ok(i32::try_from(state.result.len()).unwrap_or(i32::MAX))
                }
                None => Ok(-1),
            }
        },
    )?;

    linker.func_wrap(
        m,
        imports::LOG,
        |mut caller: Caller<'_, VuState>, level: i32, ptr: u32, len: u32| -> HostResult<()> {
            let bytes = read(
                &mut caller,
                ptr,
                len.min(MAX_LOG),
                MAX_LOG,
                "the log message",
            )?;
            let msg = String::from_utf8_lossy(&bytes);
            let vu = caller.data().vu_id;
            if level == abi::PANIC_LEVEL {
                let mut message = msg.into_owned();
                truncate_at_char(&mut message, MAX_PANIC_MESSAGE);
                caller.data_mut().panic = Some(message);
                return Ok(());
            }
            match level {
                0 => tracing::error!(target: "scenario", vu, "{msg}"),
                1 => tracing::warn!(target: "scenario", vu, "{msg}"),
                2 => tracing::info!(target: "scenario", vu, "{msg}"),
                _ => tracing::debug!(target: "scenario", vu, "{msg}"),
            }
            Ok(())
        },
    )?;

    linker.func_wrap(
        m,
        imports::COOKIES_CLEAR,
        |mut caller: Caller<'_, VuState>| {
            caller.data_mut().http.jar.clear();
        },
    )?;

    linker.func_wrap(
        m,
        imports::COOKIE_GET,
        |mut caller: Caller<'_, VuState>, up: u32, ul: u32, np: u32, nl: u32| -> HostResult<i32> {
            let url = read(&mut caller, up, ul, MAX_URL, "the cookie's URL")?;
            let url =
                String::from_utf8(url).map_err(|_| abi_error("the cookie's URL is not UTF-8"))?;
            let name = read_str(&mut caller, np, nl, "the cookie's name")?;
            let state = caller.data_mut();
            match state.http.cookie(&url, &name).map_err(abi_error)? {
                Some(value) => {
                    state.result = value.into_bytes();
                    Ok(i32::try_from(state.result.len()).unwrap_or(i32::MAX))
                }
                None => Ok(-1),
            }
        },
    )?;

    linker.func_wrap(
        m,
        imports::EXPECTED_STATUSES,
        |mut caller: Caller<'_, VuState>, ptr: u32, len: u32| -> HostResult<()> {
            let text = read_str(&mut caller, ptr, len, "the expected statuses")?;
            caller.data_mut().expected_statuses = if text.is_empty() {
                None
            } else {
                Some(text.parse().map_err(|e| abi_error(format!("{e}")))?)
            };
            Ok(())
        },
    )?;

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_checked() {
        assert!(valid_metric_name("items_created"));
        assert!(valid_metric_name("cache.hit"));
        for bad in ["", "1x", "has space", "dash-ed", &"x".repeat(200)] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_import_list_matches_the_sdk() {
        // Every import the SDK declares must be provided, and only once.
        let mut seen = IMPORTS.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), IMPORTS.len());
    }
}
