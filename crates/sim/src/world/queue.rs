//! The world's event queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Milliseconds the event queue's wheel spans. Most events fall within a
/// block's time; every shard has a wheel, and eight of 65.5 s held 300 MB of
/// drained buckets' room in a 10,000-viewer run.
const WHEEL_MS: u64 = 1 << 13;

/// Events' room a drained bucket keeps for its next turn.
const BUCKET_KEEP: usize = 8;

/// The event queue: a timing wheel of one-millisecond buckets over the next
/// `WHEEL_MS`, each first in first out, and a heap of (time, sequence, slot)
/// over a slab for events further out (arrivals, departures), moved into the
/// wheel as its span reaches them. Events pop in time order and equal times in
/// the order they were pushed, as from one heap ordered by (time, sequence),
/// without its log-time sift over every event of the run.
///
/// Invariant: every far event lies at or beyond `cursor + WHEEL_MS`, so one at
/// a time the wheel already spans was pushed before anything pushed there
/// directly.
pub(super) struct Queue<E> {
    wheel: Vec<VecDeque<E>>,
    in_wheel: usize,
    /// The time of the bucket `pop` looks at; nothing earlier is queued.
    cursor: u64,
    far: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self {
            wheel: (0..WHEEL_MS).map(|_| VecDeque::new()).collect(),
            in_wheel: 0,
            cursor: 0,
            far: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    pub(super) fn push(&mut self, at: u64, ev: E) {
        debug_assert!(at >= self.cursor, "an event in the past");
        let at = at.max(self.cursor);
        if at < self.cursor + WHEEL_MS {
            self.wheel[(at % WHEEL_MS) as usize].push_back(ev);
            self.in_wheel += 1;
            return;
        }
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slots.push(Some(ev));
                (self.slots.len() - 1) as u32
            }
        };
        self.far.push(Reverse((at, self.seq, slot)));
    }

    #[cfg(test)]
    pub(super) fn pop(&mut self) -> Option<(u64, E)> {
        self.pop_before(u64::MAX)
    }

    /// The next event if it falls before `end`. The cursor never passes
    /// `end`, so events may still be pushed from `end` on.
    pub(super) fn pop_before(&mut self, end: u64) -> Option<(u64, E)> {
        loop {
            if self.in_wheel == 0 {
                let Reverse((at, _, _)) = *self.far.peek()?;
                if at >= end {
                    return None;
                }
                self.cursor = at;
                self.bring_near();
            }
            if self.cursor >= end {
                return None;
            }
            let bucket = &mut self.wheel[(self.cursor % WHEEL_MS) as usize];
            if let Some(ev) = bucket.pop_front() {
                self.in_wheel -= 1;
                // A drained bucket gives back a burst's room: kept in every
                // bucket, that had grown a 10,000-viewer run from 138 MB to
                // 823 MB.
                if bucket.is_empty() && bucket.capacity() > BUCKET_KEEP {
                    *bucket = VecDeque::new();
                }
                return Some((self.cursor, ev));
            }
            self.cursor += 1;
            self.bring_near();
        }
    }

    /// When the next event is, without moving the cursor (pushes at any time
    /// from it on stay allowed).
    pub(super) fn next_at(&self) -> Option<u64> {
        if self.in_wheel == 0 {
            return self.far.peek().map(|r| r.0.0);
        }
        // Far events lie beyond the wheel's span, so a queued bucket comes first.
        (self.cursor..self.cursor + WHEEL_MS)
            .find(|at| !self.wheel[(at % WHEEL_MS) as usize].is_empty())
    }

    /// Moves the far events the wheel now spans into it, in (time, sequence) order.
    fn bring_near(&mut self) {
        while let Some(&Reverse((at, _, slot))) = self.far.peek() {
            if at >= self.cursor + WHEEL_MS {
                break;
            }
            self.far.pop();
            let ev = self.slots[slot as usize]
                .take()
                .expect("a queued slot holds its event");
            self.free.push(slot);
            self.wheel[(at % WHEEL_MS) as usize].push_back(ev);
            self.in_wheel += 1;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.in_wheel == 0 && self.far.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Rng;

    #[test]
    fn the_queue_pops_in_time_order_and_equal_times_in_push_order() {
        // Against one heap ordered by (time, sequence), over pushes near and
        // far (beyond the wheel), at times already queued, and long idle gaps.
        let mut rng = Rng::new(7);
        let mut queue = Queue::<u32>::default();
        let mut reference = BinaryHeap::new();
        let (mut now, mut pushed, mut popped) = (0u64, 0u32, 0);
        for step in 0..200_000 {
            if rng.unit() < 0.55 {
                let ahead = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(50) as u64,
                    2 => rng.below(3 * WHEEL_MS as usize) as u64,
                    _ => WHEEL_MS - 1 + rng.below(3) as u64,
                };
                // Now and then a burst at one moment.
                let times = if step % 1000 == 0 { 20 } else { 1 };
                for _ in 0..times {
                    queue.push(now + ahead, pushed);
                    reference.push(Reverse((now + ahead, pushed)));
                    pushed += 1;
                }
            } else if let Some((at, id)) = queue.pop() {
                let Reverse((want_at, want_id)) = reference.pop().expect("as many queued");
                assert_eq!((at, id), (want_at, want_id), "pop {popped}");
                now = at;
                popped += 1;
            }
        }
        while let Some((at, id)) = queue.pop() {
            assert_eq!(Some(Reverse((at, id))), reference.pop());
        }
        assert!(queue.is_empty() && reference.is_empty());
        assert!(popped > 50_000);
    }

    #[test]
    fn events_before_a_window_end_pop_and_the_rest_wait_for_pushes_from_the_end_on() {
        // Windows of random length: pops stop at each end, the next event's
        // time is known without popping, and pushes at the end (as outboxes
        // deliver) still come out in order.
        let mut rng = Rng::new(11);
        let mut queue = Queue::<u32>::default();
        let mut reference = BinaryHeap::new();
        let mut pushed = 0u32;
        let mut start = 0u64;
        for _ in 0..20_000 {
            let end = start + 1 + rng.below(40) as u64;
            while let Some((at, id)) = queue.pop_before(end) {
                let Reverse((want_at, want_id)) = reference.pop().expect("as many queued");
                assert_eq!((at, id), (want_at, want_id));
                assert!(at >= start && at < end);
                if rng.unit() < 0.5 {
                    let ahead = match rng.below(3) {
                        0 => 1 + rng.below(30) as u64,
                        1 => WHEEL_MS + rng.below(500) as u64,
                        _ => rng.below(5) as u64,
                    };
                    queue.push(at + ahead.max(1), pushed);
                    reference.push(Reverse((at + ahead.max(1), pushed)));
                    pushed += 1;
                }
            }
            for _ in 0..rng.below(3) {
                let at = end + rng.below(2 * WHEEL_MS as usize) as u64;
                queue.push(at, pushed);
                reference.push(Reverse((at, pushed)));
                pushed += 1;
            }
            let want = reference.peek().map(|r| r.0.0);
            assert_eq!(queue.next_at(), want);
            start = want.unwrap_or(end).max(end);
        }
        assert!(pushed > 10_000);
    }
}
