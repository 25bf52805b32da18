//! The bytes a node's mesh moves, counted on its TCP connections.
//!
//! A load generator must not become the load: the mesh's own traffic
//! (heartbeats, clock exchanges, run messages, shards, gossipsub's relaying
//! and control messages, the anti-entropy answers) is what a user pays for
//! coordination, so the node counts it where it is cheapest to count it
//! whole, on the raw TCP stream under pnet, Noise and Yamux. Every byte any
//! protocol of the mesh sends or receives is in it; nothing else is (load
//! traffic and the local API use their own sockets). `fusi-node status` and
//! `/v1/status` show the totals.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// Totals since the node started, shared by every connection.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes written to mesh connections.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read from mesh connections.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A stream that adds what passes through it to a [`Traffic`].
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> Counted<S> {
    /// Counts `inner`'s bytes into `traffic`.
    pub fn new(inner: S, traffic: Arc<Traffic>) -> Self {
        Counted { inner, traffic }
    }
}

fn count(counter: &AtomicU64, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = &poll {
        counter.fetch_add(*n as u64, Ordering::Relaxed);
    }
    poll
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        count(&self.traffic.received, poll)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read_vectored(cx, bufs);
        count(&self.traffic.received, poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        count(&self.traffic.sent, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        count(&self.traffic.sent, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt as _, AsyncWriteExt as _, Cursor};

    #[test]
    fn both_directions_are_counted() {
        futures::executor::block_on(async {
            let traffic = Arc::new(Traffic::default());
            let mut stream = Counted::new(Cursor::new(b"hello".to_vec()), traffic.clone());
            let mut buf = [0u8; 3];
            stream.read_exact(&mut buf).await.expect("read");
            assert_eq!(traffic.received(), 3);
            stream.write_all(b"abcdef").await.expect("write");
            assert_eq!(traffic.sent(), 6);
            assert_eq!(traffic.received(), 3);
        });
    }
}
