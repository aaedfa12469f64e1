//! The SMTP core: what a client sends, what the server replies, and nothing else.
//!
//! It owns the framing of command lines and of DATA (`command`), the verbs and their
//! arguments, the session state machine (`session`), the dynamic switch headers
//! (`switches`), the wire bytes of every reply (`reply`), the policy types it decides with
//! (`policy`), the scripted faults (`rules`), the greylist's memory (`greylist`) and the
//! account a session gives of itself (`observer`). Bytes go in, replies, actions and
//! observations come out.
//!
//! It must not do I/O, read a clock, or know how it is configured or driven: nothing here
//! imports the event loop, the configuration, sockets, `mio`, `rustls` or `std::time`
//! (`tests/layout.rs` fails if it does). Time is the caller's: a delay comes out as an
//! action, and the caller comes back when it is over.

pub mod command;
pub mod decimal;
pub mod greylist;
pub mod observer;
pub mod policy;
pub mod reply;
pub mod rules;
pub mod session;
pub mod switches;
