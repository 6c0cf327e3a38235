//! One CPU budget per process: how many cores framefusion's CPU-bound work (decoding,
//! pixel conversion, features, inference) may keep busy, and the one pool it runs on.
//!
//! The budget is sized once per process ([`configure`], else `FRAMEFUSION_THREADS`, else
//! the cores the process may use) and everything derives from it:
//!
//! - **the pool**: [`CpuBudget::run`] runs blocking work on a dedicated pool of that many
//!   threads (never on an async I/O thread), so at most that many videos are worked on at
//!   once, whatever the number of DataFusion partitions or Ballista task slots;
//! - **decoders**: a decode pass leases its decoder threads
//!   ([`CpuBudget::lease_decoder_threads`]): the budget shared by the work running on the
//!   pool at that moment, never more than are free, so the decoder threads of all passes
//!   together never exceed the budget (a pass waits for one when none is free; each
//!   pass's own high-water mark is [`CpuBudget::decoder_threads_peak`]);
//! - **ONNX Runtime**: one global intra-op thread pool of [`CpuBudget::inference_threads`]
//!   threads shared by every model session, its threads not spinning while idle (set up
//!   by `framefusion-udfs`, which owns ONNX Runtime).
//!
//! On a Ballista executor the budget is the executor's, shared by its task slots: an
//! executor with 4 cores and 2 slots runs at most 4 videos at once, 2 decoder threads each
//! when both slots decode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// Environment variable that sizes the budget when the process does not ([`configure`]).
pub const THREADS_ENV: &str = "FRAMEFUSION_THREADS";

/// The process's CPU budget (see the module docs).
#[derive(Debug)]
pub struct CpuBudget {
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    active: AtomicUsize,
    decoders: Mutex<Decoders>,
    freed: Condvar,
}

/// Decoder threads leased now, and the most ever leased at once.
#[derive(Debug, Default)]
struct Decoders {
    in_use: usize,
    peak: usize,
}

/// Decoder threads leased to one pass ([`CpuBudget::lease_decoder_threads`]), given back
/// when dropped.
#[derive(Debug)]
pub struct DecoderThreads<'a> {
    budget: &'a CpuBudget,
    count: usize,
}

impl DecoderThreads<'_> {
    /// How many threads the pass may decode with (at least one).
    pub fn count(&self) -> usize {
        self.count
    }
}

impl Drop for DecoderThreads<'_> {
    fn drop(&mut self) {
        let mut decoders = self.budget.decoders();
        decoders.in_use = decoders.in_use.saturating_sub(self.count);
        crate::metrics::decoder_threads(decoders.in_use);
        self.budget.freed.notify_all();
    }
}

static BUDGET: OnceLock<CpuBudget> = OnceLock::new();

fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

impl CpuBudget {
    fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("framefusion-cpu-{i}"))
            .build()
            .map_err(|e| log::warn!("cannot start the CPU pool ({e}); running work in place"))
            .ok();
        Self {
            threads,
            pool,
            active: AtomicUsize::new(0),
            decoders: Mutex::default(),
            freed: Condvar::new(),
        }
    }

    fn decoders(&self) -> std::sync::MutexGuard<'_, Decoders> {
        self.decoders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of cores the budget covers.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Frame threads for a decoder opened now: the budget shared by the work running on
    /// the pool at this moment (at least one). A pass leases them
    /// ([`CpuBudget::lease_decoder_threads`]).
    pub fn decoder_threads(&self) -> usize {
        let active = self.active.load(Ordering::Relaxed).max(1);
        (self.threads / active).max(1)
    }

    /// Leases decoder threads for a pass: its share ([`CpuBudget::decoder_threads`], or
    /// `wanted` when given and smaller), never more than are free; waits until one is
    /// free when none is (the passes holding them end by themselves: a pass never waits
    /// for another's threads while holding its own).
    pub fn lease_decoder_threads(&self, wanted: Option<usize>) -> DecoderThreads<'_> {
        let share = wanted.map_or_else(|| self.decoder_threads(), |w| w.max(1));
        let mut decoders = self.decoders();
        while decoders.in_use >= self.threads {
            decoders = self.freed.wait(decoders).unwrap_or_else(|e| e.into_inner());
        }
        let count = share.min(self.threads - decoders.in_use).max(1);
        decoders.in_use += count;
        decoders.peak = decoders.peak.max(decoders.in_use);
        crate::metrics::decoder_threads(decoders.in_use);
        DecoderThreads {
            budget: self,
            count,
        }
    }

    /// The most decoder threads leased at once in this process (at most
    /// [`CpuBudget::threads`]).
    pub fn decoder_threads_peak(&self) -> usize {
        self.decoders().peak
    }

    /// Intra-op threads of ONNX Runtime's one pool.
    pub fn inference_threads(&self) -> usize {
        self.threads
    }

    /// Runs blocking, CPU-bound `f` on the pool and waits for it. On an async runtime's
    /// worker, the runtime is told this thread blocks (its other tasks move meanwhile);
    /// called from the pool itself, `f` runs in place.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Some(pool) = &self.pool else {
            return crate::blocking::run_blocking(f);
        };
        if pool.current_thread_index().is_some() {
            return f();
        }
        crate::blocking::run_blocking(|| {
            pool.install(|| {
                self.active.fetch_add(1, Ordering::Relaxed);
                let _done = Finished(&self.active);
                f()
            })
        })
    }
}

/// Decrements the active count when work ends, panicking or not.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sizes the process's budget to `threads` cores (0: the default). Only the first call
/// (or first use of [`budget`]) decides; returns whether this call did.
pub fn configure(threads: usize) -> bool {
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    let mut set = false;
    BUDGET.get_or_init(|| {
        set = true;
        CpuBudget::new(threads)
    });
    set
}

/// The process's budget (sized on first use when [`configure`] was not called).
pub fn budget() -> &'static CpuBudget {
    BUDGET.get_or_init(|| CpuBudget::new(default_threads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_pool_and_shares_the_decoders() {
        let budget = CpuBudget::new(4);
        assert_eq!(budget.decoder_threads(), 4);
        let (name, threads) = budget.run(|| {
            (
                std::thread::current().name().map(str::to_owned),
                budget.decoder_threads(),
            )
        });
        assert!(name.is_some_and(|n| n.starts_with("framefusion-cpu-")));
        assert_eq!(threads, 4);
        // nested work runs in place, on the same thread
        let nested = budget.run(|| budget.run(|| std::thread::current().id()));
        assert_ne!(nested, std::thread::current().id());
        // two at once share the budget
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..2 {
                let (tx, barrier, budget) = (tx.clone(), &barrier, &budget);
                s.spawn(move || {
                    budget.run(|| {
                        barrier.wait();
                        let _ = tx.send(budget.decoder_threads());
                        barrier.wait();
                    })
                });
            }
            drop(tx);
            let shares: Vec<usize> = rx.iter().collect();
            assert_eq!(shares, [2, 2]);
        });
        assert_eq!(budget.decoder_threads(), 4);
    }

    #[test]
    fn leased_decoder_threads_never_exceed_the_budget() {
        let budget = &CpuBudget::new(2);
        let first = budget.lease_decoder_threads(None);
        assert_eq!(first.count(), 2);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let waiting = s.spawn(move || {
                let second = budget.lease_decoder_threads(None);
                let _ = tx.send(second.count());
            });
            // none is free: the second lease waits for the first
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(200))
                    .is_err()
            );
            drop(first);
            assert_eq!(rx.recv().ok(), Some(2));
            waiting.join().ok();
        });
        let one = budget.lease_decoder_threads(Some(1));
        let other = budget.lease_decoder_threads(None);
        assert_eq!((one.count(), other.count()), (1, 1));
        assert_eq!(budget.decoder_threads_peak(), 2);
    }
}
