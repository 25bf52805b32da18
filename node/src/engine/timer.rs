//! A timer finer than tokio's, for the arrival-rate executors.
//!
//! tokio's timer wheel has a 1 ms grain, and its driver waits in
//! `epoll_wait`, whose timeout is whole milliseconds, rounded up. A task
//! that sleeps until an instant wakes 0 to 2 ms after it. For a loop that
//! starts an arrival every 25 µs (40,000 a second), that turns an even
//! stream into bursts of 40 to 80 arrivals a millisecond or two apart, and
//! the requests of a burst wait for each other on the node's core: the
//! node adds its own queueing to the latencies it reports.
//!
//! [`FineTimer`] is a Linux `timerfd` that the runtime's I/O driver waits
//! on with its sockets. The kernel's high-resolution timer wakes the
//! driver within microseconds of the instant, and nothing else changes:
//! the task still sleeps in the runtime, and a busy runtime notices the
//! timer at its next poll of the driver, as it notices a socket.
//!
//! It wakes at most once a [`GRAIN`] (500 µs): arrivals due within a
//! grain of each other go out together, at the last one's instant or
//! after it, never before. Each wake costs system calls, and the runtime
//! parks between wakes where it used to work through a burst. At 30,000
//! arrivals a second the node took 1.08 times the CPU of tokio's timer
//! with a 500 µs grain, 1.28 times with 250 µs, and at 20,000 a second 1.7
//! times with 50 µs (docs/benchmarks.md, "Arrivals at their instants").
//! Where no `timerfd` can be made (off Linux, or where the kernel refuses
//! one), [`FineTimer`] sleeps with tokio's timer as before.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The least time between two wakes of a [`FineTimer`].
pub const GRAIN: Duration = Duration::from_micros(500);

/// A one-shot timer with the kernel's resolution, for one task.
pub struct FineTimer {
    fd: Option<AsyncFd<OwnedFd>>,
    /// When this timer last woke its task: the next wake is a grain later.
    woke: Option<Instant>,
}

impl FineTimer {
    /// A timer on the current runtime; one that falls back to tokio's
    /// timer where the kernel gives no `timerfd`.
    #[must_use]
    pub fn new() -> FineTimer {
        FineTimer {
            fd: timerfd().ok().and_then(|fd| {
                // SAFETY: the `OwnedFd` is the timer's own, open until the
                // `AsyncFd` drops it, and always the same descriptor.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
            }),
            woke: None,
        }
    }

    /// Waits until `at`, and at least [`GRAIN`] past this timer's last
    /// wake: never early, and late by at most a grain (plus the kernel's
    /// wake-up, and the runtime's turn when it is busy). An instant that
    /// has passed is no wait, unless the last wake was within a grain.
    pub async fn sleep_until(&mut self, at: Instant) {
        let at = match self.woke {
            Some(woke) => at.max(woke + GRAIN),
            None => at,
        };
        let now = Instant::now();
        if at <= now {
            return;
        }
        self.sleep_to(at, now).await;
        self.woke = Some(Instant::now());
    }

    async fn sleep_to(&self, at: Instant, now: Instant) {
        let Some(fd) = &self.fd else {
            tokio::time::sleep_until(at).await;
            return;
        };
        if arm(fd.get_ref(), at - now).is_err() {
            tokio::time::sleep_until(at).await;
            return;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                tokio::time::sleep_until(at).await;
                return;
            };
            // Readiness left over from a timer armed before is cleared
            // here: the read finds nothing until this one expires.
            match ready.try_io(|fd| expired(fd.get_ref())) {
                Ok(Ok(())) => {
                    // A one-shot timer: nothing more to read until re-armed.
                    ready.clear_ready();
                    return;
                }
                Ok(Err(_)) => {
                    tokio::time::sleep_until(at).await;
                    return;
                }
                Err(_would_block) => {}
            }
        }
    }
}

impl Default for FineTimer {
    fn default() -> Self {
        FineTimer::new()
    }
}

/// A non-blocking `timerfd` on the monotonic clock, the clock of
/// [`std::time::Instant`].
#[cfg(target_os = "linux")]
fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked before it is owned.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms `fd` to expire once, `after` from now. Arming resets the count of
/// expiries, so an expiry of a timer armed before is not read as this one.
#[cfg(target_os = "linux")]
fn arm(fd: &OwnedFd, after: Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(after.subsec_nanos()),
        },
    };
    // SAFETY: `spec` lives across the call; the old value is not asked for.
    let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `fd`'s count of expiries: `WouldBlock` until it has expired.
#[cfg(target_os = "linux")]
fn expired(fd: &OwnedFd) -> io::Result<()> {
    let mut count = 0u64;
    // SAFETY: reads at most 8 bytes into `count`, which is 8 bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            std::ptr::from_mut(&mut count).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No `timerfd` off Linux: [`FineTimer`] sleeps with tokio's timer.
#[cfg(not(target_os = "linux"))]
fn timerfd() -> io::Result<OwnedFd> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
fn arm(_: &OwnedFd, _: Duration) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
fn expired(_: &OwnedFd) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[tokio::test]
    async fn a_fine_timer_wakes_at_its_instant_and_not_before() {
        let mut timer = FineTimer::new();
        #[cfg(target_os = "linux")]
        assert!(timer.fd.is_some(), "Linux gives a timerfd");
        for wait_us in [100u64, 300, 700, 1_300, 2_100] {
            let at = Instant::now() + Duration::from_micros(wait_us);
            timer.sleep_until(at).await;
            assert!(
                Instant::now() >= at,
                "woke before the instant ({wait_us} µs)"
            );
        }
    }

    #[tokio::test]
    async fn an_instant_past_is_due_at_once_and_wakes_are_a_grain_apart() {
        let mut timer = FineTimer::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        {
            let past = std::pin::pin!(timer.sleep_until(Instant::now()));
            assert!(past.poll(&mut cx).is_ready(), "an instant past slept");
        }
        {
            let later = std::pin::pin!(timer.sleep_until(Instant::now() + Duration::from_secs(5)));
            assert!(
                later.poll(&mut cx).is_pending(),
                "a wait of 5 s did not sleep"
            );
        }
        // A wake, then an instant 10 µs later: the second waits out the grain.
        let first = Instant::now() + Duration::from_micros(100);
        timer.sleep_until(first).await;
        timer.sleep_until(first + Duration::from_micros(10)).await;
        assert!(Instant::now() >= first + GRAIN, "two wakes within a grain");
        // An instant already past, right after a wake, waits it out too.
        timer.sleep_until(Instant::now()).await;
        assert!(
            Instant::now() >= first + 2 * GRAIN,
            "a third wake within a grain"
        );
    }

    #[tokio::test]
    async fn a_wait_cut_short_leaves_no_expiry_for_the_next() {
        let mut timer = FineTimer::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Arm for 200 µs, poll once, and give the wait up.
        {
            let first =
                std::pin::pin!(timer.sleep_until(Instant::now() + Duration::from_micros(200)));
            assert!(
                first.poll(&mut cx).is_pending(),
                "a wait of 200 µs did not sleep"
            );
        }
        // The driver sees that timer expire, unread.
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The next wait must not end on it.
        let at = Instant::now() + Duration::from_millis(3);
        timer.sleep_until(at).await;
        assert!(
            Instant::now() >= at,
            "woke on the expiry of the timer before"
        );
    }
}
