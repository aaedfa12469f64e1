//! BDAT (RFC 3030): a message sent in chunks whose octets the client counts. A chunk's
//! octets follow its command line at once and are read by count, with no dot-stuffing and
//! no line framing, so a `.` line inside one is message text. They are counted and dropped
//! as DATA's are, the switch headers read on the way, a header split between two chunks
//! too. A chunk that belongs to no message (its MAIL or every RCPT was refused in a
//! pipeline) is still read, and thrown away: its octets are never taken for commands.
//!
//! It must not keep a chunk's octets: a chunk of any size costs a count.

use super::{Action, Context, Phase, Session, Transaction};
use crate::smtp::command::{self, DataScanner};
use crate::smtp::decimal;
use crate::smtp::reply;

/// What the end of a chunk brings. One byte: every session has room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterChunk {
    /// `250 2.0.0 N octets received`, N the chunk's size: more chunks follow.
    Ack,
    /// The message's final reply, as after DATA's final dot.
    Last,
    /// The chunk belongs to no message, as no MAIL came: `503`, once it has been read.
    NeedMail,
    /// The chunk belongs to no message, as no RCPT was accepted: `554`, once read.
    NoRecipients,
    /// Nothing: a rule answered the BDAT already.
    Quiet,
}

impl AfterChunk {
    /// What a message's chunk brings.
    fn of_message(last: bool) -> Self {
        if last {
            AfterChunk::Last
        } else {
            AfterChunk::Ack
        }
    }

    /// Whether the chunk's octets are part of a message.
    fn is_message(self) -> bool {
        matches!(self, AfterChunk::Ack | AfterChunk::Last)
    }
}

/// `SIZE [LAST]` (RFC 3030 2: `bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CR LF`):
/// the chunk's size and whether it is the last. A size of more than 20 digits is refused, as
/// MAIL's SIZE is.
pub(super) fn parse_bdat(arg: &[u8]) -> Option<(u64, bool)> {
    let mut words = command::words(arg);
    let size = words
        .next()
        .filter(|digits| digits.len() <= 20)
        .and_then(decimal::saturating)?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}

impl Session {
    /// BDAT: the chunk that follows is read whatever the answer, unless the command does
    /// not parse (then nobody knows how many octets would follow: `501`, and the session
    /// goes on with the next line).
    pub(super) fn bdat(&mut self, cx: &mut Context, arg: &[u8], out: &mut Vec<u8>) -> Action {
        let Some((size, last)) = parse_bdat(arg) else {
            out.extend_from_slice(reply::BDAT_SYNTAX);
            return Action::Continue;
        };
        let then = match self.transaction {
            Transaction::None => AfterChunk::NeedMail,
            Transaction::Mail => AfterChunk::NoRecipients,
            Transaction::Rcpt => {
                self.transaction = Transaction::Chunks;
                self.start_message(cx, DataScanner::for_chunks());
                AfterChunk::of_message(last)
            }
            Transaction::Chunks => AfterChunk::of_message(last),
        };
        if then.is_message() {
            self.message().chunk = size;
        }
        self.phase = Phase::Chunk { left: size, then };
        Action::Continue
    }

    /// A rule answered BDAT in the session's place: its chunk still comes, and is dropped.
    pub(super) fn skip_unread_chunk(&mut self, cx: &Context, arg: &[u8]) {
        if !cx.policy.chunking() || !matches!(self.phase, Phase::Command) {
            return;
        }
        if let Some((left, _)) = parse_bdat(arg) {
            self.phase = Phase::Chunk {
                left,
                then: AfterChunk::Quiet,
            };
        }
    }

    /// Octets of a chunk, `left` of which are still to come, up to where a rule cuts the
    /// message off; at the chunk's end, what `then` says.
    pub(super) fn read_chunk(
        &mut self,
        cx: &mut Context,
        left: u64,
        then: AfterChunk,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Action>) {
        let mut taken = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
        if then.is_message() {
            // A chunk has no end of its own inside it: all is taken, up to a rule's cut.
            taken = self.message().read(cx.policy, &input[..taken]).0;
        }
        let left = left - taken as u64;
        let message_ends = left == 0 && then == AfterChunk::Last;
        if then.is_message()
            && !message_ends
            && let Some(action) = self.cut_if_due(cx, out)
        {
            return (taken, Some(action));
        }
        if left > 0 {
            self.phase = Phase::Chunk { left, then };
            return (taken, None);
        }
        self.phase = Phase::Command;
        let action = match then {
            AfterChunk::Ack => {
                reply::chunk_received(out, self.message().chunk);
                Action::Continue
            }
            AfterChunk::Last => self.end_message(cx, out),
            AfterChunk::NeedMail => {
                out.extend_from_slice(reply::NEED_MAIL);
                Action::Continue
            }
            AfterChunk::NoRecipients => {
                out.extend_from_slice(reply::NO_VALID_RECIPIENTS);
                Action::Continue
            }
            AfterChunk::Quiet => Action::Continue,
        };
        (taken, Some(action))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bdat;

    #[test]
    fn bdat_arguments() {
        assert_eq!(parse_bdat(b"0"), Some((0, false)));
        assert_eq!(parse_bdat(b"0 LAST"), Some((0, true)));
        assert_eq!(parse_bdat(b"123  last"), Some((123, true)));
        assert_eq!(parse_bdat(b"99999999999999999999"), Some((u64::MAX, false)));
        for bad in [
            &b""[..],
            b"LAST",
            b"-1",
            b"1x",
            b"1 LAST x",
            b"1 FIRST",
            b"123456789012345678901",
        ] {
            assert_eq!(parse_bdat(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
