//! Sub-millisecond sleeps for the target's latency knobs.
//!
//! tokio's timer wheel has millisecond granularity and rounds up, so a 50 ms
//! `sleep` answers after 50-52 ms, and a test that checks fusi's p50 against
//! the configured latency would measure the timer instead. One background
//! thread keeps a heap of deadlines and wakes each sleeper from
//! `recv_timeout`, which Linux honours to a few hundred microseconds
//! (80-280 us late on this 2-core VM, against 1-2 ms for tokio's timer).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Instant;

use tokio::sync::oneshot;

struct Entry(Instant, u64, oneshot::Sender<()>);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// A sleeper: its deadline and how to wake it.
type Wake = (Instant, oneshot::Sender<()>);

fn timer() -> Option<&'static std::sync::Mutex<Sender<Wake>>> {
    static TIMER: OnceLock<Option<std::sync::Mutex<Sender<Wake>>>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("fusi-target-timer".into())
                .spawn(move || run(rx))
                .ok()
                .map(|_| std::sync::Mutex::new(tx))
        })
        .as_ref()
}

fn run(rx: Receiver<Wake>) {
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(e)| e.0 <= now) {
            if let Some(Reverse(Entry(_, _, tx))) = heap.pop() {
                let _ = tx.send(());
            }
        }
        let next = match heap.peek() {
            Some(Reverse(e)) => rx.recv_timeout(e.0.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((at, tx)) => {
                seq += 1;
                heap.push(Reverse(Entry(at, seq, tx)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sleeps until `deadline`, to within a few hundred microseconds.
pub async fn sleep_until(deadline: tokio::time::Instant) {
    let deadline = deadline.into_std();
    let (tx, rx) = oneshot::channel();
    let queued = timer()
        .and_then(|t| t.lock().ok().map(|t| t.send((deadline, tx)).is_ok()))
        .unwrap_or(false);
    if !queued || rx.await.is_err() {
        // No timer thread: fall back to tokio's coarser timer.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_close_to_the_deadline() {
        let mut worst = Duration::ZERO;
        for ms in [1u64, 5, 20, 50] {
            let start = tokio::time::Instant::now();
            sleep_until(start + Duration::from_millis(ms)).await;
            let late = start.elapsed().saturating_sub(Duration::from_millis(ms));
            assert!(start.elapsed() >= Duration::from_millis(ms), "woke early");
            worst = worst.max(late);
        }
        // Generous for a loaded 2-core machine; tokio's timer is 1-2 ms late.
        assert!(worst < Duration::from_millis(20), "woke {worst:?} late");
    }
}
