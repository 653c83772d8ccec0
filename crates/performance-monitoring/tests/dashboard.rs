//! The dashboard in a real browser: headless Chromium loads `/dashboard` while a bounded load runs;
//! the test reads the page's state over the DevTools protocol, checks the charts drew and the numbers
//! moved, and saves a screenshot to `target/artifacts/dashboard.png`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{BIN, FAST, require_tool};
use test_support::{ClusterProcess, Http, load};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium, killed with its whole process group on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium and returns it with its DevTools WebSocket URL.
    fn start(bin: &std::path::Path) -> (Self, String) {
        let profile = std::env::temp_dir().join(format!(
            "rcp-chromium-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1150",
            "--remote-debugging-port=0",
            "about:blank",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // Its own process group, so drop can end the browser and every helper process it started.
        // SAFETY: prctl is async-signal-safe and the hook allocates nothing.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0).pre_exec(|| {
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so Chromium never blocks on a full pipe.
                    continue;
                }
            }
        });
        let browser = Browser { child, profile };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.split("DevTools listening on ").nth(1) {
                        return (browser, url.trim().to_string());
                    }
                    seen.push(line);
                }
                Err(_) => panic!(
                    "Chromium printed no DevTools URL within 30 s; stderr:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal DevTools protocol client: one command at a time, events skipped.
struct Devtools {
    socket: Socket,
    next_id: u64,
    session: Option<String>,
}

impl Devtools {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let reply = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(frame) = self.socket.next().await {
                let frame =
                    frame.unwrap_or_else(|e| panic!("DevTools socket during {method}: {e}"));
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["id"] == id {
                    return v;
                }
            }
            panic!("DevTools closed during {method}")
        })
        .await
        .unwrap_or_else(|_| panic!("no DevTools reply to {method} within 20 s"));
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        r["result"]["value"].clone()
    }
}

/// Standard base64 (RFC 4648) to bytes; the screenshot is the only use, so no crate for it.
fn base64_decode(s: &str) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn the_dashboard_renders_its_charts_and_follows_a_live_load() {
    let chromium = require_tool("chromium", "chromium");
    let cluster = ClusterProcess::start(BIN, &[("WORKERS", "2"), FAST[0], FAST[1]]);
    let (_browser, ws_url) = Browser::start(&chromium);
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect to DevTools at {ws_url}: {e}"));
    let mut dt = Devtools {
        socket,
        next_id: 0,
        session: None,
    };

    // A bounded load that stops itself, started before the page so the charts have data.
    let http = Http::new();
    let work_url = cluster.url("/work");
    let loader =
        tokio::spawn(async move { load(&http, &work_url, 8, Duration::from_secs(12)).await });

    let target = dt
        .call(
            "Target.createTarget",
            json!({ "url": cluster.url("/dashboard") }),
        )
        .await;
    let target_id = target["targetId"].as_str().expect("targetId").to_string();
    let attached = dt
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )
        .await;
    dt.session = Some(
        attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string(),
    );

    // Poll the page's own record of what it drew until the charts hold several seconds of history
    // and the request total has moved between updates.
    let deadline = Instant::now() + Duration::from_secs(25);
    let state = loop {
        let raw = dt
            .eval("JSON.stringify(window.dashboardState || null)")
            .await;
        let state: Value = raw
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let charts = &state["charts"];
        let drawn = |id: &str| charts[id].as_u64().unwrap_or(0);
        let totals: Vec<u64> = state["totalRequests"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let moved = totals.windows(2).filter(|w| w[1] > w[0]).count();
        // Two series of six points on the rate chart, three on latency, one per worker on the rest.
        if drawn("c-rps") >= 12
            && drawn("c-latency") >= 18
            && drawn("c-cpu") >= 12
            && drawn("c-memory") >= 12
            && moved >= 3
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard did not render and update within 25 s; its state: {state}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        state["error"], "",
        "the page reported a fetch error: {state}"
    );

    // What a person sees: the tiles hold numbers and the table lists both workers.
    let text = dt
        .eval(
            "JSON.stringify({ rps: document.getElementById('t-rps').textContent, \
              total: document.getElementById('t-total').textContent, \
              p95: document.getElementById('t-p95').textContent, \
              rows: document.querySelectorAll('#workers tr').length, \
              status: document.getElementById('status').textContent })",
        )
        .await;
    let seen: Value = text
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    eprintln!("dashboard state {state}\nvisible {seen}");
    assert_eq!(seen["rows"], 2, "{seen}");
    for tile in ["rps", "total", "p95"] {
        let v = seen[tile].as_str().unwrap_or("–").replace(',', "");
        assert!(
            v.parse::<f64>().is_ok_and(|x| x > 0.0),
            "tile {tile} shows {v:?} under load: {seen}"
        );
    }

    let shot = dt
        .call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        )
        .await;
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());

    let report = loader.await.expect("load task");
    assert!(report.ok > 0, "the load ran: {report:?}");
}
