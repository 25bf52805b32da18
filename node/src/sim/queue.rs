//! The simulator's event queue: earliest first, ties in the order they were
//! scheduled, so a run is the same on every machine.
//!
//! A binary heap of every event in flight is the obvious queue, but with a
//! thousand nodes there are hundreds of thousands in flight and each pop
//! misses the cache all the way down. Nearly every event is due within a
//! few seconds, so this is a timing wheel: one bucket per millisecond for
//! the next [`WHEEL_MS`] milliseconds, sorted only when its turn comes,
//! with a heap for what lies beyond and a small heap for what is scheduled
//! into the millisecond being drained.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::network::Micros;

/// How many milliseconds ahead the wheel holds.
const WHEEL_MS: u64 = 8192;

/// An event and its instant.
#[derive(Debug)]
struct Entry<E> {
    at: Micros,
    seq: u64,
    event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (Micros, u64) {
        (self.at, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed, so a heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Events by instant.
#[derive(Debug)]
pub struct Queue<E> {
    seq: u64,
    /// The millisecond being drained.
    ms: u64,
    /// Its events, sorted latest first (popped from the end).
    current: Vec<Entry<E>>,
    /// Events scheduled into that millisecond while it is drained.
    late: BinaryHeap<Entry<E>>,
    /// Bucket `ms % WHEEL_MS` for each millisecond after the current one,
    /// up to [`WHEEL_MS`] ahead.
    wheel: Vec<Vec<Entry<E>>>,
    /// Events further ahead.
    far: BinaryHeap<Entry<E>>,
    len: usize,
}

impl<E> Queue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Queue<E> {
        Queue {
            seq: 0,
            ms: 0,
            current: Vec::new(),
            late: BinaryHeap::new(),
            wheel: (0..WHEEL_MS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            len: 0,
        }
    }

    /// Schedules `event` at `at`; an instant already past is taken as the
    /// current millisecond.
    pub fn push(&mut self, at: Micros, event: E) {
        self.seq += 1;
        self.len += 1;
        let entry = Entry {
            at,
            seq: self.seq,
            event,
        };
        let ms = at / 1000;
        if ms <= self.ms {
            self.late.push(entry);
        } else if ms < self.ms + WHEEL_MS {
            self.wheel[(ms % WHEEL_MS) as usize].push(entry);
        } else {
            self.far.push(entry);
        }
    }

    /// The earliest event and its instant.
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        if self.len == 0 {
            return None;
        }
        loop {
            let from_late = match (self.current.last(), self.late.peek()) {
                (Some(c), Some(l)) => l.key() < c.key(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => {
                    self.advance();
                    continue;
                }
            };
            let entry = if from_late {
                self.late.pop()
            } else {
                self.current.pop()
            };
            if let Some(e) = entry {
                self.len -= 1;
                return Some((e.at, e.event));
            }
        }
    }

    /// Moves on to the next millisecond that has events.
    fn advance(&mut self) {
        if self.wheel.iter().all(Vec::is_empty)
            && let Some(next) = self.far.peek()
        {
            // Nothing within the wheel: jump to the next event.
            self.ms = (next.at / 1000).saturating_sub(1);
        }
        self.ms += 1;
        while self
            .far
            .peek()
            .is_some_and(|e| e.at / 1000 < self.ms + WHEEL_MS)
        {
            if let Some(e) = self.far.pop() {
                let ms = e.at / 1000;
                if ms <= self.ms {
                    self.late.push(e);
                } else {
                    self.wheel[(ms % WHEEL_MS) as usize].push(e);
                }
            }
        }
        // The bucket's memory goes with it: kept, every one of the buckets
        // would grow to the busiest millisecond's size.
        let mut bucket = std::mem::take(&mut self.wheel[(self.ms % WHEEL_MS) as usize]);
        bucket.sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
        self.current = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rng::Rng;

    #[test]
    fn events_come_out_earliest_first_and_ties_in_order() {
        let mut rng = Rng::seeded(3);
        let mut q = Queue::new();
        let mut expected = Vec::new();
        for i in 0..5000u64 {
            // Near, far past the wheel, and many on one instant.
            let at = match i % 3 {
                0 => rng.below(20_000),
                1 => rng.below(40_000_000),
                _ => 7_000,
            };
            q.push(at, i);
            expected.push((at, i));
        }
        expected.sort();
        let mut got = Vec::new();
        let mut next_id = 10_000;
        while let Some((at, i)) = q.pop() {
            got.push((at, i));
            // Events scheduled while draining still come in order.
            if i % 100 == 0 && i < 5000 {
                let later = at + rng.below(3000);
                let id = next_id;
                next_id += 1;
                q.push(later, id);
                expected.push((later, id));
                expected.sort();
            }
        }
        assert_eq!(got, expected);
    }
}
