//! Moving bytes both ways between a client and an upstream, with half-close.
//!
//! Data moves as `Bytes` chunks: a TCP read fills a buffer that is frozen and handed to the
//! other side without another copy (HTTP/2 DATA frames take `Bytes` as they are). Read buffers
//! start small, grow while reads fill them (bulk transfers) and shrink back when traffic turns
//! light, so idle and chatty connections stay cheap. When one side half-closes, the other side's
//! write half is shut down and the opposite direction keeps flowing until it ends too.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::hbone::{TunnelReader, TunnelWriter};

/// Smallest and largest TCP read buffer.
const MIN_BUF: usize = 16 * 1024;
const MAX_BUF: usize = 256 * 1024;

/// Source of chunks.
pub trait ChunkRead: Send {
    /// The next chunk, or `None` at end of stream (the peer half-closed).
    fn read_chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// Sink of chunks.
pub trait ChunkWrite: Send {
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Half-closes (TCP FIN, or END_STREAM on a tunnel stream).
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Reading half of a TCP stream with an adaptive buffer.
///
/// The buffer is allocated only once the socket is readable and handed off whole with the
/// chunk, so an idle connection holds no buffer at all (thousands of idle tunnelled
/// connections would otherwise pin 16 KiB each per direction).
pub struct TcpChunkReader {
    io: OwnedReadHalf,
    size: usize,
}

impl TcpChunkReader {
    pub fn new(io: OwnedReadHalf) -> Self {
        TcpChunkReader { io, size: MIN_BUF }
    }
}

impl ChunkRead for TcpChunkReader {
    async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            self.io.readable().await?;
            let mut buf = BytesMut::with_capacity(self.size);
            let n = match self.io.try_read_buf(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            // Grow while reads fill the buffer; shrink after a read that used under a quarter.
            if n >= self.size {
                self.size = (self.size * 2).min(MAX_BUF);
            } else if n < self.size / 4 {
                self.size = (self.size / 2).max(MIN_BUF);
            }
            return Ok(Some(buf.freeze()));
        }
    }
}

impl ChunkWrite for OwnedWriteHalf {
    async fn write_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        self.write_all(&chunk).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

impl ChunkRead for TunnelReader {
    async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        TunnelReader::read_chunk(self).await
    }
}

impl ChunkWrite for TunnelWriter {
    async fn write_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        TunnelWriter::write_chunk(self, chunk).await
    }
    async fn close(&mut self) -> io::Result<()> {
        TunnelWriter::close(self)
    }
}

/// Bytes moved so far, readable while the copy runs and after it fails.
#[derive(Debug, Default)]
pub struct Transferred {
    /// Client -> upstream.
    pub sent: AtomicU64,
    /// Upstream -> client.
    pub received: AtomicU64,
}

impl Transferred {
    pub fn totals(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.received.load(Ordering::Relaxed))
    }
}

/// Which side of the copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// A copy that ended with an I/O error on one side.
#[derive(Debug, thiserror::Error)]
#[error("{} side: {source}", match side { Side::Client => "client", Side::Upstream => "upstream" })]
pub struct CopyError {
    pub side: Side,
    #[source]
    pub source: io::Error,
}

async fn one_way<R: ChunkRead, W: ChunkWrite>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    from_side: Side,
    to_side: Side,
) -> Result<(), CopyError> {
    loop {
        let chunk = from.read_chunk().await.map_err(|source| CopyError { side: from_side, source })?;
        let Some(chunk) = chunk else {
            return to.close().await.map_err(|source| CopyError { side: to_side, source });
        };
        let n = chunk.len() as u64;
        to.write_chunk(chunk).await.map_err(|source| CopyError { side: to_side, source })?;
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Copies client <-> upstream until both directions ended. On an error in either direction the
/// other is abandoned (its halves drop, which resets the stream or connection).
pub async fn copy_bidirectional<CR, CW, UR, UW>(
    client: (CR, CW),
    upstream: (UR, UW),
    transferred: Arc<Transferred>,
) -> Result<(), CopyError>
where
    CR: ChunkRead,
    CW: ChunkWrite,
    UR: ChunkRead,
    UW: ChunkWrite,
{
    let (cr, cw) = client;
    let (ur, uw) = upstream;
    let up = one_way(cr, uw, &transferred.sent, Side::Client, Side::Upstream);
    let down = one_way(ur, cw, &transferred.received, Side::Upstream, Side::Client);
    tokio::try_join!(up, down).map(|_| ())
}
