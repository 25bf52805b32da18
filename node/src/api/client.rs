//! The CLI's side of the local API.
//!
//! An [`ApiClient`] sends nothing secret before the node proved it knows
//! the token: its first request is the challenge `GET /v1/hello` with a
//! fresh random nonce ([`super::token`]), and only a node that answers it
//! right is sent the token, a module or `--env` values. Whatever else listens
//! on the address gets the nonce and nothing more.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::HelloView;
use super::server::{CBOR, HELLO_PATH};
use super::token::{ApiToken, NONCE_BYTES, TOKEN_ENV, TOKEN_FILE, to_hex};

/// How long the CLI waits for a node.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a submission may take: the node compiles the module first.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`probe`] waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Where the CLI finds the token of the node it asks: [`TOKEN_ENV`] when
/// set, else `api.token` in the node's data directory.
#[derive(Debug, Clone)]
pub struct TokenSource {
    /// The value of [`TOKEN_ENV`], when set.
    pub env: Option<String>,
    /// The node's data directory; `None` when there is none to guess (no
    /// home directory and no `--data-dir`).
    pub data_dir: Option<PathBuf>,
}

impl TokenSource {
    /// Where the token comes from, for messages.
    fn describe(&self) -> String {
        match (&self.env, &self.data_dir) {
            (Some(_), _) => TOKEN_ENV.to_owned(),
            (None, Some(dir)) => dir.join(TOKEN_FILE).display().to_string(),
            (None, None) => format!("{TOKEN_ENV} (unset)"),
        }
    }

    /// The token; the error names both places it may come from.
    fn read(&self) -> anyhow::Result<ApiToken> {
        if let Some(text) = &self.env {
            return ApiToken::parse(text).map_err(|e| {
                anyhow::anyhow!(
                    "{TOKEN_ENV} is not an API token ({e}); copy it from {TOKEN_FILE} in the node's \
                     data directory"
                )
            });
        }
        let Some(dir) = &self.data_dir else {
            anyhow::bail!(
                "no API token: {TOKEN_ENV} is not set, and there is no home directory to find the \
                 node's data directory in; set {TOKEN_ENV}, or pass the node's --data-dir"
            );
        };
        let file = dir.join(TOKEN_FILE);
        if !file.exists() {
            anyhow::bail!(
                "no API token: {TOKEN_ENV} is not set, and {} does not exist; pass the --data-dir \
                 the node was started with, or set {TOKEN_ENV} to the content of its {TOKEN_FILE}",
                file.display()
            );
        }
        Ok(crate::store::read_api_token(dir)?)
    }
}

/// A client of one node's API. Clones share the handshake: it runs once,
/// before the first request that carries the token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    api: SocketAddr,
    source: Arc<TokenSource>,
    /// The token, once the node proved it knows it.
    verified: Arc<OnceCell<ApiToken>>,
}

impl ApiClient {
    /// A client of the node at `api`, with the token from `source`.
    pub fn new(api: SocketAddr, source: TokenSource) -> ApiClient {
        ApiClient {
            api,
            source: Arc::new(source),
            verified: Arc::new(OnceCell::new()),
        }
    }

    /// The node's API address.
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// The node's token, once the node proved it knows it: for the
    /// dashboard's address, which carries it to the browser.
    pub async fn token(&self) -> anyhow::Result<ApiToken> {
        let token = self
            .verified
            .get_or_try_init(|| within(TIMEOUT, self.api, HELLO_PATH, self.handshake()))
            .await?;
        Ok(token.clone())
    }

    /// `GET path`, decoded as `T`. Errors say how to point the CLI at a
    /// running node.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, Bytes::new(), TIMEOUT).await
    }

    /// `GET path`: the JSON as the node sent it, for answers printed as
    /// they are (a report, byte for byte). It waits as long as a
    /// submission: a report of a long run merges many shards.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<Bytes> {
        self.call_raw(Method::GET, path, Bytes::new(), SUBMIT_TIMEOUT)
            .await
    }

    /// `POST path` with an empty body, decoded as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::POST, path, Bytes::new(), TIMEOUT).await
    }

    /// `POST path` with `body` as CBOR, decoded as `T`. It waits longer
    /// than [`ApiClient::get`]: the node compiles a submitted module before
    /// it answers.
    pub async fn post_cbor<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let mut bytes = Vec::new();
        ciborium::into_writer(body, &mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot encode the request to {path} as CBOR: {e}"))?;
        self.call(Method::POST, path, Bytes::from(bytes), SUBMIT_TIMEOUT)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let body = self.call_raw(method, path, body, timeout).await?;
        let api = self.api;
        serde_json::from_slice(&body).map_err(|e| {
            anyhow::anyhow!("the fusi-node API at {api} sent an answer this CLI does not understand ({e}); is it the same version?")
        })
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<Bytes> {
        let token = self
            .verified
            .get_or_try_init(|| within(TIMEOUT, self.api, HELLO_PATH, self.handshake()))
            .await?;
        within(
            timeout,
            self.api,
            path,
            exchange(self.api, method, path, Some(token), body),
        )
        .await
    }

    /// The challenge: a fresh nonce out, the node's proof back, checked
    /// against the token. Until it passes, nothing but the nonce is sent.
    async fn handshake(&self) -> anyhow::Result<ApiToken> {
        let api = self.api;
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let path = format!("{HELLO_PATH}?nonce={}", to_hex(&nonce));
        let answer = exchange(api, Method::GET, &path, None, Bytes::new()).await?;
        let hello: HelloView = serde_json::from_slice(&answer).map_err(|e| {
            anyhow::anyhow!(
                "something else listens on {api}: its answer to the challenge {HELLO_PATH} is not \
                 a fusi-node's ({e}); nothing else was sent to it"
            )
        })?;
        let token = self.source.read()?;
        if !token.is_proof(&nonce, &hello.proof) {
            anyhow::bail!(
                "something else listens on {api}: it is not the fusi-node whose token is in {}, \
                 so nothing was sent to it; point --api at that node, or, for a node with another \
                 data directory, pass its --data-dir (or set {TOKEN_ENV} to its token)",
                self.source.describe()
            );
        }
        Ok(token)
    }
}

/// Whether something accepts connections at `api` within 300 ms: a cheap
/// check for a node at the default address.
pub async fn probe(api: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(api)).await,
        Ok(Ok(_))
    )
}

/// `work`, or an error once `timeout` passed.
async fn within<T>(
    timeout: Duration,
    api: SocketAddr,
    path: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        anyhow::anyhow!(
            "the fusi-node API at {api} did not answer {path} within {} s",
            timeout.as_secs()
        )
    })?
}

/// One request on a connection of its own, with the token when given.
async fn exchange(
    api: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&ApiToken>,
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
    if let Some(token) = token {
        request = request.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.to_hex()),
        );
    }
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, CBOR);
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
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// A program on a free loopback port that answers every request with
    /// `answer` (a JSON body) and keeps every byte it was sent.
    async fn impostor(answer: &'static str) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let keep = heard.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 1 << 16];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                keep.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&request);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\
                     content-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        (addr, heard)
    }

    fn source(token: &ApiToken) -> TokenSource {
        TokenSource {
            env: Some(token.to_hex()),
            data_dir: None,
        }
    }

    #[tokio::test]
    async fn a_program_without_the_token_gets_neither_token_nor_module() {
        let wrong =
            r#"{"proof": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#;
        for answer in [wrong, r#"{"status": "ok"}"#, "not json"] {
            let (api, heard) = impostor(answer).await;
            let token = ApiToken::generate();
            let client = ApiClient::new(api, source(&token));
            let module = serde_bytes::ByteBuf::from(b"SECRET-MODULE-BYTES".to_vec());
            let err = client
                .post_cbor::<_, serde_json::Value>("/v1/runs", &module)
                .await
                .expect_err("an impostor is refused");
            let message = format!("{err:#}");
            assert!(
                message.contains(&format!("something else listens on {api}")),
                "{message}"
            );
            if answer == wrong {
                assert!(
                    message.contains(&format!("not the fusi-node whose token is in {TOKEN_ENV}")),
                    "{message}"
                );
            }
            // A second request does not slip through either.
            assert!(client.get::<serde_json::Value>("/v1/status").await.is_err());
            let heard = heard.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let heard = String::from_utf8_lossy(&heard).to_ascii_lowercase();
            assert!(heard.starts_with("get /v1/hello?nonce="), "{heard}");
            assert!(!heard.contains("authorization"), "{heard}");
            assert!(!heard.contains(&token.to_hex()), "{heard}");
            assert!(!heard.contains("secret-module-bytes"), "{heard}");
            assert!(!heard.contains("/v1/runs") && !heard.contains("/v1/status"));
        }
    }

    #[test]
    fn a_missing_token_names_both_places_it_may_come_from() {
        let dir = std::env::temp_dir().join(format!("fusi-client-no-token-{}", std::process::id()));
        let message = TokenSource {
            env: None,
            data_dir: Some(dir.clone()),
        }
        .read()
        .expect_err("no token")
        .to_string();
        assert!(message.contains(TOKEN_ENV), "{message}");
        assert!(
            message.contains(&dir.join(TOKEN_FILE).display().to_string()),
            "{message}"
        );
        let message = TokenSource {
            env: Some("short".into()),
            data_dir: Some(dir),
        }
        .read()
        .expect_err("a bad token")
        .to_string();
        assert!(message.contains("is not an API token"), "{message}");
    }
}
