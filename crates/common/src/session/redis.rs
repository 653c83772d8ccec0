//! Sessions in Redis: every worker sees every session, and a session outlives the worker that made it.
//!
//! Layout in Redis (`prefix` defaults to `rcp:`):
//! - `rcp:s:<id>`: a hash with `created`, `lastAccess`, `requestCount` and one `d:<key>` field per
//!   data entry; it expires `ttl` after its last use (`PEXPIRE` on every touch: sliding expiry);
//! - `rcp:slot:<slot>`: a sorted set of the slot's session ids scored by last use, so `/stats` can
//!   count and list one worker's sessions without scanning the keyspace.
//!
//! Read-modify-write steps run as Lua scripts, so two requests of one session counting at the same
//! moment both count (Redis runs a script atomically). The connection is made on first use, by the
//! worker's own runtime, and re-made by redis-rs's `ConnectionManager` when it breaks.
//!
//! Through Sentinel (`redis+sentinel://host:port,host:port/NAME`, the Sentinels' addresses and
//! the name they monitor the primary under), the primary is asked of the Sentinels, and asked
//! again whenever its connection fails or it answers READONLY (it was demoted). While a failover
//! runs a request waits, at most [`FAILOVER_WAIT`], for the promoted replica; then it gets an
//! error (the lesson's 503), never a session from a server that is not the primary. What is
//! retried is what cannot count twice: a command that was never sent, one refused by a replica,
//! and the idempotent ones (insert, set, remove, list) whose connection broke; `touch`, which
//! counts a request, is not resent once it may have reached the server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisFuture, Script, Value};
use tokio::sync::{Mutex, OnceCell, RwLock};

use super::{Session, SessionList, SessionStore, StoreError, StoreFuture, StoreStats, parse_id};

/// How long one Redis connection attempt or command may take before the request fails with 503.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Through Sentinel: how long a request waits for a primary (a failover: the old one's death
/// noticed after `down-after-milliseconds`, a replica elected and promoted) before it fails.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(5);
/// The pause between two attempts to find the primary.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The scheme of a Sentinel `SESSION_STORE`.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'requestCount', 1)
redis.call('HSET', KEYS[1], 'lastAccess', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
";

const SET_DATA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd:' .. ARGV[4], ARGV[5], 'lastAccess', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Where the store's connection comes from.
enum Target {
    /// One server; `ConnectionManager` reconnects to it.
    Direct {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
    },
    /// Whichever server the Sentinels name as the primary.
    Sentinel {
        sentinels: Vec<String>,
        name: String,
        // Boxed: it is much larger than the direct variant's client.
        client: Box<Mutex<SentinelClient>>,
        /// The connection to the current primary; `None` after a failure, until re-resolved.
        conn: RwLock<Option<MultiplexedConnection>>,
    },
}

/// One connection of either kind, for the commands.
#[derive(Clone)]
enum Conn {
    Managed(ConnectionManager),
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
        }
    }
}

/// `redis+sentinel://h1:p1,h2:p2/NAME` → (`["redis://h1:p1", …]`, `NAME`).
pub fn parse_sentinel_url(url: &str) -> Option<(Vec<String>, String)> {
    let rest = url.strip_prefix(SENTINEL_SCHEME)?;
    let (hosts, name) = rest.split_once('/')?;
    let name = name.trim_end_matches('/');
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let (host, port) = h.trim().rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            (!host.is_empty()).then(|| format!("redis://{host}:{port}"))
        })
        .collect::<Option<_>>()?;
    (name_ok && !sentinels.is_empty()).then(|| (sentinels, name.to_string()))
}

fn sentinel_client(sentinels: &[String], name: &str) -> Result<SentinelClient, RedisError> {
    SentinelClient::build(
        sentinels.to_vec(),
        name.to_string(),
        None,
        SentinelServerType::Master,
    )
}

/// Whether `e` says the connection failed (so the primary should be looked up again).
fn connection_failed(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.kind() == ErrorKind::ReadOnly
}

/// A session store in Redis.
pub struct RedisStore {
    target: Target,
    ttl: Duration,
    prefix: String,
    touch: Script,
    set_data: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn err(context: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |e| StoreError {
        context,
        source: Box::new(e),
    }
}

impl RedisStore {
    /// A store at `url`: `redis://host:port/db`, or `redis+sentinel://host:port,host:port/NAME`
    /// for the primary that Sentinels monitor as NAME. Only parses the URL: nothing is connected
    /// yet.
    pub fn open(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        let target = if url.starts_with(SENTINEL_SCHEME) {
            let (sentinels, name) = parse_sentinel_url(url).ok_or_else(|| {
                RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "expected redis+sentinel://host:port[,host:port…]/NAME",
                ))
            })?;
            Target::Sentinel {
                client: Box::new(Mutex::new(sentinel_client(&sentinels, &name)?)),
                sentinels,
                name,
                conn: RwLock::new(None),
            }
        } else {
            Target::Direct {
                client: redis::Client::open(url)?,
                conn: OnceCell::new(),
            }
        };
        Ok(Self {
            target,
            ttl,
            prefix: "rcp:".to_string(),
            touch: Script::new(TOUCH),
            set_data: Script::new(SET_DATA),
        })
    }

    /// Uses `prefix` for every key (default `rcp:`), so several apps can share one Redis.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Connects and sends PING, blocking for at most `timeout`: for a startup check before any
    /// runtime exists, so a wrong `SESSION_STORE` is reported at once rather than on the first request.
    pub fn ping_blocking(&self, timeout: Duration) -> Result<(), redis::RedisError> {
        let mut conn = match &self.target {
            Target::Direct { client, .. } => client.get_connection_with_timeout(timeout)?,
            // Asks the Sentinels for the primary and checks that it says it is one.
            Target::Sentinel {
                sentinels, name, ..
            } => sentinel_client(sentinels, name)?.get_connection()?,
        };
        conn.set_read_timeout(Some(timeout))?;
        redis::cmd("PING").query::<String>(&mut conn).map(|_| ())
    }

    async fn conn(&self) -> Result<Conn, RedisError> {
        match &self.target {
            Target::Direct { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(TIMEOUT)
                            .set_response_timeout(TIMEOUT)
                            .set_number_of_retries(2);
                        ConnectionManager::new_with_config(client.clone(), config).await
                    })
                    .await?;
                // A clone shares the one multiplexed connection.
                Ok(Conn::Managed(conn.clone()))
            }
            Target::Sentinel { client, conn, .. } => {
                if let Some(c) = conn.read().await.as_ref() {
                    return Ok(Conn::Plain(c.clone()));
                }
                let mut slot = conn.write().await;
                if let Some(c) = slot.as_ref() {
                    return Ok(Conn::Plain(c.clone()));
                }
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(TIMEOUT);
                let fresh = client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?;
                *slot = Some(fresh.clone());
                Ok(Conn::Plain(fresh))
            }
        }
    }

    /// Runs `op` on the primary. Through Sentinel, a failure of the connection makes the next
    /// attempt look the primary up again, and the attempt is repeated (for at most
    /// [`FAILOVER_WAIT`]) when it cannot have counted twice: `op` never started, the server
    /// refused it as a replica, or `idempotent` says resending is harmless.
    async fn run<'a, T>(
        &'a self,
        context: &'static str,
        idempotent: bool,
        op: impl Fn(Conn) -> BoxFuture<'a, Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            let (e, sent) = match self.conn().await {
                Ok(conn) => match op(conn).await {
                    Ok(v) => return Ok(v),
                    Err(e) => (e, true),
                },
                Err(e) => (e, false),
            };
            let Target::Sentinel { conn, .. } = &self.target else {
                return Err(err(context)(e));
            };
            // Not sent: no primary could be found or reached (mid-failover the Sentinels may name
            // none, or the dead one). Always safe to try again.
            if sent && !connection_failed(&e) {
                return Err(err(context)(e));
            }
            *conn.write().await = None;
            let harmless = !sent || idempotent || e.kind() == ErrorKind::ReadOnly;
            if !harmless || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(err(context)(e));
            }
            tracing::debug!(error = %e, "session store: no primary yet; retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }

    fn index(&self, slot: usize) -> String {
        format!("{}slot:{slot}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }
}

/// A session from its hash's fields; `None` if the hash is empty (expired meanwhile).
fn from_fields(id: &str, fields: HashMap<String, String>) -> Option<Session> {
    if fields.is_empty() {
        return None;
    }
    let num = |k: &str| {
        fields
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let data = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("d:")?.to_string(), v.clone())))
        .collect();
    Some(Session {
        id: id.to_string(),
        created: num("created"),
        last_access: num("lastAccess"),
        request_count: num("requestCount"),
        data,
    })
}

impl SessionStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn insert(&self, session: Session) -> StoreFuture<'_, ()> {
        async move {
            let key = self.key(&session.id);
            let index = self.index(session.slot().unwrap_or(0));
            let mut fields: Vec<(String, String)> = vec![
                ("created".into(), session.created.to_string()),
                ("lastAccess".into(), session.last_access.to_string()),
                ("requestCount".into(), session.request_count.to_string()),
            ];
            fields.extend(
                session
                    .data
                    .iter()
                    .map(|(k, v)| (format!("d:{k}"), v.clone())),
            );
            let (key, index, fields, id) = (&key, &index, &fields, &session.id);
            let ttl = self.ttl_ms() as i64;
            // Writing the same fields twice leaves the same session: safe to resend.
            self.run("save a new session", true, |mut conn| {
                async move {
                    redis::pipe()
                        .atomic()
                        .hset_multiple(key, fields)
                        .ignore()
                        .pexpire(key, ttl)
                        .ignore()
                        .zadd(index, id, session.last_access)
                        .ignore()
                        .pexpire(index, ttl)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                }
                .boxed()
            })
            .await
        }
        .boxed()
    }

    fn touch(&self, id: &str, now_ms: u64) -> StoreFuture<'_, Option<Session>> {
        let id = id.to_owned();
        async move {
            let id = id.as_str();
            let (key, index) = (&self.key(id), &self.index(parse_id(id).unwrap_or(0)));
            // Counts a request: not resent once it may have been run.
            let fields: Option<HashMap<String, String>> = self
                .run("load a session", false, |mut conn| {
                    async move {
                        self.touch
                            .key(key)
                            .key(index)
                            .arg(now_ms)
                            .arg(self.ttl_ms())
                            .arg(id)
                            .invoke_async(&mut conn)
                            .await
                    }
                    .boxed()
                })
                .await?;
            Ok(fields.and_then(|f| from_fields(id, f)))
        }
        .boxed()
    }

    fn set_data(&self, id: &str, key: &str, value: &str, now_ms: u64) -> StoreFuture<'_, bool> {
        let (id, key, value) = (id.to_owned(), key.to_owned(), value.to_owned());
        async move {
            let (id, key, value) = (id.as_str(), key.as_str(), value.as_str());
            let (hash, index) = (&self.key(id), &self.index(parse_id(id).unwrap_or(0)));
            let done: i64 = self
                .run("save session data", true, |mut conn| {
                    async move {
                        self.set_data
                            .key(hash)
                            .key(index)
                            .arg(now_ms)
                            .arg(self.ttl_ms())
                            .arg(id)
                            .arg(key)
                            .arg(value)
                            .invoke_async(&mut conn)
                            .await
                    }
                    .boxed()
                })
                .await?;
            Ok(done == 1)
        }
        .boxed()
    }

    fn remove(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_owned();
        async move {
            let id = id.as_str();
            let (key, index) = (&self.key(id), &self.index(parse_id(id).unwrap_or(0)));
            let (deleted, _): (u64, u64) = self
                .run("delete a session", true, |mut conn| {
                    async move {
                        redis::pipe()
                            .atomic()
                            .del(key)
                            .zrem(index, id)
                            .query_async(&mut conn)
                            .await
                    }
                    .boxed()
                })
                .await?;
            Ok(deleted > 0)
        }
        .boxed()
    }

    fn list(&self, slot: usize, limit: usize, now_ms: u64) -> StoreFuture<'_, SessionList> {
        async move {
            let index = &self.index(slot);
            let cutoff = now_ms.saturating_sub(self.ttl_ms());
            let stop = limit as isize - 1;
            let (total, ids, all) = self
                .run("list sessions", true, |mut conn| {
                    async move {
                        let (_, total, ids): (u64, u64, Vec<String>) = redis::pipe()
                            .atomic()
                            .zrembyscore(index, "-inf", format!("({cutoff}"))
                            .zcard(index)
                            .zrevrange(index, 0, stop)
                            .query_async(&mut conn)
                            .await?;
                        if ids.is_empty() || limit == 0 {
                            return Ok((total, Vec::new(), Vec::new()));
                        }
                        let mut pipe = redis::pipe();
                        for id in &ids {
                            pipe.hgetall(self.key(id));
                        }
                        let all: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
                        Ok((total, ids, all))
                    }
                    .boxed()
                })
                .await?;
            let sessions = ids
                .iter()
                .zip(all)
                .filter_map(|(id, fields)| from_fields(id, fields))
                .collect();
            Ok(SessionList { total, sessions })
        }
        .boxed()
    }

    fn stats(&self) -> StoreStats {
        // Redis expires keys itself and has no cap of ours; nothing is counted here.
        StoreStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_sentinel_url;

    #[test]
    fn sentinel_urls() {
        assert_eq!(
            parse_sentinel_url("redis+sentinel://127.0.0.1:26379,10.0.0.2:26380/rcp"),
            Some((
                vec![
                    "redis://127.0.0.1:26379".to_string(),
                    "redis://10.0.0.2:26380".to_string()
                ],
                "rcp".to_string()
            ))
        );
        for bad in [
            "redis://127.0.0.1:6379",
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/rcp",
            "redis+sentinel://127.0.0.1:0/rcp",
            "redis+sentinel://:26379/rcp",
            "redis+sentinel://127.0.0.1:26379/a b",
        ] {
            assert_eq!(parse_sentinel_url(bad), None, "{bad}");
        }
    }
}
