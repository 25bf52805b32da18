//! A deadline that is almost never reached, armed for every request.
//!
//! Each request is given up at its deadline (its timeout, within its
//! iteration's), and each iteration at its own. A tokio timer armed per
//! request takes the timer driver's lock twice, to add the entry to the
//! wheel and to take it out when the response came first, which it
//! nearly always does: a few hundred instructions a request spent on a
//! wake that never happens.
//!
//! A [`Backstop`] keeps one timer for all the deadlines of one VU, and
//! moves it only when a deadline is earlier than the one it is set for.
//! Deadlines mostly come later and later (each request's is its start plus
//! the same timeout), so the timer stays where it is, and fires once in
//! a timeout's time at the earliest deadline it was given. Then it is set
//! again, for the deadline of the moment, if that has not passed. A
//! timer that fires early wakes its task for nothing; the task was
//! awake and busy anyway, once in a timeout.
//!
//! Nor is the timer polled at every wake of its task: a timer that holds
//! the task's waker, and has not fired, wakes the task when it fires.
//! Asking whether it fired is one load; a poll registered the waker
//! again, a hundred instructions and atomic operations, two or three
//! times a request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// One timer that stands for every deadline a VU waits against.
#[derive(Default)]
pub struct Backstop {
    /// Made on first use: a VU's placeholder clients never need one.
    /// Boxed: a VU and a client are moved at each request, and a larger
    /// one is moved by `memcpy`.
    armed: Option<Box<Armed>>,
}

/// A [`Backstop`]'s timer, and the waker it last polled it with since it
/// was last set. That waker counts as a reference to its task: a client's
/// timer last polled by a request's own task (outside an iteration) keeps
/// that finished task's small allocation until another task polls it.
struct Armed {
    sleep: Pin<Box<Sleep>>,
    waker: Option<Waker>,
}

impl Backstop {
    /// `Ready` once `deadline` has passed; until then, the task is woken
    /// at or before it.
    pub fn poll_passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let Armed { sleep, waker } = &mut **self.armed.get_or_insert_with(|| {
            Box::new(Armed {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                waker: None,
            })
        });
        if sleep.deadline() <= deadline
            && waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            && !sleep.is_elapsed()
        {
            // Set for this deadline or an earlier one, still in tokio's
            // wheel, and holding this task's waker: it wakes the task when
            // it fires.
            return Poll::Pending;
        }
        loop {
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            // Outside tokio's budget, as `tokio::time::timeout` polls its
            // timer once the future it guards has spent the task's budget:
            // a response whose reads are always ready must still time out.
            match std::pin::pin!(tokio::task::unconstrained(sleep.as_mut())).poll(cx) {
                Poll::Pending => {
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                // Set for this deadline, or an earlier one that has passed
                // with it.
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // An earlier deadline passed: set it for this one.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }

    /// Runs `future` until `deadline`: `None` if the deadline came first.
    /// Pinned by the caller, so that a large future is not moved into
    /// this one's state, and the state is not twice its size.
    pub async fn within<F: Future>(
        &mut self,
        deadline: Instant,
        mut future: Pin<&mut F>,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_passed(deadline, cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;

    fn armed_at(backstop: &Backstop) -> Option<Instant> {
        backstop.armed.as_ref().map(|a| a.sleep.deadline())
    }

    /// A read that is always ready, as a fast server's endless body is:
    /// each poll spends some of the task's budget.
    async fn always_ready() {
        loop {
            tokio::task::consume_budget().await;
        }
    }

    #[tokio::test]
    async fn a_future_that_spends_the_budget_still_meets_its_deadline() {
        let mut backstop = Backstop::default();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        // tokio's own timeout polls its timer past the budget: it fails
        // this test where the backstop would wait for ever.
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            backstop.within(deadline, pin!(always_ready())),
        )
        .await
        .expect("the backstop's timer was starved of the task's budget");
        assert_eq!(waited, None);
        assert!(Instant::now() >= deadline);
    }

    /// A request that is answered at its second poll.
    async fn answered(n: u32) -> u32 {
        tokio::task::yield_now().await;
        n
    }

    #[tokio::test]
    async fn a_later_deadline_keeps_the_timer_and_is_still_kept() {
        let mut backstop = Backstop::default();
        let first = Instant::now() + Duration::from_millis(200);
        // Answered at the first poll, a request never arms the timer.
        assert_eq!(backstop.within(first, pin!(async { 1 })).await, Some(1));
        assert_eq!(armed_at(&backstop), None);
        assert_eq!(backstop.within(first, pin!(answered(1))).await, Some(1));
        assert_eq!(
            armed_at(&backstop),
            Some(first),
            "armed at the first deadline"
        );
        // A later deadline leaves the timer where it is...
        let second = first + Duration::from_millis(200);
        assert_eq!(backstop.within(second, pin!(answered(2))).await, Some(2));
        assert_eq!(armed_at(&backstop), Some(first));
        // ...and a wait past the first deadline runs on to the second.
        let waited = backstop
            .within(second, pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(waited, None);
        assert!(Instant::now() >= second, "given up before its deadline");
        assert_eq!(
            armed_at(&backstop),
            Some(second),
            "moved when it fired early"
        );
    }

    #[tokio::test]
    async fn a_timer_polled_by_one_task_wakes_the_next_that_waits_on_it() {
        let backstop = Backstop::default();
        let deadline = Instant::now() + Duration::from_millis(100);
        // One task waits on it, and gives up first.
        let (mut backstop, gave_up) = tokio::spawn(async move {
            let mut backstop = backstop;
            let waited = tokio::time::timeout(
                Duration::from_millis(10),
                backstop.within(deadline, pin!(std::future::pending::<()>())),
            )
            .await;
            (backstop, waited.is_err())
        })
        .await
        .expect("the first task");
        assert!(gave_up);
        assert_eq!(armed_at(&backstop), Some(deadline));
        // The timer held the first task's waker: this task must be woken.
        // (tokio's timeout polls what it guards before its own timer, so
        // a task never woken still ends, at the timeout.)
        let waited = tokio::time::timeout(
            Duration::from_secs(20),
            backstop.within(deadline, pin!(std::future::pending::<()>())),
        )
        .await;
        let now = Instant::now();
        assert_eq!(waited, Ok(None));
        assert!(now >= deadline);
        assert!(
            now < deadline + Duration::from_secs(10),
            "woken {:?} past the deadline: the timer woke the task that left",
            now - deadline
        );
    }

    #[tokio::test]
    async fn an_earlier_deadline_moves_the_timer() {
        let mut backstop = Backstop::default();
        let start = Instant::now();
        let late = start + Duration::from_secs(60);
        assert_eq!(backstop.within(late, pin!(answered(1))).await, Some(1));
        assert_eq!(armed_at(&backstop), Some(late));
        let short = start + Duration::from_millis(100);
        let waited = backstop
            .within(short, pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(waited, None);
        let now = Instant::now();
        assert!(now >= short, "given up before its deadline");
        // Given up at the short deadline, not at the late one: a loaded
        // machine may wake late, but not by most of a minute.
        assert!(now < start + Duration::from_secs(30), "{:?}", now - start);
    }
}
