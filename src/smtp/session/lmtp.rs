//! LMTP's end of a message (RFC 2033 4.2): one reply per accepted recipient, in RCPT order,
//! each decided on its own: each draws its own outcome from the mode, and a rule at
//! `message` is tried for each (its subject is still the MAIL FROM address). The message's
//! delay comes once, before the first reply; a rule's delay, before the reply it decides.
//!
//! It must not keep the recipients' addresses: the session counts them, and owes that many
//! replies. They are written at once, so the output may grow by
//! [`super::MAX_RECIPIENTS`] reply lines past the high-water mark.

use super::{Action, Context, Held, Outcome, Phase, Session};

impl Session {
    /// An LMTP message is in: its replies, now or after its delay.
    pub(super) fn end_lmtp_message(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        let too_big = self.message().scanner.size() > cx.policy.max_message_size();
        let millis = match self.message().fate(cx.policy) {
            // As in SMTP, a message too big is refused at once.
            (_, Some(range)) if !too_big => super::draw_millis(&mut self.rng(cx.seed), range),
            _ => 0,
        };
        if millis > 0 {
            self.phase = Phase::Held(Held::Replies);
            return Action::Pause { millis };
        }
        self.recipient_replies(cx, out)
    }

    /// The replies still owed to the recipients, until one pauses or closes; the transaction
    /// ends with the last.
    pub(super) fn recipient_replies(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        while self.recipients > 0 {
            self.recipients -= 1;
            let action = self.recipient_reply(cx, out);
            if action != Action::Continue {
                return action;
            }
        }
        self.end_transaction();
        Action::Continue
    }

    /// One recipient's reply.
    fn recipient_reply(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        let policy = cx.policy;
        let rng = &mut self.rng(cx.seed);
        let outcome = if self.message().scanner.size() > policy.max_message_size() {
            Outcome::TooBig
        } else {
            super::draw_outcome(rng, self.message().fate(policy).0)
        };
        self.answer_message(cx, outcome, 0, rng, out)
    }
}
