//! The WebSocket relay. An upgrade request to a slot is not handed to
//! Pingora's proxy loop: the gateway opens the slot's socket itself, passes
//! the handshake, takes the client's connection out of Pingora's session
//! after the `101` and copies bytes both ways in one task.
//!
//! Why: for an upgraded connection Pingora relays every read as an HTTP
//! body chunk (a task per direction, a channel between them, a timer per
//! read, body filters on both sides), about 19 000 instructions per echoed
//! keystroke; this loop costs a fraction of that, which is what a
//! keystroke's round trip and its tail latency are made of
//! (`docs/benchmarks.md`, "Per keystroke").
//!
//! Pingora keeps a stand-in session in place of the one taken: it holds the
//! same request and the `101` (parsed and written in memory), so Pingora's
//! `logging` phase and its clean-up see a finished upgrade and the access
//! log reads it like any other.
//!
//! What the frames mean (recording, viewer filtering, revocation) is the
//! gateway's business, behind [`Frames`]; this module only moves bytes.

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::protocols::http::v1::server::HttpSession as SessionV1;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OkOrErr, OrErr, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response head accepted from a slot.
const MAX_HEAD: usize = 32 * 1024;
/// Bytes read per call in each direction.
pub const CHUNK: usize = 16 * 1024;
/// After the client has gone, how long the slot's last frames (its close
/// reply) are still relayed before the connection is dropped.
const LINGER: Duration = Duration::from_secs(5);

/// What to do with bytes on their way through.
pub enum Verdict {
    /// Forward them unchanged.
    Pass,
    /// Forward these bytes instead (possibly none).
    Replace(Vec<u8>),
    /// End the session; the label goes to the access log's `error`.
    Close(&'static str),
}

/// The gateway's view of the frames passing through.
pub trait Frames {
    /// Bytes from the client, before they reach the slot.
    fn client_sent(&mut self, bytes: &[u8]) -> Verdict;
    /// Bytes from the slot, before they reach the client; `None` when the
    /// slot closed its end (a last word may still be sent).
    fn slot_sent(&mut self, bytes: Option<&[u8]>) -> Verdict;
}

/// How a relayed session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The slot closed its end.
    SlotClosed,
    /// The client closed its end.
    ClientClosed,
    /// Reading from or writing to the client failed.
    ClientError,
    /// Reading from or writing to the slot failed.
    SlotError,
    /// [`Frames`] ended it.
    Closed(&'static str),
}

impl Ended {
    /// The access log's `error` for this end, if it is one.
    pub fn error(&self) -> Option<&'static str> {
        match self {
            Ended::SlotClosed | Ended::ClientClosed => None,
            Ended::ClientError => Some("client_gone"),
            Ended::SlotError => Some("proxy_error"),
            Ended::Closed(label) => Some(label),
        }
    }
}

/// Connect to a slot's socket within `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    let peer = stream.peer_cred()?.uid();
    check_slot_peer(path, peer)?;
    Ok(stream)
}

/// A slot's socket must be served by the slot's own uid: the owner of its
/// directory (`<run>/slots/<id>/`, made by slotctl in a directory no slot
/// can write). A socket file there replaced by a link to another slot's
/// socket would otherwise hand this user someone else's terminal.
pub fn check_slot_peer(socket: &Path, peer_uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = socket.parent().unwrap_or(socket);
    let owner = std::fs::symlink_metadata(dir)?.uid();
    if owner == peer_uid {
        return Ok(());
    }
    tracing::warn!(
        socket = %socket.display(),
        owner,
        peer_uid,
        "a slot socket is served by another uid than its slot's; refused"
    );
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is served by uid {peer_uid}, not the slot's uid {owner}",
            socket.display()
        ),
    ))
}

/// Send the upgrade request to the slot and read its response head.
/// Returns the head and whatever the slot sent after it (already frames).
pub async fn handshake(
    slot: &mut UnixStream,
    req: &pingora::http::RequestHeader,
    timeout: Duration,
) -> Result<(ResponseHeader, BytesMut)> {
    let wire = http_req_header_to_wire(req)
        .or_err(ErrorType::InvalidHTTPHeader, "request cannot be sent")?;
    let exchange = async {
        slot.write_all(&wire)
            .await
            .or_err(ErrorType::WriteError, "sending the upgrade request")?;
        read_head(slot).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(ErrorType::ReadTimedout, "slot did not answer the upgrade"),
    }
}

/// Read and parse an HTTP/1.1 response head.
async fn read_head(slot: &mut UnixStream) -> Result<(ResponseHeader, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        buf.reserve(1024);
        let n = slot
            .read_buf(&mut buf)
            .await
            .or_err(ErrorType::ReadError, "reading the slot's answer")?;
        if n == 0 {
            return Error::e_explain(ErrorType::ConnectionClosed, "slot closed before answering");
        }
        if let Some((resp, len)) = parse_head(&buf)? {
            let rest = buf.split_off(len);
            return Ok((resp, rest));
        }
        if buf.len() > MAX_HEAD {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "slot's answer head too large");
        }
    }
}

/// Parse a complete response head at the start of `buf`: the header and
/// its length. `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHeader, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, format!("slot's answer: {e}"))
        }
    };
    let code = parsed.code.unwrap_or_default();
    let mut builder = http::Response::builder().status(code);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let parts = builder
        .body(())
        .or_err(ErrorType::InvalidHTTPHeader, "slot's answer head")?
        .into_parts()
        .0;
    let mut resp = ResponseHeader::from(parts);
    if parsed
        .reason
        .is_some_and(|r| Some(r) != resp.status.canonical_reason())
    {
        resp.set_reason_phrase(parsed.reason)?;
    }
    Ok(Some((resp, len)))
}

/// `resp` as an HTTP/1.1 response head.
pub fn response_to_wire(resp: &ResponseHeader) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(resp.status.as_str().as_bytes());
    buf.push(b' ');
    if let Some(reason) = resp.get_reason_phrase() {
        buf.extend_from_slice(reason.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    resp.header_to_h1_wire(&mut buf);
    buf.extend_from_slice(b"\r\n");
    buf
}

/// Take the client's connection out of an HTTP/1.1 `session`, leaving a
/// stand-in that holds the same request and `resp` as written (see the
/// module docs). Nothing is written to the client.
pub async fn take_client(session: &mut Session, resp: &ResponseHeader) -> Result<Stream> {
    if !matches!(*session.downstream_session, ServerSession::H1(_)) {
        return Error::e_explain(ErrorType::InternalError, "upgrade relay needs HTTP/1.1");
    }
    let wire = http_req_header_to_wire(session.req_header())
        .or_err(ErrorType::InvalidHTTPHeader, "request cannot be restated")?;
    let mut stand_in = SessionV1::new(Box::new(Cursor::new(wire.to_vec())));
    stand_in.read_request().await?;
    stand_in
        .write_response_header(Box::new(resp.clone()))
        .await?;
    let mut stand_in = ServerSession::H1(stand_in);
    stand_in.set_keepalive(None);
    match std::mem::replace(&mut *session.downstream_session, stand_in) {
        ServerSession::H1(real) => Ok(real.into_inner()),
        _ => unreachable!("checked above"),
    }
}

/// Copy bytes between the client and the slot until one side ends,
/// passing each read through `frames`. `first` is what the slot sent
/// right after its response head.
pub async fn relay(
    client: &mut Stream,
    slot: &mut UnixStream,
    first: &[u8],
    frames: &mut impl Frames,
) -> Ended {
    if !first.is_empty() {
        if let Some(end) = to_client(client, first, frames).await {
            return end;
        }
    }
    let mut from_client = vec![0u8; CHUNK];
    let mut from_slot = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = client.read(&mut from_client) => match r {
                Ok(0) => break,
                Err(_) => return Ended::ClientError,
                Ok(n) => {
                    let out = match frames.client_sent(&from_client[..n]) {
                        Verdict::Pass => slot.write_all(&from_client[..n]).await,
                        Verdict::Replace(b) if b.is_empty() => Ok(()),
                        Verdict::Replace(b) => slot.write_all(&b).await,
                        Verdict::Close(label) => return Ended::Closed(label),
                    };
                    if out.is_err() {
                        return Ended::SlotError;
                    }
                }
            },
            r = slot.read(&mut from_slot) => match r {
                Ok(0) => return slot_closed(client, frames).await,
                Err(_) => return Ended::SlotError,
                Ok(n) => {
                    if let Some(end) = to_client(client, &from_slot[..n], frames).await {
                        return end;
                    }
                }
            },
        }
    }
    // The client is gone: tell the slot, and pass on its last frames (the
    // reply to a close) for a moment.
    let _ = slot.shutdown().await;
    let linger = async {
        loop {
            match slot.read(&mut from_slot).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client(client, &from_slot[..n], frames).await.is_some() {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
    Ended::ClientClosed
}

/// Send the slot's bytes to the client. `Some` ends the session.
async fn to_client(client: &mut Stream, bytes: &[u8], frames: &mut impl Frames) -> Option<Ended> {
    let out = match frames.slot_sent(Some(bytes)) {
        Verdict::Pass => write_flush(client, bytes).await,
        Verdict::Replace(b) if b.is_empty() => Ok(()),
        Verdict::Replace(b) => write_flush(client, &b).await,
        Verdict::Close(label) => return Some(Ended::Closed(label)),
    };
    out.err().map(|_| Ended::ClientError)
}

/// The slot closed its end: its last word (if the gateway has one), then
/// close the client's end.
async fn slot_closed(client: &mut Stream, frames: &mut impl Frames) -> Ended {
    let end = match frames.slot_sent(None) {
        Verdict::Replace(b) if !b.is_empty() => match write_flush(client, &b).await {
            Ok(()) => Ended::SlotClosed,
            Err(_) => Ended::ClientError,
        },
        Verdict::Close(label) => Ended::Closed(label),
        _ => Ended::SlotClosed,
    };
    let _ = client.shutdown().await;
    end
}

/// Write `bytes` to the client and flush them (a TLS stream holds them
/// back otherwise).
pub async fn write_flush(client: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_with_its_reason_and_what_follows_is_left() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\n\x81\x01x";
        let (resp, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(resp.status, 101);
        assert_eq!(&raw[len..], b"\x81\x01x");
        assert_eq!(resp.headers["upgrade"], "websocket");
        assert_eq!(resp.headers["sec-websocket-accept"], "abc");
        let wire = response_to_wire(&resp);
        let text = String::from_utf8(wire).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text
            .to_ascii_lowercase()
            .contains("connection: upgrade\r\n"));
    }

    /// Hooks for the relay tests: a leading "drop" from the client is swallowed,
    /// "bad" ends the session, and the slot's close gets a last word.
    struct TestFrames;

    impl Frames for TestFrames {
        fn client_sent(&mut self, bytes: &[u8]) -> Verdict {
            // (What the client writes next may come in the same read.)
            match bytes.strip_prefix(b"drop") {
                Some(rest) => Verdict::Replace(rest.to_vec()),
                None if bytes == b"bad" => Verdict::Close("bad_frame"),
                None => Verdict::Pass,
            }
        }
        fn slot_sent(&mut self, bytes: Option<&[u8]>) -> Verdict {
            match bytes {
                None => Verdict::Replace(b"bye".to_vec()),
                Some(b"loud") => Verdict::Replace(b"quiet".to_vec()),
                Some(_) => Verdict::Pass,
            }
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    /// A relay between real socket pairs: (browser end, ttyd end, relay).
    fn start_relay() -> (UnixStream, UnixStream, tokio::task::JoinHandle<Ended>) {
        let (client, browser) = UnixStream::pair().unwrap();
        let (mut slot, ttyd) = UnixStream::pair().unwrap();
        let mut client: Stream = Box::new(client);
        let relay =
            tokio::spawn(
                async move { relay(&mut client, &mut slot, b"hello", &mut TestFrames).await },
            );
        (browser, ttyd, relay)
    }

    async fn read_some(s: &mut UnixStream) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("bytes within the wait")
            .unwrap();
        buf.truncate(n);
        buf
    }

    async fn read_exact(s: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(WAIT, s.read_exact(&mut buf))
            .await
            .expect("bytes within the wait")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_through_the_hooks_and_the_slot_closing_ends_it() {
        let (mut browser, mut ttyd, relay) = start_relay();
        assert_eq!(read_exact(&mut browser, 5).await, b"hello");

        browser.write_all(b"abc").await.unwrap();
        assert_eq!(read_exact(&mut ttyd, 3).await, b"abc");
        // Swallowed: the next thing the slot reads is what came after.
        browser.write_all(b"drop").await.unwrap();
        browser.write_all(b"xyz").await.unwrap();
        assert_eq!(read_exact(&mut ttyd, 3).await, b"xyz");

        ttyd.write_all(b"out").await.unwrap();
        assert_eq!(read_exact(&mut browser, 3).await, b"out");
        ttyd.write_all(b"loud").await.unwrap();
        assert_eq!(read_exact(&mut browser, 5).await, b"quiet");

        drop(ttyd);
        assert_eq!(read_exact(&mut browser, 3).await, b"bye");
        assert_eq!(
            read_some(&mut browser).await,
            b"",
            "the client's end is closed"
        );
        let ended = tokio::time::timeout(WAIT, relay).await.unwrap().unwrap();
        assert_eq!(ended, Ended::SlotClosed);
        assert_eq!(ended.error(), None);
    }

    #[tokio::test]
    async fn the_client_leaving_closes_the_slots_end_and_its_last_frames_still_pass() {
        let (mut browser, mut ttyd, relay) = start_relay();
        assert_eq!(read_exact(&mut browser, 5).await, b"hello");
        browser.shutdown().await.unwrap();
        assert_eq!(read_some(&mut ttyd).await, b"", "the slot sees the end");
        ttyd.write_all(b"close-reply").await.unwrap();
        assert_eq!(read_exact(&mut browser, 11).await, b"close-reply");
        drop(ttyd);
        let ended = tokio::time::timeout(WAIT, relay).await.unwrap().unwrap();
        assert_eq!(ended, Ended::ClientClosed);
    }

    #[tokio::test]
    async fn a_hook_can_end_the_session_with_its_reason() {
        let (mut browser, mut ttyd, relay) = start_relay();
        assert_eq!(read_exact(&mut browser, 5).await, b"hello");
        browser.write_all(b"bad").await.unwrap();
        let ended = tokio::time::timeout(WAIT, relay).await.unwrap().unwrap();
        assert_eq!(ended.error(), Some("bad_frame"));
        assert_eq!(
            read_some(&mut ttyd).await,
            b"",
            "the bad bytes never reached the slot"
        );
    }

    #[test]
    fn a_custom_reason_phrase_is_kept_and_a_partial_head_waits() {
        let (resp, _) = parse_head(b"HTTP/1.1 403 Go Away\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("Go Away"));
        assert!(response_to_wire(&resp).starts_with(b"HTTP/1.1 403 Go Away\r\n"));
        assert!(parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgr")
            .unwrap()
            .is_none());
        assert!(parse_head(b"HTTP/1.1 1x1 Nope\r\n\r\n").is_err());
    }
}
