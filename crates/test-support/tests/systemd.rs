//! Running under systemd, with the test playing the service manager: the notify socket
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) and socket activation (`LISTEN_FDS`, `LISTEN_PID`).

use std::time::Duration;

use nix::sys::signal::Signal;
use test_support::systemd::{NotifySocket, start_socket_activated};
use test_support::{ClusterProcess, Http, assert_bad_settings_exit_2};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn ready_then_watchdog_pings_then_stopping_arrive_on_the_notify_socket_in_order() {
    let notify = NotifySocket::bind("order");
    let mut cluster = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "2"),
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    assert!(
        notify.until("READY=1", Duration::from_secs(20), &mut seen),
        "no READY=1 within 20 s; got {seen:?}"
    );
    let ready = seen.last().cloned().unwrap_or_default();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving on ")),
        "READY=1 comes with a status line: {ready:?}"
    );
    // The master's banner is printed after at least one worker is Ready, and READY=1 needs one:
    // so the slot list must show a Ready worker now.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ready_pids = rt.block_on(Http::new().ready_pids(&cluster.base()));
    assert!(
        !ready_pids.is_empty(),
        "READY=1 was sent with no worker Ready"
    );

    let mut after_ready = Vec::new();
    assert!(
        notify.until("WATCHDOG=1", Duration::from_secs(5), &mut after_ready),
        "no WATCHDOG=1 within 5 s after READY=1 (WATCHDOG_USEC=400000 means one every 200 ms); got {after_ready:?}"
    );
    // A second ping proves they repeat.
    assert!(
        notify.until("WATCHDOG=1", Duration::from_secs(5), &mut after_ready),
        "only one WATCHDOG=1; got {after_ready:?}"
    );

    cluster.signal(Signal::SIGTERM);
    let mut at_stop = Vec::new();
    assert!(
        notify.until("STOPPING=1", Duration::from_secs(10), &mut at_stop),
        "no STOPPING=1 within 10 s of SIGTERM; got {at_stop:?}"
    );
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a clean shutdown; stderr:\n{}",
        cluster.stderr()
    );
}

#[test]
fn a_watchdog_meant_for_another_pid_gets_no_pings() {
    // WATCHDOG_PID names another process: the watchdog is not ours, so no pings.
    let notify = NotifySocket::bind("foreign");
    let cluster = ClusterProcess::start(
        FIXTURE,
        &[
            ("WORKERS", "1"),
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let mut seen = Vec::new();
    assert!(
        notify.until("READY=1", Duration::from_secs(20), &mut seen),
        "no READY=1; got {seen:?}"
    );
    let mut later = Vec::new();
    assert!(
        !notify.until("WATCHDOG=1", Duration::from_secs(1), &mut later),
        "WATCHDOG=1 sent although WATCHDOG_PID=1 is not the master: {later:?}"
    );
    drop(cluster);
}

#[test]
fn bad_systemd_variables_exit_2_naming_them() {
    assert_bad_settings_exit_2(
        FIXTURE,
        &[("NOTIFY_SOCKET", "/nonexistent/notify.sock")],
        &[
            ("WATCHDOG_USEC", "soon"),
            ("WATCHDOG_USEC", "1000"),
            ("LISTEN_PID", "me"),
        ],
    );
}

#[test]
fn a_socket_passed_as_fd_3_with_listen_fds_is_the_one_requests_arrive_on() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let cluster = start_socket_activated(FIXTURE, &[("WORKERS", "2")], &listener);
    assert_eq!(
        cluster.addr.port(),
        port,
        "the master serves on the passed socket, not on PORT=0"
    );
    // The test no longer accepts on it; the master does.
    drop(listener);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Http::new();
        for _ in 0..20 {
            let r = http.get(&format!("http://127.0.0.1:{port}/whoami")).await;
            assert_eq!(r.status, 200, "GET /whoami through fd 3: {}", r.body);
            assert!(!r.header("x-worker-id").is_empty(), "a worker answered");
        }
    });
    // No worker holds the listening socket: each worker's fds are checked for the port's inode.
    let inode = socket_inode(cluster.pid(), 3).expect("the master still has fd 3");
    for child in cluster.children() {
        for fd in std::fs::read_dir(format!("/proc/{child}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert_ne!(
                target.to_string_lossy(),
                inode,
                "worker {child} inherited the listening socket"
            );
        }
    }
}

#[test]
fn listen_fds_meant_for_another_process_is_ignored() {
    // LISTEN_PID=1: not us, so HOST and PORT are used as usual.
    let cluster = ClusterProcess::start(
        FIXTURE,
        &[("WORKERS", "1"), ("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let r = rt.block_on(Http::new().get(&cluster.url("/whoami")));
    assert_eq!(r.status, 200, "served on its own port: {}", r.body);
}

/// What `/proc/PID/fd/FD` links to, e.g. `socket:[12345]`.
fn socket_inode(pid: u32, fd: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

#[test]
fn a_rolling_restart_is_announced_as_reloading_then_ready_again() {
    let notify = NotifySocket::bind("reload");
    let cluster = ClusterProcess::start(
        FIXTURE,
        &[("WORKERS", "1"), ("NOTIFY_SOCKET", notify.path())],
    );
    let mut seen = Vec::new();
    assert!(
        notify.until("READY=1", Duration::from_secs(20), &mut seen),
        "no READY=1; got {seen:?}"
    );
    cluster.signal(Signal::SIGUSR2);
    let mut reload = Vec::new();
    assert!(
        notify.until("RELOADING=1", Duration::from_secs(10), &mut reload),
        "no RELOADING=1 within 10 s of SIGUSR2; got {reload:?}"
    );
    let reloading = reload.last().cloned().unwrap_or_default();
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries the clock Type=notify-reload asks for: {reloading:?}"
    );
    let mut after = Vec::new();
    assert!(
        notify.until("READY=1", Duration::from_secs(20), &mut after),
        "no READY=1 after the rolling restart; got {after:?}"
    );
}
