//! The in-memory session store's cost per request, beside a store built on `moka`.
//!
//! Every request with a cookie touches its session (count it, slide its expiry, return a copy);
//! every request without one inserts a new session. `moka` (bounded, time-to-idle) would replace
//! the store's own LRU, TTL and sweeper; this measures whether it is as fast for those two calls.
//!
//! Run with `cargo bench -p common --bench session_store`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::session::{MemoryStore, Session, mint_id};
use criterion::{Criterion, criterion_group, criterion_main};
use moka::sync::Cache;

const SESSIONS: usize = 10_000;
const TTL: Duration = Duration::from_secs(1800);

/// What a moka-backed store would keep: the session behind a lock, since a touch changes it in
/// place (moka hands out clones of the value, so the value must be a shared handle).
type MokaStore = Cache<String, Arc<Mutex<Session>>>;

fn moka_store() -> MokaStore {
    Cache::builder()
        .max_capacity(SESSIONS as u64 * 2)
        .time_to_idle(TTL)
        .build()
}

fn moka_touch(store: &MokaStore, id: &str, now_ms: u64) -> Option<Session> {
    let entry = store.get(id)?;
    let mut s = entry.lock().unwrap_or_else(|p| p.into_inner());
    s.request_count += 1;
    s.last_access = now_ms;
    Some(s.clone())
}

fn ids() -> Vec<String> {
    (0..SESSIONS).map(|i| mint_id(1 + i % 4)).collect()
}

fn touch(c: &mut Criterion) {
    let ids = ids();
    let ours = MemoryStore::new(TTL, SESSIONS * 2);
    let moka = moka_store();
    for id in &ids {
        ours.insert_now(Session::new(id.clone(), 0));
        moka.insert(
            id.clone(),
            Arc::new(Mutex::new(Session::new(id.clone(), 0))),
        );
    }
    let mut group = c.benchmark_group("touch an existing session");
    let mut i = 0usize;
    group.bench_function("MemoryStore", |b| {
        b.iter(|| {
            i = (i + 7919) % SESSIONS;
            black_box(ours.touch_now(&ids[i], i as u64))
        })
    });
    group.bench_function("moka", |b| {
        b.iter(|| {
            i = (i + 7919) % SESSIONS;
            black_box(moka_touch(&moka, &ids[i], i as u64))
        })
    });
    group.finish();
}

fn insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert a new session");
    let ours = MemoryStore::new(TTL, SESSIONS);
    let moka = moka_store();
    group.bench_function("MemoryStore", |b| {
        b.iter(|| ours.insert_now(Session::new(mint_id(1), 0)))
    });
    group.bench_function("moka", |b| {
        b.iter(|| {
            let id = mint_id(1);
            moka.insert(id.clone(), Arc::new(Mutex::new(Session::new(id, 0))))
        })
    });
    group.finish();
}

criterion_group!(benches, touch, insert);
criterion_main!(benches);
