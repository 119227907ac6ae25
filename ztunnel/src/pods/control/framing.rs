//! Line framing of the control protocol, without IO: bytes go in as they arrive, complete
//! request lines come out. A line longer than the limit is an error, so what a client sends
//! never grows a buffer beyond the limit plus one read.

/// The line being received is longer than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("control request line longer than {max} bytes")]
pub(crate) struct LineTooLong {
    pub(crate) max: usize,
}

/// Splits a byte stream into `\n`-terminated lines of at most `max_line` bytes (the `\n`
/// and a `\r` before it not counted).
///
/// The caller pushes one read at a time and takes lines with [`LineFramer::next_line`] until
/// it answers `None` before pushing more; the buffer then never holds more than `max_line`
/// plus one read.
#[derive(Debug)]
pub(crate) struct LineFramer {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no `\n`.
    scanned: usize,
    max_line: usize,
}

impl LineFramer {
    pub(crate) fn new(max_line: usize) -> LineFramer {
        LineFramer { buf: Vec::new(), scanned: 0, max_line }
    }

    /// Appends bytes received from the client.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line without its line ending; `None` while more bytes are needed;
    /// an error once the line being received is longer than the limit (the framer is then
    /// useless: the connection must end).
    pub(crate) fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        let newline = self.buf[self.scanned..].iter().position(|&b| b == b'\n').map(|i| self.scanned + i);
        match newline {
            Some(end) => {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                if line.len() > self.max_line { Err(self.too_long()) } else { Ok(Some(line)) }
            }
            None => {
                self.scanned = self.buf.len();
                // A `\r` may still be followed by its `\n`: it does not count yet.
                let pending = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
                if pending > self.max_line { Err(self.too_long()) } else { Ok(None) }
            }
        }
    }

    /// At the end of the stream: the last line if it had no `\n`.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }

    /// Bytes held (for tests and the fuzz target's bound check).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn too_long(&self) -> LineTooLong {
        LineTooLong { max: self.max_line }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut LineFramer) -> Result<Vec<String>, LineTooLong> {
        let mut out = Vec::new();
        while let Some(line) = framer.next_line()? {
            out.push(String::from_utf8(line).unwrap());
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut f = LineFramer::new(16);
        f.push(b"{\"op\":");
        assert_eq!(lines(&mut f), Ok(vec![]));
        f.push(b"\"pods\"}\r\n{\"op\"");
        assert_eq!(lines(&mut f), Ok(vec!["{\"op\":\"pods\"}".to_string()]));
        f.push(b":1}\n\nx");
        assert_eq!(lines(&mut f), Ok(vec!["{\"op\":1}".to_string(), String::new()]));
        assert_eq!(f.finish(), Some(b"x".to_vec()));
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_one_more_byte_fails() {
        let mut f = LineFramer::new(4);
        f.push(b"abcd\r");
        assert_eq!(f.next_line(), Ok(None), "a trailing \\r may end the line");
        f.push(b"\nabcd\n");
        assert_eq!(lines(&mut f), Ok(vec!["abcd".to_string(), "abcd".to_string()]));

        let mut f = LineFramer::new(4);
        f.push(b"abcde");
        assert_eq!(f.next_line(), Err(LineTooLong { max: 4 }), "no newline yet, already too long");
        let mut f = LineFramer::new(4);
        f.push(b"abcde\nok\n");
        assert_eq!(f.next_line(), Err(LineTooLong { max: 4 }), "a complete line over the limit");
    }

    #[test]
    fn buffer_stays_within_limit_plus_one_read() {
        let mut f = LineFramer::new(1024);
        let read = [b'a'; 100];
        let mut rejected = false;
        for _ in 0..1000 {
            f.push(&read);
            if f.next_line().is_err() {
                rejected = true;
                break;
            }
        }
        assert!(rejected, "an endless line must be rejected");
        assert!(f.buffered() <= 1024 + read.len(), "buffered {} bytes", f.buffered());
    }
}
