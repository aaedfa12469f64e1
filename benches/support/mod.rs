//! Helpers of the load bench, one job each: /proc readings (`procfs`), starting and stopping
//! servers (`server`), the floor for delayed replies (`bare_sender`), one SMTP client
//! connection (`smtp`), the message load generator (`loadgen`), many connections at once
//! (`crowd`), SMTPS connections and their certificate (`tls`), Postfix's smtp-source
//! (`postfix`), measured runs and their medians (`runs`), percentiles (`stats`) and the
//! printed tables (`report`).

pub mod bare_sender;
pub mod crowd;
pub mod loadgen;
pub mod postfix;
pub mod procfs;
pub mod report;
pub mod runs;
pub mod server;
pub mod smtp;
pub mod stats;
pub mod tls;
