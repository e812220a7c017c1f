//! HTTP/1 request framing checks that hyper does not make on its own.
//!
//! hyper accepts a request carrying both `Content-Length` and
//! `Transfer-Encoding` (it drops the length and closes afterwards) and accepts
//! bare LF line endings. tandem refuses such ambiguous framing with 400, so a
//! [`FramingInspector`] watches the client byte stream beside hyper: it finds
//! each request head, records a [`Verdict`] for it, and skips the body by its
//! framing (length or chunked) to find the next head. The HTTP service pops one
//! verdict per request, in order.
//!
//! Invariant: the inspector never blocks or alters bytes. When it meets
//! anything it cannot follow (an upgrade, a head over the size limit, a
//! malformed chunk) it turns itself off and records nothing more; hyper's own
//! parser stays the authority for everything else. Its verdicts do not depend on
//! how the stream is split into reads. Pure: tested by feeding bytes, and by
//! property tests (`framing/fuzz.rs`) over generated streams and splits.

/// What the inspector found in one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthAndTransferEncoding,
    /// A line ended by LF without CR.
    BareLf,
}

impl Verdict {
    /// Reason label for metrics and logs; `None` when clean.
    pub fn reject_reason(self) -> Option<&'static str> {
        match self {
            Verdict::Clean => None,
            Verdict::ContentLengthAndTransferEncoding => Some("cl_and_te"),
            Verdict::BareLf => Some("bare_lf"),
        }
    }
}

/// Longest chunk-size or trailer line the inspector follows.
const MAX_LINE: usize = 4096;

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Off,
}

/// Follows request boundaries in a client byte stream.
#[derive(Debug)]
pub struct FramingInspector {
    state: State,
    /// Bytes of the current head, or of the current chunk-size/trailer line.
    line: Vec<u8>,
    max_head: usize,
    verdicts: std::collections::VecDeque<Verdict>,
    /// True while the head being received has at least one byte.
    head_started: bool,
}

impl FramingInspector {
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            max_head,
            verdicts: Default::default(),
            head_started: false,
        }
    }

    /// The verdict of the oldest request head not yet taken.
    pub fn take_verdict(&mut self) -> Option<Verdict> {
        self.verdicts.pop_front()
    }

    /// True when part of a request head has arrived but not all of it.
    pub fn head_in_progress(&self) -> bool {
        matches!(self.state, State::Head) && self.head_started
    }

    /// Observes bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    // Leading empty lines before a request line are allowed.
                    if self.line.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = data.get(skip..).unwrap_or_default();
                        if data.is_empty() {
                            return;
                        }
                    }
                    // Fast path: a whole head inside this read is analysed in
                    // place, without copying it into `line`.
                    if self.line.is_empty() {
                        if let Some(end) = find_head_end(data, 0) {
                            if end > self.max_head {
                                self.off();
                                return;
                            }
                            let (head, rest) = data.split_at(end);
                            self.finish(head);
                            data = rest;
                            continue;
                        }
                    }
                    self.head_started = true;
                    let start = self.line.len();
                    self.line.extend_from_slice(data);
                    match find_head_end(&self.line, start.saturating_sub(3)) {
                        // Over the limit even if it ended: hyper answers 431
                        // and the inspector must stop the same way however the
                        // bytes were split into reads.
                        Some(end) if end > self.max_head => {
                            self.off();
                            return;
                        }
                        Some(end) => {
                            // The terminator ends in this read's bytes (an
                            // earlier read would have found it), so `end >
                            // start`. Loop on the rest instead of recursing:
                            // one read may hold thousands of tiny pipelined heads.
                            let consumed = end.saturating_sub(start);
                            data = data.get(consumed..).unwrap_or_default();
                            self.line.truncate(end);
                            let head = std::mem::take(&mut self.line);
                            self.finish(&head);
                            // Keep the allocation for the next split head.
                            self.line = head;
                            self.line.clear();
                            self.head_started = false;
                        }
                        None => {
                            if self.line.len() > self.max_head {
                                self.off();
                            }
                            return;
                        }
                    }
                }
                State::Body(remaining) => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    data = data.get(n..).unwrap_or_default();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(remaining) => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    data = data.get(n..).unwrap_or_default();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > MAX_LINE {
                            self.off();
                        }
                        return;
                    };
                    self.line
                        .extend_from_slice(data.get(..nl).unwrap_or_default());
                    data = data.get(nl + 1..).unwrap_or_default();
                    // Same limit whether the line came in one read or many.
                    if self.line.len() > MAX_LINE {
                        self.off();
                        return;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.on_line(line);
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        self.state = match self.state {
            State::ChunkDataEnd if line.is_empty() => State::ChunkSize,
            State::ChunkSize => {
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                match std::str::from_utf8(size)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                }
            }
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Off,
        };
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.line = Vec::new();
    }

    /// Records the verdict for a complete `head` and follows its body framing.
    ///
    /// One pass over the lines (memchr finds line ends and colons): bare LF,
    /// the request line and the three framing-relevant names, each compared
    /// only when its length matches.
    fn finish(&mut self, head: &[u8]) {
        let mut bare_lf = false;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut has_te = false;
        let mut upgrade = false;
        let mut first = true;
        let mut rest = head;
        loop {
            let (raw, ended) = match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let raw = rest.get(..nl).unwrap_or_default();
                    rest = rest.get(nl + 1..).unwrap_or_default();
                    (raw, true)
                }
                None if rest.is_empty() => break,
                None => (std::mem::take(&mut rest), false),
            };
            let line = match raw.strip_suffix(b"\r") {
                Some(l) => l,
                None => {
                    bare_lf |= ended;
                    raw
                }
            };
            if first {
                first = false;
                if line.starts_with(b"CONNECT ") {
                    upgrade = true;
                }
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let (name, value) = line.split_at(colon);
            let value = || trim(value.get(1..).unwrap_or_default());
            match name.len() {
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    content_length = std::str::from_utf8(value())
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    has_te = true;
                    let last = value().rsplit(|b| *b == b',').next().map(trim);
                    chunked = last.is_some_and(|l| l.eq_ignore_ascii_case(b"chunked"));
                }
                7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
                _ => {}
            }
        }
        let mut verdict = if bare_lf {
            Verdict::BareLf
        } else {
            Verdict::Clean
        };
        if has_te && content_length.is_some() && verdict == Verdict::Clean {
            verdict = Verdict::ContentLengthAndTransferEncoding;
        }
        self.verdicts.push_back(verdict);
        self.state = if verdict != Verdict::Clean || upgrade || (has_te && !chunked) {
            // The connection ends after this request (hyper closes, or we
            // refuse), or switches protocol: nothing further to follow.
            State::Off
        } else if has_te {
            State::ChunkSize
        } else {
            match content_length {
                Some(0) | None => State::Head,
                Some(n) => State::Body(n),
            }
        };
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// End of a head (index after the blank line), accepting LF or CRLF endings.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', buf.get(i..)?) {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[&[u8]]) -> Vec<Verdict> {
        let mut f = FramingInspector::new(65536);
        for chunk in input {
            f.feed(chunk);
        }
        std::iter::from_fn(|| f.take_verdict()).collect()
    }

    #[test]
    fn clean_pipelined_requests_with_bodies_are_followed() {
        let v = verdicts(&[b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(v, vec![Verdict::Clean, Verdict::Clean]);
    }

    #[test]
    fn chunked_body_is_skipped_byte_by_byte() {
        let input: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            verdicts(&chunks),
            vec![Verdict::Clean, Verdict::ContentLengthAndTransferEncoding]
        );
    }

    #[test]
    fn content_length_and_transfer_encoding_is_flagged_in_either_order() {
        assert_eq!(
            verdicts(&[
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            ]),
            vec![Verdict::ContentLengthAndTransferEncoding]
        );
        assert_eq!(
            verdicts(&[
                b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
            ]),
            vec![Verdict::ContentLengthAndTransferEncoding]
        );
    }

    #[test]
    fn bare_lf_is_flagged() {
        assert_eq!(
            verdicts(&[b"GET / HTTP/1.1\nHost: x\r\n\r\n"]),
            vec![Verdict::BareLf]
        );
        assert_eq!(verdicts(&[b"GET / HTTP/1.1\n\n"]), vec![Verdict::BareLf]);
    }

    #[test]
    fn body_text_that_looks_like_headers_is_not_inspected() {
        let v = verdicts(&[
            b"POST / HTTP/1.1\r\nContent-Length: 51\r\n\r\n",
            b"GET / HTTP/1.1\nContent-Length: 1\r\nTransfer-Encoding",
            b"GET / HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(v, vec![Verdict::Clean, Verdict::Clean]);
    }

    #[test]
    fn head_in_progress_tracks_partial_heads_only() {
        let mut f = FramingInspector::new(65536);
        assert!(!f.head_in_progress());
        f.feed(b"GET / HT");
        assert!(f.head_in_progress());
        f.feed(b"TP/1.1\r\n\r\n");
        assert!(!f.head_in_progress());
    }

    #[test]
    fn oversized_head_turns_the_inspector_off() {
        let mut f = FramingInspector::new(16);
        f.feed(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaa");
        f.feed(b"\r\n\r\nGET / HTTP/1.1\nHost: x\r\n\r\n");
        assert_eq!(f.take_verdict(), None);
    }

    #[test]
    fn many_tiny_pipelined_heads_in_one_read_do_not_recurse() {
        let input = b"G\r\n\r\n".repeat(100_000);
        let mut f = FramingInspector::new(65536);
        f.feed(&input);
        let n = std::iter::from_fn(|| f.take_verdict()).count();
        assert_eq!(n, 100_000);
    }

    #[test]
    fn upgrade_stops_inspection() {
        let v = verdicts(&[b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello\nfoo\n\n"]);
        assert_eq!(v, vec![Verdict::Clean]);
    }
}
