//! Lesson 06: the production cluster, every pattern of the course in one binary, configured,
//! secured, observable, and shaped for an orchestrator.
//!
//! The Node original claimed sticky sessions, least-connections balancing, monitoring, breakers,
//! graceful shutdown, health checks, auto-recovery and Prometheus export. Measured, it had no
//! Prometheus endpoint, killed workers 1 s into a shutdown whatever they were doing, exited 1 on
//! every shutdown and crashed when no worker was left. Its README's production checklist is this
//! crate's table of contents:
//!
//! | checklist item | here |
//! |---|---|
//! | external session store | `SESSION_STORE=redis://…`, sticky routing by the session cookie |
//! | logging | a log line per request, JSON with `LOG_FORMAT=json` (`common::http::trace`) |
//! | APM | `X-Request-Id` passed to the worker and reflected, `X-Response-Time`, `/metrics` |
//! | a load balancer | `/health/ready` turning 503 first on shutdown, `SHUTDOWN_DELAY`, `TRUSTED_PROXIES` |
//! | health checks | `/health/live`, `/health/ready`, `/health` ([`admin`]) |
//! | monitoring and alerting | `/metrics`, `/metrics/prometheus`, `/alerts`, `/dashboard` |
//! | rate limiting | `RATE_LIMIT=100/min` per client IP, for the whole cluster, in the master |
//! | a process manager | graceful shutdown with a drain deadline, restarts with backoff, hang detection |
//!
//! Layout:
//! - [`config`]: the environment over an optional TOML file, and `--print-config`;
//! - [`Settings`]: the lesson's own variables (the runtime's are in [`Config`]);
//! - [`cluster`]: the whole cluster, ready to `run()`;
//! - [`worker`]: what each worker serves (`/`, `/session`, `/data`, `/slow`, `/api/notes`,
//!   `/api/downstream`) and its answers to the master about its breaker;
//! - [`admin`]: the master's routes: health for orchestrators, the admin API, `/circuit-status`.

pub mod admin;
pub mod config;
pub mod notes;
pub mod worker;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use common::balance::outlier::{Outlier, OutlierConfig};
use common::balance::sticky::{Sticky, TrustedProxies};
use common::balance::{Strategy, StrategyOptions, Switch};
use common::breaker::{BreakerConfig, MasterBreakers, Scope, WorkerLink};
use common::config::{ConfigError, Defaults, Source, cpu_count};
use common::db::DbSettings;
use common::http::rate_limit::{Limiter, Rate};
use common::http::trace::TraceLayer;
use common::metrics::Monitor;
use common::metrics::health::Thresholds;
use common::session::web::{SessionSettings, StoreKind};
use common::{Cluster, Config};

use crate::config::Layered;

/// How often idle rate-limit keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The admin token: never printed, compared in constant time (see [`admin`]).
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token's bytes, for the comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

/// The shortest admin token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The lesson's own settings; the runtime's (`PORT`, `WORKERS`, …) are in [`Config`]. Field docs
/// name the variable and its default.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SESSION_TIMEOUT` (1800000 ms), `SESSION_MAX`, `SESSION_STORE` (memory), `SESSION_SWEEP_INTERVAL`.
    pub sessions: SessionSettings,
    /// `STRATEGY`, default `least-connections`: how new sessions are placed; changeable at run
    /// time with `POST /admin/strategy`.
    pub strategy: Strategy,
    /// `BREAKER_*` (see `common::breaker::config`); `BREAKER_SCOPE` = `cluster` (default: the
    /// master holds the breaker for every worker), `worker` (each its own) or `off`.
    pub breaker: BreakerConfig,
    /// `OUTLIER_*`: passive ejection of a worker that keeps failing.
    pub outlier: OutlierConfig,
    /// `ALERT_*`: the monitor's alert and health thresholds.
    pub thresholds: Thresholds,
    /// `RATE_LIMIT` (`100/min`, `10/s`, `5000/hour`; default off) with `RATE_LIMIT_BURST`
    /// (default: the count).
    pub rate_limit: Option<Rate>,
    /// `RATE_LIMIT_KEYS`, default 100000: the most client addresses remembered at once.
    pub rate_limit_keys: usize,
    /// `TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` names the client (default none).
    pub trusted_proxies: TrustedProxies,
    /// `ADMIN_TOKEN` (at least 16 characters): without it the admin API is off.
    pub admin_token: Option<AdminToken>,
    /// `DOWNSTREAM_URL` (`http://host:port`): the service `/api/downstream` calls through its
    /// breaker; unset, that route says so with a 503.
    pub downstream: Option<String>,
    /// `SHUTDOWN_DELAY` ms, default 0: after SIGTERM, how long the master goes on serving while
    /// `/health/ready` says 503, so a load balancer stops sending before the listener closes.
    pub shutdown_delay: Duration,
    /// `ACCESS_LOG` = `on` (default) or `off`: one log line per request.
    pub access_log: bool,
    /// `DATABASE_URL` and `DATABASE_REPLICA_URLS`: where `/api/notes` keeps its notes
    /// (PostgreSQL); unset, each worker keeps them in memory (see [`notes`]).
    pub database: Option<DbSettings>,
}

impl Settings {
    /// Reads every variable from `src`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        use common::config::{choice, duration_ms, number, var};
        let breaker = BreakerConfig::from_env(src)?;
        let rate = var(
            src,
            "RATE_LIMIT",
            "off or a rate such as 100/min, 10/s or 5000/hour",
            |s| match s {
                "off" => Some(None),
                s => Rate::parse(s).map(Some),
            },
        )?
        .flatten();
        let burst = var(
            src,
            "RATE_LIMIT_BURST",
            "a whole number from 1 to 1000000",
            |s| {
                s.parse::<NonZeroU32>()
                    .ok()
                    .filter(|n| n.get() <= 1_000_000)
            },
        )?;
        let rate_limit = rate.map(|r| burst.map_or(r, |b| r.with_burst(b)));
        let admin_token = var(
            src,
            "ADMIN_TOKEN",
            &format!("a secret of at least {MIN_TOKEN_LEN} printable characters, no spaces"),
            |s| {
                (s.len() >= MIN_TOKEN_LEN && s.bytes().all(|b| b.is_ascii_graphic()))
                    .then(|| AdminToken(s.to_string()))
            },
        )?;
        let downstream = var(src, "DOWNSTREAM_URL", "an http://host:port URL", |s| {
            let uri = s.parse::<axum::http::Uri>().ok()?;
            (uri.scheme_str() == Some("http") && uri.host().is_some())
                .then(|| s.trim_end_matches('/').to_string())
        })?;
        let trusted_proxies = var(
            src,
            "TRUSTED_PROXIES",
            "a comma-separated list of IP addresses or CIDR blocks (e.g. 127.0.0.1,10.0.0.0/8)",
            TrustedProxies::parse,
        )?
        .unwrap_or_default();
        Ok(Self {
            sessions: SessionSettings::from_source(src)?,
            strategy: Strategy::from_source(src, Strategy::LeastConnections)?,
            breaker,
            outlier: OutlierConfig::from_source(src)?,
            thresholds: Thresholds::from_source(src)?,
            rate_limit,
            rate_limit_keys: number(src, "RATE_LIMIT_KEYS", 100_000, 1, 10_000_000)?,
            trusted_proxies,
            admin_token,
            downstream,
            shutdown_delay: duration_ms(src, "SHUTDOWN_DELAY", Duration::ZERO, Duration::ZERO)?,
            access_log: choice(src, "ACCESS_LOG", &[("on", true), ("off", false)], true)?,
            database: DbSettings::from_source(src)?,
        })
    }
}

/// Everything the binary was configured with, and where each value came from.
pub struct Loaded {
    /// The runtime's settings.
    pub config: Config,
    /// The lesson's.
    pub settings: Settings,
    /// The sources, for `--print-config`.
    pub source: Layered,
}

impl Loaded {
    /// Reads the environment and the `CONFIG` file; on a bad value prints the reason and exits 2.
    pub fn from_env_or_exit() -> Self {
        Self::load().unwrap_or_else(|e| common::config::exit_bad_config(&e))
    }

    fn load() -> Result<Self, ConfigError> {
        let source = Layered::load(common::config::ProcessEnv)?;
        // The original's defaults: PORT 8000, WORKERS min(4, CPUs); the rest are the runtime's.
        let defaults = Defaults {
            workers: cpu_count().min(4),
            port: 8000,
        };
        let config = Config::from_source(&source, defaults)?;
        let settings = Settings::from_source(&source)?;
        source.check_unknown()?;
        if settings.rate_limit.is_some() && config.dispatch == common::config::Dispatch::Handoff {
            return Err(ConfigError {
                var: "DISPATCH".into(),
                value: "handoff".into(),
                expected: "proxy while RATE_LIMIT is set (in handoff mode the master never sees a passed connection's requests, so it cannot count them)".into(),
            });
        }
        Ok(Self {
            config,
            settings,
            source,
        })
    }

    /// The effective configuration as a TOML file (loadable with `CONFIG=`), secrets masked; a
    /// comment after each value says whether it came from the environment, the file or the
    /// default.
    pub fn print_config(&self) -> String {
        use std::fmt::Write;
        let (c, s) = (&self.config, &self.settings);
        let ms = |d: Duration| d.as_millis().to_string();
        let store = match &s.sessions.store {
            StoreKind::Memory => "memory".to_string(),
            StoreKind::Redis(url) => url.clone(),
        };
        let mut effective: Vec<(&str, String)> = vec![
            ("HOST", c.host.to_string()),
            ("PORT", c.port.to_string()),
            ("WORKERS", c.workers.to_string()),
            ("SHUTDOWN_TIMEOUT", ms(c.shutdown_timeout)),
            ("SHUTDOWN_DELAY", ms(s.shutdown_delay)),
            ("HEALTH_CHECK_INTERVAL", ms(c.health_check_interval)),
            ("METRICS_INTERVAL", ms(c.metrics_interval)),
            ("SESSION_TIMEOUT", ms(s.sessions.session_timeout)),
            ("SESSION_STORE", store),
            ("STRATEGY", s.strategy.name().to_string()),
            ("DISPATCH", format!("{:?}", c.dispatch).to_lowercase()),
            (
                "AUTOSCALE",
                c.autoscale
                    .map_or("off".into(), |a| format!("{}..{}", a.min, a.max)),
            ),
            (
                "TLS_CERT",
                c.tls
                    .as_ref()
                    .map_or("off".into(), |t| t.cert.display().to_string()),
            ),
            ("LOG_FORMAT", format!("{:?}", c.log_format).to_lowercase()),
            (
                "ACCESS_LOG",
                if s.access_log { "on" } else { "off" }.to_string(),
            ),
            (
                "MAX_MEMORY",
                c.max_memory.map_or("off".to_string(), |b| b.to_string()),
            ),
            (
                "RATE_LIMIT",
                s.rate_limit.map_or("off".to_string(), |r| {
                    let unit = match r.per.as_secs() {
                        1 => "s",
                        60 => "min",
                        _ => "hour",
                    };
                    format!("{}/{unit}", r.count)
                }),
            ),
            (
                "RATE_LIMIT_BURST",
                s.rate_limit
                    .map_or("off".to_string(), |r| r.burst.to_string()),
            ),
            ("RATE_LIMIT_KEYS", s.rate_limit_keys.to_string()),
            (
                "ADMIN_TOKEN",
                s.admin_token
                    .as_ref()
                    .map_or("off".into(), |_| "****".into()),
            ),
            (
                "DOWNSTREAM_URL",
                s.downstream.clone().unwrap_or("off".into()),
            ),
            (
                "BREAKER_SCOPE",
                match s.breaker.scope {
                    Scope::Cluster => "cluster",
                    Scope::Worker => "worker",
                    Scope::Off => "off",
                }
                .to_string(),
            ),
            ("BREAKER_WAIT_IN_OPEN", ms(s.breaker.wait_in_open)),
            ("BREAKER_MIN_CALLS", s.breaker.minimum_calls.to_string()),
            (
                "BREAKER_FAILURE_RATE",
                s.breaker
                    .failure_rate_threshold
                    .map_or("off".into(), |r| r.to_string()),
            ),
        ];
        // Unset means memory; there is no "off" value to write, so the names are left out.
        if let Some(d) = &s.database {
            effective.push(("DATABASE_URL", d.primary.clone()));
            if !d.replicas.is_empty() {
                effective.push(("DATABASE_REPLICA_URLS", d.replicas.join(",")));
            }
        }
        let origin = |name: &str| match self.source.origin(name) {
            Some(config::Origin::Env) => "env",
            Some(config::Origin::File) => "file",
            None => "default",
        };
        let mut out = String::from("# the effective configuration; secrets are masked\n");
        for (name, value) in &effective {
            let value = config::mask(name, value);
            let _ = writeln!(out, "{name} = {value:?}  # {}", origin(name));
        }
        // Anything else that was set, as it was given.
        for name in self.source.asked() {
            if effective.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Some(value) = self.source.get(&name) {
                let value = config::mask(&name, &value);
                let _ = writeln!(out, "{name} = {value:?}  # {}", origin(&name));
            }
        }
        out
    }
}

/// The whole cluster: workers serving [`worker::router`]; the master routing new sessions by the
/// strategy (least connections), sessions by their cookie, ejecting outliers, limiting and
/// tracing every request, and answering [`admin::routes`] and the monitoring routes.
pub fn cluster(loaded: Loaded) -> Cluster {
    let Loaded {
        config, settings, ..
    } = loaded;
    let switch = Arc::new(Switch::new(settings.strategy, &StrategyOptions::default()));
    let sticky = Sticky::new(settings.trusted_proxies.clone())
        .new_sessions(config.sticky_new)
        .balance_with(switch.clone());
    let outlier = Arc::new(Outlier::new(sticky, settings.outlier));
    let monitor = Monitor::new(settings.thresholds, config.max_memory);
    let store_line = match &settings.sessions.store {
        StoreKind::Memory => "memory (each worker keeps its own sessions)".to_owned(),
        StoreKind::Redis(url) => format!(
            "{} (shared by every worker)",
            config::mask("SESSION_STORE", url)
        ),
    };
    let limiter = settings.rate_limit.map(|rate| {
        Arc::new(
            Limiter::new(rate, settings.rate_limit_keys)
                .trust(settings.trusted_proxies.clone())
                .exempt(&admin::EXEMPT),
        )
    });
    let limit_line = match &limiter {
        Some(l) => format!("{} per client IP, whole cluster", l.rate()),
        None => "off (RATE_LIMIT=100/min turns it on)".into(),
    };
    let notes_line = match (&settings.database, &settings.sessions.store) {
        (None, _) => {
            "memory (each worker keeps its own; DATABASE_URL=postgresql://… shares them)".into()
        }
        (Some(db), store) => format!(
            "{} primary, {} replica(s){}",
            config::mask("DATABASE_URL", &db.primary),
            db.replicas.len(),
            match store {
                StoreKind::Redis(_) => ", cached in the session store's Redis",
                StoreKind::Memory => "",
            }
        ),
    };
    let admin_line = match settings.admin_token {
        Some(_) => "on (Authorization: Bearer $ADMIN_TOKEN)",
        None => "off (set ADMIN_TOKEN to turn it on)",
    };
    // Cluster scope: the master's breaker owns the state, each worker's follows it. Both are
    // built in every process; each uses its own.
    let (master_breakers, link, breakers, scope_line) = match settings.breaker.scope {
        Scope::Cluster => {
            let link = WorkerLink::new();
            let breakers = worker::Breakers::following(&link, &settings.breaker);
            let master = MasterBreakers::new(&[worker::DOWNSTREAM], &settings.breaker);
            let line = "cluster scope (one downstream breaker, in the master, for every worker)";
            (Some(master), Some(link), breakers, line)
        }
        Scope::Worker => {
            let line = "worker scope (each worker its own downstream breaker)";
            (None, None, worker::Breakers::new(&settings.breaker), line)
        }
        Scope::Off => {
            let line = "off (calls to the downstream go straight through)";
            (
                None,
                None,
                worker::Breakers::disabled(&settings.breaker),
                line,
            )
        }
    };
    let breakers = Arc::new(breakers);
    // Built in every process (no I/O until first used); a worker's router and its answers to
    // the master share it.
    let redis = match &settings.sessions.store {
        StoreKind::Redis(url) => Some(url.clone()),
        StoreKind::Memory => None,
    };
    let notes = Arc::new(notes::NotesStore::new(settings.database.clone(), redis));
    let router_notes = notes.clone();
    let for_router = breakers.clone();
    let worker_settings = settings.clone();
    let admin = admin::Admin {
        switch: switch.clone(),
        monitor: monitor.clone(),
        limiter: limiter.clone(),
        token: settings.admin_token.clone(),
        sessions: settings.sessions.clone(),
        notes_cached: notes.cached(),
        breakers: master_breakers.clone(),
    };
    let for_health = monitor.clone();
    let for_history = monitor.clone();
    let shutdown_delay = settings.shutdown_delay;
    let for_sweep = limiter.clone();
    let mut cluster = Cluster::new("production-cluster", config)
        .worker(move |ctx| {
            worker::router(
                ctx,
                &worker_settings,
                for_router.clone(),
                router_notes.clone(),
            )
        })
        .on_request(move |ctx, question| worker::answer(ctx, &breakers, &notes, &question))
        .cluster_breakers(master_breakers, link)
        .selector(outlier.clone())
        .observe(outlier)
        .observe(switch.least_response_time().clone())
        .observe(monitor)
        .health_scorer(move |workers| for_health.scores(workers))
        .trace(TraceLayer::new().log_requests(settings.access_log))
        .shutdown_delay(shutdown_delay)
        .master(move |handle| admin::routes(handle, admin))
        .on_start(move |handle| {
            tokio::spawn(for_history.keep_history(handle, Duration::from_secs(1)));
            if let Some(limiter) = for_sweep {
                limiter.spawn_sweeper(SWEEP_EVERY);
            }
        })
        .banner_line("store", store_line)
        .banner_line("limit", limit_line)
        .banner_line("notes", notes_line)
        .banner_line("breaker", scope_line)
        .banner_line("admin", admin_line)
        .hint("curl {url}/health/ready")
        .hint("curl -c jar -b jar {url}/session")
        .hint("curl {url}/metrics/prometheus")
        .hint("open {url}/dashboard");
    if let Some(limiter) = limiter {
        cluster = cluster.rate_limit(limiter);
    }
    cluster
}
