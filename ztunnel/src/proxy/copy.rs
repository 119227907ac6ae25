//! Moving bytes both ways between a client and an upstream, with half-close.
//!
//! Data moves as `Bytes` chunks: a TCP read fills a buffer that is frozen and handed to the
//! other side without another copy (HTTP/2 DATA frames take `Bytes` as they are). Read buffers
//! start small, grow while reads fill them (bulk transfers) and shrink back when traffic turns
//! light, so idle and chatty connections stay cheap. When one side half-closes, the other side's
//! write half is shut down and the opposite direction keeps flowing until it ends too.
//!
//! An abnormal end is never passed on as a clean one. When either side resets or fails (a TCP
//! RST, an HTTP/2 `RST_STREAM`, an I/O error), both sides are reset: a TCP socket is closed
//! with `SO_LINGER` 0 (an RST, and no FIN before it) and a tunnel stream gets `RST_STREAM`
//! with `CONNECT_ERROR`, as RFC 9113 section 8.5 asks of a CONNECT proxy. The same happens
//! when the copy is abandoned before both directions ended (the drain deadline, a late policy
//! rejection): only a copy whose both directions reached end of stream ends with FINs.

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
pub(crate) trait ChunkRead: Send {
    /// The next chunk, or `None` at end of stream (the peer half-closed).
    fn read_chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// Sink of chunks.
pub(crate) trait ChunkWrite: Send {
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Half-closes (TCP FIN, or END_STREAM on a tunnel stream).
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Aborts the stream so the peer sees a reset (TCP RST, or `RST_STREAM`), never an
    /// orderly end. Idempotent; later writes fail.
    fn reset(&mut self);
}

/// Reading half of a TCP stream with an adaptive buffer.
///
/// The buffer is allocated only once the socket is readable and handed off whole with the
/// chunk, so an idle connection holds no buffer at all (thousands of idle tunnelled
/// connections would otherwise pin 16 KiB each per direction).
pub(crate) struct TcpChunkReader {
    io: OwnedReadHalf,
    size: usize,
}

impl TcpChunkReader {
    pub(crate) fn new(io: OwnedReadHalf) -> Self {
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

/// Writing half of a TCP stream that can be reset.
///
/// Dropping a tokio write half shuts the socket down (a FIN), and a FIN sent before an RST
/// reads as a clean end of stream to a peer that reads it first. A reset therefore sets
/// `SO_LINGER` 0 and gives the half up without the shutdown: the socket closes with an RST
/// alone once its read half is dropped too.
pub(crate) struct TcpChunkWriter {
    io: Option<OwnedWriteHalf>,
}

impl TcpChunkWriter {
    pub(crate) fn new(io: OwnedWriteHalf) -> Self {
        TcpChunkWriter { io: Some(io) }
    }

    fn io(&mut self) -> io::Result<&mut OwnedWriteHalf> {
        self.io.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "tcp stream was reset"))
    }
}

/// Both halves of a TCP stream for [`copy_bidirectional`].
pub(crate) fn tcp_halves(stream: tokio::net::TcpStream) -> (TcpChunkReader, TcpChunkWriter) {
    let (r, w) = stream.into_split();
    (TcpChunkReader::new(r), TcpChunkWriter::new(w))
}

impl ChunkWrite for TcpChunkWriter {
    async fn write_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        self.io()?.write_all(&chunk).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.io()?.shutdown().await
    }
    fn reset(&mut self) {
        if let Some(io) = self.io.take() {
            let _ = socket2::SockRef::from(io.as_ref()).set_linger(Some(std::time::Duration::ZERO));
            io.forget();
        }
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
    fn reset(&mut self) {
        TunnelWriter::reset(self, h2::Reason::CONNECT_ERROR)
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

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// A copy that ended with an I/O error on one side; both sides were then reset.
#[derive(Debug, thiserror::Error)]
#[error("{} side: {source}", side.as_str())]
pub struct CopyError {
    pub side: Side,
    #[source]
    pub source: io::Error,
}

impl CopyError {
    /// True when that side reset its connection or stream (rather than failing otherwise).
    pub fn is_reset(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
        )
    }
}

async fn one_way<R: ChunkRead, W: ChunkWrite>(
    mut from: R,
    to: &mut W,
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

/// The writers of both sides, reset together unless the copy completed: dropping an unfinished
/// copy (drain deadline, late rejection) resets both peers instead of closing them cleanly.
struct Writers<CW: ChunkWrite, UW: ChunkWrite> {
    client: CW,
    upstream: UW,
    completed: bool,
}

impl<CW: ChunkWrite, UW: ChunkWrite> Drop for Writers<CW, UW> {
    fn drop(&mut self) {
        if !self.completed {
            self.client.reset();
            self.upstream.reset();
        }
    }
}

/// Copies client <-> upstream until both directions ended. On an error in either direction the
/// other is abandoned and both sides are reset (see the module docs).
pub(crate) async fn copy_bidirectional<CR, CW, UR, UW>(
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
    let mut writers = Writers { client: cw, upstream: uw, completed: false };
    let result = {
        let up = one_way(cr, &mut writers.upstream, &transferred.sent, Side::Client, Side::Upstream);
        let down = one_way(ur, &mut writers.client, &transferred.received, Side::Upstream, Side::Client);
        tokio::try_join!(up, down).map(|_| ())
    };
    writers.completed = result.is_ok();
    result
}

#[cfg(test)]
mod tests;
