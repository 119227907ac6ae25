//! Byte-stream views of one HBONE `CONNECT` stream.
//!
//! [`TunnelReader`] and [`TunnelWriter`] are the two halves of a stream; both offer a
//! chunk API (`read_chunk` / `write_chunk`, which hand `Bytes` to and from HTTP/2 without an
//! extra copy) and implement `AsyncRead` / `AsyncWrite` for generic users. Shutting the writer
//! down sends an empty DATA frame with END_STREAM, which is how HBONE carries a TCP half-close;
//! [`TunnelWriter::reset`] sends `RST_STREAM`, which is how it carries a TCP reset. A reset
//! received from the peer reads as `ConnectionReset`. Dropping both halves without shutting the
//! writer down resets the stream too.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h2_to_io;

/// Something held for as long as either half of a stream is alive (pool accounting).
pub(crate) type StreamGuard = Arc<dyn Send + Sync>;

/// Receiving half of a tunnel stream.
pub struct TunnelReader {
    recv: RecvStream,
    pending: Bytes,
    _guard: Option<StreamGuard>,
}

/// Sending half of a tunnel stream.
pub struct TunnelWriter {
    send: SendStream<Bytes>,
    shut: bool,
    _guard: Option<StreamGuard>,
}

/// Both halves of one tunnel stream.
pub struct Tunnel {
    pub reader: TunnelReader,
    pub writer: TunnelWriter,
}

impl Tunnel {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, guard: Option<StreamGuard>) -> Tunnel {
        Tunnel {
            reader: TunnelReader { recv, pending: Bytes::new(), _guard: guard.clone() },
            writer: TunnelWriter { send, shut: false, _guard: guard },
        }
    }

    /// Splits into halves that can move to different tasks.
    pub fn split(self) -> (TunnelReader, TunnelWriter) {
        (self.reader, self.writer)
    }
}

impl TunnelReader {
    /// Next chunk of data from the peer; `None` once the peer half-closed the stream.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        loop {
            return match ready!(self.recv.poll_data(cx)) {
                None => Poll::Ready(Ok(None)),
                Some(Err(e)) => Poll::Ready(Err(h2_to_io(e))),
                Some(Ok(chunk)) => {
                    // Give the window back as soon as the chunk leaves HTTP/2: we hold at most
                    // one chunk, so this bounds buffering while keeping the sender busy.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    if chunk.is_empty() {
                        continue;
                    }
                    Poll::Ready(Ok(Some(chunk)))
                }
            };
        }
    }

    /// Async form of [`TunnelReader::poll_chunk`].
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

impl AsyncRead for TunnelReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(this.poll_chunk(cx))? {
                None => return Poll::Ready(Ok(())),
                Some(chunk) => this.pending = chunk,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl TunnelWriter {
    /// Waits until HTTP/2 flow control lets us send, returning how many bytes (at most `want`).
    fn poll_capacity(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "tunnel stream already half-closed")));
        }
        let available = self.send.capacity();
        if available > 0 {
            return Poll::Ready(Ok(available.min(want)));
        }
        self.send.reserve_capacity(want);
        match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(n)) if n > 0 => Poll::Ready(Ok(n.min(want))),
            Some(Ok(_)) | None => {
                // No capacity will come: the stream was reset or closed by the peer.
                let reason = ready!(self.send.poll_reset(cx)).map_err(h2_to_io)?;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("tunnel stream reset by peer ({reason})"),
                )))
            }
            Some(Err(e)) => Poll::Ready(Err(h2_to_io(e))),
        }
    }

    /// Sends a whole chunk, waiting for flow control as needed; the chunk is not copied.
    pub async fn write_chunk(&mut self, mut chunk: Bytes) -> io::Result<()> {
        while !chunk.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_capacity(cx, chunk.len())).await?;
            let part = chunk.split_to(n);
            self.send.send_data(part, false).map_err(h2_to_io)?;
        }
        Ok(())
    }

    /// Aborts the stream with `RST_STREAM` carrying `reason`; later writes fail.
    pub fn reset(&mut self, reason: h2::Reason) {
        self.shut = true;
        self.send.send_reset(reason);
    }

    /// Half-closes the stream (empty DATA frame with END_STREAM). Idempotent.
    pub fn close(&mut self) -> io::Result<()> {
        if self.shut {
            return Ok(());
        }
        self.shut = true;
        self.send.send_data(Bytes::new(), true).map_err(h2_to_io)
    }
}

impl AsyncWrite for TunnelWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_capacity(cx, buf.len()))?;
        self.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(h2_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // HTTP/2 frames are flushed by the connection task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.close())
    }
}
