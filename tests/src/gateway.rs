//! Harness for the gateway: start a real `slotgate` binary on a free
//! loopback port against a configuration file (the same file slotctl
//! reads), and talk to it the way a browser would — raw HTTP/1.1 over TLS
//! that verifies the gateway's certificate (so odd request targets reach
//! the gateway byte for byte), and ttyd's WebSocket protocol.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ttyd::TtydClient;

/// A byte stream to the gateway: TLS or plain TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// A free loopback port (bound and released; good enough on a test host).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How to start the gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve HTTPS (default) or plain HTTP (loopback only).
    pub tls: bool,
    /// Operator-provided certificate and key; `None` lets slotgate generate
    /// its self-signed pair.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Extra TOML appended after the generated `[slotgate]` keys (may open
    /// sub-tables such as `[slotgate.rate_limits]`).
    pub extra: String,
    /// Listen on this port (e.g. one already named in an OIDC redirect
    /// URI); `None` picks a free one.
    pub port: Option<u16>,
    /// Start slotgate with this soft open-files limit (through util-linux's
    /// `prlimit`, which then runs it in place), as a systemd unit's 1024.
    pub open_files: Option<u64>,
    /// Extra environment for the slotgate process.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: true,
            cert: None,
            extra: String::new(),
            port: None,
            open_files: None,
            env: Vec::new(),
        }
    }
}

/// A running slotgate process. Killed on drop.
pub struct Slotgate {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub tls: bool,
    pub config: PathBuf,
    pub paths: slotapi::config::Paths,
    /// The certificate clients trust (the configured or generated one).
    pub cert_path: Option<PathBuf>,
    /// slotgate's own stderr.
    pub stderr_path: PathBuf,
    pub access_log: PathBuf,
    extra_roots: Vec<CertificateDer<'static>>,
}

impl Slotgate {
    /// Append a `[slotgate]` section to `config` (which must not have one)
    /// and start the gateway; returns once `/livez` answers (the gateway
    /// serves; `/healthz` also needs slotctl).
    pub async fn start(config: &Path, opts: Options) -> anyhow::Result<Slotgate> {
        let port = opts.port.unwrap_or_else(free_port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        if text.contains("[slotgate]") {
            bail!("{} already has a [slotgate] section", config.display());
        }
        text.push_str(&format!(
            "\n[slotgate]\nlisten = [\"{addr}\"]\ntls = {}\n",
            opts.tls
        ));
        // Stopping waits for nothing unless the test is about stopping.
        if !opts.extra.contains("shutdown_grace =") {
            text.push_str("shutdown_grace = \"0s\"\n");
        }
        if let Some((cert, key)) = &opts.cert {
            text.push_str(&format!("cert = {:?}\nkey = {:?}\n", cert, key));
        }
        // The gateway tests run without sign-in unless they choose a mode.
        if !opts.extra.contains("auth =") {
            text.push_str("auth = \"none\"\n");
        }
        text.push_str(&opts.extra);
        text.push('\n');
        std::fs::write(config, &text)?;

        let file = slotapi::config::ConfigFile::load(config)?;
        let paths = file.paths()?;
        let access_log = paths.data_dir.join("logs").join("access.log");
        let cert_path = match (&opts.cert, opts.tls) {
            (_, false) => None,
            (Some((cert, _)), true) => Some(cert.clone()),
            (None, true) => Some(paths.data_dir.join("tls").join("selfsigned.crt")),
        };
        let stderr_path = config.with_file_name(format!("slotgate-{port}.log"));
        let stderr = std::fs::File::create(&stderr_path)?;
        let bin = crate::bin("slotgate");
        let mut cmd = match opts.open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:")).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("SLOTGATE_LOG", "info,pingora_core=warn,pingora_proxy=warn")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build -p proxy`)",
                    bin.display()
                )
            })?;
        let mut gw = Slotgate {
            child: Some(child),
            addr,
            tls: opts.tls,
            config: config.to_path_buf(),
            paths,
            cert_path,
            stderr_path,
            access_log,
            extra_roots: Vec::new(),
        };
        gw.wait_ready(Duration::from_secs(20)).await?;
        Ok(gw)
    }

    /// The slotgate process's id (None once it was stopped). After a
    /// reload this is still the first process; [`Slotgate::serving_pid`]
    /// names the one serving.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process in the gateway's pid file, if it runs: the one serving
    /// (a reload's successor after a reload).
    pub fn serving_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.paths.run_dir.join("slotgate.pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Send `signal` (`"HUP"`, `"TERM"`…) to the process serving.
    pub fn signal(&self, signal: &str) {
        let pid = self.serving_pid().expect("a serving slotgate");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Whether the first process has exited (and been reaped).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// Wait (at most `within`) for the first process to exit.
    pub async fn wait_exited(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self.exited() {
            if Instant::now() > deadline {
                bail!(
                    "slotgate did not exit within {within:?}:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "slotgate exited with {status} during startup:\n{}",
                        self.stderr()
                    );
                }
            }
            let ready = match self.request("GET", "/livez", &[]).await {
                Ok(r) => r.status == 200,
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "slotgate did not answer /livez within {within:?}:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Also trust this certificate (for the reload test).
    pub fn trust(&mut self, cert_pem: &Path) -> anyhow::Result<()> {
        self.extra_roots
            .push(CertificateDer::from_pem_file(cert_pem)?);
        Ok(())
    }

    fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(cert) = &self.cert_path {
            for c in CertificateDer::pem_file_iter(cert)? {
                roots.add(c?)?;
            }
        }
        for c in &self.extra_roots {
            roots.add(c.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }

    /// A new connection; under TLS the handshake verifies the certificate
    /// for 127.0.0.1. Also returns the leaf certificate the server showed.
    pub async fn connect_with_cert(&self) -> anyhow::Result<(Stream, Option<Vec<u8>>)> {
        self.connect_from_with_cert(None).await
    }

    /// A new connection from a chosen loopback source address (say
    /// 127.0.0.2), for rules that depend on the client's address.
    pub async fn connect_from(&self, source: std::net::IpAddr) -> anyhow::Result<Stream> {
        Ok(self.connect_from_with_cert(Some(source)).await?.0)
    }

    async fn connect_from_with_cert(
        &self,
        source: Option<std::net::IpAddr>,
    ) -> anyhow::Result<(Stream, Option<Vec<u8>>)> {
        let tcp = match source {
            None => TcpStream::connect(self.addr).await?,
            Some(ip) => {
                let sock = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(self.addr).await?
            }
        };
        tcp.set_nodelay(true)?;
        if !self.tls {
            return Ok((Box::new(tcp), None));
        }
        let connector = tokio_rustls::TlsConnector::from(self.client_config()?);
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        Ok((Box::new(tls), leaf))
    }

    pub async fn connect(&self) -> anyhow::Result<Stream> {
        Ok(self.connect_with_cert().await?.0)
    }

    /// One request on a fresh connection (`Connection: close`). `target`
    /// is sent exactly as given.
    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<HttpResponse> {
        let mut s = self.connect().await?;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("Connection", "close"));
        send_request(&mut s, method, target, &all).await?;
        read_response(&mut s, method == "HEAD").await
    }

    pub async fn get(&self, target: &str) -> anyhow::Result<HttpResponse> {
        self.request("GET", target, &[]).await
    }

    /// Open a ttyd terminal session on `/slot/<slot>/ws`.
    pub async fn tty(&self, slot: &str) -> anyhow::Result<TtydClient<Stream>> {
        let stream = self.connect().await?;
        tty_over(stream, &self.authority(), &format!("/slot/{slot}/ws"), &[]).await
    }

    /// `host:port` for Host headers and URLs.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Every access log line parsed as JSON.
    pub fn access_log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Poll the access log until a line satisfies `pred` (the writer
    /// flushes within ~100 ms).
    pub async fn wait_for_log_line(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.access_log_lines().into_iter().find(|l| pred(l)) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "no matching access log line within {within:?}; log:\n{}",
                    std::fs::read_to_string(&self.access_log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        // A reload's successor is not this test's child: stop it by its
        // pid file.
        let successor = self.serving_pid().filter(|p| Some(*p) != self.pid());
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut exited = false;
            while !exited && Instant::now() < deadline {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                if !exited {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // And any other gateway on this configuration (a successor of a
        // reload that failed half-way in a failing test).
        for pid in successor
            .into_iter()
            .chain(processes_with_arg(&self.config))
        {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// slotgate processes with `arg` among their command-line arguments (not
/// the slotctl daemon, which reads the same configuration).
fn processes_with_arg(arg: &Path) -> Vec<u32> {
    let want = arg.as_os_str().as_encoded_bytes();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let mut args = c.split(|b| *b == 0);
                let program = args.next().unwrap_or_default();
                program.ends_with(b"/slotgate") && args.any(|a| a == want)
            })
        })
        .collect()
}

impl Drop for Slotgate {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A slotctl daemon with alice's `shell` slot online and a gateway in
/// front of it, started with `opts`.
pub async fn alice_behind_gateway(opts: Options) -> (crate::TestEnv, Slotgate) {
    let mut env = crate::TestEnv::new(&[], "");
    env.start_daemon().await;
    env.create_online("alice", "shell").await;
    let gw = Slotgate::start(&env.config, opts)
        .await
        .expect("slotgate starts");
    (env, gw)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One plain-HTTP request to `addr` on a fresh connection.
pub async fn plain_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr).await?;
    send_request(&mut s, method, target, &[("Connection", "close")]).await?;
    read_response(&mut s, method == "HEAD").await
}

/// A WebSocket upgrade's headers, as a browser sends them, for subprotocol
/// `protocol` (ttyd speaks `tty`).
pub fn upgrade_headers(protocol: &str) -> Vec<(&str, &str)> {
    vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", protocol),
    ]
}

pub async fn send_request<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    Ok(())
}

/// Read one response: headers, then a Content-Length, chunked or
/// read-to-close body. Leaves the stream at the next response.
pub async fn read_response<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    head_only: bool,
) -> anyhow::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await?;
        if n == 0 {
            bail!(
                "connection closed before the response head ({} bytes read)",
                buf.len()
            );
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head_only || status == 101 || status == 204 || status == 304 {
        // no body
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse()?;
        body.resize(len, 0);
        s.read_exact(&mut body).await?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte).await?;
                line.push(byte[0]);
            }
            let size_text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)?;
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        s.read_to_end(&mut body).await?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Upgrade `stream` to a ttyd WebSocket (subprotocol `tty`) at `path` and
/// send ttyd's hello. `headers` are extra request headers (ttyd's auth
/// header when talking to a slot socket directly).
pub async fn tty_over(
    stream: Stream,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<TtydClient<Stream>> {
    let mut req = format!("ws://{authority}{path}").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "tty".parse()?);
    for (name, value) in headers {
        req.headers_mut().insert(
            http_header_name(name)?,
            value
                .parse()
                .with_context(|| format!("header value for {name}"))?,
        );
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .context("WebSocket upgrade")?;
    if resp.status().as_u16() != 101 {
        bail!("upgrade answered {}", resp.status());
    }
    TtydClient::start(ws).await
}

fn http_header_name(
    name: &str,
) -> anyhow::Result<tokio_tungstenite::tungstenite::http::HeaderName> {
    Ok(tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?)
}

/// A self-signed certificate for 127.0.0.1 written as PEM files
/// (certificate, key) into `dir` with the given stem.
pub fn write_test_cert(dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, generated.cert.pem())?;
    std::fs::write(&key, generated.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// Replace `dst` by `src`'s contents atomically (write aside, rename over),
/// as certificate renewal tools do.
pub fn replace_file(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp)?;
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

/// DER of the first certificate in a PEM file.
pub fn cert_der(pem: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_file(pem)?.as_ref().to_vec())
}
