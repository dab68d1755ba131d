//! A persistent worker pool: `threads − 1` workers created once per model plus the
//! calling thread run each parallel region together (SPMD: every participant gets its
//! index and partitions the work itself).
//!
//! Waking a worker costs far more than a region's work on small models (a thread spawn
//! ≈ 0.24 ms, a parked wake-up tens of µs on virtual machines), so workers spin on the
//! region counter for a while after each region and only then park on a condvar. A
//! region that panics in a worker is re-raised on the caller after all finish. Every
//! participant runs a region at its caller's SIMD level ([`math::level`]).

use super::math::{self, SimdLevel};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next region before parking.
const SPIN: Duration = Duration::from_micros(200);

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Incremented once per region (and once to shut down).
    epoch: AtomicUsize,
    /// Workers finished with the current region.
    done: AtomicUsize,
    /// The current region's closure, valid while `run` waits for it.
    job: Mutex<Option<(&'static Job, SimdLevel)>>,
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
            done: AtomicUsize::new(0),
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
                    .spawn(move || worker(&s, tid, threads))
                    .expect("spawning a worker thread")
            })
            .collect();
        Pool { threads, shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(index, threads)` on every participant and wait for all of them.
    pub fn run<'f>(&self, f: &'f (dyn Fn(usize, usize) + Sync + 'f)) {
        if self.threads == 1 {
            return f(0, 1);
        }
        let s = &self.shared;
        // SAFETY: the reference is only used by workers during this call: they read it
        // after the epoch bump below and `run` returns only once all have finished.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&'f (dyn Fn(usize, usize) + Sync + 'f), &'static Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((job, math::level()));
        s.done.store(0, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if *s.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, self.threads)));
        let workers = self.threads - 1;
        let start = Instant::now();
        while s.done.load(Ordering::Acquire) < workers {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a native backend worker thread panicked");
        }
    }
}

fn worker(s: &Shared, tid: usize, threads: usize) {
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
        seen = s.epoch.load(Ordering::Acquire);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((job, level)) = job {
            let run = || math::with_level(level, || job(tid, threads));
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
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
    fn every_participant_runs_each_region_once() {
        let pool = Pool::new(3);
        let hits = AtomicUsize::new(0);
        for round in 0..200 {
            pool.run(&|t, n| {
                assert_eq!(n, 3);
                hits.fetch_add(1 << (8 * t), Ordering::SeqCst);
            });
            assert_eq!(hits.load(Ordering::SeqCst), (round + 1) * 0x010101);
            if round == 100 {
                std::thread::sleep(Duration::from_millis(5)); // workers park, then wake
            }
        }
    }

    #[test]
    fn every_participant_runs_at_the_callers_simd_level() {
        let pool = Pool::new(3);
        for level in SimdLevel::all_available() {
            let seen = Mutex::new(Vec::new());
            math::with_level(level, || pool.run(&|t, _| seen.lock().unwrap().push((t, math::level()))));
            let mut seen = seen.into_inner().unwrap();
            seen.sort_by_key(|&(t, _)| t);
            assert_eq!(seen, vec![(0, level), (1, level), (2, level)]);
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(&|t, _| assert_ne!(t, 1))));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
