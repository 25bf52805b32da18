//! A VU's requests, carried from its fiber to its own task.
//!
//! A host call runs on the VU's fiber stack, and a stack keeps every page
//! it ever touched; a request's path is far deeper than a sleeping VU's,
//! so the request must not run there ([`super::http::HttpClient::send_on_task`]
//! spawns a task for it). A task a request costs a spawn, two more polls
//! of a task and a wake between them: about 1,200 instructions of the
//! 31,700 a request took (callgrind, docs/benchmarks.md).
//!
//! While an iteration runs, its VU's task drives the call into the guest
//! through [`drive`], which also polls the request the guest is waiting
//! on. The HTTP host call [`hand`]s its request to the [`Courier`] and
//! suspends the fiber; `drive` polls the request on the task's stack (the
//! runtime thread's, shared by every VU), and resumes the fiber only once
//! the response is there. The fiber's wait ([`Courier::take`]) never polls
//! the request itself. Outside an iteration (`init`, `setup`, `teardown`)
//! nothing drives a courier, and requests go to tasks of their own.
//!
//! [`hand`]: Courier::hand

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use super::http::Sent;

/// A request's exchange, as the courier carries it.
pub type Request = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// Where a VU's request waits between its fiber and its task.
#[derive(Default)]
pub struct Courier {
    slot: Mutex<Slot>,
}

/// What [`Courier::poll_request`] found in the slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// No request in flight: none handed over, or its answer is waiting.
    Idle,
    /// The request in flight is not answered yet; the task is woken when
    /// it can go on.
    Pending,
    /// The request in flight was answered in this poll.
    Answered,
}

/// What the courier holds.
#[derive(Default)]
enum Slot {
    /// Nothing in flight.
    #[default]
    Empty,
    /// A request handed over, not yet answered.
    InFlight(Request),
    /// The answer, for the fiber to take, or what the request's panic
    /// said.
    Done(Result<Sent, String>),
}

impl Courier {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // Only the VU's own task touches the slot, and nothing in it can
        // panic while it is held; a poisoned slot is still consistent.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `request` to the task that drives this VU. Only a host call
    /// in a driven call may hand one, and it waits with [`take`](Self::take).
    pub fn hand(&self, request: Request) {
        *self.slot() = Slot::InFlight(request);
    }

    /// The answer to the request handed over, once it is there. Polled on
    /// the fiber, it never polls the request: [`drive`] does, and resumes
    /// the fiber when the answer is in.
    pub fn take(&self) -> Poll<Result<Sent, String>> {
        let mut slot = self.slot();
        match std::mem::take(&mut *slot) {
            Slot::Done(sent) => Poll::Ready(sent),
            other => {
                *slot = other;
                Poll::Pending
            }
        }
    }

    /// Polls the request in flight, if any, where it lies in the slot:
    /// one lock a poll, held across it. Nothing a request's future does
    /// touches its courier, and a panic is caught before the lock is let
    /// go, so the lock is never taken twice nor poisoned.
    fn poll_request(&self, cx: &mut Context<'_>) -> Polled {
        let mut slot = self.slot();
        let Slot::InFlight(request) = &mut *slot else {
            return Polled::Idle;
        };
        // A panic in the request's path (hyper, h2, rustls) fails the
        // request, as it failed the task a request had of its own, and
        // never the VU that drives it.
        let answer = match std::panic::catch_unwind(AssertUnwindSafe(|| request.as_mut().poll(cx)))
        {
            Ok(Poll::Pending) => return Polled::Pending,
            Ok(Poll::Ready(sent)) => Ok(sent),
            Err(panic) => Err(panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned())),
        };
        *slot = Slot::Done(answer);
        Polled::Answered
    }

    /// Drops whatever is left: a request whose call was cut off is
    /// aborted with it, as a dropped task would be.
    fn clear(&self) {
        let left = std::mem::take(&mut *self.slot());
        drop(left);
    }
}

/// Clears the courier when the driven call ends or is dropped.
struct ClearOnDrop<'a>(&'a Courier);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Runs `call` (a call into the guest) and the requests its host calls
/// hand to `courier`, on the current task.
///
/// While a request is in flight, the guest is waiting on it, so only the
/// request is polled; the call is polled when none is in flight, and again
/// at once when it hands one over, so each request starts in the poll that
/// made it.
pub async fn drive<F: Future>(courier: &Courier, call: F) -> F::Output {
    let _clear = ClearOnDrop(courier);
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        // Woken: the request in flight, if any, is what the guest waits on.
        if courier.poll_request(cx) == Polled::Pending {
            return Poll::Pending;
        }
        loop {
            if let Poll::Ready(out) = call.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            // A request handed over in that poll starts now; one answered
            // at once lets the call go on in this poll.
            if courier.poll_request(cx) != Polled::Answered {
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::http::{Answer, ClientSettings, Exchange, HttpClient};
    use fusi_sdk::abi::HttpRequest;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sent(status: u16) -> Sent {
        let answer = Answer {
            status,
            ..Answer::default()
        };
        let tls = ClientSettings::new(false).expect("tls settings");
        Box::new((
            HttpClient::new(tls),
            HttpRequest::default(),
            answer,
            Exchange::default(),
        ))
    }

    /// A guest stand-in: hands `n` requests over one after the other, each
    /// answered after a yield, and waits for each answer as the host call
    /// does, counting how often it was polled.
    async fn guest(courier: &Courier, n: u16, polls: &AtomicUsize) -> Vec<u16> {
        let mut statuses = Vec::new();
        for i in 0..n {
            courier.hand(Box::pin(async move {
                tokio::task::yield_now().await;
                sent(200 + i)
            }));
            let done = std::future::poll_fn(|_| {
                polls.fetch_add(1, Ordering::Relaxed);
                courier.take()
            })
            .await
            .expect("no panic");
            statuses.push(done.2.status);
        }
        statuses
    }

    #[tokio::test]
    async fn each_request_is_answered_in_order_and_the_waiting_guest_is_not_polled() {
        let courier = Courier::default();
        let polls = AtomicUsize::new(0);
        let statuses = drive(&courier, guest(&courier, 3, &polls)).await;
        assert_eq!(statuses, vec![200, 201, 202]);
        // Each wait is polled twice: once as the request is handed over,
        // once when its answer is in; never while it is in flight.
        assert_eq!(polls.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn a_panicking_request_is_an_answer_not_the_end_of_the_vu() {
        let courier = Courier::default();
        let call = async {
            courier.hand(Box::pin(async {
                tokio::task::yield_now().await;
                panic!("the request's path broke");
            }));
            std::future::poll_fn(|_| courier.take()).await
        };
        let done = drive(&courier, call).await;
        assert_eq!(done.err().as_deref(), Some("the request's path broke"));
    }

    #[tokio::test]
    async fn a_call_cut_off_drops_its_request_in_flight() {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let courier = Courier::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        let flag = Flag(dropped.clone());
        let call = async {
            courier.hand(Box::pin(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                sent(200)
            }));
            std::future::poll_fn(|_| courier.take()).await
        };
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(20), drive(&courier, call)).await;
        assert!(cut.is_err(), "the request never answers");
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1,
            "the request was dropped"
        );
        assert!(
            courier.take().is_pending(),
            "nothing is left in the courier"
        );
    }
}
