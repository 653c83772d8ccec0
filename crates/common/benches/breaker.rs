//! Cost per call through `CircuitBreakerLayer` in the closed state, against the same service
//! without it: one thread, then two threads calling one shared breaker. Two threads would
//! fight over any cache line both write: the closed state's fast path writes none (the state
//! word is only read, each thread counts its successes on its own stripe, and each clone of
//! the service has its own handle, on cache lines of its own), so a call should cost the same on both cores as on one,
//! up to what the machine itself gives two threads (the `no layer, 2 threads` line).
//!
//! Run with `cargo bench -p common --bench breaker -- --warm-up-time 1 --measurement-time 3`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::Response;
use tower::{Layer, Service};

/// The cheapest possible inner service, so what is measured is the layer.
#[derive(Clone, Copy)]
struct Ok200;

impl Service<()> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// poll_ready, call and one poll of the response: what a proxy does per request.
fn once<S: Service<(), Response = Response<()>>>(svc: &mut S, cx: &mut Context<'_>) {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the bench service is always ready"),
    }
    let res = svc.call(()).now_or_never();
    black_box(res.map(|r| r.is_ok()));
}

fn layered(config: BreakerConfig) -> impl Service<(), Response = Response<()>> + Clone + Send {
    CircuitBreakerLayer::new(CircuitBreaker::new("bench", config)).layer(Ok200)
}

/// `threads` threads calling clones of `svc`; the time per call on one thread while all of them
/// call. Each thread stops once the first has made `iters` calls, so the calls timed are the
/// ones made while the others were calling too: had each made its own `iters`, a thread that
/// started late would time its last calls alone, and contention would look cheaper than it is.
fn threaded<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<(), Response = Response<()>> + Clone + Send,
{
    /// Calls between two looks at the stop flag (a shared line, but only read until the end).
    const CHUNK: u64 = 64;
    let barrier = Barrier::new(threads);
    let done = AtomicBool::new(false);
    let timed: Vec<(f64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let (barrier, done) = (&barrier, &done);
                scope.spawn(move || {
                    let mut cx = Context::from_waker(Waker::noop());
                    barrier.wait();
                    let start = Instant::now();
                    let mut calls = 0;
                    while calls < iters && !done.load(Ordering::Relaxed) {
                        for _ in 0..CHUNK.min(iters - calls) {
                            once(&mut svc, &mut cx);
                        }
                        calls += CHUNK.min(iters - calls);
                    }
                    done.store(true, Ordering::Relaxed);
                    (start.elapsed().as_secs_f64(), calls)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    // Each thread's time per call, weighted by its calls (a thread that started after the
    // first one finished made none, and counts for nothing).
    let (secs, calls) = timed
        .iter()
        .fold((0.0, 0), |(s, c), &(ts, tc)| (s + ts, c + tc));
    Duration::from_secs_f64(secs / calls.max(1) as f64 * iters as f64)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed");
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = Ok200;
    g.bench_function("no layer", |b| b.iter(|| once(&mut bare, &mut cx)));

    let mut svc = layered(BreakerConfig::default());
    g.bench_function("layer, 1 thread", |b| b.iter(|| once(&mut svc, &mut cx)));

    // With the slow-call rule on, each call is timed: two clock reads more.
    let mut timed = layered(BreakerConfig {
        slow_call_duration: Some(Duration::from_secs(60)),
        ..BreakerConfig::default()
    });
    g.bench_function("layer, 1 thread, slow-call rule on", |b| {
        b.iter(|| once(&mut timed, &mut cx))
    });

    // One thread and two through the same harness (its loop, its stop flag, its clock reads),
    // so the two figures differ only in the second thread calling: criterion's own `iter` loop
    // above is a different harness and is not what the two-thread figure is compared with.
    let shared = layered(BreakerConfig::default());
    g.bench_function("layer, 1 thread, threaded harness", |b| {
        b.iter_custom(|iters| threaded(&shared, 1, iters))
    });
    g.bench_function("layer, 2 threads", |b| {
        b.iter_custom(|iters| threaded(&shared, 2, iters))
    });
    g.bench_function("no layer, 1 thread, threaded harness", |b| {
        b.iter_custom(|iters| threaded(&Ok200, 1, iters))
    });
    g.bench_function("no layer, 2 threads", |b| {
        b.iter_custom(|iters| threaded(&Ok200, 2, iters))
    });
    g.finish();

    // The floor under the layer's cost: what one clock read and one uncontended lock cost here.
    let mut r = c.benchmark_group("reference");
    r.bench_function("Instant::now", |b| b.iter(|| black_box(Instant::now())));
    let lock = std::sync::Mutex::new(0u64);
    r.bench_function("Mutex lock + unlock", |b| {
        b.iter(|| {
            if let Ok(mut n) = lock.lock() {
                *n += 1;
            }
        })
    });
    r.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
