//! Every environment variable the runtime reads, parsed once, up front.
//!
//! A bad value is a user mistake, not a crash: [`Config::from_env_or_exit`] prints one line naming the
//! variable, the value and what it accepts, then exits with status 2. Lessons read their own variables
//! with the same helpers ([`var`], [`duration_ms`], …) so every message has one shape.
//!
//! Depends on nothing else in the crate: every layer above reads its settings from here.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A variable that was set to something we cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name, e.g. `WORKERS`.
    pub var: String,
    /// What it was set to.
    pub value: String,
    /// What it accepts, in words.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Where variables come from: the process environment in production, a map in unit tests.
pub trait Source {
    /// The variable's value, if it is set and not empty.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

/// Reads `name` and parses it with `parse`; `Ok(None)` when unset.
pub fn var<T>(
    src: &impl Source,
    name: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    match src.get(name) {
        None => Ok(None),
        Some(raw) => parse(raw.trim()).map(Some).ok_or_else(|| ConfigError {
            var: name.to_string(),
            value: raw,
            expected: expected.to_string(),
        }),
    }
}

/// One of a fixed set of words, or `default` when unset; the error lists the words.
pub fn choice<T: Copy>(
    src: &impl Source,
    name: &str,
    options: &[(&str, T)],
    default: T,
) -> Result<T, ConfigError> {
    let words: Vec<_> = options.iter().map(|(word, _)| *word).collect();
    let expected = match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.concat(),
    };
    let found = var(src, name, &expected, |s| {
        options.iter().find(|(word, _)| *word == s).map(|(_, v)| *v)
    })?;
    Ok(found.unwrap_or(default))
}

/// A whole number in `min..=max`, or `default` when unset.
pub fn number<T>(
    src: &impl Source,
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Copy + fmt::Display,
{
    let expected = format!("a whole number from {min} to {max}");
    Ok(var(src, name, &expected, |s| {
        s.parse::<T>().ok().filter(|n| *n >= min && *n <= max)
    })?
    .unwrap_or(default))
}

/// A duration written in milliseconds (the course's convention: `SHUTDOWN_TIMEOUT=30000`).
pub fn duration_ms(
    src: &impl Source,
    name: &str,
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let expected = format!(
        "a duration in milliseconds, at least {} (e.g. {})",
        min.as_millis(),
        default.as_millis()
    );
    Ok(var(src, name, &expected, |s| {
        s.parse::<u64>()
            .ok()
            .map(Duration::from_millis)
            .filter(|d| *d >= min)
    })?
    .unwrap_or(default))
}

/// A size in bytes with an optional K, M or G suffix (powers of 1024): `512M`, `1G`, `65536`.
pub fn bytes(src: &impl Source, name: &str) -> Result<Option<u64>, ConfigError> {
    var(
        src,
        name,
        "a size in bytes, optionally with a K, M or G suffix (e.g. 512M)",
        parse_bytes,
    )
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(['B', 'b']);
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1u64 << shift).filter(|n| *n > 0)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How the master gets requests to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Per request, over pooled connections to each worker's Unix socket (the default): per-request
    /// balancing, retries and edge metrics.
    Proxy,
    /// Per connection: the accepted socket itself is passed to a worker (see `edge::handoff`).
    Handoff,
}

/// How the kernel schedules the cluster's threads (see `common::sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// `SCHED_BATCH` (the default): a thread that wakes does not preempt the one running, so each
    /// runs longer and handles more requests per turn.
    Batch,
    /// Whatever policy the master was started with, untouched.
    Normal,
}

/// How the sticky-session selector places a request with no usable session cookie (`STICKY_NEW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StickyNew {
    /// By the lesson's balancing strategy (least connections), then pinned by the cookie the
    /// worker sets: as HAProxy's `cookie … insert` and nginx's `sticky cookie` do. The default.
    #[default]
    Balance,
    /// By a consistent hash of the client IP, for clients that drop cookies. Every fresh client
    /// behind one address (a NAT, a load test on localhost) lands on one worker.
    Ip,
}

/// When to restart a worker that exited on its own, and when to give up on its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubled for each restart still inside `window`.
    pub base: Duration,
    /// The delay never grows past this.
    pub max: Duration,
    /// More restarts than this inside `window` and the slot is marked Failed.
    pub max_restarts: u32,
    /// How far back restarts count; a worker that stayed up this long starts from a clean slate.
    pub window: Duration,
    /// A worker that ran at least this long after Ready and then crashed was stable: it is
    /// restarted at once and not counted (see `supervisor::backoff`).
    pub min_uptime: Duration,
}

impl Default for RestartPolicy {
    /// The course's figures: 1 s doubling to 30 s, at most 5 unstable restarts in 60 s, stable
    /// after 1 s of Ready.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(1),
        }
    }
}

/// How the master sizes the cluster to its load (`AUTOSCALE=min..max`; see
/// `supervisor::autoscale` for the rule). The signal is the one the master measures best:
/// requests in flight at the edge, averaged over each interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autoscale {
    /// Never fewer workers than this.
    pub min: usize,
    /// Never more than this.
    pub max: usize,
    /// `AUTOSCALE_TARGET_INFLIGHT`, default 8: the in-flight requests per worker to aim at; the
    /// cluster wants `ceil(in flight / target)` workers.
    pub target_in_flight: f64,
    /// `AUTOSCALE_INTERVAL` ms, default 1000: how often a decision is made (in-flight is sampled
    /// ten times per interval and averaged).
    pub interval: Duration,
    /// `AUTOSCALE_UP_COOLDOWN` ms, default 3000: after a scale-up, the next waits this long, so
    /// the new workers' effect is seen before more are added.
    pub up_cooldown: Duration,
    /// `AUTOSCALE_DOWN_WINDOW` ms, default 60000: a scale-down goes only as low as the highest
    /// recommendation of this window (Kubernetes' HPA stabilisation window; its default is 300 s),
    /// so a lull does not drop workers the next burst needs.
    pub down_window: Duration,
    /// Changes of less than this fraction of the target are ignored (HPA's tolerance, 0.1).
    pub tolerance: f64,
}

/// `AUTOSCALE=min..max` and its `AUTOSCALE_*` settings; `None` when `AUTOSCALE` is unset.
fn autoscale(src: &impl Source) -> Result<Option<Autoscale>, ConfigError> {
    let ms = Duration::from_millis;
    let range = var(
        src,
        "AUTOSCALE",
        "a range of worker counts min..max with 1 <= min <= max <= 256 (e.g. 2..8)",
        |s| {
            let (min, max) = s.split_once("..")?;
            let (min, max) = (min.trim().parse().ok()?, max.trim().parse().ok()?);
            (1 <= min && min <= max && max <= 256).then_some((min, max))
        },
    )?;
    let target: u32 = number(src, "AUTOSCALE_TARGET_INFLIGHT", 8, 1, 100_000)?;
    let interval = duration_ms(src, "AUTOSCALE_INTERVAL", ms(1000), ms(10))?;
    let up_cooldown = duration_ms(src, "AUTOSCALE_UP_COOLDOWN", ms(3000), ms(0))?;
    let down_window = duration_ms(src, "AUTOSCALE_DOWN_WINDOW", ms(60_000), ms(0))?;
    Ok(range.map(|(min, max)| Autoscale {
        min,
        max,
        target_in_flight: f64::from(target),
        interval,
        up_cooldown,
        down_window,
        tolerance: 0.1,
    }))
}

/// The edge's certificate chain and private key, PEM files (`TLS_CERT`, `TLS_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `TLS_CERT`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `TLS_KEY`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `TLS_CERT` and `TLS_KEY`, both or neither; TLS cannot be combined with handoff dispatch,
/// where the workers would hold the connections (and would need the key).
fn tls_files(src: &impl Source, dispatch: Dispatch) -> Result<Option<TlsFiles>, ConfigError> {
    let missing = |var: &str, other: &str| ConfigError {
        var: var.into(),
        value: String::new(),
        expected: format!("a PEM file path, set together with {other}"),
    };
    let files = match (src.get("TLS_CERT"), src.get("TLS_KEY")) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(missing("TLS_KEY", "TLS_CERT")),
        (None, Some(_)) => return Err(missing("TLS_CERT", "TLS_KEY")),
        (Some(cert), Some(key)) => TlsFiles {
            cert: cert.trim().into(),
            key: key.trim().into(),
        },
    };
    if dispatch == Dispatch::Handoff {
        return Err(ConfigError {
            var: "TLS_CERT".into(),
            value: files.cert.display().to_string(),
            expected: "no TLS with DISPATCH=handoff (the edge must terminate TLS itself)".into(),
        });
    }
    Ok(Some(files))
}

/// What a lesson may change before the environment is read.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `WORKERS` when unset.
    pub workers: usize,
    /// `PORT` when unset.
    pub port: u16,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            workers: cpu_count(),
            port: 8000,
        }
    }
}

/// The number of CPUs this process may use (at least 1).
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The runtime's settings. Field docs name the variable and its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST`, default 127.0.0.1: exposing a cluster to the network is a decision, not a default.
    pub host: IpAddr,
    /// `PORT`, default 8000 (0 picks a free port; the banner prints it).
    pub port: u16,
    /// `WORKERS`, default: the CPU count (lessons may lower it).
    pub workers: usize,
    /// `SHUTDOWN_TIMEOUT` ms, default 30000: how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
    /// `HEALTH_CHECK_INTERVAL` ms, default 5000: workers heartbeat this often; three missed beats
    /// mean the worker is hung and it is replaced.
    pub health_check_interval: Duration,
    /// `METRICS_INTERVAL` ms, default 1000: how often worker CPU and memory are sampled.
    pub metrics_interval: Duration,
    /// `MAX_MEMORY` (e.g. `512M`), unset by default: a worker above it is replaced gracefully.
    pub max_memory: Option<u64>,
    /// `RESTART_DELAY` ms (1000), `RESTART_DELAY_MAX` ms (30000), `MAX_RESTARTS` (5),
    /// `RESTART_WINDOW` ms (60000), `MIN_UPTIME` ms (1000).
    pub restart: RestartPolicy,
    /// `READY_TIMEOUT` ms, default 10000: a worker that has not said Ready by then is replaced.
    pub ready_timeout: Duration,
    /// `UPSTREAM_TIMEOUT` ms, default 30000: the longest a worker may take to start its response
    /// (then 504).
    pub upstream_timeout: Duration,
    /// `HEADER_TIMEOUT` ms, default 10000: a client must send a full request head within this; hyper
    /// also starts it when a keep-alive connection goes idle, so it is the idle timeout too.
    pub header_timeout: Duration,
    /// `MAX_HEADER_SIZE` bytes, default 64K (at least 8K): bigger heads get 431.
    pub max_header_size: usize,
    /// `MAX_BODY_SIZE` bytes, default 10M: bigger bodies get 413.
    pub max_body_size: u64,
    /// `BODY_BUFFER` bytes, default 64K: a request body up to this size is read whole, in memory,
    /// before a worker connection is taken for it (as nginx's `proxy_request_buffering`), so a
    /// client that sends its body slowly holds no worker; larger bodies stream.
    pub body_buffer: u64,
    /// `BODY_TIMEOUT` ms, default 10000: a request body that sends nothing for this long is cut
    /// (408 when the answer has not started), buffered or streamed, in both dispatch modes.
    pub body_timeout: Duration,
    /// `MAX_CONNECTIONS`, default 10000: past it the edge stops accepting until one closes.
    pub max_connections: usize,
    /// `POOL_SIZE`, default 64: concurrent upstream connections per worker; more requests queue
    /// at the master instead of swamping the worker. Split evenly over the edge threads, rounded up
    /// (each thread gets at least one); a thread whose share is in use borrows a free place from
    /// another's before its requests wait, so the worker gets its whole pool however unevenly the
    /// clients' connections are spread over the threads.
    pub pool_size: usize,
    /// `QUEUE_TIMEOUT` ms, default 5000: while no worker is Ready (all crashed or restarting), a
    /// request (in handoff mode, a connection) waits at the master this long for one, then 503.
    /// 0: answer 503 at once.
    pub queue_timeout: Duration,
    /// `QUEUE_MAX`, default 1024: at most this many requests wait so; more get 503 at once.
    pub queue_max: usize,
    /// `STICKY_NEW` = `balance` (default) or `ip`: how a sticky-session lesson places a request
    /// without a valid session cookie (see [`StickyNew`]).
    pub sticky_new: StickyNew,
    /// `LOG_FORMAT` = `text` (default) or `json`; the filter is `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// `DISPATCH` = `proxy` (default) or `handoff`.
    pub dispatch: Dispatch,
    /// `WS_HANDOFF` = `on` (default) or `off`: in proxy dispatch, a WebSocket upgrade on a plain
    /// TCP connection is routed by the master as any request, then the connection itself is
    /// passed to the chosen worker, so the master is off the path of every message (see
    /// `edge::upgrade`). `off`, or with TLS or a lesson's front (rate limit, trace) on, the master
    /// splices the two sockets instead and carries every byte.
    pub ws_handoff: bool,
    /// `EDGE_THREADS`, default: twice the CPU count (at most 64): threads the master's edge runs
    /// on, each with its own listening socket, accept loop, runtime and share of every worker's
    /// connection pool.
    ///
    /// Why twice: the master shares the cores with its workers, and the kernel's fair scheduler
    /// gives each runnable thread an equal share. A proxied request costs the master about 1.6
    /// times what it costs a worker (10 µs against 6 on the bench machine), so with as many edge
    /// threads as workers the master was the bottleneck. Measured with `wrk -c64` on 2 cores, 2
    /// workers: 2 edge threads 87–94k req/s, 4 threads 101–106k, 6 threads 87k, 8 threads 79k.
    pub edge_threads: usize,
    /// `SCHEDULING` = `batch` (default) or `normal`: the kernel scheduling policy of the master
    /// and, inherited, of its workers (see `common::sched`).
    pub scheduling: Scheduling,
    /// `TLS_CERT` and `TLS_KEY` (PEM paths), unset by default: the edge speaks HTTPS itself,
    /// for a cluster with no proxy in front (see `edge::tls`). Read and checked at start.
    pub tls: Option<TlsFiles>,
    /// `AUTOSCALE=min..max`, unset by default (the count stays `WORKERS`): the master adds and
    /// removes workers to follow its load (see [`Autoscale`]); `WORKERS` is the count it starts
    /// with, brought into the range at the first decision.
    pub autoscale: Option<Autoscale>,
}

impl Config {
    /// Whether workers get a handoff channel: for every connection (`DISPATCH=handoff`), or for
    /// WebSocket upgrades in proxy dispatch (`WS_HANDOFF`, not over TLS, whose connections the
    /// master must keep).
    pub(crate) fn wants_handoff_channel(&self) -> bool {
        self.dispatch == Dispatch::Handoff || (self.ws_handoff && self.tls.is_none())
    }

    /// Reads the process environment; on a bad value prints the reason and exits with status 2.
    pub fn from_env_or_exit(defaults: Defaults) -> Self {
        Self::from_source(&ProcessEnv, defaults).unwrap_or_else(|e| exit_bad_config(&e))
    }

    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source, defaults: Defaults) -> Result<Self, ConfigError> {
        let ms = Duration::from_millis;
        let host = var(
            src,
            "HOST",
            "an IP address such as 127.0.0.1 or 0.0.0.0",
            |s| s.parse::<IpAddr>().ok(),
        )?
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let log_format = choice(
            src,
            "LOG_FORMAT",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        )?;
        let dispatch = choice(
            src,
            "DISPATCH",
            &[("proxy", Dispatch::Proxy), ("handoff", Dispatch::Handoff)],
            Dispatch::Proxy,
        )?;
        let scheduling = choice(
            src,
            "SCHEDULING",
            &[("batch", Scheduling::Batch), ("normal", Scheduling::Normal)],
            Scheduling::Batch,
        )?;
        let restart = RestartPolicy {
            base: duration_ms(src, "RESTART_DELAY", ms(1000), ms(1))?,
            max: duration_ms(src, "RESTART_DELAY_MAX", ms(30_000), ms(1))?,
            max_restarts: number(src, "MAX_RESTARTS", 5, 0, 1000)?,
            window: duration_ms(src, "RESTART_WINDOW", ms(60_000), ms(1))?,
            min_uptime: duration_ms(src, "MIN_UPTIME", ms(1000), ms(0))?,
        };
        Ok(Self {
            host,
            port: number(src, "PORT", defaults.port, 0, u16::MAX)?,
            workers: number(src, "WORKERS", defaults.workers, 1, 256)?,
            shutdown_timeout: duration_ms(src, "SHUTDOWN_TIMEOUT", ms(30_000), ms(0))?,
            health_check_interval: duration_ms(src, "HEALTH_CHECK_INTERVAL", ms(5000), ms(10))?,
            metrics_interval: duration_ms(src, "METRICS_INTERVAL", ms(1000), ms(10))?,
            max_memory: bytes(src, "MAX_MEMORY")?,
            restart,
            ready_timeout: duration_ms(src, "READY_TIMEOUT", ms(10_000), ms(10))?,
            upstream_timeout: duration_ms(src, "UPSTREAM_TIMEOUT", ms(30_000), ms(1))?,
            header_timeout: duration_ms(src, "HEADER_TIMEOUT", ms(10_000), ms(1))?,
            max_header_size: number(src, "MAX_HEADER_SIZE", 64 * 1024, 8 * 1024, 16 << 20)?,
            max_body_size: bytes(src, "MAX_BODY_SIZE")?.unwrap_or(10 << 20),
            body_buffer: bytes(src, "BODY_BUFFER")?.unwrap_or(64 << 10),
            body_timeout: duration_ms(src, "BODY_TIMEOUT", ms(10_000), ms(1))?,
            max_connections: number(src, "MAX_CONNECTIONS", 10_000, 1, 1_000_000)?,
            pool_size: number(src, "POOL_SIZE", 64, 1, 10_000)?,
            queue_timeout: duration_ms(src, "QUEUE_TIMEOUT", ms(5000), ms(0))?,
            queue_max: number(src, "QUEUE_MAX", 1024, 0, 1_000_000)?,
            sticky_new: choice(
                src,
                "STICKY_NEW",
                &[("balance", StickyNew::Balance), ("ip", StickyNew::Ip)],
                StickyNew::Balance,
            )?,
            log_format,
            dispatch,
            ws_handoff: choice(src, "WS_HANDOFF", &[("on", true), ("off", false)], true)?,
            edge_threads: number(src, "EDGE_THREADS", (2 * cpu_count()).min(64), 1, 64)?,
            scheduling,
            tls: tls_files(src, dispatch)?,
            autoscale: autoscale(src)?,
        })
    }
}

/// Prints `err` the way every lesson does and exits with status 2 (a usage error).
pub fn exit_bad_config(err: &ConfigError) -> ! {
    crate::log_buffer::flush();
    eprintln!("error: {err}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = Config::from_source(
            &[],
            Defaults {
                workers: 3,
                port: 8000,
            },
        )
        .unwrap();
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.port, 8000);
        assert_eq!(cfg.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(cfg.restart, RestartPolicy::default());
        assert_eq!(
            cfg.edge_threads,
            (2 * cpu_count()).min(64),
            "twice the cores"
        );
    }

    #[test]
    fn a_bad_number_names_the_variable_and_the_range() {
        let err = Config::from_source(&[("WORKERS", "abc")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "WORKERS");
        assert_eq!(
            err.to_string(),
            "invalid WORKERS=\"abc\": expected a whole number from 1 to 256"
        );
        let err = Config::from_source(&[("PORT", "70000")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "PORT");
    }

    #[test]
    fn autoscale_is_off_unless_a_range_is_given() {
        let cfg = Config::from_source(&[], Defaults::default()).unwrap();
        assert_eq!(cfg.autoscale, None);
        let cfg = Config::from_source(
            &[("AUTOSCALE", "2..8"), ("AUTOSCALE_DOWN_WINDOW", "5000")],
            Defaults::default(),
        )
        .unwrap();
        let a = cfg.autoscale.expect("AUTOSCALE=2..8 is on");
        assert_eq!((a.min, a.max), (2, 8));
        assert_eq!(a.down_window, Duration::from_millis(5000));
        assert_eq!(a.target_in_flight, 8.0, "the default target");
        let err = Config::from_source(&[("AUTOSCALE", "8..2")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "AUTOSCALE");
    }

    #[test]
    fn scheduling_is_batch_unless_told_normal() {
        let cfg = Config::from_source(&[], Defaults::default()).unwrap();
        assert_eq!(cfg.scheduling, Scheduling::Batch);
        let cfg = Config::from_source(&[("SCHEDULING", "normal")], Defaults::default()).unwrap();
        assert_eq!(cfg.scheduling, Scheduling::Normal);
        let err = Config::from_source(&[("SCHEDULING", "fast")], Defaults::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid SCHEDULING=\"fast\": expected batch or normal"
        );
        let three = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(choice(&[("X", "b")], "X", &three, 0).unwrap(), 2);
        assert_eq!(
            choice(&[], "X", &three, 0).unwrap(),
            0,
            "unset: the default"
        );
        let err = choice(&[("X", "d")], "X", &three, 0).unwrap_err();
        assert_eq!(err.to_string(), "invalid X=\"d\": expected a, b or c");
    }

    #[test]
    fn min_uptime_is_milliseconds_and_may_be_zero() {
        let cfg = Config::from_source(&[("MIN_UPTIME", "250")], Defaults::default()).unwrap();
        assert_eq!(cfg.restart.min_uptime, Duration::from_millis(250));
        let cfg = Config::from_source(&[("MIN_UPTIME", "0")], Defaults::default()).unwrap();
        assert_eq!(cfg.restart.min_uptime, Duration::ZERO);
        let err = Config::from_source(&[("MIN_UPTIME", "1s")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "MIN_UPTIME");
    }

    #[test]
    fn the_queue_waits_five_seconds_for_at_most_1024_requests_unless_told() {
        let cfg = Config::from_source(&[], Defaults::default()).unwrap();
        assert_eq!(
            (cfg.queue_timeout, cfg.queue_max),
            (Duration::from_secs(5), 1024)
        );
        let cfg = Config::from_source(
            &[("QUEUE_TIMEOUT", "0"), ("QUEUE_MAX", "3")],
            Defaults::default(),
        )
        .unwrap();
        assert_eq!((cfg.queue_timeout, cfg.queue_max), (Duration::ZERO, 3));
        let err = Config::from_source(&[("QUEUE_MAX", "-1")], Defaults::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid QUEUE_MAX=\"-1\": expected a whole number from 0 to 1000000"
        );
        let err =
            Config::from_source(&[("QUEUE_TIMEOUT", "soon")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "QUEUE_TIMEOUT");
    }

    #[test]
    fn new_sticky_sessions_are_balanced_unless_told_ip() {
        let cfg = Config::from_source(&[], Defaults::default()).unwrap();
        assert_eq!(cfg.sticky_new, StickyNew::Balance);
        let cfg = Config::from_source(&[("STICKY_NEW", "ip")], Defaults::default()).unwrap();
        assert_eq!(cfg.sticky_new, StickyNew::Ip);
        let err = Config::from_source(&[("STICKY_NEW", "hash")], Defaults::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid STICKY_NEW=\"hash\": expected balance or ip"
        );
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("64KB"), Some(64 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("0"), None);
        assert_eq!(parse_bytes("99999999999G"), None, "overflow is an error");
    }

    #[test]
    fn durations_are_milliseconds() {
        let cfg =
            Config::from_source(&[("SHUTDOWN_TIMEOUT", "1500")], Defaults::default()).unwrap();
        assert_eq!(cfg.shutdown_timeout, Duration::from_millis(1500));
        let err =
            Config::from_source(&[("SHUTDOWN_TIMEOUT", "1.5s")], Defaults::default()).unwrap_err();
        assert_eq!(err.var, "SHUTDOWN_TIMEOUT");
    }
}

/// Property tests: any value of any variable is a config or an error naming that variable.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    const VARS: &[&str] = &[
        "HOST",
        "PORT",
        "WORKERS",
        "SHUTDOWN_TIMEOUT",
        "HEALTH_CHECK_INTERVAL",
        "METRICS_INTERVAL",
        "MAX_MEMORY",
        "RESTART_DELAY",
        "RESTART_DELAY_MAX",
        "MAX_RESTARTS",
        "RESTART_WINDOW",
        "READY_TIMEOUT",
        "UPSTREAM_TIMEOUT",
        "HEADER_TIMEOUT",
        "MAX_HEADER_SIZE",
        "MAX_BODY_SIZE",
        "MAX_CONNECTIONS",
        "POOL_SIZE",
        "BODY_BUFFER",
        "BODY_TIMEOUT",
        "LOG_FORMAT",
        "DISPATCH",
        "WS_HANDOFF",
        "EDGE_THREADS",
        "SCHEDULING",
    ];

    proptest! {
        #![proptest_config(crate::prop::config())]

        #[test]
        fn prop_any_value_is_a_config_or_an_error_naming_its_variable(
            var in select(VARS),
            value in prop_oneof![".{0,24}", "[0-9]{0,22}[kKmMgGbB]{0,2}", "-?[0-9]{1,6}"],
        ) {
            let src = [(var, value.as_str())];
            if let Err(e) = Config::from_source(&src, Defaults::default()) {
                prop_assert_eq!(&e.var, var);
                prop_assert_eq!(&e.value, &value);
                let prefix = format!("invalid {var}=");
                prop_assert!(e.to_string().starts_with(&prefix));
            }
        }

        #[test]
        fn prop_sizes_round_trip(n in 1u64..1_000_000, suffix in select(&[("", 0u32), ("K", 10), ("m", 20), ("G", 30), ("KB", 10)][..])) {
            let (text, shift) = suffix;
            prop_assert_eq!(parse_bytes(&format!("{n}{text}")), n.checked_mul(1 << shift));
        }

        #[test]
        fn prop_sizes_never_panic(s in ".{0,30}") {
            let _ = parse_bytes(&s);
        }
    }
}
