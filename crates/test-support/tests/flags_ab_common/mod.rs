//! What `tests/flags.rs` and `tests/ab.rs` share: the binary, a private directory for each
//! cluster's flags file, and JSON requests.

#![allow(dead_code, reason = "each test file uses its own subset")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use test_support::{Http, Reply};

/// The cluster that mounts the flag and A/B routes as a lesson does.
pub const BIN: &str = env!("CARGO_BIN_EXE_flags_ab");

/// A directory of the system's temporary one, removed on drop: where a cluster keeps its flags.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory, unique to this process and call.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("flags-ab-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `flags.json` in it, as text for an environment variable.
    pub fn flags_file(&self) -> String {
        self.0.join("flags.json").to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `POST url` with `body` as JSON, panicking on a transport error.
pub async fn post(http: &Http, url: &str, body: &str) -> Reply {
    http.send("POST", url, &[("content-type", "application/json")], body)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST /flags/{key}` with `body`, asserting it was saved (200 or 201); the answer.
pub async fn set_flag(http: &Http, base: &str, key: &str, body: &str) -> serde_json::Value {
    let r = post(http, &format!("{base}/flags/{key}"), body).await;
    assert!(
        r.status == 200 || r.status == 201,
        "POST /flags/{key} {body}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

/// `GET /flags/{key}/evaluate?user=U`: the value, and the reason.
pub async fn evaluate(http: &Http, base: &str, key: &str, user: &str) -> (bool, String) {
    let r = http
        .get(&format!("{base}/flags/{key}/evaluate?user={user}"))
        .await;
    assert_eq!(r.status, 200, "evaluate {key} for {user}: {}", r.body);
    let v = r.json();
    let value = v["value"].as_bool().expect("a boolean value");
    let reason = v["reason"].as_str().expect("a reason").to_string();
    (value, reason)
}
