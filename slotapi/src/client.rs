//! A small HTTP/1.1 client for the daemon's unix socket. One connection per
//! call: the socket is local, a handshake costs microseconds, and it keeps the
//! client free of pooling state that a long-lived proxy would have to heal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::{
    Activity, AppInfo, CreateSlot, EnsureSlot, ErrorBody, Health, SlotId, SlotInfo, StartApps,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the daemon is not running.
    #[error("slotctl daemon is not running (no answer on {path}): {source}")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The daemon answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("control API call timed out after {0:?}")]
    Timeout(Duration),
    #[error("talking to the slotctl daemon: {0}")]
    Transport(String),
    #[error("unexpected answer from the slotctl daemon: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// A streamed response read line by line (`logs --follow`, events).
pub struct LineStream {
    body: Incoming,
    buf: BytesMut,
}

impl LineStream {
    /// Next complete line without its newline; `None` at end of stream.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let text = String::from_utf8_lossy(&line[..pos]).into_owned();
                return Ok(Some(text));
            }
            match self.body.frame().await {
                None => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let rest = self.buf.split();
                    return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
                }
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let content_type = body.as_ref().map(|_| "application/json");
        request_unix(
            &self.socket,
            method,
            path,
            "slotctl",
            content_type,
            &[],
            body,
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let timeout = self.timeout;
        let fut = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            decode(status, &bytes)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    fn json<B: Serialize>(body: &B) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(body).expect("request bodies serialise"))
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/health", None).await
    }

    pub async fn list(&self) -> Result<Vec<SlotInfo>, ClientError> {
        self.call(Method::GET, "/v1/slots", None).await
    }

    pub async fn get(&self, id: &SlotId) -> Result<SlotInfo, ClientError> {
        self.call(Method::GET, &format!("/v1/slots/{id}"), None)
            .await
    }

    pub async fn create(&self, req: &CreateSlot) -> Result<SlotInfo, ClientError> {
        self.call(Method::POST, "/v1/slots", Self::json(req)).await
    }

    /// `action` is one of `start`, `stop`, `restart`.
    pub async fn action(&self, id: &SlotId, action: &str) -> Result<SlotInfo, ClientError> {
        self.call(Method::POST, &format!("/v1/slots/{id}/{action}"), None)
            .await
    }

    pub async fn delete(&self, id: &SlotId, keep_sandbox: bool) -> Result<SlotInfo, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/slots/{id}?keep_sandbox={keep_sandbox}"),
            None,
        )
        .await
    }

    /// Start the slot if needed and return once it is online. The client's
    /// own timeout is stretched to cover the wait.
    pub async fn ensure(&self, id: &SlotId, wait: Duration) -> Result<SlotInfo, ClientError> {
        let body = EnsureSlot {
            timeout_ms: Some(wait.as_millis() as u64),
        };
        let client = self.clone().with_timeout(wait + Duration::from_secs(5));
        client
            .call(
                Method::POST,
                &format!("/v1/slots/{id}/ensure"),
                Self::json(&body),
            )
            .await
    }

    pub async fn activity(&self, id: &SlotId, activity: &Activity) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(
                Method::POST,
                &format!("/v1/slots/{id}/activity"),
                Self::json(activity),
            )
            .await?;
        Ok(())
    }

    /// A request whose answer is handed back unread (status, headers and a
    /// body that streams): slotgate forwards its public API this way.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        self.send(method, path, body).await
    }

    /// Any GET that answers JSON (for routes without a typed helper).
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// Any POST with an optional JSON body that answers JSON.
    pub async fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, body.and_then(Self::json))
            .await
    }

    /// Any PUT with a JSON body that answers JSON.
    pub async fn put_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Self::json(body)).await
    }

    /// Any DELETE that answers JSON.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    /// `GET /v1/apps`: every app instance, ordered by `pm_id`.
    pub async fn list_apps(&self) -> Result<Vec<AppInfo>, ClientError> {
        self.call(Method::GET, "/v1/apps", None).await
    }

    pub async fn get_app(&self, pm_id: u32) -> Result<AppInfo, ClientError> {
        self.call(Method::GET, &format!("/v1/apps/{pm_id}"), None)
            .await
    }

    /// Register runtime apps and start those with `autostart`.
    pub async fn start_apps(&self, req: &StartApps) -> Result<Vec<AppInfo>, ClientError> {
        self.call(Method::POST, "/v1/apps", Self::json(req)).await
    }

    /// `action` is one of `start`, `stop`, `restart`, `reload`, `reset`,
    /// `flush`.
    pub async fn app_action(&self, pm_id: u32, action: &str) -> Result<AppInfo, ClientError> {
        self.call(Method::POST, &format!("/v1/apps/{pm_id}/{action}"), None)
            .await
    }

    /// Stop the instance and forget it (a config app comes back on the
    /// next daemon start unless it is removed from the file).
    pub async fn delete_app(&self, pm_id: u32) -> Result<AppInfo, ClientError> {
        self.call(Method::DELETE, &format!("/v1/apps/{pm_id}"), None)
            .await
    }

    /// A streamed GET (`/v1/slots/{id}/logs?follow=true`, `/v1/events`).
    pub async fn stream(&self, path: &str) -> Result<LineStream, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            return Err(decode::<serde_json::Value>(status, &bytes).unwrap_err());
        }
        Ok(LineStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        let bytes = if bytes.is_empty() {
            b"null" as &[u8]
        } else {
            bytes
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
    } else {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(err) => Err(ClientError::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                code: "internal".into(),
                message: format!(
                    "daemon answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }),
        }
    }
}

/// One request on a fresh connection to a unix socket. One connection per
/// call: the socket is local and a handshake costs microseconds.
async fn request_unix(
    socket: &Path,
    method: Method,
    path: &str,
    host: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<hyper::Response<Incoming>, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::NotRunning {
            path: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))
}

/// One plain GET over a unix socket with extra headers, for health probes
/// (`GET /slot/<id>/token` on a ttyd socket). Returns the status and body.
pub async fn get_unix(
    socket: &Path,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, Bytes), ClientError> {
    let fut = async {
        let resp =
            request_unix(socket, Method::GET, path, "localhost", None, headers, None).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}
