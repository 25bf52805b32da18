//! The request-response codec: one CBOR message per stream, read with a size
//! bound and decoded by [`crate::core::wire`], the single definition of the
//! mesh's messages.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use crate::core::wire::{self, MAX_MODULE_RESPONSE_BYTES, MAX_REQUEST_BYTES, Request, Response};

/// Reads and writes [`Request`]s and [`Response`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCodec;

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Request> {
        wire::decode_request(&read_bounded(io, MAX_REQUEST_BYTES).await?).map_err(invalid)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Response> {
        wire::decode_response(&read_bounded(io, MAX_MODULE_RESPONSE_BYTES).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()> {
        io.write_all(&wire::encode(&request)).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()> {
        io.write_all(&wire::encode(&response)).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[test]
    fn garbage_truncated_and_oversized_streams_are_errors() {
        futures::executor::block_on(async {
            let mut codec = WireCodec;
            let protocol = StreamProtocol::new(wire::RPC_PROTOCOL);
            let ask = Request::Clock {
                t1: 7,
                known: Some((1, 2)),
                suspect: false,
                introduce: None,
            };
            let good = wire::encode(&ask);
            let mut io = Cursor::new(good.clone());
            assert_eq!(codec.read_request(&protocol, &mut io).await.unwrap(), ask);
            for cut in 0..good.len() {
                let mut io = Cursor::new(good[..cut].to_vec());
                assert!(codec.read_request(&protocol, &mut io).await.is_err());
            }
            let mut io = Cursor::new(vec![0xffu8; 100]);
            assert!(codec.read_response(&protocol, &mut io).await.is_err());
            let mut io = Cursor::new(vec![0x41u8; MAX_REQUEST_BYTES * 2]);
            let err = codec.read_request(&protocol, &mut io).await.unwrap_err();
            assert!(err.to_string().contains("limit"), "{err}");
        });
    }
}
