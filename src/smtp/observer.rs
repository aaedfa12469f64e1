//! What a session tells whoever keeps account of it: each command, each accepted name,
//! sender and recipient, each rule that fired, each message's end.
//!
//! The session calls these as things happen and forgets them; counting, logging and
//! keeping what an event line needs is the caller's business. Every method has an empty
//! default, so a caller that keeps no account ([`Unobserved`]) pays a call that does nothing.

use super::command::Verb;
use super::switches::Switches;

/// How an AUTH exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Accepted,
    Refused,
    /// The client cancelled with `*`, or sent a reply that does not decode.
    Cancelled,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Accepted => "accepted",
            AuthResult::Refused => "refused",
            AuthResult::Cancelled => "cancelled",
        }
    }
}

/// Why the session ended the connection. The caller adds its own reasons (the client went
/// away, the server stopped) to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client sent QUIT.
    Quit,
    /// The client sent no complete line for the idle timeout.
    Timeout,
    /// Too many unknown commands.
    UnknownCommands,
    /// A rule disconnected it, or cut a message off, or replied 421.
    Rule,
}

/// A message the session has given its final reply to.
#[derive(Debug, Clone, Copy)]
pub struct MessageEnd<'a> {
    /// The final reply's code (`250`, a bounce, `552` too big, a rule's code); `None` when a
    /// rule closed the connection without a word.
    pub code: Option<u16>,
    /// The rule whose answer or cut ended it.
    pub rule: Option<&'a str>,
    /// LMTP: the reply is one recipient's, the next in RCPT order; otherwise it is all of
    /// the message's recipients'.
    pub per_recipient: bool,
}

/// The account a session gives of itself. `&mut self`: the caller keeps per-connection
/// detail (the sender, the recipients) for its event line between calls.
pub trait Observer {
    /// A command line was read (not a line of message data or of an AUTH exchange).
    fn command(&mut self, _verb: Verb) {}
    /// HELO, EHLO or LHLO was accepted with this name.
    fn greeted(&mut self, _name: &[u8]) {}
    /// An AUTH exchange named this user (before its outcome is known).
    fn auth_user(&mut self, _user: &[u8]) {}
    /// An AUTH exchange with this mechanism (`plain`, `login`, `cram-md5`) ended.
    fn auth(&mut self, _mechanism: &'static str, _result: AuthResult) {}
    /// MAIL was accepted: a transaction with this sender begins.
    fn sender(&mut self, _address: &[u8]) {}
    /// RCPT was accepted for this address.
    fn recipient(&mut self, _address: &[u8]) {}
    /// The transaction ended without a message (RSET, HELO/EHLO, a refused DATA).
    fn transaction_dropped(&mut self) {}
    /// A rule fired (its effect is under way, whatever it is).
    fn rule_fired(&mut self, _rule: &str) {}
    /// Greylisting deferred a recipient (`false`) or let it pass (`true`).
    fn greylisted(&mut self, _passed: bool) {}
    /// A message's data has all arrived (or a rule cut it off here): this many octets, as
    /// `max_message_size` counts them (the final `.<CRLF>` included), with these switch
    /// headers. Its final reply comes next, perhaps after
    /// a delay.
    fn data_ended(&mut self, _size: u64, _switches: &Switches) {}
    /// A message got its final reply, which is in the output now.
    fn message(&mut self, _message: &MessageEnd) {}
    /// The session ended the connection for this reason (its last reply is in the output).
    /// When one reply both answers a message and ends the connection, this may come before
    /// [`Observer::message`]; it may come more than once, and the first reason is the one.
    fn ending(&mut self, _why: Ending) {}
}

/// An observer that keeps no account: for tests, and for callers with nothing to count.
pub struct Unobserved;

impl Observer for Unobserved {}
