//! Serves the local API: each request becomes a [`Query`] to the node's
//! event loop, whose answer is sent back as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Query;

/// Binds the API address; it must be a loopback address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--api {addr} is not a loopback address; the API has no authentication, so it listens on \
             127.0.0.1 or ::1 only (reach a remote node through ssh -L)"
        );
    }
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for the API on {addr}: {e}; pick another address with --api (port 0 picks a free one)"
        )
    })
}

/// Answers API requests until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let queries = queries.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, queries.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
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

/// Sends a query to the event loop and answers with its reply as JSON.
async fn ask<T: Serialize>(
    queries: &mpsc::Sender<Query>,
    query: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Response<Full<Bytes>> {
    let (tx, rx) = oneshot::channel();
    if queries.send(query(tx)).await.is_ok()
        && let Ok(view) = rx.await
    {
        return json(StatusCode::OK, &view);
    }
    error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down")
}

async fn handle(
    req: Request<Incoming>,
    queries: mpsc::Sender<Query>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !host_is_local(&req) {
        return Ok(error(
            StatusCode::FORBIDDEN,
            "the fusi-node API answers loopback hosts only",
        ));
    }
    if req.method() != Method::GET {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported here",
        ));
    }
    Ok(match req.uri().path() {
        "/v1/status" => ask(&queries, Query::Status).await,
        "/v1/peers" => ask(&queries, Query::Peers).await,
        other => error(
            StatusCode::NOT_FOUND,
            &format!("no route {other}; try /v1/status or /v1/peers"),
        ),
    })
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
}
