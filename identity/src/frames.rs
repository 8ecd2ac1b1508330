//! WebSocket frames seen from the proxy. The proxy sees an upgraded
//! connection as raw byte chunks that do not align with frames: a frame may
//! span chunks and a chunk may hold many frames. [`Deframer`] is the one
//! incremental frame parser for both directions (client frames must be
//! masked, server frames must not be); it keeps state across calls and
//! streams payload bytes instead of buffering frames. Two users sit on it:
//!
//! - [`ViewerFilter`], the read-only viewer filter for client→ttyd frames,
//!   which forwards only what cannot change the terminal;
//! - [`MessageReader`], which reassembles data messages (fragmented or not)
//!   into unmasked payload pieces, for the session recorder.
//!
//! Viewer policy (an allow-list): control frames (close, ping, pong) pass;
//! of the data messages only the JSON hello (`{…}`, ttyd's first message)
//! and PAUSE/RESUME (`2`/`3`, flow control) pass. INPUT (`0`), RESIZE (`1`)
//! and anything unknown are dropped whole, including all their continuation
//! frames. Compressed frames (RSV1) are refused: the proxy strips
//! `permessage-deflate` so that every frame stays inspectable.

/// Why the stream cannot be parsed; a filter must close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("compressed or extension frame (RSV bits set); permessage-deflate must be stripped")]
    Reserved,
    #[error("unmasked client frame")]
    Unmasked,
    #[error("masked server frame")]
    Masked,
    #[error("reserved opcode {0:#x}")]
    Opcode(u8),
    #[error("continuation frame without a message")]
    Orphan,
    #[error("control frame too long or fragmented")]
    BadControl,
}

/// Which side sent the frames: clients must mask, servers must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// One parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    /// Payload length.
    pub len: u64,
    pub mask: Option<[u8; 4]>,
}

impl FrameHeader {
    /// A data frame (text, binary or continuation).
    pub fn is_data(&self) -> bool {
        self.opcode < 0x8
    }

    /// Append `raw` (payload bytes starting at payload `offset`) unmasked.
    pub fn unmask_into(&self, offset: u64, raw: &[u8], out: &mut Vec<u8>) {
        match self.mask {
            None => out.extend_from_slice(raw),
            Some(m) => out.extend(
                raw.iter()
                    .enumerate()
                    .map(|(i, b)| b ^ m[((offset + i as u64) % 4) as usize]),
            ),
        }
    }
}

/// What [`Deframer::next`] found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// A complete header; its raw bytes are [`Deframer::header_bytes`].
    Header(FrameHeader),
    /// Raw (still masked) payload bytes starting at payload `offset`.
    Payload { raw: &'a [u8], offset: u64 },
    /// The frame's payload is complete.
    End(FrameHeader),
}

#[derive(Debug)]
enum DState {
    Header,
    Payload { offset: u64 },
    Broken,
}

/// The incremental frame parser shared by every frame-aware filter.
#[derive(Debug)]
pub struct Deframer {
    direction: Direction,
    state: DState,
    header: Vec<u8>,
    current: FrameHeader,
    /// A data message is in progress (continuation frames are allowed).
    in_message: bool,
}

impl Deframer {
    pub fn new(direction: Direction) -> Deframer {
        Deframer {
            direction,
            state: DState::Header,
            header: Vec::with_capacity(14),
            current: FrameHeader {
                fin: true,
                opcode: 0,
                len: 0,
                mask: None,
            },
            in_message: false,
        }
    }

    /// Raw bytes of the header just returned as [`Token::Header`].
    pub fn header_bytes(&self) -> &[u8] {
        &self.header
    }

    /// The next token from `input` (advanced past what was consumed), or
    /// `None` when `input` is exhausted. After an error the stream is
    /// broken: every later call returns `Ok(None)`.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Token<'a>>, FrameError> {
        loop {
            match self.state {
                DState::Broken => return Ok(None),
                DState::Payload { offset } if offset == self.current.len => {
                    let h = self.current;
                    if h.is_data() && h.fin {
                        self.in_message = false;
                    }
                    self.header.clear();
                    self.state = DState::Header;
                    return Ok(Some(Token::End(h)));
                }
                _ if input.is_empty() => return Ok(None),
                DState::Header => {
                    let take = (self.header_len() - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    // The length may grow once the second byte is known.
                    if self.header.len() == self.header_len() {
                        return match self.parse_header() {
                            Ok(h) => {
                                self.current = h;
                                self.state = DState::Payload { offset: 0 };
                                Ok(Some(Token::Header(h)))
                            }
                            Err(e) => {
                                self.state = DState::Broken;
                                Err(e)
                            }
                        };
                    }
                }
                DState::Payload { offset } => {
                    let take = (self.current.len - offset).min(input.len() as u64) as usize;
                    let raw = &input[..take];
                    *input = &input[take..];
                    self.state = DState::Payload {
                        offset: offset + take as u64,
                    };
                    return Ok(Some(Token::Payload { raw, offset }));
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

    fn parse_header(&mut self) -> Result<FrameHeader, FrameError> {
        let h = &self.header;
        if h[0] & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        let masked = h[1] & 0x80 != 0;
        match (self.direction, masked) {
            (Direction::ClientToServer, false) => return Err(FrameError::Unmasked),
            (Direction::ServerToClient, true) => return Err(FrameError::Masked),
            _ => {}
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
        let mask = masked.then(|| {
            let mut m = [0; 4];
            m.copy_from_slice(&h[mask_at..mask_at + 4]);
            m
        });
        match opcode {
            0x8..=0xa => {
                if !fin || len > 125 {
                    return Err(FrameError::BadControl);
                }
            }
            0x0 => {
                if !self.in_message {
                    return Err(FrameError::Orphan);
                }
            }
            0x1 | 0x2 => self.in_message = true,
            other => return Err(FrameError::Opcode(other)),
        }
        Ok(FrameHeader {
            fin,
            opcode,
            len,
            mask,
        })
    }
}

/// Counts the complete frames in one direction of a session (the access
/// log's `frames_in` and `frames_out`). A stream that cannot be parsed
/// stops the count where it broke; counting never stops the bytes.
#[derive(Debug)]
pub struct FrameCounter {
    deframer: Deframer,
    pub frames: u64,
}

impl FrameCounter {
    pub fn new(direction: Direction) -> FrameCounter {
        FrameCounter {
            deframer: Deframer::new(direction),
            frames: 0,
        }
    }

    /// The next bytes of the stream, split anywhere.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Ok(Some(token)) = self.deframer.next(&mut bytes) {
            if let Token::End(_) = token {
                self.frames += 1;
            }
        }
    }
}

/// What a [`MessageReader`] reports, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A data message begins; `first` is its first payload byte (ttyd's
    /// command byte). Empty messages are skipped.
    Start { first: u8 },
    /// Unmasked payload bytes after the first byte (several per message
    /// when frames span chunks or the message is fragmented).
    Data(&'a [u8]),
    /// The message is complete.
    End,
}

/// Data messages reassembled from frames, unmasked, streamed: control
/// frames are skipped, fragmentation and chunking are invisible.
#[derive(Debug)]
pub struct MessageReader {
    frames: Deframer,
    /// The first byte of the current message is still to come.
    want_first: bool,
    /// A message was started (reported) and not yet ended.
    started: bool,
    scratch: Vec<u8>,
}

impl MessageReader {
    pub fn new(direction: Direction) -> MessageReader {
        MessageReader {
            frames: Deframer::new(direction),
            want_first: false,
            started: false,
            scratch: Vec::new(),
        }
    }

    /// Feed one chunk; `f` sees the messages' pieces.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut f: impl FnMut(Message<'_>),
    ) -> Result<(), FrameError> {
        while let Some(token) = self.frames.next(&mut input)? {
            match token {
                Token::Header(h) if h.opcode == 0x1 || h.opcode == 0x2 => {
                    self.want_first = true;
                    self.started = false;
                }
                Token::Header(_) => {}
                Token::Payload { raw, offset } => {
                    let h = self.frames.current;
                    if !h.is_data() || raw.is_empty() {
                        continue;
                    }
                    self.scratch.clear();
                    h.unmask_into(offset, raw, &mut self.scratch);
                    let mut data = &self.scratch[..];
                    if self.want_first {
                        self.want_first = false;
                        self.started = true;
                        f(Message::Start { first: data[0] });
                        data = &data[1..];
                    }
                    if !data.is_empty() {
                        f(Message::Data(data));
                    }
                }
                Token::End(h) => {
                    if h.is_data() && h.fin {
                        if self.started {
                            f(Message::End);
                        }
                        self.started = false;
                        self.want_first = false;
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub frames_passed: u64,
    pub frames_dropped: u64,
    pub messages_dropped: u64,
}

/// The read-only viewer filter over client→ttyd frames.
#[derive(Debug)]
pub struct ViewerFilter {
    frames: Deframer,
    /// Verdict of the frame in progress; `None` while a data frame waits
    /// for its first payload byte (its header is held back until then).
    frame: Option<Verdict>,
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
            frames: Deframer::new(Direction::ClientToServer),
            frame: None,
            message: None,
            first_message: true,
            counts: Counts::default(),
        }
    }

    /// Feed one chunk; append what may be forwarded to `out`. After an
    /// error the connection must be closed; further input is ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        while let Some(token) = self.frames.next(&mut input)? {
            match token {
                Token::Header(h) => {
                    let v = match h.opcode {
                        0x8..=0xa => Some(Verdict::Pass),
                        0x0 => self.message,
                        _ if h.len == 0 => {
                            // No command byte to judge: nothing a viewer needs.
                            self.counts.messages_dropped += 1;
                            self.message = Some(Verdict::Drop);
                            Some(Verdict::Drop)
                        }
                        // Judged on the first payload byte.
                        _ => None,
                    };
                    self.frame = v;
                    if v == Some(Verdict::Pass) {
                        out.extend_from_slice(self.frames.header_bytes());
                    }
                }
                Token::Payload { raw, offset } => {
                    let v = match self.frame {
                        Some(v) => v,
                        None => {
                            let h = self.frames.current;
                            let mut first = Vec::with_capacity(1);
                            h.unmask_into(offset, &raw[..1], &mut first);
                            let v = verdict_for(first[0], self.first_message);
                            self.first_message = false;
                            if v == Verdict::Drop {
                                self.counts.messages_dropped += 1;
                            } else {
                                out.extend_from_slice(self.frames.header_bytes());
                            }
                            self.message = Some(v);
                            self.frame = Some(v);
                            v
                        }
                    };
                    if v == Verdict::Pass {
                        out.extend_from_slice(raw);
                    }
                }
                Token::End(h) => {
                    match self.frame {
                        Some(Verdict::Pass) => self.counts.frames_passed += 1,
                        _ => self.counts.frames_dropped += 1,
                    }
                    self.frame = None;
                    if h.is_data() && h.fin {
                        self.message = None;
                    }
                }
            }
        }
        Ok(())
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

    /// An unmasked server frame.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = frame(fin, opcode, payload);
        // Rebuild without the mask: header byte 2 loses the mask bit and the
        // 4 mask bytes go; the payload is sent as is.
        let at = match f[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        f[1] &= 0x7f;
        f.truncate(at);
        f.extend_from_slice(payload);
        f
    }

    /// (first byte, rest) of every data message, as a MessageReader sees it.
    fn messages(dir: Direction, stream: &[u8], chunk: usize) -> Vec<(u8, Vec<u8>)> {
        let mut r = MessageReader::new(dir);
        let mut out: Vec<(u8, Vec<u8>)> = vec![];
        let mut open = false;
        for c in stream.chunks(chunk.max(1)) {
            r.feed(c, |m| match m {
                Message::Start { first } => {
                    assert!(!open, "Start inside a message");
                    open = true;
                    out.push((first, vec![]));
                }
                Message::Data(d) => out.last_mut().unwrap().1.extend_from_slice(d),
                Message::End => {
                    assert!(open, "End without Start");
                    open = false;
                }
            })
            .unwrap();
        }
        assert!(!open, "message left open");
        out
    }

    #[test]
    fn message_reader_reassembles_server_and_client_messages_in_any_chunking() {
        let mut server = vec![];
        server.extend(server_frame(true, 2, b"0hello \xe2\x82"));
        server.extend(server_frame(true, 9, b"ping"));
        server.extend(server_frame(false, 2, b"0fra"));
        server.extend(server_frame(true, 10, b""));
        server.extend(server_frame(false, 0, b"gmen"));
        server.extend(server_frame(true, 0, b"ted"));
        server.extend(server_frame(true, 2, b""));
        server.extend(server_frame(true, 1, b"1title"));
        let mut big = vec![b'0'];
        big.extend(vec![b'y'; 70_000]);
        server.extend(server_frame(true, 2, &big));
        let want = vec![
            (b'0', b"hello \xe2\x82".to_vec()),
            (b'0', b"fragmented".to_vec()),
            (b'1', b"title".to_vec()),
            (b'0', vec![b'y'; 70_000]),
        ];
        for chunk in [1, 2, 3, 7, 64, 100_000] {
            assert_eq!(
                messages(Direction::ServerToClient, &server, chunk),
                want,
                "chunk {chunk}"
            );
        }
        // Client frames: masked, unmasked on the way out.
        let client = session();
        let got = messages(Direction::ClientToServer, &client, 5);
        assert_eq!(got[0].0, b'{');
        assert_eq!(got[1], (b'0', b"rm -rf ~\r".to_vec()));
        assert_eq!(got[4], (b'0', b"echo pwned\r".to_vec()));
    }

    #[test]
    fn message_reader_enforces_masking_per_direction() {
        let mut r = MessageReader::new(Direction::ServerToClient);
        assert_eq!(
            r.feed(&frame(true, 2, b"0x"), |_| {}),
            Err(FrameError::Masked)
        );
        let mut r = MessageReader::new(Direction::ClientToServer);
        assert_eq!(
            r.feed(&server_frame(true, 2, b"0x"), |_| {}),
            Err(FrameError::Unmasked)
        );
    }

    #[test]
    fn frames_are_counted_however_the_stream_is_split() {
        let mut client = vec![];
        client.extend(frame(true, 0x2, b"0ls\r"));
        client.extend(frame(false, 0x1, &[b'x'; 300]));
        client.extend(frame(true, 0x0, b""));
        client.extend(frame(true, 0x9, b"ping"));
        let mut server = vec![];
        server.extend(server_frame(true, 0x2, &[b'0'; 70_000]));
        server.extend(server_frame(true, 0x8, &[0x03, 0xe8]));
        for chunk in [1, 3, 7, 64, 100_000] {
            let mut c = FrameCounter::new(Direction::ClientToServer);
            client.chunks(chunk).for_each(|b| c.feed(b));
            assert_eq!(c.frames, 4, "client stream in chunks of {chunk}");
            let mut s = FrameCounter::new(Direction::ServerToClient);
            server.chunks(chunk).for_each(|b| s.feed(b));
            assert_eq!(s.frames, 2, "server stream in chunks of {chunk}");
        }
        // A frame cut short is not counted; a stream that breaks stops
        // the count there.
        let mut c = FrameCounter::new(Direction::ClientToServer);
        c.feed(&client[..client.len() - 1]);
        assert_eq!(c.frames, 3);
        let mut s = FrameCounter::new(Direction::ServerToClient);
        s.feed(&frame(true, 0x2, b"masked from a server"));
        s.feed(&server);
        assert_eq!(s.frames, 0);
    }
}
