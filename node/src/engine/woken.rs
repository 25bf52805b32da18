//! A future that its task polls only once it woke.
//!
//! A VU's iteration waits on its guest's call, its deadline and the run's
//! stop at once, and `tokio::select!` polls every branch each time the
//! task wakes: two or three times a request, for a stop that comes once a
//! run. Polling the stop's future took its token's lock and registered the
//! task's waker again, about 170 instructions a poll.
//!
//! [`Woken`] gives the future a waker of its own, which marks that it woke
//! before it wakes the task. A poll of a [`Woken`] that was not woken is
//! one load. It registers the task's waker again only when the task's
//! waker is another (the future went to another task).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// `future`, polled only when it woke, or when its task changed.
pub struct Woken<F> {
    future: F,
    flag: Arc<Flag>,
    /// The waker `future` is polled with: marks `flag`, wakes the task.
    waker: Waker,
    /// The task's waker that `flag` wakes.
    task: Option<Waker>,
}

/// What a [`Woken`]'s own waker marks and wakes.
#[derive(Default)]
struct Flag {
    woke: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        // A poisoned lock still holds a waker: a panic cannot break it.
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = &*task {
            task.wake_by_ref();
        }
    }
}

impl<F> Woken<F> {
    /// Wraps `future`; its first poll polls it.
    pub fn new(future: F) -> Woken<F> {
        let flag = Arc::new(Flag::default());
        Woken {
            future,
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future + Unpin> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
            this.task = Some(task);
            // A wake may have gone to the task before: look.
            this.flag.woke.store(true, Ordering::Release);
        }
        if !this.flag.woke.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Cleared before the poll: a wake during it marks it again.
        this.flag.woke.store(false, Ordering::Release);
        let out = Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker));
        if out.is_ready() {
            // Polled again next time, as it would be unwrapped: a stop
            // that came stays come.
            this.flag.woke.store(true, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `ready` is set, waking whoever polled
    /// it last when `ready` is set.
    struct Gauge {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Gauge {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.ready.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn it_is_polled_when_it_woke_not_at_each_wake_of_its_task() {
        // In a task of its own: a task's waker, cloned, is the same waker
        // (`block_on`'s is not).
        tokio::spawn(polled_when_woken()).await.expect("the task");
    }

    async fn polled_when_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let mut woken = Woken::new(Gauge {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        // The task wakes 100 times for other reasons.
        let mut spins = 0;
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(()) = Pin::new(&mut woken).poll(cx) {
                return Poll::Ready(spins);
            }
            spins += 1;
            if spins == 100 {
                ready.store(true, Ordering::Relaxed);
                if let Some(w) = waker.lock().expect("lock").take() {
                    w.wake();
                }
            } else {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await;
        assert_eq!(out, 100);
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2,
            "its first poll and its wake"
        );
        // Ready once, it is polled again at each poll, as it would be bare.
        assert_eq!(Pin::new(&mut woken).await, ());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_wake_reaches_the_task_that_polls_it_now() {
        let token = tokio_util::sync::CancellationToken::new();
        let woken = Woken::new(Box::pin(token.clone().cancelled_owned()));
        // Polled by one task, which gives up.
        let (mut woken, gave_up) = tokio::spawn(async move {
            let mut woken = woken;
            let r = tokio::time::timeout(Duration::from_millis(10), &mut woken).await;
            (woken, r.is_err())
        })
        .await
        .expect("the first task");
        assert!(gave_up);
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        });
        // tokio's timeout polls what it guards before its own timer, so a
        // task never woken still ends, at the timeout: the time tells.
        let began = std::time::Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(20), &mut woken).await;
        assert!(waited.is_ok());
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "woken after {:?}: the cancel woke the task that left",
            began.elapsed()
        );
        cancel.await.expect("the cancelling task");
    }
}
