//! The fence of a running share: whether it may still send.
//!
//! When a node of a mesh run goes silent (frozen by SIGSTOP, a paused VM,
//! cut off), the run's leader hands its share to the others after about a
//! second. If the node then wakes, it must not send the load it was
//! about to send: the others send it now, and the target would get it
//! twice. A process cannot tell that it was frozen while it was, but it
//! can tell once it runs again: time passed that it did not see pass. So
//! a ticker notes every [`TICK`] that time passes, and every task of the
//! share asks the gate before it sends anything (an arrival, a loop turn,
//! an HTTP request). A gap of [`FREEZE_FENCE`] since the last note fences
//! the share for good: its stop token is cancelled and the worker reports
//! the share interrupted, which the leader hands on as it would a lost
//! node's (the leader may already have).
//!
//! [`FREEZE_FENCE`] is shorter than the silence after which the leader
//! judges a running node lost (about 1.2 s after its last heartbeat, which
//! went out at most 250 ms before the freeze): a node frozen long enough
//! to be handed on always fences itself first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the ticker notes that time passes.
pub const TICK: Duration = Duration::from_millis(100);

/// A gap this long between two notes fences the share.
pub const FREEZE_FENCE: Duration = Duration::from_millis(700);

/// Whether a running share may still send. See the module docs.
#[derive(Debug)]
pub struct Gate {
    enabled: bool,
    origin: Instant,
    last_ns: AtomicU64,
    fenced: AtomicBool,
    stop: CancellationToken,
}

impl Gate {
    /// A gate over the share whose stop token is `stop`. A disabled gate
    /// never fences: a share no other node could take over (a local run,
    /// a mesh run on one node) is better late than not at all.
    pub fn new(stop: CancellationToken, enabled: bool) -> Gate {
        Gate {
            enabled,
            origin: Instant::now(),
            last_ns: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            stop,
        }
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts counting: call at the share's start, before any of its
    /// tasks looks (the time it took to prepare is no gap).
    pub fn arm(&self) {
        self.last_ns
            .fetch_max(self.elapsed_ns().max(1), Ordering::AcqRel);
    }

    /// Whether the share may send now. A gap since the last time anyone
    /// looked fences it (and cancels its stop token), for good. Before
    /// [`arm`](Self::arm), nothing is judged.
    pub fn open(&self) -> bool {
        if !self.enabled || self.last_ns.load(Ordering::Acquire) == 0 {
            return !self.fenced.load(Ordering::Acquire);
        }
        if self.fenced.load(Ordering::Acquire) {
            return false;
        }
        let now = self.elapsed_ns();
        let last = self.last_ns.fetch_max(now, Ordering::AcqRel);
        if now.saturating_sub(last) > u64::try_from(FREEZE_FENCE.as_nanos()).unwrap_or(u64::MAX) {
            self.fence();
            return false;
        }
        true
    }

    /// Fences the share: it sends nothing more.
    pub fn fence(&self) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "this node was frozen or starved for over {} ms while running a share: it stops \
                 its share, which the run's leader hands to the other nodes",
                FREEZE_FENCE.as_millis()
            );
        }
        self.stop.cancel();
    }

    /// Whether the share was fenced.
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Notes that time passes, every [`TICK`], until the share's stop
    /// token is cancelled (by the share's end, or by a fence).
    pub async fn watch(&self) {
        if !self.enabled {
            return;
        }
        self.arm();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            if !self.open() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freeze_fences_for_good_and_steady_time_does_not() {
        let stop = CancellationToken::new();
        let gate = std::sync::Arc::new(Gate::new(stop.clone(), true));
        // Preparing took a while: no gap until the share starts.
        std::thread::sleep(FREEZE_FENCE + Duration::from_millis(100));
        assert!(gate.open(), "not armed yet");
        gate.arm();
        assert!(gate.open(), "the time before the start is no gap");
        let watcher = tokio::spawn({
            let gate = gate.clone();
            async move { gate.watch().await }
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(gate.open(), "time passing steadily fences nothing");
        }
        assert!(!stop.is_cancelled());
        // A freeze: this runtime has one thread, and nothing on it runs
        // while it sleeps, the ticker included.
        std::thread::sleep(FREEZE_FENCE + Duration::from_millis(200));
        assert!(!gate.open(), "the first look after the gap fences");
        assert!(gate.fenced() && stop.is_cancelled());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!gate.open(), "fenced for good");
        watcher.await.expect("the watcher ends once fenced");
    }

    #[tokio::test]
    async fn a_disabled_gate_never_fences() {
        let stop = CancellationToken::new();
        let gate = Gate::new(stop.clone(), false);
        std::thread::sleep(FREEZE_FENCE + Duration::from_millis(100));
        assert!(gate.open());
        assert!(!gate.fenced() && !stop.is_cancelled());
    }
}
