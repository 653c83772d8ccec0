//! Per-thread caches of what every request allocates and frees again: the heap block an answer's
//! future lives in, header maps and write buffers. Memory is held per thread, a few hundred
//! pieces at most, not per connection: an idle connection still holds none of it (see `buffers`).
//!
//! Why: the plain loop keeps each answer's future on the heap for the request's life only, so
//! that an idle connection does not carry the room for one. The master's answer (a proxied
//! request's whole future) is over a kilobyte, past the largest block glibc's per-thread cache
//! serves (1032 bytes), so each request paid a trip through the allocator's bins to allocate it
//! and another to free it; and each request built two header maps (the request's and the worker's
//! response's), two allocations each. Measured with callgrind over 20,000 proxied `GET /ping`,
//! allocation and `free` were a tenth of the master's instructions; with these caches (and a
//! smaller answer future), 3%, and 21,100 → 19,200 instructions per request (see BENCHMARKS.md,
//! "same policy").
//!
//! Depends on nothing else in the crate, so that its tests also run under Miri, which checks each
//! unsafe operation here (`crates/common/miri`, run by scripts/test).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use http::{HeaderMap, request};

/// Blocks kept per thread: enough for the requests an edge thread has in flight when a slow
/// backend's answers come back together (a thousand connections over four threads); past this,
/// freed blocks go back to the allocator. At about 2 KB a block, half a megabyte a thread at most.
const BLOCKS: usize = 256;

/// Header maps kept per thread, and the largest capacity a kept map may have (a map that grew for
/// an unusual head is not kept at that size).
const MAPS: usize = 256;
const MAP_CAPACITY: usize = 32;

/// Free blocks of one layout.
struct Blocks {
    layout: Layout,
    free: Vec<NonNull<u8>>,
}

/// A thread's free blocks, by layout (a thread sees one or two future types).
struct Cache(Vec<Blocks>);

impl Drop for Cache {
    fn drop(&mut self) {
        for blocks in &self.0 {
            for ptr in &blocks.free {
                // SAFETY: each block was allocated with `blocks.layout` and is owned by the cache.
                unsafe { dealloc(ptr.as_ptr(), blocks.layout) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache(Vec::new())) };
    static HEADER_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// A free block for `layout` from this thread's cache, else a new one.
fn take_block(layout: Layout) -> NonNull<u8> {
    let cached = CACHE
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            cache
                .0
                .iter_mut()
                .find(|b| b.layout == layout)
                .and_then(|b| b.free.pop())
        })
        .ok()
        .flatten();
    cached.unwrap_or_else(|| {
        // SAFETY: `layout` has a non-zero size (checked by the caller).
        let ptr = unsafe { alloc(layout) };
        NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(layout))
    })
}

/// Gives `ptr`, a block of `layout` no longer in use, to this thread's cache, or back to the
/// allocator when the cache is full (or the thread is exiting).
fn give_block(ptr: NonNull<u8>, layout: Layout) {
    let kept = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        let index = match cache.0.iter().position(|b| b.layout == layout) {
            Some(i) => i,
            None => {
                cache.0.push(Blocks {
                    layout,
                    free: Vec::new(),
                });
                cache.0.len() - 1
            }
        };
        let blocks = &mut cache.0[index];
        if blocks.free.len() < BLOCKS {
            blocks.free.push(ptr);
            true
        } else {
            false
        }
    });
    if kept != Ok(true) {
        // SAFETY: the block was allocated with `layout`, and nothing refers to it any more.
        unsafe { dealloc(ptr.as_ptr(), layout) };
    }
}

/// A future on the heap, in a block that goes back to its thread's cache when the future is
/// dropped: `Box::pin` without the allocator's round trip per request.
pub(crate) struct Recycled<F: Future> {
    /// Owns an initialised `F` (or, for a zero-sized `F`, a dangling pointer). The block never
    /// moves while the future lives, so the future is pinned.
    ptr: NonNull<F>,
    _owns: PhantomData<F>,
}

// SAFETY: `Recycled<F>` owns its `F` as a `Box<F>` would; the block goes to whichever thread drops
// it, which is sound because every block comes from, and returns to, the global allocator.
unsafe impl<F: Future + Send> Send for Recycled<F> {}

impl<F: Future> Recycled<F> {
    pub(crate) fn new(future: F) -> Self {
        let layout = Layout::new::<F>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            take_block(layout).cast::<F>()
        };
        // SAFETY: `ptr` is valid for writes of one `F` and properly aligned (a block of `F`'s own
        // layout, or dangling for a zero-sized `F`).
        unsafe { ptr.as_ptr().write(future) };
        Self {
            ptr,
            _owns: PhantomData,
        }
    }

    /// The block's size, for the tests.
    #[cfg(test)]
    fn size(&self) -> usize {
        std::mem::size_of::<F>()
    }
}

impl<F: Future> Drop for Recycled<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the future is initialised and dropped exactly once, here, in place (as pinning
        // requires).
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            give_block(self.ptr.cast(), layout);
        }
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future lives in its block until `drop`, and is never moved out of it.
        let future = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        future.poll(cx)
    }
}

// The pointer is never exposed, so moving a `Recycled` never moves the future.
impl<F: Future> Unpin for Recycled<F> {}

/// An empty header map with room for `capacity` headers, from this thread's cache when it has one.
pub(crate) fn header_map(capacity: usize) -> HeaderMap {
    let cached = HEADER_MAPS
        .try_with(|maps| maps.borrow_mut().pop())
        .ok()
        .flatten();
    if let Some(mut map) = cached
        // Empty, so this grows a kept map only for a head with more headers than it had room for.
        && map.try_reserve(capacity).is_ok()
    {
        return map;
    }
    HeaderMap::with_capacity(capacity)
}

/// Empties `map` and keeps it for the next [`header_map`], unless the cache is full or the map grew
/// past what is worth keeping.
pub(crate) fn give_header_map(mut map: HeaderMap) {
    if map.capacity() > MAP_CAPACITY {
        return;
    }
    // Dropping the values here, not when the cache is next used: they hold slices of a head.
    map.clear();
    let _ = HEADER_MAPS.try_with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < MAPS {
            maps.push(map);
        }
    });
}

/// Write buffers kept per thread, and the largest kept (a head and a 4 KiB body fit).
const WRITE_BUFFERS: usize = 64;
const WRITE_CAPACITY: usize = 8 * 1024;

thread_local! {
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty write buffer with room for at least `capacity` bytes, from this thread's cache when it
/// has one.
pub(crate) fn write_buffer(capacity: usize) -> Vec<u8> {
    let cached = WRITE.try_with(|w| w.borrow_mut().pop()).ok().flatten();
    let mut buf = cached.unwrap_or_default();
    buf.reserve(capacity);
    buf
}

/// Keeps `buf` for the next [`write_buffer`], unless the cache is full or `buf` grew past what is
/// worth keeping.
pub(crate) fn give_write_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > WRITE_CAPACITY {
        return;
    }
    buf.clear();
    let _ = WRITE.try_with(|w| {
        let mut w = w.borrow_mut();
        if w.len() < WRITE_BUFFERS {
            w.push(buf);
        }
    });
}

/// A request head whose header map goes back to the thread's cache when it is dropped.
pub(crate) struct RequestHead(pub request::Parts);

impl Drop for RequestHead {
    fn drop(&mut self) {
        // An empty map allocates nothing.
        give_header_map(std::mem::take(&mut self.0.headers));
    }
}

impl std::ops::Deref for RequestHead {
    type Target = request::Parts;

    fn deref(&self) -> &request::Parts {
        &self.0
    }
}

impl std::ops::DerefMut for RequestHead {
    fn deref_mut(&mut self) -> &mut request::Parts {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A future of a known size that counts its drops.
    struct Big {
        _room: [u8; 2048],
        dropped: Arc<AtomicUsize>,
    }

    impl Future for Big {
        type Output = usize;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            Poll::Ready(7)
        }
    }

    impl Drop for Big {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn big(dropped: &Arc<AtomicUsize>) -> Big {
        Big {
            _room: [0; 2048],
            dropped: dropped.clone(),
        }
    }

    #[tokio::test]
    async fn a_recycled_future_runs_and_is_dropped_once() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let future = Recycled::new(big(&dropped));
        assert!(future.size() >= 2048);
        assert_eq!(future.await, 7);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        // Dropped without being polled, too.
        drop(Recycled::new(big(&dropped)));
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_freed_block_is_the_next_future_s_block() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let first = Recycled::new(big(&dropped));
        let at = first.ptr.as_ptr() as usize;
        drop(first);
        let second = Recycled::new(big(&dropped));
        assert_eq!(second.ptr.as_ptr() as usize, at, "the block was not reused");
        // Two alive at once have two blocks.
        let third = Recycled::new(big(&dropped));
        assert_ne!(third.ptr.as_ptr() as usize, at);
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_blocks() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let many: Vec<_> = (0..BLOCKS * 3)
            .map(|_| Recycled::new(big(&dropped)))
            .collect();
        drop(many);
        let kept = CACHE.with_borrow(|c| {
            c.0.iter()
                .find(|b| b.layout == Layout::new::<Big>())
                .map_or(0, |b| b.free.len())
        });
        assert_eq!(kept, BLOCKS);
        assert_eq!(dropped.load(Ordering::Relaxed), BLOCKS * 3);
    }

    #[test]
    fn a_future_dropped_on_another_thread_leaves_its_block_there() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let future = Recycled::new(big(&dropped));
        let at = future.ptr.as_ptr() as usize;
        let reused = std::thread::spawn(move || {
            drop(future);
            // That thread's next future of the type takes the block it was given.
            let next = Recycled::new(big(&dropped));
            (next.ptr.as_ptr() as usize == at, dropped)
        })
        .join()
        .expect("the other thread");
        assert!(reused.0, "the block went to the dropping thread's cache");
        assert_eq!(reused.1.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_future_holding_another_drops_both_and_keeps_both_blocks() {
        struct Outer {
            _inner: Recycled<Big>,
            _room: [u8; 4096],
        }
        impl Future for Outer {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                Poll::Ready(())
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        // The inner block goes back while the outer future is being dropped: no cache borrow may
        // be held across a future's own drop.
        drop(Recycled::new(Outer {
            _inner: Recycled::new(big(&dropped)),
            _room: [0; 4096],
        }));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        let kinds = CACHE.with_borrow(|c| c.0.iter().filter(|b| !b.free.is_empty()).count());
        assert!(kinds >= 2, "both blocks kept: {kinds} kinds");
    }

    #[test]
    fn zero_sized_futures_take_no_block() {
        assert_eq!(
            futures_util::FutureExt::now_or_never(Recycled::new(std::future::ready(3))),
            Some(3)
        );
    }

    #[test]
    fn a_write_buffer_is_reused_empty_and_a_large_one_is_not_kept() {
        WRITE.with_borrow_mut(Vec::clear);
        let mut buf = write_buffer(512);
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = buf.as_ptr();
        give_write_buffer(buf);
        let buf = write_buffer(512);
        assert!(buf.is_empty() && buf.capacity() >= 512);
        assert_eq!(buf.as_ptr(), at, "the buffer was not reused");
        give_write_buffer(Vec::with_capacity(WRITE_CAPACITY * 2));
        give_write_buffer(buf);
        assert_eq!(WRITE.with_borrow(Vec::len), 1);
    }

    #[test]
    fn a_given_header_map_comes_back_empty() {
        let mut map = header_map(4);
        map.insert("x-a", http::HeaderValue::from_static("1"));
        give_header_map(map);
        let map = header_map(4);
        assert!(map.is_empty());
        assert!(map.capacity() >= 4);
    }

    #[test]
    fn a_map_that_grew_large_is_not_kept() {
        HEADER_MAPS.with_borrow_mut(Vec::clear);
        let mut map = HeaderMap::with_capacity(MAP_CAPACITY * 4);
        map.insert("x-a", http::HeaderValue::from_static("1"));
        give_header_map(map);
        assert!(HEADER_MAPS.with_borrow(Vec::is_empty));
    }
}
