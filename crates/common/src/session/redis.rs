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

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::FutureExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{Session, SessionList, SessionStore, StoreError, StoreFuture, StoreStats, parse_id};

/// How long one Redis connection attempt or command may take before the request fails with 503.
const TIMEOUT: Duration = Duration::from_secs(2);

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

/// A session store in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
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
    /// A store at `url` (`redis://host:port/db`). Only parses the URL: nothing is connected yet.
    pub fn open(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
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
        let mut conn = self.client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        redis::cmd("PING").query::<String>(&mut conn).map(|_| ())
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(TIMEOUT)
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(err("connect"))?;
        // A clone shares the one multiplexed connection.
        Ok(conn.clone())
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
            let mut conn = self.conn().await?;
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
            redis::pipe()
                .atomic()
                .hset_multiple(&key, &fields)
                .ignore()
                .pexpire(&key, self.ttl_ms() as i64)
                .ignore()
                .zadd(&index, &session.id, session.last_access)
                .ignore()
                .pexpire(&index, self.ttl_ms() as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(err("save a new session"))
        }
        .boxed()
    }

    fn touch(&self, id: &str, now_ms: u64) -> StoreFuture<'_, Option<Session>> {
        let id = id.to_owned();
        async move {
            let id = id.as_str();
            let mut conn = self.conn().await?;
            let fields: Option<HashMap<String, String>> = self
                .touch
                .key(self.key(id))
                .key(self.index(parse_id(id).unwrap_or(0)))
                .arg(now_ms)
                .arg(self.ttl_ms())
                .arg(id)
                .invoke_async(&mut conn)
                .await
                .map_err(err("load a session"))?;
            Ok(fields.and_then(|f| from_fields(id, f)))
        }
        .boxed()
    }

    fn set_data(&self, id: &str, key: &str, value: &str, now_ms: u64) -> StoreFuture<'_, bool> {
        let (id, key, value) = (id.to_owned(), key.to_owned(), value.to_owned());
        async move {
            let (id, key, value) = (id.as_str(), key.as_str(), value.as_str());
            let mut conn = self.conn().await?;
            let done: i64 = self
                .set_data
                .key(self.key(id))
                .key(self.index(parse_id(id).unwrap_or(0)))
                .arg(now_ms)
                .arg(self.ttl_ms())
                .arg(id)
                .arg(key)
                .arg(value)
                .invoke_async(&mut conn)
                .await
                .map_err(err("save session data"))?;
            Ok(done == 1)
        }
        .boxed()
    }

    fn remove(&self, id: &str) -> StoreFuture<'_, bool> {
        let id = id.to_owned();
        async move {
            let id = id.as_str();
            let mut conn = self.conn().await?;
            let (deleted, _): (u64, u64) = redis::pipe()
                .atomic()
                .del(self.key(id))
                .zrem(self.index(parse_id(id).unwrap_or(0)), id)
                .query_async(&mut conn)
                .await
                .map_err(err("delete a session"))?;
            Ok(deleted > 0)
        }
        .boxed()
    }

    fn list(&self, slot: usize, limit: usize, now_ms: u64) -> StoreFuture<'_, SessionList> {
        async move {
            let mut conn = self.conn().await?;
            let index = self.index(slot);
            let cutoff = now_ms.saturating_sub(self.ttl_ms());
            let stop = limit as isize - 1;
            let (_, total, ids): (u64, u64, Vec<String>) = redis::pipe()
                .atomic()
                .zrembyscore(&index, "-inf", format!("({cutoff}"))
                .zcard(&index)
                .zrevrange(&index, 0, stop)
                .query_async(&mut conn)
                .await
                .map_err(err("list sessions"))?;
            if ids.is_empty() || limit == 0 {
                return Ok(SessionList {
                    total,
                    sessions: Vec::new(),
                });
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.key(id));
            }
            let all: Vec<HashMap<String, String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(err("read sessions"))?;
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
