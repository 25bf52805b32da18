//! The CLI's side of the local API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long the CLI waits for a node.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a submission may take: the node compiles the module first.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`probe`] waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// `GET path` on the node at `api`, decoded as `T`. Errors say how to point
/// the CLI at a running node.
pub async fn get<T: DeserializeOwned>(api: SocketAddr, path: &str) -> anyhow::Result<T> {
    call(api, Method::GET, path, Bytes::new(), TIMEOUT).await
}

/// `GET path` on the node at `api`: the JSON as the node sent it, for
/// answers printed as they are (a report, byte for byte). It waits as long
/// as a submission: a report of a long run merges many shards.
pub async fn get_raw(api: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    call_raw(api, Method::GET, path, Bytes::new(), SUBMIT_TIMEOUT).await
}

/// `POST path` with an empty body on the node at `api`, decoded as `T`.
pub async fn post<T: DeserializeOwned>(api: SocketAddr, path: &str) -> anyhow::Result<T> {
    call(api, Method::POST, path, Bytes::new(), TIMEOUT).await
}

/// `POST path` with `body` as CBOR on the node at `api`, decoded as `T`. It
/// waits longer than [`get`]: the node compiles a submitted module before
/// it answers.
pub async fn post_cbor<B: Serialize, T: DeserializeOwned>(
    api: SocketAddr,
    path: &str,
    body: &B,
) -> anyhow::Result<T> {
    let mut bytes = Vec::new();
    ciborium::into_writer(body, &mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot encode the request to {path} as CBOR: {e}"))?;
    call(api, Method::POST, path, Bytes::from(bytes), SUBMIT_TIMEOUT).await
}

/// Whether something accepts connections at `api` within 300 ms: a cheap
/// check for a node at the default address.
pub async fn probe(api: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(api)).await,
        Ok(Ok(_))
    )
}

async fn call<T: DeserializeOwned>(
    api: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<T> {
    let body = call_raw(api, method, path, body, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!("the fusi-node API at {api} sent an answer this CLI does not understand ({e}); is it the same version?")
    })
}

async fn call_raw(
    api: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<Bytes> {
    tokio::time::timeout(timeout, call_inner(api, method, path, body))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the fusi-node API at {api} did not answer {path} within {} s",
                timeout.as_secs()
            )
        })?
}

async fn call_inner(
    api: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Bytes> {
    let stream = tokio::net::TcpStream::connect(api).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a fusi-node API at {api}: {e}; start a node with `fusi-node up`, \
             or point --api (or FUSI_API) at a running one"
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, api.to_string());
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/cbor");
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "the fusi-node API at {api} answered {status} to {path}: {}",
            error_message(&body)
        );
    }
    Ok(body)
}

/// The message of an `{"error": ...}` answer, or the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_show_their_message() {
        assert_eq!(error_message(br#"{"error": "no run r1"}"#), "no run r1");
        assert_eq!(error_message(b"plain"), "plain");
    }

    #[tokio::test]
    async fn a_closed_port_is_not_a_node() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        assert!(probe(addr).await);
        drop(listener);
        assert!(!probe(addr).await);
    }
}
