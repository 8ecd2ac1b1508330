//! The read-only viewer filter: an incremental parser of client→ttyd
//! WebSocket frames that forwards only what cannot change the terminal.
//!
//! ttyd's `--writable` is per process, not per client, so a viewer's
//! keystrokes must be dropped at the proxy. The proxy sees the upgraded
//! connection as raw byte chunks that do not align with frames: a frame may
//! span chunks and a chunk may hold many frames, so this parser keeps state
//! across calls and streams payload bytes instead of buffering frames.
//!
//! Policy (an allow-list): control frames (close, ping, pong) pass; of the
//! data messages only the JSON hello (`{…}`, ttyd's first message) and
//! PAUSE/RESUME (`2`/`3`, flow control) pass. INPUT (`0`), RESIZE (`1`) and
//! anything unknown are dropped whole, including all their continuation
//! frames. Compressed frames (RSV1) are refused: the proxy strips
//! `permessage-deflate` so that every frame stays inspectable.

/// Why the stream cannot be filtered; the proxy must close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("compressed or extension frame (RSV bits set); permessage-deflate must be stripped")]
    Reserved,
    #[error("unmasked client frame")]
    Unmasked,
    #[error("reserved opcode {0:#x}")]
    Opcode(u8),
    #[error("continuation frame without a message")]
    Orphan,
    #[error("control frame too long or fragmented")]
    BadControl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

#[derive(Debug)]
enum State {
    /// Collecting a frame header (2 to 14 bytes).
    Header,
    /// A data message starts; its verdict needs the first payload byte.
    NeedFirstByte,
    /// Streaming `left` payload bytes with a known verdict.
    Payload { left: u64, verdict: Verdict },
    /// A protocol error was reported; everything after it is dropped.
    Broken,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub frames_passed: u64,
    pub frames_dropped: u64,
    pub messages_dropped: u64,
}

#[derive(Debug)]
pub struct ViewerFilter {
    state: State,
    header: Vec<u8>,
    fin: bool,
    mask: [u8; 4],
    len: u64,
    /// Verdict of the data message in progress (for continuation frames).
    message: Option<Verdict>,
    /// Whether the next data message is the connection's first.
    first_message: bool,
    pub counts: Counts,
}

impl Default for ViewerFilter {
    fn default() -> Self {
        Self::new()
    }
}

/// What a message starting with `first` may do, for a viewer.
fn verdict_for(first: u8, first_message: bool) -> Verdict {
    match first {
        b'{' if first_message => Verdict::Pass,
        b'2' | b'3' => Verdict::Pass,
        _ => Verdict::Drop,
    }
}

impl ViewerFilter {
    pub fn new() -> Self {
        ViewerFilter {
            state: State::Header,
            header: Vec::with_capacity(14),
            fin: false,
            mask: [0; 4],
            len: 0,
            message: None,
            first_message: true,
            counts: Counts::default(),
        }
    }

    /// Feed one chunk; append what may be forwarded to `out`. After an
    /// error the connection must be closed; further input is ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        loop {
            match self.state {
                State::Broken => return Ok(()),
                State::Payload { left: 0, verdict } => self.end_frame(verdict),
                _ if input.is_empty() => return Ok(()),
                State::Header => {
                    let take = (self.header_len() - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    // The length may grow once the second byte is known.
                    if self.header.len() == self.header_len() {
                        if let Err(e) = self.parse_header(out) {
                            self.state = State::Broken;
                            return Err(e);
                        }
                    }
                }
                State::NeedFirstByte => {
                    let v = verdict_for(input[0] ^ self.mask[0], self.first_message);
                    self.first_message = false;
                    if v == Verdict::Drop {
                        self.counts.messages_dropped += 1;
                    }
                    self.message = Some(v);
                    self.begin_payload(v, out);
                }
                State::Payload { left, verdict } => {
                    let take = left.min(input.len() as u64) as usize;
                    if verdict == Verdict::Pass {
                        out.extend_from_slice(&input[..take]);
                    }
                    input = &input[take..];
                    self.state = State::Payload {
                        left: left - take as u64,
                        verdict,
                    };
                }
            }
        }
    }

    /// Bytes of the header as far as it is known.
    fn header_len(&self) -> usize {
        if self.header.len() < 2 {
            return 2;
        }
        let base = match self.header[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        base + if self.header[1] & 0x80 != 0 { 4 } else { 0 }
    }

    fn parse_header(&mut self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let h = &self.header;
        if h[0] & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        if h[1] & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (n as u64, 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.fin = fin;
        self.len = len;
        match opcode {
            0x8..=0xa => {
                if !fin || len > 125 {
                    return Err(FrameError::BadControl);
                }
                self.begin_payload(Verdict::Pass, out);
            }
            0x0 => {
                let v = self.message.ok_or(FrameError::Orphan)?;
                self.begin_payload(v, out);
            }
            0x1 | 0x2 => {
                if len == 0 {
                    // No command byte to judge: nothing a viewer needs.
                    self.counts.messages_dropped += 1;
                    self.message = Some(Verdict::Drop);
                    self.begin_payload(Verdict::Drop, out);
                } else {
                    self.state = State::NeedFirstByte;
                }
            }
            other => return Err(FrameError::Opcode(other)),
        }
        Ok(())
    }

    fn begin_payload(&mut self, verdict: Verdict, out: &mut Vec<u8>) {
        if verdict == Verdict::Pass {
            out.extend_from_slice(&self.header);
        }
        self.state = State::Payload {
            left: self.len,
            verdict,
        };
    }

    fn end_frame(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Pass => self.counts.frames_passed += 1,
            Verdict::Drop => self.counts.frames_dropped += 1,
        }
        let opcode = self.header[0] & 0x0f;
        // A data message ends with its FIN frame (control frames may be
        // interleaved and do not end it).
        if opcode < 0x8 && self.fin {
            self.message = None;
        }
        self.header.clear();
        self.state = State::Header;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Unmask every frame of a forwarded stream back into (opcode, payload).
    fn decode(mut s: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = vec![];
        while !s.is_empty() {
            let opcode = s[0] & 0x0f;
            let (len, at) = match s[1] & 0x7f {
                126 => (u16::from_be_bytes([s[2], s[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(s[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mask = &s[at..at + 4];
            let p: Vec<u8> = s[at + 4..at + 4 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            out.push((opcode, p));
            s = &s[at + 4 + len..];
        }
        out
    }

    fn run(stream: &[u8], chunk: usize) -> (Vec<u8>, Counts) {
        let mut f = ViewerFilter::new();
        let mut out = vec![];
        for c in stream.chunks(chunk.max(1)) {
            f.feed(c, &mut out).unwrap();
        }
        (out, f.counts)
    }

    fn session() -> Vec<u8> {
        let mut s = vec![];
        s.extend(frame(
            true,
            2,
            br#"{"AuthToken":"","columns":80,"rows":24}"#,
        ));
        s.extend(frame(true, 2, b"0rm -rf ~\r"));
        s.extend(frame(true, 9, b"ping"));
        s.extend(frame(true, 2, br#"1{"columns":10,"rows":5}"#));
        s.extend(frame(true, 2, b"2"));
        // A fragmented INPUT message with a ping in the middle.
        s.extend(frame(false, 2, b"0ec"));
        s.extend(frame(true, 9, b""));
        s.extend(frame(true, 0, b"ho pwned\r"));
        s.extend(frame(true, 2, b"3"));
        // A second hello must not pass (only the first message may be JSON).
        s.extend(frame(true, 1, br#"{"columns":1}"#));
        // A long INPUT (16-bit length) and a huge one (64-bit length).
        s.extend(frame(true, 2, &[b'0'; 300]));
        let mut big = vec![b'0'];
        big.extend(vec![b'x'; 70_000]);
        s.extend(frame(true, 2, &big));
        s.extend(frame(true, 8, &[0x03, 0xe8]));
        s
    }

    #[test]
    fn viewer_keeps_hello_flow_control_and_control_frames_only() {
        let (out, counts) = run(&session(), 1 << 20);
        let got = decode(&out);
        let want: Vec<(u8, Vec<u8>)> = vec![
            (2, br#"{"AuthToken":"","columns":80,"rows":24}"#.to_vec()),
            (9, b"ping".to_vec()),
            (2, b"2".to_vec()),
            (9, b"".to_vec()),
            (2, b"3".to_vec()),
            (8, vec![0x03, 0xe8]),
        ];
        assert_eq!(got, want);
        assert_eq!(counts.messages_dropped, 6);
        assert_eq!(counts.frames_dropped, 7);
    }

    #[test]
    fn any_chunking_gives_the_same_output() {
        let s = session();
        let (whole, _) = run(&s, s.len());
        for chunk in [1, 2, 3, 5, 7, 13, 64, 1000] {
            let (out, _) = run(&s, chunk);
            assert_eq!(out, whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn no_input_byte_survives_in_any_chunking() {
        // Property: decoded output never contains a message starting with 0 or 1.
        let s = session();
        for chunk in 1..40 {
            let (out, _) = run(&s, chunk);
            for (op, p) in decode(&out) {
                if op == 1 || op == 2 {
                    assert!(
                        p.first() != Some(&b'0') && p.first() != Some(&b'1'),
                        "chunk {chunk}: {p:?}"
                    );
                }
                assert!(!String::from_utf8_lossy(&p).contains("pwned"));
            }
        }
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut f = ViewerFilter::new();
        let mut out = vec![];
        let mut compressed = frame(true, 2, b"0x");
        compressed[0] |= 0x40;
        assert_eq!(f.feed(&compressed, &mut out), Err(FrameError::Reserved));
        assert!(out.is_empty());
        // Broken stays broken.
        assert_eq!(f.feed(&frame(true, 2, b"2"), &mut out), Ok(()));
        assert!(out.is_empty());

        let mut f = ViewerFilter::new();
        let unmasked = [0x82, 0x01, b'0'];
        assert_eq!(f.feed(&unmasked, &mut out), Err(FrameError::Unmasked));
        let mut f = ViewerFilter::new();
        assert_eq!(
            f.feed(&frame(true, 0, b"0x"), &mut out),
            Err(FrameError::Orphan)
        );
        let mut f = ViewerFilter::new();
        assert_eq!(
            f.feed(&frame(false, 9, b""), &mut out),
            Err(FrameError::BadControl)
        );
        let mut f = ViewerFilter::new();
        assert_eq!(
            f.feed(&frame(true, 3, b""), &mut out),
            Err(FrameError::Opcode(3))
        );
    }
}
