//! TLS on the edge (`TLS_CERT`, `TLS_KEY`): a certificate made by the test, a client that trusts
//! only it, and a plain-HTTP client knocking on the TLS port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use test_support::{ClusterProcess, assert_bad_settings_exit_2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// A self-signed certificate for `localhost` and its key, as PEM files in a fresh directory.
struct Certs {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    fn make(name: &str) -> Self {
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

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    fn env(&self) -> [(&'static str, String); 2] {
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

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` that trusts `cert` alone.
async fn https_connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Tls {
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
/// carry a `Content-Length` (every answer these tests ask for does).
async fn send(tls: &mut Tls, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
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
        (status, field("x-worker-id"), body)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} over TLS: no answer within 10 s"))
}

fn start(certs: &Certs) -> ClusterProcess {
    let env = certs.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec![("WORKERS", "2")];
    all.extend(env);
    ClusterProcess::start(FIXTURE, &all)
}

#[test]
fn requests_over_https_are_served_by_workers_with_a_certificate_the_test_made() {
    let certs = Certs::make("serve");
    let cluster = start(&certs);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = https_connect(cluster.addr, &certs.der).await;
        // Several on one connection: keep-alive works through TLS.
        for i in 0..10 {
            let (status, worker, body) = send(&mut conn, "GET", "/whoami", "").await;
            assert_eq!(status, 200, "GET /whoami #{i} over TLS: {body}");
            assert!(!worker.is_empty(), "a worker answered #{i}: {body}");
        }
        // A request with a body leaves the plain loop for hyper: that path is TLS too.
        let (status, _, body) = send(&mut conn, "POST", "/echo", "sealed").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "sealed"),
            "POST /echo over TLS"
        );
        // The master's own routes answer over TLS as well.
        let (status, _, body) = send(&mut conn, "GET", "/health", "").await;
        assert_eq!(status, 200, "GET /health over TLS: {body}");
    });
}

#[test]
fn plain_http_to_the_tls_port_is_closed_and_the_master_goes_on() {
    let certs = Certs::make("plain");
    let cluster = start(&certs);
    let workers = cluster.children();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for _ in 0..3 {
            let mut s = TcpStream::connect(cluster.addr).await.expect("connect");
            s.write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .expect("send a plain request");
            // Whatever comes back (a TLS alert, or nothing) ends with the connection closed, and
            // is never an HTTP answer from a worker.
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
                .await
                .expect("the connection is closed within 10 s, not left hanging");
            // A reset is a close too.
            let _ = read;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                !answer.starts_with("HTTP/1.1 2"),
                "plain HTTP on the TLS port was served: {answer:?}"
            );
        }
        let mut conn = https_connect(cluster.addr, &certs.der).await;
        let (status, _, body) = send(&mut conn, "GET", "/whoami", "").await;
        assert_eq!(status, 200, "HTTPS still works afterwards: {body}");
    });
    assert!(test_support::is_alive(cluster.pid()), "the master survived");
    assert_eq!(cluster.children(), workers, "and so did its workers");
}

#[test]
fn bad_tls_settings_exit_2_naming_the_variable() {
    let certs = Certs::make("bad");
    let other = Certs::make("other");
    let garbage = certs.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").expect("write garbage");
    let garbage = garbage.to_string_lossy().into_owned();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let missing = certs.path("missing.pem");
    assert_bad_settings_exit_2(FIXTURE, &[("TLS_KEY", &key)], &[("TLS_CERT", &missing)]);
    assert_bad_settings_exit_2(FIXTURE, &[("TLS_KEY", &key)], &[("TLS_CERT", &garbage)]);
    assert_bad_settings_exit_2(FIXTURE, &[("TLS_CERT", &cert)], &[("TLS_KEY", &missing)]);
    assert_bad_settings_exit_2(FIXTURE, &[("TLS_CERT", &cert)], &[("TLS_KEY", &garbage)]);
    // A key that is not the certificate's.
    let wrong = other.path("key.pem");
    assert_bad_settings_exit_2(FIXTURE, &[("TLS_CERT", &cert)], &[("TLS_KEY", &wrong)]);
    // One without the other.
    assert_bad_settings_exit_2(FIXTURE, &[], &[("TLS_KEY", &key)]);
    assert_bad_settings_exit_2(FIXTURE, &[], &[("TLS_CERT", &cert)]);
    // The workers would hold the connections in handoff mode.
    assert_bad_settings_exit_2(
        FIXTURE,
        &[("DISPATCH", "handoff"), ("TLS_KEY", &key)],
        &[("TLS_CERT", &cert)],
    );
}
