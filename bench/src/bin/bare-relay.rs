//! The floor for a proxy built on tokio: accept TCP connections and copy
//! bytes both ways to one unix socket, nothing else (no HTTP parsing, no
//! hooks, no logging, no TLS). The gateway benchmark runs it as its `tokio`
//! way, on a runtime shaped like slotgate's (the multi-thread scheduler with
//! one worker, the same read loop as `proxy/src/upgrade.rs`), to split what
//! slotgate adds to a keystroke into what the runtime costs and what
//! slotgate's own layers cost. Not part of the product.
//!
//! Usage: `bare-relay <listen address> <unix socket>`
//!
//! `BARE_RELAY_RUNTIME=current_thread` runs it on tokio's single-threaded
//! scheduler instead (what Pingora's no-steal runtime uses per thread).

use std::process::ExitCode;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The relay's read buffers, as slotgate's.
const CHUNK: usize = 16 * 1024;

fn main() -> ExitCode {
    bench::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(socket)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare-relay <listen address> <unix socket>");
    };
    let runtime = match std::env::var("BARE_RELAY_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Err(e) = relay(client, &socket).await {
                    eprintln!("bare-relay: {e}");
                }
            });
        }
    })
}

async fn relay(mut client: TcpStream, socket: &str) -> std::io::Result<()> {
    let mut slot = UnixStream::connect(socket).await?;
    let mut from_client = vec![0u8; CHUNK];
    let mut from_slot = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = client.read(&mut from_client) => match r? {
                0 => return slot.shutdown().await,
                n => slot.write_all(&from_client[..n]).await?,
            },
            r = slot.read(&mut from_slot) => match r? {
                0 => return client.shutdown().await,
                n => {
                    client.write_all(&from_slot[..n]).await?;
                    client.flush().await?;
                }
            },
        }
    }
}
