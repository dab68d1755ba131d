//! Persistent reader threads with an ordered output: one planner thread walks a job
//! stream (the training feed's staged batches) and deals job `i` to worker `i mod N`;
//! each worker turns whole jobs into results (decodes and transforms a whole batch);
//! the consumer takes result `i` from worker `i mod N`, so results come out in exactly
//! the stream's order whatever N is, with no reordering buffer.
//!
//! Memory is bounded: each worker holds at most one job waiting, one in hand and
//! `ahead` finished results. Nothing deadlocks: result `i` depends only on job `i`,
//! which the planner dealt before any later one, and the worker's earlier results
//! were already taken. Dropping the [`Ordered`] stops and joins every thread: the
//! planner and workers see the stop flag or a closed channel within one job. A
//! worker that panics closes its channel: [`Ordered::next`] then returns `None`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The results of a job stream, computed on `N` threads, in the stream's order.
pub struct Ordered<R> {
    results: Vec<Receiver<R>>,
    /// The index of the next result.
    next: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl<R: Send + 'static> Ordered<R> {
    /// Run `work` over `jobs` on `workers` threads (at least one), keeping about
    /// `ahead` results ready in total (at least one per worker).
    pub fn start<J, I, F>(jobs: I, workers: usize, ahead: usize, work: F) -> Ordered<R>
    where
        J: Send + 'static,
        I: Iterator<Item = J> + Send + 'static,
        F: Fn(J) -> R + Send + Sync + 'static,
    {
        let n = workers.max(1);
        let per_worker = ahead.div_ceil(n).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new(work);
        let (mut deal, mut results, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        for w in 0..n {
            let (job_tx, job_rx) = sync_channel::<J>(1);
            let (tx, rx) = sync_channel::<R>(per_worker);
            let (work, stop) = (Arc::clone(&work), Arc::clone(&stop));
            let worker = move || {
                for job in job_rx {
                    if stop.load(Ordering::Relaxed) || tx.send(work(job)).is_err() {
                        return;
                    }
                }
            };
            threads.extend(spawn(format!("graft-reader-{w}"), worker));
            deal.push(job_tx);
            results.push(rx);
        }
        let planner_stop = Arc::clone(&stop);
        let planner = move || {
            for (i, job) in jobs.enumerate() {
                if planner_stop.load(Ordering::Relaxed) || deal[i % n].send(job).is_err() {
                    return;
                }
            }
        };
        threads.extend(spawn("graft-reader-plan".into(), planner));
        Ordered { results, next: 0, stop, threads }
    }
}

impl<R> Iterator for Ordered<R> {
    type Item = R;

    /// The next result in stream order; `None` when the stream ended or a thread died.
    fn next(&mut self) -> Option<R> {
        let n = self.results.len();
        let r = self.results[self.next % n].recv().ok()?;
        self.next += 1;
        Some(r)
    }
}

/// A named thread. If the system cannot start one, its work is dropped with its
/// channels, which the consumer sees as the stream stopping.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f).ok()
}

impl<R> Drop for Ordered<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the result channels unblocks workers waiting to hand a result over;
        // their exit closes the job channels, which unblocks the planner.
        self.results.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn results_come_in_stream_order_for_any_number_of_workers() {
        for workers in [1, 2, 3, 8] {
            // Uneven work: later jobs finish first unless the order is kept.
            let got: Vec<u64> = Ordered::start(0..50u64, workers, 4, |i| {
                std::thread::sleep(Duration::from_micros((50 - i) * 20));
                i * i
            })
            .collect();
            assert_eq!(got, (0..50u64).map(|i| i * i).collect::<Vec<_>>(), "{workers} workers");
        }
    }

    #[test]
    fn dropping_early_joins_every_thread_of_an_endless_stream() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        let mut o = Ordered::start(0u64.., 3, 4, move |i| {
            d.fetch_add(1, Ordering::Relaxed);
            i
        });
        assert_eq!((o.next(), o.next()), (Some(0), Some(1)));
        drop(o); // joins: returns only once the planner and workers stopped
        let after = done.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(done.load(Ordering::Relaxed), after, "no thread runs after the drop");
        // Bounded look-ahead: a couple of jobs per worker at most were computed.
        assert!(after <= 2 + 3 * 3, "{after} jobs computed");
    }

    #[test]
    fn a_panicking_worker_ends_the_stream_instead_of_hanging() {
        let got: Vec<u64> = Ordered::start(0..10u64, 3, 4, |i| {
            assert!(i != 4, "job 4 fails");
            i
        })
        .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }
}
