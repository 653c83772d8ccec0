//! The cap and the bounded wait, on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::future::poll_fn;

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A service whose calls wait at `gate` until the test lets them finish, counting how many run
/// at once and the most that ever did.
#[derive(Clone)]
struct Gated {
    gate: Arc<Semaphore>,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            now: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn service(
        &self,
    ) -> impl Service<(), Response = (), Error = std::io::Error, Future: Send> + Clone + use<> {
        let this = self.clone();
        service_fn(move |()| {
            let this = this.clone();
            async move {
                let n = this.now.fetch_add(1, Ordering::SeqCst) + 1;
                this.peak.fetch_max(n, Ordering::SeqCst);
                let pass = this.gate.acquire().await.map_err(std::io::Error::other)?;
                pass.forget();
                this.now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_refuses_a_call_once_its_wait_is_over() {
    let gated = Gated::new();
    let layer = BulkheadLayer::new(2, Duration::from_millis(100));
    let mut svc = layer.layer(gated.service());
    let a = tokio::spawn(svc.clone().oneshot(()));
    let b = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert_eq!(layer.bulkhead().stats().in_flight, 2);
    // The third waits for a place: still pending 1 ms before the wait ends.
    let mut ready = || poll_fn(|cx| svc.poll_ready(cx)).now_or_never();
    assert!(ready().is_none(), "no place yet: waiting");
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(ready().is_none(), "99 ms: still waiting");
    tokio::time::advance(MS).await;
    assert!(ready().is_some(), "100 ms: ready, to refuse");
    let err = svc.call(()).await.expect_err("no place came free");
    let full = err
        .downcast_ref::<BulkheadFull>()
        .expect("the bulkhead's error");
    assert_eq!(full.max_concurrent(), 2);
    assert_eq!(
        gated.peak.load(Ordering::SeqCst),
        2,
        "the third never reached the service"
    );
    assert_eq!(layer.bulkhead().stats().total_rejections, 1);
    gated.gate.add_permits(2);
    a.await.expect("joined").expect("first call");
    b.await.expect("joined").expect("second call");
    assert_eq!(
        layer.bulkhead().stats().in_flight,
        0,
        "places are given back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_takes_a_place_freed_within_its_wait() {
    let gated = Gated::new();
    let layer = BulkheadLayer::new(1, Duration::from_secs(1));
    let svc = layer.layer(gated.service());
    let first = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(()));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        gated.now.load(Ordering::SeqCst),
        1,
        "the second is waiting, not running"
    );
    gated.gate.add_permits(2);
    first.await.expect("joined").expect("first");
    second
        .await
        .expect("joined")
        .expect("second got the freed place");
    assert_eq!(gated.peak.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(layer.bulkhead().stats().total_rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_wait_refuses_at_once_when_full() {
    let gated = Gated::new();
    let layer = BulkheadLayer::new(1, Duration::ZERO);
    let mut svc = layer.layer(gated.service());
    let _first = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    let ready = svc
        .ready()
        .now_or_never()
        .expect("ready at once, to refuse");
    let err = ready
        .expect("no error from readiness")
        .call(())
        .await
        .expect_err("full");
    assert!(err.is::<BulkheadFull>(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_concurrent_calls_run_at_once_when_twenty_race() {
    let gated = Gated::new();
    let layer = BulkheadLayer::new(4, Duration::from_secs(60));
    let svc = layer.layer(gated.service());
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    // Four take the places and wait at the gate; the other sixteen wait at the bulkhead.
    // Without a cap all twenty would be at the gate now, and the peak would say so.
    tokio::time::timeout(Duration::from_secs(10), async {
        while gated.now.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("four calls reach the service");
    gated.gate.add_permits(20);
    for c in calls {
        c.await
            .expect("joined")
            .expect("every call gets a place within 60 s");
    }
    assert_eq!(
        gated.peak.load(Ordering::SeqCst),
        4,
        "20 calls through 4 places: at most 4 at once"
    );
}
