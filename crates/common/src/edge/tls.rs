//! TLS on the edge (`TLS_CERT`, `TLS_KEY`), for a cluster with no proxy in front to terminate it.
//!
//! Each accepted connection does its handshake first, within `HEADER_TIMEOUT` (a client that
//! opens a connection and sends nothing must not hold it, encrypted or not); then the decrypted
//! stream is served exactly as a plain one is, by the same lean loop and hyper behind it, so every
//! limit and check of the edge applies unchanged. The handshake offers ALPN `http/1.1` only:
//! the edge speaks HTTP/1.1.
//!
//! A client that speaks plain HTTP to the TLS port fails the handshake (its request is no
//! ClientHello) and its connection is closed; nothing else is affected. Handoff dispatch cannot
//! take TLS (a worker would need the key and the session), so the two are refused together at
//! start.
//!
//! rustls with the *ring* provider does the work; certificates and the key are read from PEM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, TlsFiles};

/// The TLS settings of the edge, built from `files`; a file that cannot be read or used is a bad
/// setting, named by its variable.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ConfigError> {
    let bad = |var: &str, path: &Path, why: String| ConfigError {
        var: var.into(),
        value: path.display().to_string(),
        expected: why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            bad(
                "TLS_CERT",
                &files.cert,
                format!("a readable PEM certificate chain ({e})"),
            )
        })?;
    if certs.is_empty() {
        let why = "a PEM file with at least one CERTIFICATE section".to_string();
        return Err(bad("TLS_CERT", &files.cert, why));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        bad(
            "TLS_KEY",
            &files.key,
            format!("a readable PEM private key ({e})"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            bad(
                "TLS_CERT",
                &files.cert,
                format!("usable TLS settings ({e})"),
            )
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            let why = format!("a key that matches the certificate in TLS_CERT ({e})");
            bad("TLS_KEY", &files.key, why)
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The handshake on `stream`, within `timeout`; `None` (logged at debug) when it fails or is too
/// slow, and the connection is dropped.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?timeout, "TLS handshake timed out");
            None
        }
    }
}
