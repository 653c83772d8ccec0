//! Whether a call through a closed breaker costs more when both cores call it at once than
//! when one does. Two threads would fight over any cache line both write; the closed state's
//! fast path writes none (the state word is only read, each thread counts its successes on its
//! own stripe, each clone of the service has its own handle, on lines of their own), so the two
//! costs should be the same.
//!
//! "The same" has to be measured, not read off two figures taken one after the other: on this
//! kind of machine the cost of one benchmark moves by several percent from one run of it to
//! the next, as much as any difference looked for. So the figures come in rounds: each round
//! times one thread and then two (the order alternates, so a drift of the machine's speed
//! during the run favours neither), and gives the ratio two/one. The result is the median of
//! the rounds' ratios with its 95% confidence interval (from the order statistics: no
//! assumption about how the ratios are spread). Two controls give the machine's own figure
//! for two threads: the same loop without the layer, and the same layer with a breaker of its
//! own on each thread, sharing nothing.
//!
//! The machine's own figure moves: on a virtual machine whose two cores the host may run on the
//! two hyperthreads of one physical core, two threads that share nothing at all have measured
//! from 0.93 to 1.37 times the cost of one, from one run to the next. So a last line sets the
//! shared breaker's two-thread ratio against the breaker-per-thread layer's, measured in the
//! same rounds: the same code on the same two cores at the same moment, differing only in what
//! the threads share. That ratio of ratios is what sharing one breaker costs.
//!
//! Run with `cargo bench -p common --bench breaker_threads` (`-- --rounds N`; 25 by default).
//! Each line it prints is one service:
//! `layer: 1 thread 55.1 ns, 2 threads 55.4 ns, ratio 1.004 (95% CI 0.991 to 1.012), 25 rounds`,
//! and the last what sharing adds (see [`contention`]):
//! `sharing one breaker, two threads against one: ratio 1.003 (95% CI 0.990 to 1.015), 25 rounds`.

mod harness;

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use common::breaker::BreakerConfig;
use http::Response;
use tower::Service;

use harness::{Ok200, layered, once};

/// What one timing of one thread's calls should take: long enough that the threads' start and
/// stop are a small part of it, short enough that rounds are many.
const SAMPLE_SECS: f64 = 0.04;

fn main() {
    let rounds = rounds_arg();
    measure("layer", &layered(BreakerConfig::default()), rounds);
    measure("no layer", &Ok200, rounds);
    measure(
        "layer, a breaker per thread",
        &PerThread(fresh(), fresh),
        rounds,
    );
    contention(
        "sharing one breaker, two threads against one",
        &fresh(),
        &PerThread(fresh(), fresh),
        rounds,
    );
}

fn fresh() -> impl Service<(), Response = Response<()>> + Clone + Send {
    layered(BreakerConfig::default())
}

/// A breaker layer whose every clone is a new breaker: the same code, sharing nothing.
struct PerThread<S>(S, fn() -> S);

impl<S> Clone for PerThread<S> {
    fn clone(&self) -> Self {
        Self((self.1)(), self.1)
    }
}

impl<S: Service<()>> Service<()> for PerThread<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: ()) -> S::Future {
        self.0.call(req)
    }
}

/// `--rounds N`; cargo adds arguments of its own (`--bench`), which are not ours to refuse.
fn rounds_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--rounds") {
        None => 25,
        Some(i) => match args.get(i + 1).and_then(|n| n.parse().ok()) {
            Some(n) if n >= 6 => n,
            _ => {
                eprintln!(
                    "--rounds needs a whole number of at least 6 (fewer gives no 95% interval)"
                );
                std::process::exit(2);
            }
        },
    }
}

fn measure<S>(name: &str, svc: &S, rounds: usize)
where
    S: Service<(), Response = Response<()>> + Clone + Send,
{
    // Warm up (a closed breaker takes the lock until its window has its minimum calls) and
    // find how many calls make a sample of SAMPLE_SECS.
    let iters = calls_per_sample(svc);

    let (mut ones, mut twos, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (one, two) = if round % 2 == 0 {
            let one = threaded(svc, 1, iters);
            (one, threaded(svc, 2, iters))
        } else {
            let two = threaded(svc, 2, iters);
            (threaded(svc, 1, iters), two)
        };
        ones.push(one);
        twos.push(two);
        ratios.push(two / one);
    }
    let (low, high) = median_interval(&mut ratios);
    println!(
        "{name}: 1 thread {:.1} ns, 2 threads {:.1} ns, ratio {:.3} (95% CI {low:.3} to {high:.3}), {rounds} rounds",
        median(&mut ones),
        median(&mut twos),
        median(&mut ratios),
    );
}

/// What sharing one breaker adds when both cores call: each round times the shared layer and
/// the breaker-per-thread layer (the same code, sharing nothing) on one thread and on two, in
/// an order that reverses every round (so a drift of the machine's speed favours none), and
/// gives `(shared two / shared one) / (alone two / alone one)`. The machine's own two-thread
/// slowdown is in both halves and cancels, and so does any difference the two layers' places
/// in memory make to one thread: what is left is the cost of the lines the threads share.
fn contention<A, B>(name: &str, shared: &A, alone: &B, rounds: usize)
where
    A: Service<(), Response = Response<()>> + Clone + Send,
    B: Service<(), Response = Response<()>> + Clone + Send,
{
    let iters = calls_per_sample(shared);
    // Only to warm it up: both layers make the same number of calls a sample.
    calls_per_sample(alone);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (s1, s2, a2, a1);
        if round % 2 == 0 {
            s1 = threaded(shared, 1, iters);
            s2 = threaded(shared, 2, iters);
            a2 = threaded(alone, 2, iters);
            a1 = threaded(alone, 1, iters);
        } else {
            a1 = threaded(alone, 1, iters);
            a2 = threaded(alone, 2, iters);
            s2 = threaded(shared, 2, iters);
            s1 = threaded(shared, 1, iters);
        }
        ratios.push((s2 / s1) / (a2 / a1));
    }
    let (low, high) = median_interval(&mut ratios);
    println!(
        "{name}: ratio {:.3} (95% CI {low:.3} to {high:.3}), {rounds} rounds",
        median(&mut ratios),
    );
}

/// Warms `svc` up on one thread and returns how many calls make a sample of [`SAMPLE_SECS`].
fn calls_per_sample<S>(svc: &S) -> u64
where
    S: Service<(), Response = Response<()>> + Clone + Send,
{
    let probe = 200_000;
    let started = Instant::now();
    threaded(svc, 1, probe);
    let per_call = started.elapsed().as_secs_f64() / probe as f64;
    ((SAMPLE_SECS / per_call) as u64).max(1_000)
}

/// The CPU time this thread has run (user and system), not the wall clock: on two cores shared
/// with everything else on the machine, a thread of the two-thread run that is taken off its
/// core for another process would count the time it waited as time its calls took, and one
/// thread alone (with a core to spare for the others) would not. Time stalled on a cache line
/// another core holds is CPU time, so contention, which is what the two-thread figure is for,
/// still counts in full.
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => Duration::new(
            t.tv_sec().max(0) as u64,
            t.tv_nsec().clamp(0, 999_999_999) as u32,
        ),
        Err(e) => panic!("clock_gettime(CLOCK_THREAD_CPUTIME_ID): {e}"),
    }
}

/// `threads` threads calling clones of `svc`, `iters` calls each at most; the CPU time of one
/// call, in nanoseconds, while all of them call. Each thread stops once the first has made
/// `iters` calls, so the calls timed are the ones made while the others were calling too: had
/// each made its own `iters`, a thread that started late would time its last calls alone, and
/// contention would look cheaper than it is.
fn threaded<S>(svc: &S, threads: usize, iters: u64) -> f64
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
                    let start = thread_cpu();
                    let mut calls = 0;
                    while calls < iters && !done.load(Ordering::Relaxed) {
                        for _ in 0..CHUNK.min(iters - calls) {
                            once(&mut svc, &mut cx);
                        }
                        calls += CHUNK.min(iters - calls);
                    }
                    done.store(true, Ordering::Relaxed);
                    ((thread_cpu().saturating_sub(start)).as_secs_f64(), calls)
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
    secs * 1e9 / calls.max(1) as f64
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A 95% confidence interval of the median of `xs`: the `k`th smallest and the `k`th largest,
/// for the largest `k` whose chance of having more than the median below it (a binomial
/// with p = 1/2) is at most 2.5%.
fn median_interval(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    // P(X < k) for X ~ Binomial(n, 1/2), built up term by term.
    let (mut k, mut below, mut term) = (0, 0.0, 0.5f64.powi(n as i32));
    while k < n / 2 && below + term <= 0.025 {
        below += term;
        term *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    let k = k.max(1);
    (xs[k - 1], xs[n - k])
}
