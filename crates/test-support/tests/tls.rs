//! TLS on the edge (`TLS_CERT`, `TLS_KEY`): a certificate made by the test, a client that trusts
//! only it, and a plain-HTTP client knocking on the TLS port.

use test_support::tls::{Certs, https_connect, plain_http_to, send};
use test_support::{ClusterProcess, assert_bad_settings_exit_2};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

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
            // Whatever comes back (a TLS alert, or nothing) ends with the connection closed, and
            // is never an HTTP answer from a worker.
            let answer = plain_http_to(cluster.addr, "/whoami").await;
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
