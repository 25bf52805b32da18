//! The CLI's side of the local API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// How long the CLI waits for a node.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on the node at `api`, decoded as `T`. Errors say how to point
/// the CLI at a running node.
pub async fn get<T: DeserializeOwned>(api: SocketAddr, path: &str) -> anyhow::Result<T> {
    tokio::time::timeout(TIMEOUT, get_inner(api, path))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the fusi-node API at {api} did not answer within {} s",
                TIMEOUT.as_secs()
            )
        })?
}

async fn get_inner<T: DeserializeOwned>(api: SocketAddr, path: &str) -> anyhow::Result<T> {
    let stream = tokio::net::TcpStream::connect(api).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a fusi-node API at {api}: {e}; start a node with `fusi-node up`, \
             or point --api (or FUSI_API) at a running one"
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, api.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "the fusi-node API at {api} answered {status} to {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!("the fusi-node API at {api} sent an answer this CLI does not understand ({e}); is it the same version?")
    })
}
