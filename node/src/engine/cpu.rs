//! How busy the node's CPUs were: what tells a node's own wait from the
//! target's latency.
//!
//! A request's duration runs from its send to its response's last byte
//! read. On a node whose CPUs are all busy, a response that has arrived
//! waits to be read, and that wait is measured as the target's: the p99 of
//! a load generator at its limit is its own. Each interval, the node
//! records the share of its CPUs its process used (`node_cpu`, a gauge
//! from 0 to 1); the report counts the intervals where it was near 1 and
//! warns of them, as it says which limit dropped arrivals.

use std::time::{Duration, Instant};

/// A process's CPU use between two reads.
pub struct CpuUse {
    /// The CPUs this process may run on (its affinity and cgroup quota).
    cpus: f64,
    /// The last read: when, and the CPU time used by then.
    last: Option<(Instant, Duration)>,
}

impl CpuUse {
    /// Starts counting from now.
    pub fn new() -> CpuUse {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuUse {
            cpus: cpus as f64,
            last: process_cpu().map(|cpu| (Instant::now(), cpu)),
        }
    }

    /// The share of its CPUs the process used since the last call, from 0
    /// to 1; `None` where the CPU time cannot be read, or no time passed.
    pub fn since_last(&mut self) -> Option<f64> {
        let now = (Instant::now(), process_cpu()?);
        let (then, used) = self.last.replace(now)?;
        let wall = now.0.saturating_duration_since(then).as_secs_f64() * self.cpus;
        (wall > 0.0).then(|| (now.1.saturating_sub(used).as_secs_f64() / wall).clamp(0.0, 1.0))
    }
}

impl Default for CpuUse {
    fn default() -> Self {
        CpuUse::new()
    }
}

/// The CPU time this process has used, user and system, every thread.
fn process_cpu() -> Option<Duration> {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a valid, exclusive pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinning_thread_shows_and_a_sleeping_one_does_not() {
        let mut cpu = CpuUse::new();
        std::thread::sleep(Duration::from_millis(200));
        let idle = cpu.since_last().unwrap_or(f64::NAN);
        let until = Instant::now() + Duration::from_millis(300);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let busy = cpu.since_last().unwrap_or(f64::NAN);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // Other tests run beside this one: only the order is certain, and
        // that one spinning thread is at most what one CPU gives.
        assert!((0.0..=1.0).contains(&idle), "idle {idle}");
        assert!(busy > idle, "busy {busy} against idle {idle}");
        assert!(
            busy <= 1.0 && busy > 0.2 / cpus,
            "busy {busy} on {cpus} CPUs"
        );
    }
}
