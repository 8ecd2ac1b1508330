//! The contract between slotctl's daemon and its clients (the `slotctl` CLI
//! and the `slotgate` proxy): identifiers, slot status, request and response
//! bodies of the `/v1` control API, and a small client over the daemon's unix
//! socket. This crate owns no behaviour: it must not spawn processes, touch
//! SQLite or know about Pingora, so the proxy can link it without linking the
//! supervisor. The one piece of process set-up both programs share, lifting
//! the open-files limit, lives here too ([`rlimit`]), as do two file
//! operations for the files they share ([`files`]).

pub mod activity;
mod app;
mod client;
pub mod config;
pub mod files;
mod id;
pub mod rlimit;
mod types;

pub use app::*;
pub use client::{get_unix, Client, ClientError, LineStream};
pub use id::{IdError, SlotId, UserName, MAX_ID_LEN};
pub use types::*;

/// Version prefix of every control API route.
pub const API_VERSION: &str = "v1";

/// Name of the header ttyd is started with (`ttyd -H`). The proxy (and the
/// daemon's health probe) send a short opaque value in it; ttyd refuses
/// requests without it with 407.
pub const TTYD_AUTH_HEADER: &str = "X-Slotgate-Auth";
