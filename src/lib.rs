//! blackhole: an SMTP server that accepts mail and throws it away.
//!
//! Four rooms, each depending only on the ones before it:
//! - [`smtp`]: the pure protocol core. Bytes in, replies and actions out; no sockets, no
//!   clock, no configuration format.
//! - [`event_loop`]: one `mio` poll loop that owns the sockets, TLS, buffers and timers,
//!   feeds the core and carries out what it returns.
//! - [`config`]: the two file formats, the listener syntax and the option values, checked
//!   into one [`config::Config`].
//! - [`service`]: running as a program: binding, TLS files, background, supervisor and
//!   workers, pidfile, privileges, and the wiring that turns a `Config` into the loop's
//!   settings and reloads them on SIGHUP.
//!
//! - [`report`]: what the server saw: the counters every process keeps (in shared memory
//!   with workers), their Prometheus text, the summary line and the JSON event lines. Pure,
//!   like the core; the event loop and the service feed it.
//!
//! `main.rs` only reads the command line and hands it to [`service::run`].

pub mod config;
pub mod event_loop;
pub mod report;
pub mod service;
pub mod smtp;
