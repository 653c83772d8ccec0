//! A cookie jar for the course's `sessionId` cookie, as curl's `-c`/`-b` keep it.

use crate::{Http, Reply};

/// The `sessionId` a response sets, if any.
pub fn set_session(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("sessionId="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// A client with one cookie, as curl's `-c`/`-b` keep it, and an optional client IP sent as
/// `X-Forwarded-For` (the test clusters trust 127.0.0.1 as a proxy, so each jar can be its own client).
#[derive(Clone)]
pub struct Jar {
    /// The client it sends with.
    pub http: Http,
    /// The session id it holds.
    pub cookie: Option<String>,
    /// Sent as `X-Forwarded-For`, if set.
    pub ip: Option<String>,
}

impl Jar {
    /// An empty jar.
    pub fn new(http: &Http) -> Self {
        Self {
            http: http.clone(),
            cookie: None,
            ip: None,
        }
    }

    /// An empty jar whose requests say they come from `ip` (through a trusted proxy).
    pub fn from_ip(http: &Http, ip: String) -> Self {
        Self {
            http: http.clone(),
            cookie: None,
            ip: Some(ip),
        }
    }

    /// Sends a request with the jar's cookie and keeps whatever cookie comes back.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let cookie = self.cookie.as_ref().map(|c| format!("sessionId={c}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(c) = &cookie {
            headers.push(("cookie", c));
        }
        if let Some(ip) = &self.ip {
            headers.push(("x-forwarded-for", ip));
        }
        let reply = self.http.send(method, url, &headers, body).await?;
        if let Some(id) = set_session(&reply) {
            self.cookie = Some(id);
        }
        Ok(reply)
    }

    /// `GET url`, panicking on a transport error.
    pub async fn get(&mut self, url: &str) -> Reply {
        self.send("GET", url, &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}
