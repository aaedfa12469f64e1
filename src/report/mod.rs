//! What the server saw, kept and told: counters, histograms, the Prometheus text, the
//! one-line summary and the JSON event lines.
//!
//! It owns the [`tally::Tally`] each serving process bumps as things happen (laid out to live
//! in memory shared between workers), the [`tally::Totals`] summed over them, their
//! exposition (`exposition`), the summary (`summary`) and the event lines (`event`). It is
//! handed plain figures (times in microseconds or Unix milliseconds, process figures read by
//! someone else) and returns bytes.
//!
//! It must not import the event loop, the service or the configuration, nor touch sockets,
//! files, the clock, threads or processes: it is pure, like the SMTP core it counts.

pub mod event;
pub mod exposition;
pub mod histogram;
pub mod summary;
pub mod tally;
