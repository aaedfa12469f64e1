//! blackhole: an SMTP server that accepts mail and throws it away.
//!
//! The crate is split between a pure protocol core (`command`, `session`,
//! `switches`, `reply`), which never touches a socket or a clock, and the
//! event loop (`server`, `conn`, `timer`, `clock`, `listener`) that does the I/O and
//! keeps time for it.

pub mod clock;
pub mod command;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod listener;
pub mod options;
pub mod pidfile;
pub mod privileges;
pub mod reply;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod switches;
pub mod timer;
pub mod tls;
pub mod tls_layer;
