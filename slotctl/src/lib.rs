//! slotctl: the supervisor daemon and ops CLI for slotgate's ttyd slots and
//! for generic services ("apps", the PM2 replacement).
//!
//! Library layout: `config`, `template` and `app` read what the admin
//! wrote; `launch` turns a slot into a command line; `supervisor` (the only
//! module that spawns or signals) runs slots and apps; `store` (the only
//! module with SQL) persists them; `api` serves the control API; `cli` is
//! the client side, including the `pm2` verbs and `import pm2`.

pub mod activity;
pub mod api;
pub mod app;
pub mod cgroup;
pub mod claude;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod enter;
pub mod isolation;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod memory;
pub mod process;
pub mod sandbox;
pub mod store;
pub mod supervisor;
pub mod template;
pub mod tenant;
