//! A persistent worker pool: `threads − 1` workers created once per model plus the
//! calling thread run each parallel region together. A region is `chunks` pieces of
//! work (each kernel partitions its work by chunk index); the participants claim
//! chunks from a shared counter until none are left.
//!
//! Waking a worker costs far more than a region's work on small models (a thread spawn
//! ≈ 0.24 ms, a parked wake-up tens of µs on virtual machines), so workers spin on the
//! region counter for a while after each region and only then park on a condvar.
//! Claiming instead of a fixed split keeps the pool steady when another process
//! competes for the cores: a worker the OS has not scheduled claims nothing, and the
//! caller finishes its chunks instead of waiting a scheduler time slice for it. The
//! region ends when every chunk is done and no worker is inside it, so a late worker
//! never sees the region's closure. A chunk's result does not depend on which
//! participant runs it. A region that panics in a worker is re-raised on the caller
//! after all finish. Every participant runs a region at its caller's SIMD level
//! ([`math::level`]).

use super::math::{self, SimdLevel};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next region before parking.
const SPIN: Duration = Duration::from_micros(200);

/// Chunks per participant in a split region: enough for the others to take over a
/// descheduled participant's share, few enough that each stays a whole GEMM panel.
pub(crate) const CHUNKS_PER_THREAD: usize = 4;

/// A region's work: `f(chunk, chunks, participant)`; `participant` (0 for the caller)
/// selects per-thread scratch, never the result.
pub(crate) type Job = dyn Fn(usize, usize, usize) + Sync;

struct Shared {
    /// Incremented once per region (and once to shut down).
    epoch: AtomicUsize,
    /// The last region whose chunks were all done (its epoch).
    finished: AtomicUsize,
    /// The next chunk to claim, and the chunks done, of the current region.
    next: AtomicUsize,
    done: AtomicUsize,
    /// Workers inside the current region.
    active: AtomicUsize,
    /// The current region's closure and chunk count, valid while `run` waits for it.
    job: Mutex<Option<(&'static Job, usize, SimdLevel)>>,
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

pub(crate) struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` participants (the caller included; at least 1).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            job: Mutex::new(None),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|tid| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("graft-native-{tid}"))
                    .spawn(move || worker(&s, tid))
                    .expect("spawning a worker thread")
            })
            .collect();
        Pool { threads, shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Chunks a split region has: [`CHUNKS_PER_THREAD`] per participant (1 alone).
    pub fn chunks(&self) -> usize {
        if self.threads == 1 {
            1
        } else {
            self.threads * CHUNKS_PER_THREAD
        }
    }

    /// Run `f(chunk, chunks, participant)` for every chunk in `0..chunks`, each once,
    /// on whichever participants claim them; return when all are done.
    pub fn run<'f>(&self, chunks: usize, f: &'f (dyn Fn(usize, usize, usize) + Sync + 'f)) {
        if self.threads == 1 || chunks <= 1 {
            for c in 0..chunks {
                f(c, chunks, 0);
            }
            return;
        }
        let s = &self.shared;
        // SAFETY: workers use the reference only inside the region (counted in
        // `active`, entered before `finished` moves past it), and `run` returns only
        // once the region is finished and no worker is inside.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&'f (dyn Fn(usize, usize, usize) + Sync + 'f), &'static Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((job, chunks, math::level()));
        s.next.store(0, Ordering::SeqCst);
        s.done.store(0, Ordering::SeqCst);
        let epoch = s.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        if *s.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        let mut mine = Ok(());
        while let Some(c) = claim(s, chunks) {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c, chunks, 0)));
            if mine.is_ok() {
                mine = r;
            }
            s.done.fetch_add(1, Ordering::Release);
        }
        wait_for(|| s.done.load(Ordering::Acquire) >= chunks);
        s.finished.store(epoch, Ordering::SeqCst);
        wait_for(|| s.active.load(Ordering::SeqCst) == 0);
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a native backend worker thread panicked");
        }
    }
}

/// The next unclaimed chunk of the current region, if any.
fn claim(s: &Shared, chunks: usize) -> Option<usize> {
    let c = s.next.fetch_add(1, Ordering::AcqRel);
    (c < chunks).then_some(c)
}

/// Spin on `ready` for [`SPIN`], then yield between checks.
fn wait_for(ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

fn worker(s: &Shared, tid: usize) {
    let mut seen = 0usize;
    loop {
        // Spin, then park until the epoch moves.
        let start = Instant::now();
        while s.epoch.load(Ordering::Acquire) == seen {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            *sleepers += 1;
            while s.epoch.load(Ordering::Acquire) == seen {
                sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
            }
            *sleepers -= 1;
        }
        seen = s.epoch.load(Ordering::SeqCst);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        // Enter, then make sure the region is still open: either the caller sees this
        // worker in `active` and waits for it, or this worker sees the region finished.
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.finished.load(Ordering::SeqCst) < seen {
            let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((job, chunks, level)) = job {
                while let Some(c) = claim(s, chunks) {
                    let run = || math::with_level(level, || job(c, chunks, tid));
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                        s.panicked.store(true, Ordering::SeqCst);
                    }
                    s.done.fetch_add(1, Ordering::Release);
                }
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &self.shared;
        s.stop.store(true, Ordering::SeqCst);
        {
            let _g = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            s.epoch.fetch_add(1, Ordering::SeqCst);
        }
        s.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A mutable buffer that the participants of a region write disjoint parts of: a raw
/// pointer that keeps the buffer's `&mut` borrow for `'a`, so the buffer outlives every
/// copy and nothing else reaches it meanwhile.
///
/// Invariant (established by [`SharedMut::new`], the only constructor): `ptr` is valid
/// for reads and writes of `len` elements for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}
// SAFETY: a `SharedMut` hands disjoint ranges of one buffer to the participants of a
// region; every access that could race goes through the `unsafe` [`SharedMut::slice`],
// whose contract is that no two live ranges overlap.
unsafe impl Send for SharedMut<'_> {}
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(s: &'a mut [f32]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len(), _buffer: PhantomData }
    }

    /// Elements in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Elements `[lo, hi)`, writable (bounds checked).
    ///
    /// # Safety
    /// No two live slices obtained from one `SharedMut` may overlap, and no range being
    /// written may be read at the same time (through a pointer from [`SharedMut::ptr`]).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, lo: usize, hi: usize) -> &'a mut [f32] {
        assert!(lo <= hi && hi <= self.len, "partition out of bounds");
        // SAFETY: in bounds (checked above) of a buffer valid for `'a`; the caller
        // guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(lo), hi - lo) }
    }

    /// A pointer to element `lo`, valid for `hi - lo` elements (bounds checked).
    pub(crate) fn ptr(&self, lo: usize, hi: usize) -> *mut f32 {
        assert!(lo <= hi && hi <= self.len, "partition out of bounds");
        // SAFETY: in bounds (checked above).
        unsafe { self.ptr.add(lo) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_of_every_region_runs_once() {
        let pool = Pool::new(3);
        let hits: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..200 {
            pool.run(7, &|c, n, who| {
                assert_eq!(n, 7);
                assert!(who < 3);
                hits[c].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == round + 1), "round {round}");
            if round == 100 {
                std::thread::sleep(Duration::from_millis(5)); // workers park, then wake
            }
        }
    }

    #[test]
    fn every_chunk_runs_at_the_callers_simd_level() {
        let pool = Pool::new(3);
        for level in SimdLevel::all_available() {
            let seen = Mutex::new(Vec::new());
            math::with_level(level, || pool.run(9, &|c, _, _| seen.lock().unwrap().push((c, math::level()))));
            let mut seen = seen.into_inner().unwrap();
            seen.sort_by_key(|&(c, _)| c);
            assert_eq!(seen, (0..9).map(|c| (c, level)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_participant_stalled_in_a_chunk_does_not_hold_the_other_chunks() {
        // Whoever takes chunk 0 waits until the last chunk has run: with a fixed
        // split per participant this would wait forever (the last chunk would be its
        // own); with claiming, the others take every other chunk.
        let pool = Pool::new(2);
        for _ in 0..50 {
            let last_done = AtomicBool::new(false);
            pool.run(8, &|c, n, _| {
                if c == 0 {
                    let start = Instant::now();
                    while !last_done.load(Ordering::SeqCst) {
                        assert!(start.elapsed() < Duration::from_secs(20), "the other chunks were not taken");
                        std::thread::yield_now();
                    }
                } else if c == n - 1 {
                    last_done.store(true, Ordering::SeqCst);
                }
            });
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(6, &|c, _, _| assert_ne!(c, 3))));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(6, &|_, _, _| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 6);
    }
}
