//! Bounds the nesting of flow collections (`[ ]`, `{ }`) in YAML text before the YAML parser
//! sees it, in one linear pass.
//!
//! Why: the YAML scanner behind `serde_yaml` rechecks every open flow level for each token, so
//! its cost grows with the square of the nesting; a 200 KB file of `[` costs about a minute of
//! CPU before any error. serde's recursion limit applies only after the whole text has been
//! scanned, too late to help. This pass stops at the first level over the limit and says where.
//!
//! The pass follows the YAML scanner's rules for what opens a level: a `[` or `{` inside a flow
//! collection, or at the start of a token in block context (inside a block plain scalar such as
//! `name: a[b` it is text). Quoted scalars, comments and block scalars (`|`, `>`) are text to the
//! YAML parser; in case this pass misjudges where one starts or ends, the brackets inside such a
//! region are still counted as if they were structure (what they open is kept, what they close
//! is ignored), so a misjudged region can make the estimate higher, never lower. A valid config
//! nests two or three levels deep; the limit is far above that.

use super::local::Location;

/// The deepest nesting of flow collections accepted. Istio's local config format needs at
/// most a handful (a config written entirely as JSON needs about ten).
pub const MAX_FLOW_NESTING: usize = 32;

/// Checks that no flow collection in `text` nests deeper than `limit`; the error is where the
/// first level over the limit opens.
pub(super) fn check_flow_nesting(text: &[u8], limit: usize) -> Result<(), Location> {
    Scanner::new(text, limit).run()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    SingleQuoted,
    DoubleQuoted,
    Comment,
    /// Lines indented deeper than `threshold` (or blank) belong to the block scalar.
    BlockScalar {
        threshold: usize,
    },
}

struct Scanner<'a> {
    text: &'a [u8],
    limit: usize,
    pos: usize,
    line: usize,
    column: usize,
    /// Open flow collections outside quoted scalars, comments and block scalars.
    depth: usize,
    mode: Mode,
    /// Inside a quoted scalar, comment or block scalar: brackets opened minus closed.
    region_net: i64,
    /// Before the first non-blank byte of the line.
    line_start: bool,
    /// Indentation of the current line.
    indent: usize,
    /// The next non-blank byte starts a token (so a quote there starts a quoted scalar).
    token_start: bool,
    /// The previous byte was blank or a line break (so `#` starts a comment).
    after_blank: bool,
    /// Inside a plain scalar that began on a line with this indentation.
    plain: Option<usize>,
    /// Inside an anchor or tag (`&a`, `!tag`): the blank after it starts a token.
    property: bool,
    /// Right after a quoted scalar or a flow collection (so `:` is an indicator, JSON style).
    after_node: bool,
    /// Saw a block scalar indicator (`|`, `>`): its content starts on the next line.
    block_header: Option<usize>,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a [u8], limit: usize) -> Scanner<'a> {
        Scanner {
            text,
            limit,
            pos: 0,
            line: 1,
            column: 1,
            depth: 0,
            mode: Mode::Normal,
            region_net: 0,
            line_start: true,
            indent: 0,
            token_start: true,
            after_blank: true,
            plain: None,
            property: false,
            after_node: false,
            block_header: None,
        }
    }

    fn run(mut self) -> Result<(), Location> {
        while self.pos < self.text.len() {
            let byte = self.text[self.pos];
            match self.mode {
                Mode::Normal => self.normal(byte)?,
                Mode::SingleQuoted => {
                    if byte == b'\'' {
                        if self.peek(1) == Some(b'\'') {
                            self.advance();
                        } else {
                            self.close_region();
                            self.after_node = true;
                        }
                    } else {
                        self.region_byte(byte)?;
                    }
                }
                Mode::DoubleQuoted => match byte {
                    // The escaped byte is skipped by the step below (a line break, with its line).
                    b'\\' => self.advance(),
                    b'"' => {
                        self.close_region();
                        self.after_node = true;
                    }
                    _ => self.region_byte(byte)?,
                },
                Mode::Comment => {
                    if byte == b'\n' {
                        self.close_region();
                        continue;
                    }
                    self.region_byte(byte)?;
                }
                Mode::BlockScalar { threshold } => {
                    if !self.block_line_continues(threshold) {
                        self.close_region();
                        continue;
                    }
                    self.skip_line()?;
                    continue;
                }
            }
            if self.pos < self.text.len() && self.text[self.pos] == b'\n' {
                self.advance();
                self.new_line();
            } else {
                self.advance();
            }
        }
        Ok(())
    }

    fn normal(&mut self, byte: u8) -> Result<(), Location> {
        if byte == b'\n' {
            // `run` moves past it; here only what a line end means for tokens.
            if let Some(threshold) = self.block_header.take() {
                self.open_region(Mode::BlockScalar { threshold });
            }
            self.property = false;
            return Ok(());
        }
        if matches!(byte, b' ' | b'\t' | b'\r') {
            if self.line_start && byte == b' ' {
                self.indent += 1;
            }
            if self.property {
                self.property = false;
                self.token_start = true;
            }
            self.after_blank = true;
            return Ok(());
        }
        if self.line_start {
            self.line_start = false;
            // A plain scalar continues on a following line inside a flow collection, or in
            // block context when the line is indented deeper than where it began.
            let continues = self.plain.is_some_and(|began| self.depth > 0 || self.indent > began);
            if !continues {
                self.plain = None;
            }
            self.token_start = !continues;
        }
        let after_node = std::mem::take(&mut self.after_node);
        let in_flow = self.depth > 0;
        match byte {
            b'#' if self.after_blank => {
                self.plain = None;
                self.open_region(Mode::Comment);
            }
            b'\'' if self.token_start => self.open_region(Mode::SingleQuoted),
            b'"' if self.token_start => self.open_region(Mode::DoubleQuoted),
            b'[' | b'{' if in_flow || self.token_start => {
                self.depth += 1;
                if self.depth > self.limit {
                    return Err(self.location());
                }
                self.plain = None;
                self.token_start = true;
            }
            b']' | b'}' if in_flow => {
                self.depth -= 1;
                self.plain = None;
                self.token_start = false;
                self.after_node = true;
            }
            b',' if in_flow => {
                self.plain = None;
                self.token_start = true;
            }
            b':' if self.is_blank_or_end(1)
                || (in_flow && (after_node || self.peek(1).is_some_and(is_flow_indicator))) =>
            {
                self.plain = None;
                self.token_start = true;
            }
            b'-' | b'?' if self.token_start && self.is_blank_or_end(1) => {}
            b'|' | b'>' if self.token_start && !in_flow => {
                self.block_header = Some(self.indent);
                self.token_start = false;
            }
            b'&' | b'!' if self.token_start => {
                self.property = true;
                self.token_start = false;
            }
            _ => {
                if self.plain.is_none() {
                    self.plain = Some(self.indent);
                }
                self.token_start = false;
            }
        }
        self.after_blank = false;
        Ok(())
    }

    /// A byte inside a quoted scalar or comment: brackets counted as if they were structure.
    fn region_byte(&mut self, byte: u8) -> Result<(), Location> {
        match byte {
            b'[' | b'{' => {
                self.region_net += 1;
                if self.depth as i64 + self.region_net > self.limit as i64 {
                    return Err(self.location());
                }
            }
            b']' | b'}' => self.region_net -= 1,
            _ => {}
        }
        Ok(())
    }

    fn open_region(&mut self, mode: Mode) {
        self.mode = mode;
        self.region_net = 0;
    }

    /// Leaves a region; what it left open counts, what it closed does not.
    fn close_region(&mut self) {
        self.depth += self.region_net.max(0) as usize;
        self.region_net = 0;
        self.mode = Mode::Normal;
        self.plain = None;
        self.token_start = false;
        self.after_blank = false;
    }

    /// At the start of a line inside a block scalar: is this line still its content?
    fn block_line_continues(&self, threshold: usize) -> bool {
        let rest = &self.text[self.pos..];
        let indent = rest.iter().take_while(|&&b| b == b' ').count();
        match rest.get(indent) {
            None | Some(b'\n') | Some(b'\r') => true,
            Some(_) => indent > threshold,
        }
    }

    /// Counts the brackets of one block scalar line and moves past its line break.
    fn skip_line(&mut self) -> Result<(), Location> {
        while self.pos < self.text.len() && self.text[self.pos] != b'\n' {
            self.region_byte(self.text[self.pos])?;
            self.advance();
        }
        if self.pos < self.text.len() {
            self.advance();
            self.new_line();
        }
        Ok(())
    }

    fn new_line(&mut self) {
        self.line += 1;
        self.column = 1;
        self.line_start = true;
        self.indent = 0;
        self.after_blank = true;
    }

    fn advance(&mut self) {
        self.pos += 1;
        self.column += 1;
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.pos + ahead).copied()
    }

    fn is_blank_or_end(&self, ahead: usize) -> bool {
        matches!(self.peek(ahead), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
    }

    fn location(&self) -> Location {
        Location { line: self.line, column: self.column }
    }
}

fn is_flow_indicator(byte: u8) -> bool {
    matches!(byte, b',' | b'[' | b']' | b'{' | b'}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str, limit: usize) -> Option<(usize, usize)> {
        check_flow_nesting(text.as_bytes(), limit).err().map(|at| (at.line, at.column))
    }

    #[test]
    fn nesting_within_the_limit_passes() {
        let cases = [
            "workloads:\n- uid: a\n  workloadIps: [\"10.0.0.1\", \"10.0.0.2\"]\n",
            "{\"workloads\": [{\"uid\": \"a\", \"services\": {\"ns/h\": {\"80\": 8080}}}]}",
            "policies:\n- rules: [[{matches: [{namespaces: [{exact: a}]}]}]]\n",
            // Brackets inside a block plain scalar are text.
            "name: a[[[[[[[[[[b\n",
            // Balanced brackets in quoted scalars, comments and block scalars.
            "other: 'x[[[[[[]]]]]]'\n",
            "# [[[[[[]]]]]] a comment\nkey: value\n",
            "key: |\n  [[[[[[]]]]]]\n  [[[[[[]]]]]]\nnext: [1]\n",
            "key: \"[::1]:80\"\nescaped: \"a\\\"[[[[[[]]]]]]\"\n",
            "key: 'it''s [ok]'\n",
        ];
        for text in cases {
            assert_eq!(depth_error(text, 8), None, "{text:?} nests at most 8 deep");
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_where_it_goes_over() {
        assert_eq!(depth_error("[[[[[", 4), Some((1, 5)));
        assert_eq!(depth_error("a: {b: [c, {d: [e]}]}\n", 3), Some((1, 16)));
        assert_eq!(depth_error("x: 1\ny: [\n [\n  [\n", 2), Some((4, 3)));
    }

    #[test]
    fn a_huge_nested_file_is_refused_at_once() {
        let text = "[".repeat(200 * 1024);
        let started = std::time::Instant::now();
        assert_eq!(depth_error(&text, MAX_FLOW_NESTING), Some((1, MAX_FLOW_NESTING + 1)));
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn brackets_hidden_in_doubtful_text_still_count() {
        // What a misjudged region leaves open counts; what it closes does not.
        assert_eq!(depth_error("[a, \"]]]]\", [[[", 3), Some((1, 15)));
        assert_eq!(depth_error("k: '[[['\nj: '[['\n", 4), Some((2, 6)));
        assert_eq!(depth_error("k: \"[[[[[\"\n", 4), Some((1, 9)));
        assert_eq!(depth_error("[a\n 'b [[[[[ c'\n", 4), Some((2, 8)));
    }
}
