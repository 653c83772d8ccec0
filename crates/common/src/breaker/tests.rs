//! The breaker's state machine with time passed in, then the layer on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const FAST: Duration = Duration::from_millis(5);

/// Small numbers so each test can walk a rule by hand: a window of the last 10 calls judged
/// from 4, 50 % failures or 50 % slow (over 1 s) trips, 10 s open doubling to 40 s, 3 probes of
/// which 2 must succeed within 5 s. Consecutive failures are off unless a test turns them on.
fn cfg() -> BreakerConfig {
    BreakerConfig {
        failure_rate_threshold: Some(50.0),
        consecutive_failures: None,
        slow_call_rate_threshold: Some(50.0),
        slow_call_duration: Some(S),
        window: SlidingWindow::Count(10),
        minimum_calls: 4,
        wait_in_open: 10 * S,
        wait_in_open_multiplier: 2.0,
        max_wait_in_open: 40 * S,
        half_open_calls: 3,
        half_open_success_ratio: 2.0 / 3.0,
        max_wait_in_half_open: 5 * S,
        scope: Scope::Cluster,
        history: 8,
    }
}

/// One admitted call at `now` with its outcome; panics with `what` if refused.
fn call(b: &mut Breaker, outcome: Outcome, took: Duration, now: Instant, what: &str) {
    let permit = b
        .try_acquire(now)
        .unwrap_or_else(|r| panic!("{what}: expected a permit, refused by {:?}", r.state));
    b.record(outcome, took, permit.epoch, now);
}

/// Trips a fresh breaker at `now` with 4 failures (rate 100 % at the minimum of 4 calls).
fn tripped(now: Instant) -> Breaker {
    let mut b = Breaker::new(cfg(), now);
    for i in 0..4 {
        call(&mut b, Outcome::Failure, FAST, now, &format!("failure {i}"));
    }
    assert_eq!(
        b.state(),
        State::Open,
        "4 failures of 4 calls at a 50 % threshold"
    );
    b
}

fn last_reason(b: &Breaker) -> Reason {
    b.transitions_since(0)
        .last()
        .map(|t| t.reason)
        .expect("a transition")
}

// --- closed ----------------------------------------------------------------------------------

#[test]
fn a_closed_breaker_does_not_judge_a_rate_before_the_minimum_calls() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    for i in 0..3 {
        call(&mut b, Outcome::Failure, FAST, t0, &format!("failure {i}"));
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "3 failures, 3 calls: below minimum_calls 4"
    );
    call(&mut b, Outcome::Failure, FAST, t0, "the 4th");
    assert_eq!(
        b.state(),
        State::Open,
        "4 of 4 failed: at the minimum, 100 % >= 50 %"
    );
    assert_eq!(last_reason(&b), Reason::FailureRate);
}

#[test]
fn a_failure_rate_below_the_threshold_keeps_it_closed() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    // S S S F S S F S S F: never 50 % from the 4th call on, 3 of 10 = 30 % at the end
    for (i, failed) in [0, 0, 0, 1, 0, 0, 1, 0, 0, 1].into_iter().enumerate() {
        let outcome = if failed == 1 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        call(&mut b, outcome, FAST, t0, &format!("call {i}"));
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "30 % failures under a 50 % threshold"
    );
    // Each new call pushes the oldest out of the ring:
    //   + F: S S F S S F S S F F = 4 of 10
    //   + F: S F S S F S S F F F = 5 of 10
    call(&mut b, Outcome::Failure, FAST, t0, "call 10");
    assert_eq!(b.state(), State::Closed, "40 % over the last 10 calls");
    call(&mut b, Outcome::Failure, FAST, t0, "call 11");
    assert_eq!(b.state(), State::Open, "50 % over the last 10 calls");
}

#[test]
fn consecutive_failures_open_it_before_the_minimum_calls() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        BreakerConfig {
            consecutive_failures: Some(2),
            minimum_calls: 100,
            ..cfg()
        },
        t0,
    );
    call(&mut b, Outcome::Failure, FAST, t0, "first failure");
    call(
        &mut b,
        Outcome::Success,
        FAST,
        t0,
        "a success resets the run",
    );
    call(&mut b, Outcome::Failure, FAST, t0, "failure");
    assert_eq!(b.state(), State::Closed, "F S F: one in a row");
    call(&mut b, Outcome::Failure, FAST, t0, "failure");
    assert_eq!(b.state(), State::Open, "F S F F: two in a row");
    assert_eq!(last_reason(&b), Reason::ConsecutiveFailures);
}

#[test]
fn slow_calls_open_it_even_when_they_succeed() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    for took in [2 * S, FAST, 2 * S] {
        call(&mut b, Outcome::Success, took, t0, "call");
    }
    assert_eq!(b.state(), State::Closed, "3 calls, below the minimum");
    call(
        &mut b,
        Outcome::Success,
        S,
        t0,
        "exactly the limit is not slow",
    );
    assert_eq!(b.state(), State::Open, "2 slow of 4 = 50 %");
    assert_eq!(last_reason(&b), Reason::SlowCallRate);
}

#[test]
fn no_rule_trips_when_every_rule_is_off() {
    let t0 = Instant::now();
    let config = BreakerConfig {
        failure_rate_threshold: None,
        slow_call_rate_threshold: None,
        consecutive_failures: None,
        ..cfg()
    };
    let mut b = Breaker::new(config, t0);
    for i in 0..50 {
        call(&mut b, Outcome::Failure, 10 * S, t0, &format!("call {i}"));
    }
    assert_eq!(b.state(), State::Closed);
}

// --- open ------------------------------------------------------------------------------------

#[test]
fn an_open_breaker_refuses_with_the_rest_of_its_wait() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let r = b.try_acquire(t0 + 3 * S).expect_err("open: refused");
    assert_eq!(r.state, State::Open);
    assert_eq!(r.retry_after, 7 * S, "opened at 0 for 10 s, asked at 3 s");
    assert_eq!(b.counters().total_rejections, 1);
    let r = b
        .try_acquire(t0 + 10 * S - MS)
        .expect_err("1 ms before the end: still open");
    assert_eq!(r.retry_after, MS);
}

#[test]
fn the_wait_in_open_doubles_with_each_failed_round_and_stops_at_its_cap() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let mut now = t0;
    let mut waits = vec![];
    for round in 0..5 {
        let until = b.open_until().expect("open has an end");
        waits.push((until - now).as_secs());
        now = until;
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            now,
            &format!("probe 1 of round {round}"),
        );
        assert_eq!(
            b.state(),
            State::HalfOpen,
            "round {round}: 2 of 3 can still succeed"
        );
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            now,
            &format!("probe 2 of round {round}"),
        );
        assert_eq!(
            b.state(),
            State::Open,
            "round {round}: 2 failed probes reopen it"
        );
    }
    // 10, then doubling, capped at 40
    assert_eq!(waits, [10, 20, 40, 40, 40]);
    // Closing starts the backoff over.
    now = b.open_until().expect("open");
    for i in 0..2 {
        call(&mut b, Outcome::Success, FAST, now, &format!("probe {i}"));
    }
    assert_eq!(b.state(), State::Closed);
    for i in 0..4 {
        call(&mut b, Outcome::Failure, FAST, now, &format!("failure {i}"));
    }
    assert_eq!(
        b.open_until().map(|t| (t - now).as_secs()),
        Some(10),
        "back to the first wait"
    );
}

// --- half-open -------------------------------------------------------------------------------

#[test]
fn after_the_wait_only_half_open_calls_probes_are_let_through() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let permits: Vec<_> = (0..3)
        .map(|i| b.try_acquire(t).unwrap_or_else(|_| panic!("probe {i}")))
        .collect();
    assert_eq!(b.state(), State::HalfOpen);
    assert!(
        permits.iter().all(|p| p.probe),
        "half-open permits are probes"
    );
    let r = b
        .try_acquire(t)
        .expect_err("a 4th call while 3 probes are out");
    assert_eq!(
        r.state,
        State::HalfOpen,
        "refused as if open, by the half-open state"
    );
}

#[test]
fn one_lucky_probe_does_not_close_it_but_enough_of_them_do() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let p: Vec<_> = (0..3).map(|_| b.try_acquire(t).expect("probe")).collect();
    b.record(Outcome::Success, FAST, p[0].epoch, t);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "1 of 3 succeeded; 2 are needed (ratio 2/3)"
    );
    b.record(Outcome::Failure, FAST, p[1].epoch, t);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "1 success, 1 failure: the 3rd decides"
    );
    b.record(Outcome::Success, FAST, p[2].epoch, t);
    assert_eq!(b.state(), State::Closed, "2 of 3 probes succeeded");
    assert_eq!(last_reason(&b), Reason::ProbesSucceeded);
}

#[test]
fn a_failed_probe_reopens_it_when_the_ratio_can_no_longer_be_reached() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let p: Vec<_> = (0..3).map(|_| b.try_acquire(t).expect("probe")).collect();
    b.record(Outcome::Failure, FAST, p[0].epoch, t);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "one failure: 2 of the other 2 can still succeed"
    );
    b.record(Outcome::Failure, FAST, p[1].epoch, t);
    assert_eq!(
        b.state(),
        State::Open,
        "two failures: 2 of 3 is out of reach"
    );
    assert_eq!(last_reason(&b), Reason::ProbesFailed);
    b.record(Outcome::Success, FAST, p[2].epoch, t);
    assert_eq!(
        b.state(),
        State::Open,
        "the last probe's result belongs to the old round"
    );
    assert_eq!(b.counters().total_stale, 1);
}

#[test]
fn a_slow_probe_counts_as_failed() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let p: Vec<_> = (0..3).map(|_| b.try_acquire(t).expect("probe")).collect();
    b.record(Outcome::Success, 3 * S, p[0].epoch, t);
    b.record(Outcome::Success, 3 * S, p[1].epoch, t);
    assert_eq!(
        b.state(),
        State::Open,
        "two probes answered, each slower than 1 s"
    );
}

#[test]
fn probes_that_do_not_finish_in_time_reopen_it() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let p = b.try_acquire(t).expect("probe");
    b.tick(t + 5 * S - MS);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "1 ms before max_wait_in_half_open"
    );
    b.tick(t + 5 * S);
    assert_eq!(
        b.state(),
        State::Open,
        "the probe hung for max_wait_in_half_open"
    );
    assert_eq!(last_reason(&b), Reason::HalfOpenTimeout);
    assert_eq!(
        b.open_until(),
        Some(t + 5 * S + 20 * S),
        "second open in a row: 20 s"
    );
    b.record(Outcome::Success, 5 * S, p.epoch, t + 5 * S);
    assert_eq!(
        b.state(),
        State::Open,
        "the hung probe's late success is stale"
    );
}

#[test]
fn a_probe_given_back_or_cancelled_frees_its_place() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = t0 + 10 * S;
    let p: Vec<_> = (0..3).map(|_| b.try_acquire(t).expect("probe")).collect();
    b.try_acquire(t).expect_err("full");
    b.release(p[0], t);
    let p3 = b.try_acquire(t).expect("a place given back");
    b.try_acquire(t).expect_err("full again");
    b.record(Outcome::Ignored, FAST, p[1].epoch, t);
    b.try_acquire(t).expect("a cancelled probe's place");
    assert_eq!(b.state(), State::HalfOpen, "neither counted as a result");
    assert_eq!(b.counters().total_ignored, 1);
    assert!(p3.probe);
}

// --- epochs ----------------------------------------------------------------------------------

#[test]
fn results_of_calls_started_before_the_open_are_ignored() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    let early: Vec<_> = (0..3).map(|_| b.try_acquire(t0).expect("closed")).collect();
    for i in 0..4 {
        call(&mut b, Outcome::Failure, FAST, t0, &format!("failure {i}"));
    }
    assert_eq!(b.state(), State::Open);
    let t = t0 + 10 * S;
    let probe = b.try_acquire(t).expect("half-open probe");
    // Three slow successes from before the open land during half-open: they must not close it.
    for p in &early {
        b.record(Outcome::Success, FAST, p.epoch, t);
    }
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "old results neither close nor count"
    );
    assert_eq!(b.counters().total_stale, 3);
    b.record(Outcome::Failure, FAST, probe.epoch, t);
    b.try_acquire(t).expect("probe 2");
    assert_eq!(b.state(), State::HalfOpen);
}

// --- the states set from outside ---------------------------------------------------------------

#[test]
fn metrics_only_counts_every_failure_and_never_trips() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        BreakerConfig {
            consecutive_failures: Some(3),
            ..cfg()
        },
        t0,
    );
    b.force_state(State::MetricsOnly, t0);
    for i in 0..100 {
        call(
            &mut b,
            Outcome::Failure,
            5 * S,
            t0 + i * MS,
            &format!("call {i}"),
        );
    }
    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(b.counters().total_failures, 100);
    assert_eq!(b.counters().total_slow_calls, 100);
    let snap = b.snapshot("svc", t0 + S, SystemTime::now());
    assert_eq!(
        snap.failure_rate, 100.0,
        "the rate is kept even though nothing trips"
    );
}

#[test]
fn forced_open_refuses_until_it_is_closed_whatever_the_time() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    b.force_state(State::ForcedOpen, t0);
    for later in [S, 60 * S, 3600 * S] {
        let r = b.try_acquire(t0 + later).expect_err("forced open refuses");
        assert_eq!(r.state, State::ForcedOpen, "{later:?} later");
        assert!(r.retry_after > Duration::ZERO, "a retry hint, never 0");
    }
    b.force_state(State::Closed, t0 + 3600 * S);
    b.try_acquire(t0 + 3600 * S).expect("closed again");
}

#[test]
fn disabled_admits_everything_and_records_nothing() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        BreakerConfig {
            consecutive_failures: Some(1),
            ..cfg()
        },
        t0,
    );
    b.force_state(State::Disabled, t0);
    for i in 0..20 {
        call(&mut b, Outcome::Failure, FAST, t0, &format!("call {i}"));
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.counters().total_requests, 0, "disabled records nothing");
}

#[test]
fn reset_closes_with_an_empty_window_and_no_backoff() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    for i in 0..2 {
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            t0 + 10 * S,
            &format!("probe {i}"),
        );
    }
    assert_eq!(b.open_until(), Some(t0 + 30 * S), "second open: 20 s");
    b.reset(t0 + 11 * S);
    assert_eq!(b.state(), State::Closed);
    let snap = b.snapshot("svc", t0 + 11 * S, SystemTime::now());
    assert_eq!(snap.calls, 0, "the window starts empty");
    assert_eq!(
        snap.stats.counters.total_failures, 6,
        "lifetime counters stay"
    );
    for i in 0..4 {
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            t0 + 11 * S,
            &format!("failure {i}"),
        );
    }
    assert_eq!(
        b.open_until(),
        Some(t0 + 21 * S),
        "the first wait again: 10 s"
    );
}

#[test]
fn a_remote_state_is_mirrored_with_its_epoch_and_older_ones_are_ignored() {
    let t0 = Instant::now();
    let mut master = tripped(t0);
    let mut worker = Breaker::new(cfg(), t0);
    let remote = RemoteState {
        state: master.state(),
        epoch: master.epoch(),
        open_for: master.open_until().map(|t| t - (t0 + 2 * S)),
    };
    worker.apply_remote_state(remote, t0 + 2 * S);
    assert_eq!(worker.state(), State::Open);
    assert_eq!(
        worker.epoch(),
        master.epoch(),
        "the worker carries the master's epoch"
    );
    assert_eq!(
        worker
            .try_acquire(t0 + 2 * S)
            .expect_err("open")
            .retry_after,
        8 * S
    );
    assert_eq!(last_reason(&worker), Reason::Remote);
    // A stale message (epoch 0, closed) arriving late changes nothing.
    worker.apply_remote_state(
        RemoteState {
            state: State::Closed,
            epoch: 0,
            open_for: None,
        },
        t0 + 3 * S,
    );
    assert_eq!(worker.state(), State::Open);
    // The worker's outcome, reported with the master's epoch, counts at the master.
    master.tick(t0 + 10 * S);
    let probe = master
        .try_acquire(t0 + 10 * S)
        .expect("probe at the master");
    master.record(Outcome::Failure, FAST, probe.epoch, t0 + 10 * S);
    master.record(Outcome::Failure, FAST, probe.epoch, t0 + 10 * S);
    assert_eq!(master.state(), State::Open);
}

// --- windows, events, snapshot -------------------------------------------------------------------

#[test]
fn a_time_window_forgets_failures_older_than_its_seconds() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        BreakerConfig {
            window: SlidingWindow::Time(5),
            ..cfg()
        },
        t0,
    );
    for i in 0..3 {
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            t0,
            &format!("failure {i} at 0 s"),
        );
    }
    // At 5 s the second-0 bucket has rolled out of the 5 s window: the window holds 1 call.
    call(&mut b, Outcome::Failure, FAST, t0 + 5 * S, "failure at 5 s");
    assert_eq!(
        b.state(),
        State::Closed,
        "3 failures rolled out; 1 call is below the minimum"
    );
    for i in 0..3 {
        call(
            &mut b,
            Outcome::Failure,
            FAST,
            t0 + 5 * S + i * MS,
            &format!("failure {i}"),
        );
    }
    assert_eq!(b.state(), State::Open, "4 failures within the same 5 s");
}

#[test]
fn transitions_are_kept_with_their_reason_and_figures_in_a_bounded_history() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let t = b.transitions_since(0).next().cloned().expect("the trip");
    assert_eq!(
        (t.seq, t.from, t.to, t.reason),
        (1, State::Closed, State::Open, Reason::FailureRate)
    );
    assert_eq!((t.calls, t.failure_rate), (4, 100.0));
    assert_eq!(t.wait_in_open_ms, Some(10 * S));
    for i in 0..20 {
        b.force_state(
            if i % 2 == 0 {
                State::Closed
            } else {
                State::ForcedOpen
            },
            t0,
        );
    }
    let seqs: Vec<u64> = b.transitions_since(0).map(|t| t.seq).collect();
    assert_eq!(
        seqs,
        (14..=21).collect::<Vec<_>>(),
        "only the last 8 (history) kept"
    );
    assert_eq!(
        b.transitions_since(19).count(),
        2,
        "pull what came after seq 19"
    );
}

#[test]
fn the_snapshot_has_the_originals_field_names() {
    let t0 = Instant::now();
    let mut b = tripped(t0);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let snap = b.snapshot("database", t0 + 4 * S, wall);
    let json = serde_json::to_value(&snap).expect("serializes");
    for field in [
        "name",
        "state",
        "failureCount",
        "successCount",
        "failureRate",
        "nextAttempt",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    for field in [
        "totalRequests",
        "totalSuccesses",
        "totalFailures",
        "totalRejections",
        "stateChanges",
    ] {
        assert!(
            json["stats"].get(field).is_some(),
            "stats.{field} missing from {json}"
        );
    }
    assert_eq!(json["state"], "OPEN");
    assert_eq!(
        json["nextAttemptInMs"], 6000,
        "opened at 0 for 10 s, read at 4 s"
    );
    assert_eq!(
        json["nextAttempt"], 1_000_006_000u64,
        "wall time of the end of the wait"
    );
    let change = &json["stats"]["stateChanges"][0];
    assert_eq!(change["from"], "CLOSED");
    assert_eq!(change["to"], "OPEN");
    assert_eq!(change["reason"], "failureRate");
    assert_eq!(
        change["timestamp"], 999_996_000u64,
        "4 s before the snapshot's wall time"
    );
}

// --- the layer -------------------------------------------------------------------------------------

type Res = Response<&'static str>;

/// A service answering every request with the status it is given, counting its calls.
fn status_service(
    calls: Arc<AtomicUsize>,
) -> impl Service<StatusCode, Response = Res, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |status: StatusCode| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, std::io::Error>(Response::builder().status(status).body("").expect("valid"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_layer_counts_five_hundreds_but_not_four_hundreds_and_fails_fast_when_open() {
    let breaker = CircuitBreaker::with_clock("api", cfg(), TokioClock);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(status_service(calls.clone()));
    for _ in 0..10 {
        svc.ready()
            .await
            .expect("ready")
            .call(StatusCode::NOT_FOUND)
            .await
            .expect("a 404 is a response");
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "ten 404s are the client's problem"
    );
    for _ in 0..5 {
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(StatusCode::BAD_GATEWAY)
            .await;
        assert_eq!(
            res.expect("a 502 is still a response").status(),
            StatusCode::BAD_GATEWAY
        );
    }
    assert_eq!(
        breaker.state(),
        State::Open,
        "5 of the last 10 calls were 5xx"
    );
    tokio::time::advance(4 * S).await;
    let err = svc
        .ready()
        .await
        .expect("ready")
        .call(StatusCode::OK)
        .await
        .expect_err("open");
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("the breaker's error");
    assert_eq!(open.state(), State::Open);
    assert_eq!(
        open.retry_after_header(),
        "6",
        "Retry-After: 10 s wait, 4 s gone"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        15,
        "the refused call never reached the service"
    );
    assert_eq!(breaker.snapshot().stats.counters.total_rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn the_layer_measures_call_durations_on_its_clock() {
    let breaker = CircuitBreaker::with_clock("slow", cfg(), TokioClock);
    let mut svc =
        CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|d: Duration| async move {
            tokio::time::sleep(d).await;
            Ok::<_, std::io::Error>(Response::new(""))
        }));
    for d in [2 * S, 2 * S, MS, MS] {
        svc.ready().await.expect("ready").call(d).await.expect("ok");
    }
    assert_eq!(
        breaker.state(),
        State::Open,
        "2 calls of 4 took 2 s: slow-call rate 50 %"
    );
    assert_eq!(breaker.transitions_since(0)[0].reason, Reason::SlowCallRate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_only_its_probes_reach_the_service_when_fifty_calls_race() {
    let breaker = CircuitBreaker::new("race", cfg());
    breaker.force_state(State::HalfOpen);
    let reached = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let inner = {
        let (reached, gate) = (reached.clone(), gate.clone());
        service_fn(move |()| {
            let (reached, gate) = (reached.clone(), gate.clone());
            async move {
                reached.fetch_add(1, Ordering::SeqCst);
                // Hold the probe in flight until the test opens the gate.
                let _pass = gate.acquire().await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(Response::new(""))
            }
        })
    };
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..50 {
        let (svc, tx) = (svc.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(
                svc.oneshot(())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.is::<CircuitOpen>()),
            );
        });
    }
    // 47 refusals come back at once; the 3 probes wait at the gate. (If more got through, they
    // wait at the gate too and the refusals never come: the timeout turns that into a failure.)
    for i in 0..47 {
        let res = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {i} refusals of 47: {} calls reached the service, expected 3",
                    reached.load(Ordering::SeqCst)
                )
            })
            .expect("a result");
        assert_eq!(res, Err(true), "result {i}: refused with CircuitOpen");
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        3,
        "half_open_calls = 3 of 50 reached the service"
    );
    gate.add_permits(3);
    for _ in 0..3 {
        assert_eq!(rx.recv().await.expect("a probe's result"), Ok(()));
    }
    assert_eq!(breaker.state(), State::Closed, "the probes succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_response_dropped_before_it_ends_frees_its_probe_place() {
    let breaker = CircuitBreaker::with_clock(
        "drop",
        BreakerConfig {
            half_open_calls: 1,
            ..cfg()
        },
        TokioClock,
    );
    breaker.force_state(State::HalfOpen);
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|()| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(Response::new(""))
    }));
    let probe = svc.ready().await.expect("ready").call(());
    let err = svc
        .ready()
        .await
        .expect("ready")
        .call(())
        .await
        .expect_err("the one place is taken");
    assert!(err.is::<CircuitOpen>());
    drop(probe);
    assert!(
        matches!(breaker.try_acquire(), Ok(p) if p.probe),
        "the dropped call's place is free again"
    );
    assert_eq!(breaker.snapshot().stats.counters.total_ignored, 1);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_sees_each_transition_and_a_late_reader_can_pull_them() {
    let breaker = CircuitBreaker::with_clock("events", cfg(), TokioClock);
    let mut events = breaker.subscribe();
    breaker.force_open();
    breaker.reset();
    let first = events.recv().await.expect("a transition");
    assert_eq!(
        (first.from, first.to, first.reason),
        (State::Closed, State::ForcedOpen, Reason::Forced)
    );
    let second = events.recv().await.expect("a transition");
    assert_eq!((second.to, second.reason), (State::Closed, Reason::Reset));
    let pulled: Vec<_> = breaker
        .transitions_since(first.seq)
        .into_iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(pulled, [second.seq]);
    assert_eq!(breaker.remote_state().epoch, second.epoch);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_goes_half_open_when_its_wait_is_over_on_tokios_clock() {
    let breaker = CircuitBreaker::with_clock("clock", cfg(), TokioClock);
    breaker.force_state(State::Open);
    assert!(breaker.try_acquire().is_err());
    tokio::time::advance(10 * S - MS).await;
    assert!(breaker.try_acquire().is_err(), "1 ms early");
    tokio::time::advance(MS).await;
    let permit = breaker.try_acquire().expect("the wait is over: a probe");
    assert!(permit.probe);
    assert_eq!(breaker.state(), State::HalfOpen);
    tokio::time::advance(5 * S).await;
    assert_eq!(
        breaker.snapshot().state,
        State::Open,
        "the probe never finished"
    );
}

/// `n` successful calls through `svc` on this thread, polled by hand (the service is ready).
fn succeed_n<S: Service<StatusCode, Response = Res>>(svc: &mut S, n: usize) {
    use futures_util::FutureExt;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..n {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let done = svc.call(StatusCode::OK).now_or_never();
        assert!(matches!(done, Some(Ok(_))), "a success");
    }
}

#[test]
fn successes_counted_without_the_lock_on_two_threads_are_all_in_the_window_before_a_failure() {
    // Count window of 10 judged from 4, 50 %: a window that holds only the failures would trip
    // at the 4th; one whose last 10 calls are 6 successes and 4 failures must not.
    let breaker = CircuitBreaker::new("striped", cfg());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(status_service(calls.clone()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let mut svc = svc.clone();
            s.spawn(move || succeed_n(&mut svc, 10_000));
        }
    });
    assert_eq!(
        breaker.snapshot().stats.counters.total_successes,
        20_000,
        "every deferred success is counted by the time anyone reads"
    );
    for i in 0..4 {
        breaker.record(Outcome::Failure, FAST, breaker.epoch());
        assert_eq!(
            breaker.state(),
            State::Closed,
            "failure {i}: 6 successes are still in the last 10"
        );
    }
    breaker.record(Outcome::Failure, FAST, breaker.epoch());
    assert_eq!(
        breaker.state(),
        State::Open,
        "5 failures of the last 10: 50 %"
    );
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failure_count), (10, 5), "{snap:?}");
    assert_eq!(snap.stats.counters.total_requests, 20_005);
}

#[test]
fn a_success_that_brings_the_window_to_its_minimum_is_still_judged() {
    // 3 failures, then the 4th call (the minimum) a success: 75 % at the minimum trips, so that
    // success must go through the lock and not be deferred.
    let breaker = CircuitBreaker::new("minimum", cfg());
    for _ in 0..3 {
        breaker.record(Outcome::Failure, FAST, breaker.epoch());
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(status_service(calls));
    succeed_n(&mut svc, 1);
    assert_eq!(breaker.state(), State::Open, "3 of 4 failed: 75 % ≥ 50 %");
}

#[test]
fn resetting_a_closed_breaker_forgets_its_window_without_a_transition() {
    let t0 = Instant::now();
    let mut b = Breaker::new(cfg(), t0);
    for i in 0..3 {
        call(&mut b, Outcome::Failure, FAST, t0, &format!("failure {i}"));
    }
    assert!(!b.reset(t0), "closed already: nothing changed");
    assert_eq!(
        (b.epoch(), b.last_seq()),
        (0, 0),
        "no new epoch, no history entry"
    );
    call(&mut b, Outcome::Failure, FAST, t0, "one more");
    assert_eq!(
        b.state(),
        State::Closed,
        "the three earlier failures were forgotten"
    );
    let mut b = tripped(t0);
    assert!(b.reset(t0), "an open breaker closes");
    assert_eq!(last_reason(&b), Reason::Reset);
}

/// A master and `n` workers' links in one process: each link's reports go to the master and
/// its answers come back, as the supervisor and the worker carry them over the control channel.
fn wired(config: &BreakerConfig, n: usize) -> (MasterBreakers, Vec<WorkerLink>) {
    use crate::wire::ipc::{MasterMessage, WorkerMessage};
    let master = MasterBreakers::new(&["svc"], config);
    master.start();
    let links: Vec<WorkerLink> = (0..n).map(|_| WorkerLink::new()).collect();
    for (i, link) in links.iter().enumerate() {
        let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerMessage>();
        let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel::<MasterMessage>();
        link.connect(&up_tx);
        // The worker's end keeps its sender alive, as the worker's control channel does.
        std::mem::forget(up_tx);
        let (m, back) = (master.clone(), down_tx.clone());
        tokio::spawn(async move {
            while let Some(WorkerMessage::Breaker { report }) = up_rx.recv().await {
                if let Some(reply) = m.on_report(report) {
                    let _ = back.send(reply);
                }
            }
        });
        let l = link.clone();
        tokio::spawn(async move {
            while let Some(MasterMessage::Breaker { update }) = down_rx.recv().await {
                l.apply(update);
            }
        });
        master.attach((i + 1, 0), down_tx);
    }
    (master, links)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + 5 * S;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(MS).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_followers_failure_goes_to_the_master_at_once_and_its_successes_in_a_batch() {
    use crate::wire::ipc::{BreakerReport, WorkerMessage};
    let link = WorkerLink::new();
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerMessage>();
    link.connect(&up_tx);
    let f = link.follower("svc", cfg());
    // No await between the call and the look: the flusher cannot have run.
    f.record(Outcome::Success, MS, 0);
    assert!(up_rx.try_recv().is_err(), "a success waits for its batch");
    f.record(Outcome::Failure, MS, 0);
    match up_rx.try_recv() {
        Ok(WorkerMessage::Breaker {
            report: BreakerReport::Outcomes { outcomes },
        }) => assert_eq!(
            outcomes.len(),
            2,
            "the failure takes the waiting success along"
        ),
        other => panic!("the failure was not sent at once: {other:?}"),
    }
}

#[tokio::test]
async fn followers_trip_the_masters_breaker_together_and_share_its_probe_budget() {
    let config = BreakerConfig {
        wait_in_open: 100 * MS,
        max_wait_in_half_open: 30 * S,
        ..cfg()
    };
    let (master, links) = wired(&config, 2);
    let followers: Vec<CircuitBreaker> = links
        .iter()
        .map(|l| l.follower("svc", config.clone()))
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    // Two failures on each of two workers: 4 in all, the minimum, 100 %.
    for f in &followers {
        let mut svc = CircuitBreakerLayer::new(f.clone()).layer(status_service(calls.clone()));
        for _ in 0..2 {
            let res = svc
                .ready()
                .await
                .expect("ready")
                .call(StatusCode::BAD_GATEWAY)
                .await;
            assert!(res.is_ok(), "a 502 is a response");
        }
    }
    let m = master.get("svc").expect("the master's breaker").clone();
    eventually("the master opens on the workers' outcomes", || {
        m.state() == State::Open
    })
    .await;
    eventually("every follower obeys", || {
        followers.iter().all(|f| f.state() == State::Open)
    })
    .await;
    for f in &followers {
        let err = f.try_acquire().expect_err("a follower refuses while open");
        assert_eq!(err.state(), State::Open);
    }
    // Once the wait is over, probes are the master's to grant: 3 in all, not 3 per worker.
    tokio::time::sleep(150 * MS).await;
    let slow = service_fn(|()| async {
        tokio::time::sleep(200 * MS).await;
        Ok::<_, std::io::Error>(Response::builder().status(200).body("").expect("valid"))
    });
    let mut probes = Vec::new();
    for i in 0..10 {
        let f = followers[i % 2].clone();
        let svc = CircuitBreakerLayer::new(f).layer(slow);
        probes.push(tokio::spawn(svc.oneshot(())));
    }
    let mut let_through = 0;
    for p in probes {
        if p.await.expect("no panic").is_ok() {
            let_through += 1;
        }
    }
    assert_eq!(
        let_through, config.half_open_calls,
        "probes across both workers"
    );
    eventually("3 good probes close the master's breaker", || {
        m.state() == State::Closed
    })
    .await;
    eventually("and every follower", || {
        followers.iter().all(|f| f.state() == State::Closed)
    })
    .await;
    assert!(master.force("svc", State::ForcedOpen));
    eventually("a forced open reaches the followers", || {
        followers.iter().all(|f| f.state() == State::ForcedOpen)
    })
    .await;
    assert_eq!(master.reset_all(), ["svc"]);
    assert_eq!(
        master.reset_all(),
        Vec::<&str>::new(),
        "closed already: nothing to log"
    );
}
