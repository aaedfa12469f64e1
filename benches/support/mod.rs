//! Helpers of the load bench, one job each: /proc readings (`procfs`), starting and stopping
//! servers (`server`), the floor for delayed replies (`bare_sender`), one SMTP client
//! connection (`smtp`), the message load generator (`loadgen`), many connections at once
//! (`crowd`), tens of thousands of them from a few threads and several source addresses
//! (`swarm`), SMTPS connections and their certificate (`tls`), Postfix's smtp-source
//! (`postfix`), a server's processes and the descriptor limit they inherit (`family`),
//! measured runs and their medians (`runs`), percentiles (`stats`) and the printed tables
//! (`report`).

pub mod bare_sender;
// Only the scale and proxy benches use these, and the load bench declares `support` without
// allowing dead code.
pub mod crowd;
#[allow(dead_code)]
pub mod family;
pub mod loadgen;
pub mod postfix;
pub mod procfs;
pub mod report;
pub mod runs;
pub mod server;
pub mod smtp;
pub mod stats;
#[allow(dead_code)]
pub mod swarm;
pub mod tls;
