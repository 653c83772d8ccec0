//! The files in `deploy/` are checked by the tools that will read them: `nginx -t`, `haproxy -c`,
//! `systemd-analyze verify`, and the Kubernetes API schemas (`kubernetes-validate`, pinned in
//! `scripts/test`). And the numbers that must agree across them do.

use std::process::{Command, Output};

use test_support::services::TempDir;
use test_support::services::proxy::{deploy_dir, haproxy_config, nginx_config};

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    out
}

/// The value of the first `key=value` or `key: value` line, trimmed of quotes.
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('=').or_else(|| r.strip_prefix(':')))
        })
        .map(|v| v.trim().trim_matches('"'))
        .unwrap_or_else(|| panic!("no {key} setting"))
}

#[test]
fn nginx_accepts_the_configuration() {
    let text = read("nginx/nginx.conf");
    // The seed's example uses `health_check`, which only NGINX Plus knows.
    let directives = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    assert!(!directives.clone().any(|l| l.contains("health_check")));
    assert!(
        directives
            .clone()
            .any(|l| l.contains("proxy_next_upstream ") && !l.contains("non_idempotent")),
        "proxy_next_upstream, idempotent requests only"
    );
    let dir = TempDir::new("nginx-t");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(&text, 8080, &[3001, 3002], dir.path())).unwrap();
    let out = run(Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test is successful"));
}

#[test]
fn haproxy_accepts_the_configuration_as_committed_and_as_tested() {
    let committed = deploy_dir().join("haproxy/haproxy.cfg");
    let out = run(Command::new("haproxy").arg("-c").arg("-f").arg(&committed));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Configuration file is valid"), "{said}");
    let dir = TempDir::new("haproxy-c");
    let conf = dir.path().join("haproxy.cfg");
    let text = haproxy_config(
        &read("haproxy/haproxy.cfg"),
        8080,
        &[1, 2, 3, 4],
        dir.path(),
        "/health",
    );
    let servers = text
        .lines()
        .filter(|l| l.trim_start().starts_with("server app"));
    assert_eq!(
        servers.filter(|l| l.ends_with(" check")).count(),
        4,
        "{text}"
    );
    std::fs::write(&conf, text).unwrap();
    run(Command::new("haproxy").arg("-c").arg("-f").arg(&conf));
}

#[test]
fn systemd_accepts_the_units_without_a_warning() {
    let dir = TempDir::new("systemd");
    for unit in ["production-cluster.service", "production-cluster.socket"] {
        let mut text = read(&format!("systemd/{unit}"));
        if unit.ends_with(".service") {
            // verify insists that ExecStart exists and is executable: point it at one that does.
            let exec = setting(&text, "ExecStart").to_string();
            text = text.replace(&format!("ExecStart={exec}"), "ExecStart=/bin/true");
        }
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("production-cluster.service"))
        .arg(dir.path().join("production-cluster.socket")));
    // verify exits 0 even for an unknown key or a bad value; it only says so on stderr.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    let k8s = deploy_dir().join("k8s");
    let files = ["deployment.yaml", "service.yaml", "pdb.yaml"];
    let out = run(Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.31.0"])
        .args(files.iter().map(|f| k8s.join(f))));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for f in files {
        assert!(
            said.lines().any(|l| l.contains(f) && l.contains("passed")),
            "{f} not validated:\n{said}"
        );
    }
}

#[test]
fn the_stop_budgets_cover_the_drain() {
    let unit = read("systemd/production-cluster.service");
    let drain_ms: u64 = setting(&unit, "Environment")
        .strip_prefix("SHUTDOWN_TIMEOUT=")
        .and_then(|v| v.parse().ok())
        .expect("Environment=SHUTDOWN_TIMEOUT=<ms>");
    let stop_s: u64 = setting(&unit, "TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop_s * 1000 > drain_ms,
        "TimeoutStopSec {stop_s}s ≤ SHUTDOWN_TIMEOUT {drain_ms}ms"
    );

    let deploy = read("k8s/deployment.yaml");
    let grace: u64 = setting(&deploy, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let pre_stop: u64 = deploy
        .split("preStop:")
        .nth(1)
        .map(|rest| setting(rest, "seconds"))
        .and_then(|v| v.parse().ok())
        .expect("preStop sleep seconds");
    let k8s_drain_ms: u64 = deploy
        .split("name: SHUTDOWN_TIMEOUT")
        .nth(1)
        .map(|rest| setting(rest, "value"))
        .and_then(|v| v.parse().ok())
        .expect("SHUTDOWN_TIMEOUT in the Deployment");
    assert!(
        grace * 1000 > pre_stop * 1000 + k8s_drain_ms,
        "terminationGracePeriodSeconds {grace} ≤ preStop {pre_stop} + drain {k8s_drain_ms}ms"
    );
}
