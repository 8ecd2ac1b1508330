//! A client that speaks ttyd's WebSocket protocol (subprotocol `tty`): the
//! JSON hello, then one command byte plus payload per message. Used by the
//! tests and the benchmarks, over a slot's unix socket or through slotgate.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub struct TtydClient<S> {
    ws: WebSocketStream<S>,
    /// Everything the terminal printed so far (OUTPUT payloads, lossy UTF-8).
    pub screen: String,
}

/// Connect to a slot's socket directly (as slotctl and slotgate do), with
/// `auth` in ttyd's auth header.
pub async fn connect_unix(
    socket: &Path,
    slot: &str,
    auth: &str,
) -> anyhow::Result<TtydClient<tokio::net::UnixStream>> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let mut req = format!("ws://localhost/slot/{slot}/ws").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("tty"));
    req.headers_mut()
        .insert(slotapi::TTYD_AUTH_HEADER, HeaderValue::from_str(auth)?);
    let (ws, _resp) = tokio_tungstenite::client_async(req, stream).await?;
    TtydClient::start(ws).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> TtydClient<S> {
    /// Send the hello that makes ttyd start (or attach) the command.
    pub async fn start(mut ws: WebSocketStream<S>) -> anyhow::Result<Self> {
        let hello = serde_json::json!({"AuthToken": "", "columns": 120, "rows": 30}).to_string();
        ws.send(Message::Binary(hello.into_bytes().into())).await?;
        Ok(TtydClient {
            ws,
            screen: String::new(),
        })
    }

    /// Type `text` (INPUT message).
    pub async fn input(&mut self, text: &str) -> anyhow::Result<()> {
        let mut msg = vec![b'0'];
        msg.extend_from_slice(text.as_bytes());
        self.ws.send(Message::Binary(msg.into())).await?;
        Ok(())
    }

    /// Send a RESIZE message.
    pub async fn resize(&mut self, columns: u16, rows: u16) -> anyhow::Result<()> {
        let mut msg = vec![b'1'];
        msg.extend_from_slice(
            serde_json::json!({"columns": columns, "rows": rows})
                .to_string()
                .as_bytes(),
        );
        self.ws.send(Message::Binary(msg.into())).await?;
        Ok(())
    }

    /// Read output until `needle` has appeared (after `from` bytes of the
    /// screen), or fail after `limit`.
    pub async fn expect_from(
        &mut self,
        from: usize,
        needle: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.screen.len() > from && self.screen[from..].contains(needle) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "{needle:?} did not appear within {limit:?}; screen so far: {:?}",
                    tail(&self.screen)
                );
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => continue,
                Ok(None) => anyhow::bail!(
                    "connection closed before {needle:?} appeared; screen: {:?}",
                    tail(&self.screen)
                ),
                Ok(Some(Err(e))) => anyhow::bail!("websocket error before {needle:?}: {e}"),
                Ok(Some(Ok(msg))) => self.absorb(msg),
            }
        }
    }

    pub async fn expect(&mut self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        self.expect_from(0, needle, limit).await
    }

    /// Read whatever arrives within `window` (for asserting that something
    /// does NOT appear).
    pub async fn drain_for(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.ws.next(),
        )
        .await
        {
            self.absorb(msg);
        }
    }

    fn absorb(&mut self, msg: Message) {
        let data = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            _ => return,
        };
        if data.first() == Some(&b'0') {
            self.screen.push_str(&String::from_utf8_lossy(&data[1..]));
        }
    }

    /// Whether the server closed the connection within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.ws.next(),
            )
            .await
            {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(msg))) => self.absorb(msg),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(400);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
