//! The downstream services the workers depend on: an "external API", a "database" and
//! "payments", each a real HTTP server the master runs on `127.0.0.1`, port 0.
//!
//! The Node original faked its dependencies with `Math.random()` inside the worker, so there was
//! nothing to count and nothing to heal. Here a call crosses a real socket, the service counts
//! every call that reached it (by calling worker, from the `X-Worker-Id` the worker sends), and
//! its faults can be changed while it runs (`POST /faults/{service}`): an error rate, added
//! latency, or down altogether. That is what lets a test prove an open breaker sends nothing.
//!
//! Workers are re-executions of the master's binary, so they learn the services' addresses from
//! the environment they inherit: [`start`] binds the three listeners and exports
//! `CIRCUIT_SERVICES=external=127.0.0.1:PORT,…` before any thread exists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use common::config::{self, ConfigError, Source};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The services, in the order `/circuit-status` lists them.
pub const SERVICES: [&str; 3] = ["external", "database", "payments"];
/// The variable the master exports and workers read.
pub const ADDRESSES_VAR: &str = "CIRCUIT_SERVICES";
/// The longest `latencyMs` a fault may add: long enough to outlast any sane timeout, short
/// enough that a forgotten fault does not pin connections for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// A service's faults, as `POST /faults/{service}` takes them and `GET` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of calls answered with a 500, 0.0 to 1.0.
    pub error_rate: f64,
    /// Milliseconds added to every answer.
    pub latency_ms: u64,
    /// Answer every call with a 503 at once, as a service that is down behind its load balancer.
    pub down: bool,
}

impl FaultSpec {
    /// The faults each service starts with: the original's failure rates (the external API
    /// failed 30 % of calls, the database 20 %), so the demo has something to trip on.
    pub fn initial(service: &str) -> Self {
        let error_rate = match service {
            "external" => 0.3,
            "database" => 0.2,
            _ => 0.0,
        };
        Self {
            error_rate,
            ..Self::default()
        }
    }

    /// Checks the ranges, so a bad request is refused instead of half-applied.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "errorRate {} is not a share from 0.0 to 1.0",
                self.error_rate
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(format!(
                "latencyMs {} is over the {MAX_LATENCY_MS} ms limit",
                self.latency_ms
            ));
        }
        Ok(())
    }
}

/// One running service: its faults and what reached it.
#[derive(Debug)]
pub struct Dependency {
    name: &'static str,
    addr: SocketAddr,
    faults: Mutex<FaultSpec>,
    calls: AtomicU64,
    by_worker: Mutex<BTreeMap<String, u64>>,
}

impl Dependency {
    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The faults in force.
    pub fn faults(&self) -> FaultSpec {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the faults.
    pub fn set_faults(&self, spec: FaultSpec) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = spec;
    }

    /// Calls that reached it since the master started.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `GET /faults/{service}`'s body: the faults, `calls`, and `callsByWorker`.
    pub fn report(&self) -> Value {
        let by_worker = self
            .by_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut body = json!(self.faults());
        body["service"] = json!(self.name);
        body["address"] = json!(self.addr.to_string());
        body["calls"] = json!(self.calls());
        body["callsByWorker"] = json!(by_worker);
        body
    }

    fn count(&self, headers: &HeaderMap) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let caller = headers
            .get("x-worker-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        *self
            .by_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(caller)
            .or_default() += 1;
    }
}

/// The master's three services.
#[derive(Debug, Default, Clone)]
pub struct Services {
    deps: Vec<Arc<Dependency>>,
}

impl Services {
    /// The variable the workers read the services' addresses from, and its value.
    pub fn worker_env(&self) -> (&'static str, String) {
        (ADDRESSES_VAR, self.addresses().to_string())
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Dependency>> {
        self.deps.iter().find(|d| d.name == name)
    }

    /// Every service.
    pub fn all(&self) -> &[Arc<Dependency>] {
        &self.deps
    }

    /// Their addresses, as workers will read them.
    pub fn addresses(&self) -> Addresses {
        Addresses(self.deps.iter().map(|d| (d.name, d.addr)).collect())
    }
}

/// Binds the three services on `127.0.0.1`, port 0, and serves them on a thread of their own (so
/// a service told to be slow never delays the master's supervision). Their addresses reach the
/// workers in `CIRCUIT_SERVICES` (see [`Services::worker_env`]). In the master only.
pub fn start() -> std::io::Result<Services> {
    let mut deps = Vec::new();
    let mut listeners = Vec::new();
    for name in SERVICES {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        deps.push(Arc::new(Dependency {
            name,
            addr: listener.local_addr()?,
            faults: Mutex::new(FaultSpec::initial(name)),
            calls: AtomicU64::new(0),
            by_worker: Mutex::new(BTreeMap::new()),
        }));
        listeners.push(listener);
    }
    let services = Services { deps };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = services.clone();
    std::thread::Builder::new()
        .name("services".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (dep, listener) in served.deps.into_iter().zip(listeners) {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(service = dep.name, "cannot serve: {e}");
                            continue;
                        }
                    };
                    let app = Router::new().fallback(serve).with_state(dep.clone());
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::error!(service = dep.name, "stopped serving: {e}");
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    Ok(services)
}

/// Every request to a service: count it, then answer as its faults say.
async fn serve(State(dep): State<Arc<Dependency>>, headers: HeaderMap) -> Response {
    dep.count(&headers);
    let faults = dep.faults();
    if faults.down {
        let body = json!({ "error": "service_down", "service": dep.name });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        let body = json!({ "error": "injected_failure", "service": dep.name });
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Json(json!({ "service": dep.name, "ok": true, "timestamp": timestamp })).into_response()
}

/// Where each service listens, as a worker knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addresses(Vec<(&'static str, SocketAddr)>);

impl Addresses {
    /// The address of `service`.
    pub fn get(&self, service: &str) -> Option<SocketAddr> {
        self.0.iter().find(|(n, _)| *n == service).map(|(_, a)| *a)
    }

    /// Reads `CIRCUIT_SERVICES`; every service must be there.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let parsed = config::var(
            src,
            ADDRESSES_VAR,
            "external=HOST:PORT,database=HOST:PORT,payments=HOST:PORT (the master sets it)",
            |s| {
                let mut found = Vec::new();
                for part in s.split(',') {
                    let (name, addr) = part.split_once('=')?;
                    let name = SERVICES.into_iter().find(|n| *n == name.trim())?;
                    found.push((name, addr.trim().parse().ok()?));
                }
                SERVICES
                    .iter()
                    .all(|s| found.iter().any(|(n, _)| n == s))
                    .then_some(Addresses(found))
            },
        )?;
        parsed.ok_or_else(|| ConfigError {
            var: ADDRESSES_VAR.to_string(),
            value: String::new(),
            expected: "the services' addresses, which the master sets for its workers".into(),
        })
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(n, a)| format!("{n}={a}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_spec_parses_from_camel_case_and_checks_its_ranges() {
        let spec: FaultSpec =
            serde_json::from_str(r#"{"errorRate": 0.5, "latencyMs": 20}"#).expect("valid");
        assert_eq!(
            spec,
            FaultSpec {
                error_rate: 0.5,
                latency_ms: 20,
                down: false
            }
        );
        assert!(serde_json::from_str::<FaultSpec>(r#"{"rate": 1}"#).is_err());
        let too_high = FaultSpec {
            error_rate: 1.5,
            ..FaultSpec::default()
        };
        assert!(too_high.validate().is_err());
    }

    #[test]
    fn addresses_round_trip_through_the_environment_and_must_be_complete() {
        let text = "external=127.0.0.1:1,database=127.0.0.1:2,payments=127.0.0.1:3";
        let a = Addresses::from_source(&[(ADDRESSES_VAR, text)]).expect("valid");
        assert_eq!(a.to_string(), text);
        assert_eq!(
            a.get("database"),
            Some(SocketAddr::from(([127, 0, 0, 1], 2)))
        );
        let err = Addresses::from_source(&[(ADDRESSES_VAR, "external=127.0.0.1:1")])
            .expect_err("two missing");
        assert_eq!(err.var, ADDRESSES_VAR);
        assert!(Addresses::from_source(&[]).is_err(), "unset");
    }
}
