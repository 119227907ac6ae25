//! The bytes `connect` and `upload` send: a table of pseudo-random bytes (xorshift64*, fixed seed) built
//! once, sent as a sequence of windows at varying offsets. Sending borrows slices of the table,
//! so the sender does no per-byte work (test builds are unoptimised) and the measured rate is
//! the path's, while reordered, repeated or lost chunks still change the SHA-256.
//! Not for anything that needs real randomness.

/// Bytes per chunk (one write).
pub(super) const CHUNK: usize = 256 * 1024;
/// Table size: 4 MiB of pattern plus room for a full window at the last offset.
const TABLE_LEN: usize = 4 * 1024 * 1024 + CHUNK;
/// Distance between the offsets of consecutive chunks (odd, so offsets cycle through many values).
const STRIDE: usize = 786_433;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Clone, Debug)]
pub(super) struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    pub(super) fn new() -> Pattern {
        let mut state = SEED;
        let mut table = Vec::with_capacity(TABLE_LEN);
        while table.len() < TABLE_LEN {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            table.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        table.truncate(TABLE_LEN);
        Pattern { table }
    }

    /// The chunks making up the first `total` bytes of the stream.
    pub(super) fn chunks(&self, total: u64) -> impl Iterator<Item = &[u8]> {
        let span = TABLE_LEN - CHUNK + 1;
        let mut left = total;
        (0usize..).map_while(move |i| {
            if left == 0 {
                return None;
            }
            let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            left -= len as u64;
            let offset = i.wrapping_mul(STRIDE) % span;
            Some(&self.table[offset..offset + len])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_exactly_the_requested_length() {
        let p = Pattern::new();
        let total = 3 * CHUNK as u64 + 5;
        let chunks: Vec<&[u8]> = p.chunks(total).collect();
        assert_eq!(chunks.len(), 4, "three full chunks and a tail expected");
        assert_eq!(chunks.iter().map(|c| c.len() as u64).sum::<u64>(), total);
        assert_ne!(chunks[0], chunks[1], "consecutive chunks must differ so reordering is detected");
        assert_eq!(p.chunks(0).count(), 0);
    }
}
