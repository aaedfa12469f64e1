//! The event loop: one thread, one `mio::Poll`, a slab of connections and a timer wheel.
//!
//! It owns the sockets, the TLS records, the buffers and the clock: it accepts (`server`),
//! reads and writes each connection plain or through rustls (`conn`, `tls`), slows the reading
//! of a connection a rule throttles (`throttle`), and keeps every deadline (idle timeouts,
//! delayed replies, throttled reads, the rest after an accept error, `accept_backoff`) in
//! one hierarchical wheel (`timer`) measured by one clock (`clock`). It keeps account of what it sees (`witness`,
//! into the process's tally and the event log, `event_log`) and answers scrapes
//! (`metrics_http`, with `process_figures`).
//!
//! It must not decide anything about SMTP (that is `smtp::session`'s job) nor read files or
//! the configuration format: it is handed ready-made [`server::Settings`] and listeners.
//! Nothing here sleeps, spawns a thread or blocks.

pub mod accept_backoff;
pub mod clock;
pub mod conn;
pub mod event_log;
pub mod metrics_http;
pub mod process_figures;
pub mod proxy_header;
pub mod server;
pub mod throttle;
pub mod timer;
pub mod tls;
pub mod witness;
