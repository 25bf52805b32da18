//! Serves the local API: each request becomes a [`Query`] to the node's
//! event loop, whose answer is sent back as JSON. Errors come back as
//! `{"error": MESSAGE}` with a status that says what kind of problem it is.
//!
//! Before a request reaches a route it passes, in this order: no `Origin`
//! header (403: browsers add one to every cross-origin request, so no web
//! page gets further), a loopback `Host` (403: no DNS rebinding), and the
//! [`ApiToken`] as `Authorization: Bearer HEX` (401), which every route but
//! the challenge `GET /v1/hello` and the dashboard's embedded files
//! ([`super::dashboard`]) need. A submission must be
//! `Content-Type: application/cbor` (415). At most
//! [`MAX_CONNECTIONS`] connections are served at once, and a client has
//! [`HEADER_TIMEOUT`] to send a request's headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dashboard::{self, ApiBody, MAX_STREAMS};
use super::token::{
    ApiToken, MAX_NONCE_BYTES, NONCE_BYTES, TOKEN_ENV, TOKEN_FILE, from_hex, to_hex,
};
use super::{HelloView, Query, SubmitRequest};
use crate::core::data::MAX_DATA_BYTES;
use crate::core::module_name::MAX_MODULE_BYTES;
use crate::engine::module::{MemoryLayout, ScenarioModule};

/// The most API connections served at once: the CLI opens one at a time,
/// so this bounds only what a misbehaving client can hold.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers, and so how
/// long an idle connection stays open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The challenge's path: the one route that needs no token.
pub const HELLO_PATH: &str = "/v1/hello";

/// The media type of a submission.
pub const CBOR: &str = "application/cbor";

/// What a connection beyond [`MAX_CONNECTIONS`] is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 80\r\n\r\n\
{\"error\": \"the fusi-node API has too many open connections; try again shortly\"}\n";

/// Binds the API address; it must be a loopback address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--api {addr} is not a loopback address; the API listens on 127.0.0.1 or ::1 only \
             (reach a remote node through ssh -L, with FUSI_API_TOKEN set to its token)"
        );
    }
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for the API on {addr}: {e}; pick another address with --api (port 0 picks a free one)"
        )
    })
}

/// How much of the node a client may hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once.
    connections: usize,
    /// The time to send a request's headers.
    header_timeout: Duration,
}

/// Answers API requests that carry `token` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    token: ApiToken,
    shutdown: CancellationToken,
) {
    let limits = Limits {
        connections: MAX_CONNECTIONS,
        header_timeout: HEADER_TIMEOUT,
    };
    serve_with(listener, queries, token, limits, shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    token: ApiToken,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let token = Arc::new(token);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let streams = Arc::new(Semaphore::new(MAX_STREAMS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A fresh socket's send buffer is empty: this write does not block.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let queries = queries.clone();
        let token = token.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |req| handle(req, queries.clone(), token.clone(), streams.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// JSON encoded already, sent as it is.
fn raw_json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Whether the Host header names loopback: a DNS-rebinding page would send
/// its own host name.
fn host_is_local<B>(req: &Request<B>) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Sends a query to the event loop and waits for its answer; the error is
/// the response to send when the node is shutting down.
async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, Response<Full<Bytes>>> {
    let (tx, rx) = oneshot::channel();
    if queries.send(query(tx)).await.is_ok()
        && let Ok(answer) = rx.await
    {
        return Ok(answer);
    }
    Err(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is shutting down",
    ))
}

/// The largest `POST /v1/runs` body: the biggest module, the most data
/// files and room for the spec.
pub const MAX_SUBMIT_BYTES: usize = MAX_MODULE_BYTES + MAX_DATA_BYTES + (1 << 20);

/// The longest run id the API accepts.
pub const MAX_RUN_ID_LEN: usize = 64;

/// Whether `id` can be a run id: 1 to [`MAX_RUN_ID_LEN`] ASCII letters,
/// digits, `-` and `_`.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RUN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a request asks for, once its method and path were checked.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Hello,
    Status,
    Peers,
    Submit,
    Runs,
    Run(String),
    Stop(String),
    Report(String),
    Live(String),
    Events,
}

/// A request refused before it reaches the node: the status and why.
type Refusal = (StatusCode, String);

/// Maps a method and path to a [`Route`].
fn route(method: &Method, path: &str) -> Result<Route, Refusal> {
    let parts: Vec<&str> = path
        .strip_prefix("/v1/")
        .map(|rest| rest.split('/').collect())
        .unwrap_or_default();
    let (route, allowed) = match parts.as_slice() {
        ["hello"] => (Route::Hello, Method::GET),
        ["status"] => (Route::Status, Method::GET),
        ["peers"] => (Route::Peers, Method::GET),
        ["events"] => (Route::Events, Method::GET),
        ["runs"] if method == Method::POST => (Route::Submit, Method::POST),
        ["runs"] => (Route::Runs, Method::GET),
        ["runs", id, rest @ ..] => {
            if !valid_run_id(id) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{id:?} is not a run id: a run id is 1 to {MAX_RUN_ID_LEN} ASCII letters, digits, \
                         '-' and '_' (`fusi-node runs` lists them)"
                    ),
                ));
            }
            let id = (*id).to_owned();
            match rest {
                [] => (Route::Run(id), Method::GET),
                ["stop"] => (Route::Stop(id), Method::POST),
                ["report"] => (Route::Report(id), Method::GET),
                ["live"] => (Route::Live(id), Method::GET),
                _ => return Err(no_route(path)),
            }
        }
        _ => return Err(no_route(path)),
    };
    if method != allowed {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes {allowed}, not {method}"),
        ));
    }
    Ok(route)
}

fn no_route(path: &str) -> Refusal {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no route {path}; the API serves /v1/hello, /v1/status, /v1/peers, /v1/events, /v1/runs, \
             /v1/runs/ID, /v1/runs/ID/stop, /v1/runs/ID/report and /v1/runs/ID/live, and the \
             dashboard at /"
        ),
    )
}

/// Reads a body of at most `limit` bytes.
async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the submission is larger than {} MiB: a scenario module may be at most {} MiB \
                 (build it with --release, or strip it) and its --data files {} MiB together",
                limit >> 20,
                MAX_MODULE_BYTES >> 20,
                MAX_DATA_BYTES >> 20
            ),
        )),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// `POST /v1/runs`: decode, check the module compiles and the executor is
/// sound, then hand the run to the event loop.
async fn submit<B>(body: B, queries: &mpsc::Sender<Query>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = match read_limited(body, MAX_SUBMIT_BYTES).await {
        Ok(bytes) => bytes,
        Err((status, message)) => return error(status, &message),
    };
    let mut request = match SubmitRequest::decode(&bytes) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let module = std::mem::take(&mut request.module);
    let compiled = tokio::task::spawn_blocking(move || {
        ScenarioModule::compile(&module, MemoryLayout::Unchecked)
            .map(|m| (m.sha256().to_owned(), m.has_setup(), module))
    })
    .await;
    let has_setup = match compiled {
        Ok(Ok((sha256, has_setup, module))) => {
            request.spec.module_sha256 = sha256;
            request.module = module;
            has_setup
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("compiling the module failed inside the node: {e}"),
            );
        }
    };
    match ask(queries, |tx| {
        Query::Submit(Box::new(request), has_setup, tx)
    })
    .await
    {
        Ok(Ok(view)) => json(StatusCode::OK, &view),
        Ok(Err(message)) => error(StatusCode::BAD_REQUEST, &message),
        Err(response) => response,
    }
}

fn no_run(id: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        &format!("no run {id} on this node; `fusi-node runs` lists the runs it knows"),
    )
}

/// Answers `Ok` as JSON and `None` as 404.
fn found<T: Serialize>(id: &str, answer: Option<T>) -> Response<Full<Bytes>> {
    match answer {
        Some(view) => json(StatusCode::OK, &view),
        None => no_run(id),
    }
}

/// `POST /v1/runs/{id}/stop`: 404 for an unknown run, 409 when it cannot
/// be stopped (it already ended).
async fn stop(id: String, queries: &mpsc::Sender<Query>) -> Response<Full<Bytes>> {
    match ask(queries, |tx| Query::Run(id.clone(), tx)).await {
        Ok(Some(_)) => {}
        Ok(None) => return no_run(&id),
        Err(response) => return response,
    }
    match ask(queries, |tx| Query::Stop(id, tx)).await {
        Ok(Ok(view)) => json(StatusCode::OK, &view),
        Ok(Err(message)) => error(StatusCode::CONFLICT, &message),
        Err(response) => response,
    }
}

/// Whether the request carries `Authorization: Bearer TOKEN`; an error
/// says what is wrong with it.
fn authorized<B>(req: &Request<B>, token: &ApiToken) -> Result<(), &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err("this request has no API token");
    };
    let value = value.as_bytes();
    let credential = match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err("this request's Authorization is not `Bearer TOKEN`"),
    };
    if token.matches(credential) {
        Ok(())
    } else {
        Err("this request's API token is not this node's")
    }
}

/// The 401 answer: what was wrong and where the token is.
fn unauthorized(problem: &str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        &format!(
            "{problem}: send `Authorization: Bearer TOKEN`, with the token the node keeps in \
             {TOKEN_FILE} in its data directory (`fusi-node up --data-dir`; by default \
             ~/.local/share/fusi-node), or given to a CLI elsewhere as {TOKEN_ENV}; the fusi-node \
             CLI on the node's host reads it itself"
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// `GET /v1/hello?nonce=HEX`: proves this node knows the token, without
/// sending it ([`ApiToken::proof`]).
fn hello<B>(req: &Request<B>, token: &ApiToken) -> Response<Full<Bytes>> {
    let nonce = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("nonce="))
        .and_then(from_hex)
        .filter(|n| (NONCE_BYTES..=MAX_NONCE_BYTES).contains(&n.len()));
    match nonce {
        Some(nonce) => json(
            StatusCode::OK,
            &HelloView {
                proof: to_hex(&token.proof(&nonce)),
            },
        ),
        None => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "{HELLO_PATH} takes ?nonce= and {NONCE_BYTES} to {MAX_NONCE_BYTES} random bytes in hex"
            ),
        ),
    }
}

/// Whether the request says its body is CBOR (parameters aside).
fn is_cbor<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CBOR))
}

/// `?run=ID` of `GET /v1/events`: `Ok(None)` without one.
fn picked_run<B>(req: &Request<B>) -> Result<Option<String>, Refusal> {
    let Some(id) = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("run="))
    else {
        return Ok(None);
    };
    if valid_run_id(id) {
        Ok(Some(id.to_owned()))
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            format!(
                "{id:?} is not a run id: a run id is 1 to {MAX_RUN_ID_LEN} ASCII letters, digits, \
                 '-' and '_'"
            ),
        ))
    }
}

/// `GET /v1/events`: a stream when one of the [`MAX_STREAMS`] slots is free.
fn events<B>(
    req: &Request<B>,
    queries: mpsc::Sender<Query>,
    streams: Arc<Semaphore>,
) -> Response<ApiBody> {
    let picked = match picked_run(req) {
        Ok(picked) => picked,
        Err((status, message)) => return boxed(error(status, &message)),
    };
    match streams.try_acquire_owned() {
        Ok(permit) => dashboard::events(queries, picked, permit),
        Err(_) => boxed(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "this node already feeds {MAX_STREAMS} dashboards; close one, or watch from \
                 another node"
            ),
        )),
    }
}

fn boxed(response: Response<Full<Bytes>>) -> Response<ApiBody> {
    response.map(|body| body.boxed_unsync())
}

async fn handle<B>(
    req: Request<B>,
    queries: mpsc::Sender<Query>,
    token: Arc<ApiToken>,
    streams: Arc<Semaphore>,
) -> Result<Response<ApiBody>, Infallible>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(refused) = refuse(&req) {
        return Ok(boxed(refused));
    }
    if dashboard::is_asset(req.uri().path()) {
        return Ok(dashboard::serve_asset(req.method(), req.uri().path()));
    }
    if req.uri().path() != HELLO_PATH
        && let Err(problem) = authorized(&req, &token)
    {
        return Ok(boxed(unauthorized(problem)));
    }
    Ok(match route(req.method(), req.uri().path()) {
        Ok(route) => answer(route, req, queries, &token, streams).await,
        Err((status, message)) => boxed(error(status, &message)),
    })
}

/// Why a request is refused before its route is looked at: it comes from
/// a web page of another origin, or names a host that is not loopback.
fn refuse<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.headers().contains_key(header::ORIGIN) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the fusi-node API does not answer web pages of other origins: this request carries \
             an Origin header, which browsers add; use the fusi-node CLI, or the node's own \
             dashboard (`fusi-node dashboard` prints its address)",
        ));
    }
    if !host_is_local(req) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the fusi-node API answers loopback hosts only",
        ));
    }
    None
}

/// The answer to a request that passed every check.
async fn answer<B>(
    route: Route,
    req: Request<B>,
    queries: mpsc::Sender<Query>,
    token: &ApiToken,
    streams: Arc<Semaphore>,
) -> Response<ApiBody>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    boxed(match route {
        Route::Events => return events(&req, queries, streams),
        Route::Hello => hello(&req, token),
        Route::Status => reply(ask(&queries, Query::Status).await),
        Route::Peers => reply(ask(&queries, Query::Peers).await),
        Route::Submit if !is_cbor(&req) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "a submission is a CBOR SubmitRequest sent as Content-Type: {CBOR}; submit with \
                 `fusi-node run`"
            ),
        ),
        Route::Submit => submit(req.into_body(), &queries).await,
        Route::Runs => reply(ask(&queries, Query::Runs).await),
        Route::Run(id) => ask(&queries, |tx| Query::Run(id.clone(), tx))
            .await
            .map_or_else(|response| response, |view| found(&id, view)),
        Route::Stop(id) => stop(id, &queries).await,
        Route::Report(id) => match ask(&queries, |tx| Query::Report(id.clone(), tx)).await {
            Err(response) => response,
            Ok(None) => no_run(&id),
            Ok(Some(source)) => match tokio::task::spawn_blocking(move || source.build()).await {
                Ok(report) => raw_json(report.to_json()),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "building the report failed; the node's log says why",
                ),
            },
        },
        Route::Live(id) => ask(&queries, |tx| Query::Live(id.clone(), tx))
            .await
            .map_or_else(|response| response, |view| found(&id, view)),
    })
}

/// The answer as JSON, or the response that says why there is none.
fn reply<T: Serialize>(answer: Result<T, Response<Full<Bytes>>>) -> Response<Full<Bytes>> {
    answer.map_or_else(|response| response, |view| json(StatusCode::OK, &view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        let with_host = |h: &str| Request::builder().header(header::HOST, h).body(()).unwrap();
        for ok in [
            "127.0.0.1:7401",
            "localhost",
            "LOCALHOST:1",
            "[::1]:7401",
            "127.0.2.1",
        ] {
            assert!(host_is_local(&with_host(ok)), "{ok}");
        }
        for bad in ["evil.example:7401", "10.0.0.1:7401", "example.com"] {
            assert!(!host_is_local(&with_host(bad)), "{bad}");
        }
    }

    #[test]
    fn routes_check_method_and_run_id() {
        let status = |m: Method, p: &str| match route(&m, p) {
            Ok(_) => StatusCode::OK,
            Err((status, _)) => status,
        };
        assert_eq!(route(&Method::POST, "/v1/runs").ok(), Some(Route::Submit));
        assert_eq!(route(&Method::GET, "/v1/runs").ok(), Some(Route::Runs));
        assert_eq!(
            route(&Method::POST, "/v1/runs/r1a-b_2/stop").ok(),
            Some(Route::Stop("r1a-b_2".into()))
        );
        assert_eq!(
            route(&Method::GET, "/v1/runs/r1/report").ok(),
            Some(Route::Report("r1".into()))
        );
        assert_eq!(
            status(Method::GET, "/v1/runs/r1/stop"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(Method::DELETE, "/v1/runs"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(Method::POST, "/v1/status"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(Method::GET, "/v1/runs/r1/x"), StatusCode::NOT_FOUND);
        assert_eq!(status(Method::GET, "/v2/status"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::GET, "/v1/runs/a%2Fb"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Method::GET, "/v1/runs//report"),
            StatusCode::BAD_REQUEST
        );
        let long = format!("/v1/runs/{}", "a".repeat(MAX_RUN_ID_LEN + 1));
        assert_eq!(status(Method::GET, &long), StatusCode::BAD_REQUEST);
        assert!(valid_run_id(&"a".repeat(MAX_RUN_ID_LEN)));
        assert!(!valid_run_id("r1.2"));
    }

    async fn body_text(response: Response<ApiBody>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413() {
        let small = Full::new(Bytes::from_static(b"12345"));
        assert_eq!(
            read_limited(small, 5).await.ok(),
            Some(Bytes::from_static(b"12345"))
        );
        let big = Full::new(Bytes::from_static(b"123456"));
        let (status, message) = read_limited(big, 5).await.expect_err("over the limit");
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message.contains("at most 64 MiB"), "{message}");
    }

    /// Answers the queries `handle` sends as a node without runs would.
    fn node_without_runs() -> mpsc::Sender<Query> {
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(query) = rx.recv().await {
                match query {
                    Query::Run(_, reply) => drop(reply.send(None)),
                    Query::Runs(reply) => drop(reply.send(crate::api::RunsView { runs: vec![] })),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        tx
    }

    /// Free stream slots.
    fn streams() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(MAX_STREAMS))
    }

    /// The token of the node the tests ask.
    fn node_token() -> ApiToken {
        ApiToken::parse(&"5a".repeat(32)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bearer(token: &ApiToken) -> (header::HeaderName, String) {
        (header::AUTHORIZATION, format!("Bearer {}", token.to_hex()))
    }

    /// Sends a request with a loopback Host and `headers` to a node
    /// without runs whose token is [`node_token`].
    async fn send_with(
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:7401");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body.into())).unwrap_or_default();
        let Ok(response) = handle(
            request,
            node_without_runs(),
            Arc::new(node_token()),
            streams(),
        )
        .await;
        (response.status(), body_text(response).await)
    }

    /// [`send_with`] the node's token, as CBOR.
    async fn send(method: Method, path: &str, body: impl Into<Bytes>) -> (StatusCode, String) {
        let headers = [
            bearer(&node_token()),
            (header::CONTENT_TYPE, CBOR.to_owned()),
        ];
        send_with(method, path, &headers, body).await
    }

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    /// Every route, the challenge first, and paths that are none.
    fn every_route() -> Vec<(Method, String)> {
        let hello = format!("{HELLO_PATH}?nonce={NONCE}");
        [
            (Method::GET, hello.as_str()),
            (Method::GET, "/v1/status"),
            (Method::GET, "/v1/peers"),
            (Method::POST, "/v1/runs"),
            (Method::GET, "/v1/runs"),
            (Method::GET, "/v1/runs/r1"),
            (Method::POST, "/v1/runs/r1/stop"),
            (Method::GET, "/v1/runs/r1/report"),
            (Method::GET, "/v1/runs/r1/live"),
            (Method::GET, "/v1/events"),
            (Method::GET, "/v1/events?run=r1"),
            (Method::DELETE, "/v1/runs"),
            (Method::GET, "/v1/nope"),
            (Method::GET, "/"),
            (Method::GET, "/ui/dashboard.js"),
            (Method::GET, "/favicon.ico"),
        ]
        .into_iter()
        .map(|(m, p)| (m, p.to_owned()))
        .collect()
    }

    #[tokio::test]
    async fn a_request_with_an_origin_is_refused_on_every_route_before_anything_else() {
        for origin in ["https://evil.example", "null", "http://127.0.0.1:7401"] {
            for (method, path) in every_route() {
                let headers = [
                    bearer(&node_token()),
                    (header::CONTENT_TYPE, CBOR.to_owned()),
                    (header::ORIGIN, origin.to_owned()),
                ];
                let (status, text) = send_with(method.clone(), &path, &headers, "x").await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {text}");
                assert!(text.contains("Origin header"), "{text}");
            }
        }
    }

    #[tokio::test]
    async fn without_the_token_every_route_but_the_challenge_answers_401() {
        let other = ApiToken::generate();
        let wrong = [
            vec![],
            vec![bearer(&other)],
            vec![(header::AUTHORIZATION, node_token().to_hex())],
            vec![(
                header::AUTHORIZATION,
                format!("Basic {}", node_token().to_hex()),
            )],
            vec![(header::AUTHORIZATION, "Bearer ".to_owned())],
        ];
        for headers in &wrong {
            for (method, path) in every_route() {
                let (status, text) = send_with(method.clone(), &path, headers, "x").await;
                if path.starts_with(HELLO_PATH) || dashboard::is_asset(&path) {
                    assert_eq!(status, StatusCode::OK, "{text}");
                    continue;
                }
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {text}");
                assert!(
                    text.contains(TOKEN_FILE) && text.contains(TOKEN_ENV),
                    "{text}"
                );
            }
        }
        // The right token, in any case of its scheme, passes.
        let lower = (
            header::AUTHORIZATION,
            format!("bearer {}", node_token().to_hex()),
        );
        let (status, text) = send_with(Method::GET, "/v1/runs", &[lower], "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }

    #[tokio::test]
    async fn the_challenge_proves_the_token_and_checks_its_nonce_and_host() {
        let (status, text) =
            send_with(Method::GET, &format!("{HELLO_PATH}?nonce={NONCE}"), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let hello: HelloView =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let nonce = from_hex(NONCE).unwrap_or_default();
        assert!(node_token().is_proof(&nonce, &hello.proof), "{text}");
        assert!(!ApiToken::generate().is_proof(&nonce, &hello.proof));
        let long = "ab".repeat(MAX_NONCE_BYTES + 1);
        for query in [
            "",
            "?nonce=",
            "?nonce=0011",
            "?nonce=zz",
            &format!("?nonce={long}"),
        ] {
            let (status, text) =
                send_with(Method::GET, &format!("{HELLO_PATH}{query}"), &[], "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        }
        let (status, _) = send_with(Method::POST, HELLO_PATH, &[], "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let request = Request::builder()
            .uri(format!("{HELLO_PATH}?nonce={NONCE}"))
            .header(header::HOST, "evil.example:7401")
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
        let Ok(response) = handle(
            request,
            node_without_runs(),
            Arc::new(node_token()),
            streams(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_event_stream_needs_a_sound_run_id_and_a_free_slot() {
        let token = [bearer(&node_token())];
        let (status, text) = send_with(Method::GET, "/v1/events?run=a/b", &token, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let request = Request::builder()
            .uri("/v1/events")
            .header(header::HOST, "localhost:7401")
            .header(token[0].0.clone(), token[0].1.clone())
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
        let none_free = Arc::new(Semaphore::new(0));
        let Ok(response) = handle(
            request,
            node_without_runs(),
            Arc::new(node_token()),
            none_free,
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body_text(response).await.contains("dashboards"));
    }

    #[tokio::test]
    async fn a_submission_that_is_not_said_to_be_cbor_is_refused_with_415() {
        for content_type in [None, Some("application/json"), Some("text/plain")] {
            let mut headers = vec![bearer(&node_token())];
            if let Some(t) = content_type {
                headers.push((header::CONTENT_TYPE, t.to_owned()));
            }
            let (status, text) = send_with(Method::POST, "/v1/runs", &headers, "x").await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}: {text}"
            );
            assert!(text.contains(CBOR), "{text}");
        }
        let headers = [
            bearer(&node_token()),
            (header::CONTENT_TYPE, "Application/CBOR; x=y".to_owned()),
        ];
        let (status, text) = send_with(Method::POST, "/v1/runs", &headers, "x").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "decoded, not refused: {text}"
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_and_slow_headers_time_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        let listener = bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let limits = Limits {
            connections: 2,
            header_timeout: Duration::from_millis(300),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with(
            listener,
            node_without_runs(),
            node_token(),
            limits,
            shutdown.clone(),
        ));
        let connect = || async {
            TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let read_all = |mut stream: TcpStream| async move {
            let mut text = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut text));
            assert!(read.await.is_ok(), "the node closes the connection");
            String::from_utf8_lossy(&text).into_owned()
        };
        // Two idle connections hold both slots; a third is told so.
        let (first, second) = (connect().await, connect().await);
        let busy = read_all(connect().await).await;
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        let body = busy.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {busy}"));
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("too many"))
        );
        // Idle past the header timeout, they are closed, and their slots free.
        assert_eq!(read_all(first).await, "");
        assert_eq!(read_all(second).await, "");
        let mut next = connect().await;
        next.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = read_all(next).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn requests_reach_the_event_loop_or_fail_with_a_reason() {
        let (status, text) = send(Method::GET, "/v1/runs/r9", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains("no run r9 on this node"), "{text}");
        let (status, text) = send(Method::POST, "/v1/runs/r9/stop", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        let (status, text) = send(Method::GET, "/v1/runs", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("\"runs\""), "{text}");
        let (status, text) = send(Method::POST, "/v1/runs", "not cbor").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("SubmitRequest"), "{text}");
    }

    #[tokio::test]
    async fn an_unusable_module_is_refused_before_the_event_loop() {
        let spec = crate::core::spec::RunSpec::new(
            String::new(),
            crate::core::spec::Executor::SharedIterations {
                vus: 1,
                iterations: 1,
                max_duration: std::time::Duration::from_secs(1),
            },
        );
        let request = SubmitRequest {
            spec,
            module: b"not wasm".to_vec(),
            weights: None,
            nodes: None,
            data: Vec::new(),
        };
        let mut body = Vec::new();
        ciborium::into_writer(&request, &mut body).unwrap_or_default();
        let (status, text) = send(Method::POST, "/v1/runs", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("not a WebAssembly module"), "{text}");
    }
}
