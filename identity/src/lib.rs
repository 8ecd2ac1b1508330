//! Identity and access for slotgate: who is asking (sessions, passwords, API
//! tokens, embed tokens, OIDC/OAuth2 sign-in) and what they may do (slot
//! access decisions, the read-only viewer frame filter). Decisions are pure
//! functions; the one store (`store`) holds users, sessions and tokens in
//! SQLite. This crate never speaks HTTP to browsers and never touches slots:
//! the proxy wires it into its request phases.

pub mod access;
pub mod frames;
pub mod header;
#[cfg(feature = "providers")]
pub mod oauth;
#[cfg(feature = "providers")]
pub mod oidc;
pub mod redirect;
pub mod session;
pub mod store;
