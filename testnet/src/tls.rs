//! The target's TLS mode: HTTPS on loopback with a throwaway certificate.
//!
//! The load generator's HTTPS client (and its HTTP/2-over-ALPN path) needs a
//! server to talk to that does not depend on files or a CA on the machine.
//! Each TLS target makes a fresh self-signed certificate for `localhost` and
//! `127.0.0.1` when it starts; a test trusts exactly that certificate through
//! [`Target::certificate_der`](crate::Target::certificate_der).
//!
//! Only the `ring` crypto provider is used, explicitly, so that the build
//! never needs aws-lc-rs and no process-wide default provider is assumed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Names the generated certificate is valid for.
pub(crate) const CERT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// ALPN protocols offered, in order of preference.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long a TLS handshake may take before the connection is dropped, so a
/// client that connects and says nothing does not hold a task for ever.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor of one target and the certificate it presents.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) cert_der: CertificateDer<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_der_len", &self.cert_der.len())
            .field("alpn", &ALPN)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Generates a self-signed certificate (ECDSA P-256) for [`CERT_NAMES`]
    /// and builds an acceptor that offers [`ALPN`].
    pub(crate) fn self_signed() -> anyhow::Result<Tls> {
        let names: Vec<String> = CERT_NAMES.iter().map(|&n| n.to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
        let cert_der = certified.cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)
            .context("building the TLS server configuration")?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_der,
        })
    }
}

/// The base URL of a target at `addr`.
pub(crate) fn url(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}
