//! TLS for the tests: a self-signed certificate the test makes, and a client that trusts only it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed certificate for `localhost` and its key, as PEM files in a fresh directory;
/// removed on drop.
pub struct Certs {
    /// The directory holding `cert.pem` and `key.pem`.
    pub dir: PathBuf,
    /// The certificate, for a client to trust.
    pub der: CertificateDer<'static>,
}

impl Certs {
    /// Makes one; `name` keeps concurrent tests apart.
    pub fn make(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate a certificate");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem())
            .expect("write key.pem");
        Self {
            dir,
            der: made.cert.der().clone(),
        }
    }

    /// `file` in the directory, as text.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// `TLS_CERT` and `TLS_KEY` naming the two files.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("TLS_CERT", self.path("cert.pem")),
            ("TLS_KEY", self.path("key.pem")),
        ]
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client-side TLS connection.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` that trusts `cert` alone, offering h2 and http/1.1; asserts the
/// edge picks http/1.1, the one it speaks.
pub async fn https_connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a server name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds with the test's certificate");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "offered h2 and http/1.1: the edge picks http/1.1, the one it speaks"
    );
    tls
}

/// One HTTP/1.1 request on `tls`, kept alive: status, `X-Worker-Id` and body. The response must
/// carry a `Content-Length`.
pub async fn send(tls: &mut Tls, method: &str, path: &str, body: &str) -> (u16, String, String) {
    send_with(tls, method, path, &[], body).await.0
}

/// [`send`] with extra header lines (`"Name: value"`); also returns the whole response head.
pub async fn send_with(
    tls: &mut Tls,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> ((u16, String, String), String) {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        tls.write_all(req.as_bytes())
            .await
            .expect("write the request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tls.read(&mut chunk).await.expect("read the response");
            assert!(
                n > 0,
                "closed before the head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let len: usize = field("content-length").parse().expect("a Content-Length");
        while buf.len() < head_end + len {
            let n = tls.read(&mut chunk).await.expect("read the body");
            assert!(n > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
        ((status, field("x-worker-id"), body), head.clone())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} over TLS: no answer within 10 s"))
}

/// Sends a plain-HTTP `GET path` to a TLS port and reads until the connection closes (10 s at
/// most): what came back (a TLS alert, or nothing), which a caller checks is no HTTP answer.
pub async fn plain_http_to(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .expect("send a plain request");
    let mut answer = Vec::new();
    // A reset is a close too: only the timeout is a failure.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the connection is closed within 10 s, not left hanging");
    String::from_utf8_lossy(&answer).into_owned()
}
