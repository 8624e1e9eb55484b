//! The crew: threads that run the shards of each window between them, each
//! taking its own shards first and then any not yet taken. There are more
//! shards than threads, so that a window's work evens out between them. Windows are short (a few
//! hundred events), so the threads wait for each other by spinning, not
//! sleeping: waking a sleeping thread per window cost a fifth of a run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::ScopedJoinHandle;

use super::Shared;
use super::shard::Shard;

pub(super) struct Crew {
    /// Each shard while a window runs.
    slots: Vec<Mutex<Option<Shard>>>,
    /// The last window each slot was taken for: a thread still on a window
    /// gone by can never take a slot of the next.
    taken: Vec<AtomicU64>,
    /// The window handed out.
    window: AtomicU64,
    /// Where the window handed out ends.
    end: AtomicU64,
    /// Slots of the window handed out that are done.
    done: AtomicUsize,
    stop: AtomicBool,
    threads: usize,
}

/// Spins a while, then yields, until `ready`.
fn wait_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

impl Crew {
    pub(super) fn new(shards: usize, threads: usize) -> Self {
        Self {
            slots: (0..shards).map(|_| Mutex::new(None)).collect(),
            taken: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            window: AtomicU64::new(0),
            end: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            threads: threads.clamp(1, shards.max(1)),
        }
    }

    /// Helper threads beside the one that runs the windows.
    pub(super) fn helpers(&self) -> std::ops::Range<usize> {
        1..self.threads
    }

    /// Helper `me`: works on each window it is given until stopped.
    pub(super) fn serve(&self, me: usize, shared: &Shared) {
        let mut last = 0;
        loop {
            wait_until(|| {
                self.window.load(Ordering::Acquire) > last || self.stop.load(Ordering::Acquire)
            });
            let window = self.window.load(Ordering::Acquire);
            if window <= last {
                return;
            }
            last = window;
            self.work(window, me, shared);
        }
    }

    /// Runs the slots of window `window` that no thread has taken yet: this
    /// thread's own first (every `threads`-th from `me`), so that a shard's
    /// engines mostly stay in one core's cache, then any left.
    fn work(&self, window: u64, me: usize, shared: &Shared) {
        let n = self.slots.len();
        let own = (me..n).step_by(self.threads);
        let others = (0..n).filter(|at| at % self.threads != me);
        for at in own.chain(others) {
            let taken = &self.taken[at];
            let before = taken.load(Ordering::Acquire);
            if before >= window
                || taken
                    .compare_exchange(before, window, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            // The window cannot end before this slot is done, so its end
            // still stands.
            let end = self.end.load(Ordering::Relaxed);
            self.slots[at]
                .lock()
                .expect("a shard's slot")
                .as_mut()
                .expect("a slot handed out holds its shard")
                .run_window(shared, end);
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Runs window number `window` up to `end` over `shards` with the helpers,
    /// this thread working too, and gives the shards back in their order.
    pub(super) fn run(
        &self,
        shards: &mut Vec<Shard>,
        shared: &Shared,
        window: u64,
        end: u64,
        helpers: &[ScopedJoinHandle<'_, ()>],
    ) {
        let all = shards.len();
        assert_eq!(all, self.slots.len(), "a slot per shard");
        for (slot, shard) in self.slots.iter().zip(shards.drain(..)) {
            *slot.lock().expect("a shard's slot") = Some(shard);
        }
        self.done.store(0, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.window.store(window, Ordering::Release);
        self.work(window, 0, shared);
        wait_until(|| {
            self.done.load(Ordering::Acquire) >= all || helpers.iter().any(|h| h.is_finished())
        });
        assert_eq!(
            self.done.load(Ordering::Acquire),
            all,
            "a simulation thread stopped mid-run"
        );
        shards.extend(self.slots.iter().map(|slot| {
            slot.lock()
                .expect("a shard's slot")
                .take()
                .expect("given back")
        }));
    }

    /// Stops the helpers when dropped.
    pub(super) fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(self)
    }
}

pub(super) struct StopOnDrop<'a>(&'a Crew);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}
