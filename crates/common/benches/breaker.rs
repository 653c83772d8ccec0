//! Cost per call through `CircuitBreakerLayer` in the closed state, on one thread, against the
//! same service without it. Whether a call costs more with both cores calling one breaker is
//! `benches/breaker_threads.rs`'s question: it needs rounds of one and two threads side by
//! side, which criterion's one-benchmark-after-another does not give.
//!
//! Run with `cargo bench -p common --bench breaker -- --warm-up-time 1 --measurement-time 3`.

mod harness;

use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use common::breaker::BreakerConfig;
use criterion::{Criterion, criterion_group, criterion_main};

use harness::{Ok200, layered, once};

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
