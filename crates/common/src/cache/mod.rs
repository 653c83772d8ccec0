//! A two-level read-through cache: each worker's own memory, then Redis, then the loader (the
//! database).
//!
//! - **Level 1, local** (`moka`): per process, bounded by entry count and a time to live. A hit
//!   costs no I/O. Concurrent misses on one key in a process wait for the same load
//!   (`try_get_with` runs one loader per key and hands its result to every waiter): a key that
//!   expires under load does not send a stampede of identical queries to the database.
//! - **Level 2, Redis**: shared by every worker of every instance, with its own time to live.
//! - **Invalidation**: [`TwoLevelCache::invalidate`], called after a write to the source, deletes
//!   the Redis copy, drops the local one and publishes the key on a Redis channel; every process
//!   subscribed drops its local copy when the message arrives. Pub/sub is fire-and-forget: a
//!   process whose subscription broke may have missed messages, so on every (re)subscription it
//!   drops its whole local level. What remains is the delay of one message (measured by the
//!   cache test) and the local time to live as the bound if Redis is unreachable.
//! - Counters per level ([`CacheCounters`]) are `prometheus-client` counters a lesson registers
//!   in its `/metrics` ([`TwoLevelCache::register`]).
//!
//! Depends on nothing else in the crate (feature `cache`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long one Redis command may take before the cache goes to the loader instead.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before subscribing again after the subscription broke.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

/// The sizes and lifetimes of the two levels.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Names the cache in Redis keys (`<name>:<key>`) and its channel (`<name>:invalidate`).
    pub name: String,
    /// Entries kept in each process's memory.
    pub local_capacity: u64,
    /// How long a local entry lives at most (the staleness bound if invalidations stop coming).
    pub local_ttl: Duration,
    /// How long an entry lives in Redis.
    pub redis_ttl: Duration,
}

/// Why a value could not be had.
#[derive(Debug)]
pub struct CacheError {
    /// What was being done.
    pub context: &'static str,
    /// The underlying failure (the loader's, or Redis's).
    pub source: crate::error::BoxError,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cache: cannot {}: {}", self.context, self.source)
    }
}

impl std::error::Error for CacheError {}

/// Hits and misses per level; `loads` are the loader's calls (database queries).
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    /// Answered from this process's memory.
    pub local_hits: Counter,
    /// Answered from Redis after a local miss.
    pub redis_hits: Counter,
    /// Missed both levels: the loader ran.
    pub loads: Counter,
    /// Invalidation messages received from the channel.
    pub invalidations: Counter,
}

impl CacheCounters {
    /// Registers the counters as `<prefix>_cache_local_hits_total`, `<prefix>_cache_redis_hits_total`,
    /// `<prefix>_cache_loads_total` and `<prefix>_cache_invalidations_total`; the hit ratio of
    /// each level is a division in the dashboard.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        // The registered counters are these: nothing is copied on the hot path.
        registry.register(
            format!("{prefix}_cache_local_hits"),
            "Reads answered from this process's memory",
            self.local_hits.clone(),
        );
        registry.register(
            format!("{prefix}_cache_redis_hits"),
            "Reads answered from Redis after a local miss",
            self.redis_hits.clone(),
        );
        registry.register(
            format!("{prefix}_cache_loads"),
            "Reads that missed both levels and ran the loader",
            self.loads.clone(),
        );
        registry.register(
            format!("{prefix}_cache_invalidations"),
            "Invalidation messages received",
            self.invalidations.clone(),
        );
    }

    /// The counters in the Prometheus text format, for a process (a cluster's master) that adds
    /// its workers' figures to its own page.
    pub fn render(&self, prefix: &str) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry, prefix);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

/// The cache. Cheap to clone: clones share both levels.
#[derive(Clone)]
pub struct TwoLevelCache<V: Clone + Send + Sync + 'static> {
    settings: Arc<CacheSettings>,
    local: moka::future::Cache<String, V>,
    redis: ConnectionManager,
    client: redis::Client,
    counters: CacheCounters,
    listener: Arc<Listener>,
}

/// Stops the invalidation listener when the last clone of its cache is dropped.
#[derive(Debug, Default)]
struct Listener(std::sync::OnceLock<tokio::task::AbortHandle>);

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.0.get() {
            task.abort();
        }
    }
}

impl<V: Clone + Send + Sync + 'static> std::fmt::Debug for TwoLevelCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoLevelCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn redis_err(context: &'static str) -> impl FnOnce(redis::RedisError) -> CacheError {
    move |e| CacheError {
        context,
        source: Box::new(e),
    }
}

impl<V> TwoLevelCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to Redis at `url` and starts the task that listens for invalidations (on the
    /// current tokio runtime; it ends when the last clone of the cache is dropped).
    pub async fn open(url: &str, settings: CacheSettings) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(redis_err("parse the Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT);
        let redis = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(redis_err("connect to Redis"))?;
        let local = moka::future::Cache::builder()
            .max_capacity(settings.local_capacity)
            .time_to_live(settings.local_ttl)
            .build();
        let cache = Self {
            settings: Arc::new(settings),
            local,
            redis,
            client,
            counters: CacheCounters::default(),
            listener: Arc::default(),
        };
        let subscribed = cache.spawn_listener();
        // The first subscription is in place before anyone can rely on invalidations.
        let _ = tokio::time::timeout(TIMEOUT, subscribed).await;
        Ok(cache)
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.settings.name)
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}:{key}", self.settings.name)
    }

    /// Subscribes (again after every failure) and drops local copies as messages arrive. The
    /// returned receiver fires once the first subscription is in place.
    fn spawn_listener(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let local = self.local.clone();
        let (client, channel, counters) =
            (self.client.clone(), self.channel(), self.counters.clone());
        let prefix = format!("{}:", self.settings.name);
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            loop {
                let subscribed = match client.get_async_pubsub().await {
                    Ok(mut pubsub) => pubsub.subscribe(&channel).await.map(|()| pubsub),
                    Err(e) => Err(e),
                };
                match subscribed {
                    Ok(mut pubsub) => {
                        // Anything published while we were not subscribed is lost: start clean.
                        local.invalidate_all();
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            if let Ok(key) = msg.get_payload::<String>() {
                                counters.invalidations.inc();
                                let key = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                                local.invalidate(&key).await;
                            }
                        }
                        tracing::warn!("cache invalidation subscription ended; resubscribing");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cache cannot subscribe to invalidations; retrying");
                    }
                }
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            }
        });
        let _ = self.listener.0.set(task.abort_handle());
        subscribed
    }

    /// The value for `key`: from this process's memory, else from Redis, else from `load` (whose
    /// result is then kept in both). Concurrent calls for one missing key in this process run
    /// `load` once.
    pub async fn get_with<F, Fut, E>(&self, key: &str, load: F) -> Result<V, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<crate::error::BoxError>,
    {
        if let Some(v) = self.local.get(key).await {
            self.counters.local_hits.inc();
            return Ok(v);
        }
        let init = async {
            let mut redis = self.redis.clone();
            let rkey = self.redis_key(key);
            // Redis trouble is not fatal: the loader is the source of truth.
            let cached: Option<String> = redis.get(&rkey).await.unwrap_or(None);
            if let Some(v) = cached.and_then(|s| serde_json::from_str::<V>(&s).ok()) {
                self.counters.redis_hits.inc();
                return Ok(v);
            }
            self.counters.loads.inc();
            let v = load().await.map_err(Into::into)?;
            if let Ok(text) = serde_json::to_string(&v) {
                let ttl = self.settings.redis_ttl.as_secs().max(1);
                let _: Result<(), _> = redis.set_ex(&rkey, text, ttl).await;
            }
            Ok::<V, crate::error::BoxError>(v)
        };
        self.local
            .try_get_with(key.to_string(), init)
            .await
            .map_err(|e: Arc<crate::error::BoxError>| CacheError {
                context: "load a value",
                source: e.to_string().into(),
            })
    }

    /// After a write to the source: drops `key` from Redis and from this process, and tells
    /// every other process to drop it.
    pub async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        let mut redis = self.redis.clone();
        let rkey = self.redis_key(key);
        redis::pipe()
            .del(&rkey)
            .ignore()
            .publish(self.channel(), &rkey)
            .ignore()
            .query_async::<()>(&mut redis)
            .await
            .map_err(redis_err("publish an invalidation"))?;
        self.local.invalidate(key).await;
        Ok(())
    }

    /// The counters, to read or to register.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Registers the counters (see [`CacheCounters::register`]).
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        self.counters.register(registry, prefix);
    }
}
