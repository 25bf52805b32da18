//! A target for tests that are not async.
//!
//! Synchronous tests (and tests that must not share a runtime with the code
//! under test, so that a blocked runtime cannot stall the server too) get a
//! target on its own thread with its own two-worker tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use anyhow::{Context as _, anyhow};
use tokio::sync::oneshot;

use crate::stats::Counters;
use crate::{Stats, Target, TargetConfig};

/// What the target thread reports once it is listening.
type Started = (SocketAddr, Arc<Counters>, Option<Vec<u8>>);

/// A [`Target`] running on a background thread; see [`spawn_target`].
///
/// Dropping the handle shuts the server down and waits for its thread.
#[derive(Debug)]
pub struct TargetHandle {
    addr: SocketAddr,
    counters: Arc<Counters>,
    certificate_der: Option<Vec<u8>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Starts a target on a new thread with its own tokio runtime and returns
/// once it is listening.
///
/// Usable from synchronous code and from inside another runtime alike.
///
/// # Errors
///
/// An invalid configuration, a failure to bind, or a failure to create the
/// thread or the runtime.
pub fn spawn_target(cfg: TargetConfig) -> anyhow::Result<TargetHandle> {
    spawn_target_in(cfg, None)
}

/// [`spawn_target`], with the target's thread (and so its listener and its
/// runtime's threads) in the network namespace `netns` when given.
pub(crate) fn spawn_target_in(
    cfg: TargetConfig,
    netns: Option<std::fs::File>,
) -> anyhow::Result<TargetHandle> {
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<Started>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = thread::Builder::new()
        .name("fusi-testnet-target".to_owned())
        .spawn(move || {
            if let Some(netns) = &netns
                && let Err(e) = crate::netns::enter(netns)
            {
                let _ = ready_tx.send(Err(
                    anyhow!(e).context("entering the mesh's hub network namespace")
                ));
                return;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fusi-testnet-worker")
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!(e).context("building the target runtime")));
                    return;
                }
            };
            runtime.block_on(async move {
                let target = match Target::start(cfg).await {
                    Ok(target) => target,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx
                    .send(Ok((
                        target.addr(),
                        target.counters(),
                        target.certificate_der(),
                    )))
                    .is_err()
                {
                    // The caller is gone; nobody will use the target.
                    target.shutdown().await;
                    return;
                }
                // Resolves on a stop request or when the handle is dropped.
                let _ = stop_rx.await;
                target.shutdown().await;
            });
        })
        .context("spawning the target thread")?;

    let (addr, counters, certificate_der) = match ready_rx.recv() {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            // The thread ended without a word: it panicked.
            let _ = thread.join();
            return Err(anyhow!("the target thread ended before it started serving"));
        }
    };
    Ok(TargetHandle {
        addr,
        counters,
        certificate_der,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

impl TargetHandle {
    /// The address the server is bound to (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`, or
    /// `https://127.0.0.1:41234` in TLS mode.
    pub fn url(&self) -> String {
        crate::tls::url(self.addr, self.certificate_der.is_some())
    }

    /// In TLS mode, the DER encoding of the server's self-signed
    /// certificate, for a client to trust; `None` without TLS. See
    /// [`Target::certificate_der`].
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        self.certificate_der.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        self.counters.reset();
    }

    /// Shuts the server down and waits for its thread; the same as dropping
    /// the handle, spelled out.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TargetHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the target thread panicked");
        }
    }
}
