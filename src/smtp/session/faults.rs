//! How the session carries out the rules: each stage asks the book, and a rule that fires
//! replies instead of the session, waits before the reply, disconnects, slows the reading,
//! or cuts a message off. With no rule configured, none of this runs: the stages check that
//! the book is empty and answer as they always do.
//!
//! It must not keep what a client sent: a subject whose reply comes later (the sender, for
//! the message's reply) is kept as the rules it matched, and a command held for a delay stays
//! in the caller's input, to be read again when the delay is over.

use core::num::NonZeroU32;

use super::{Action, Context, Held, MAX_RECIPIENTS, Outcome, Phase, Session, Transaction};
use crate::smtp::command::{self, Verb};
use crate::smtp::observer::Ending;
use crate::smtp::reply;
use crate::smtp::rules::{Command, Disconnect, Rule, RuleRef, Stage};

/// Where a rule cuts a message off (`after_bytes`), and the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub(super) at: u64,
    pub(super) rule: RuleRef,
}

impl Cut {
    /// How much of `available` bytes the message may still take, `size` bytes in.
    pub(super) fn room(&self, size: u64, available: usize) -> usize {
        usize::try_from(self.at.saturating_sub(size)).map_or(available, |left| left.min(available))
    }
}

/// What a rule's `match` is tried on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'b> {
    /// A command's argument: the subject is the part its stage names.
    Arg(&'b [u8]),
    /// An AUTH response: the subject is the user name in it, decoded.
    User(&'b [u8]),
    /// One seen earlier ([`Session::remembered`]).
    Remembered,
    /// A BDAT that would begin a message: the `data` stage, with no subject; a 3xx from a
    /// rule starts no DATA for it.
    Bdat,
}

/// The stage of a command line, if rules can apply to it.
pub(super) fn stage_of(verb: Verb) -> Option<Stage> {
    Some(match verb {
        Verb::Helo | Verb::Ehlo | Verb::Lhlo => Stage::Helo,
        Verb::Mail => Stage::Mail,
        Verb::Rcpt => Stage::Rcpt,
        Verb::Data | Verb::Bdat => Stage::Data,
        Verb::Rset => Stage::Rset,
        Verb::Noop => Stage::Noop,
        Verb::Quit => Stage::Quit,
        Verb::Vrfy => Stage::Vrfy,
        Verb::Expn => Stage::Expn,
        Verb::StartTls => Stage::Starttls,
        Verb::Auth | Verb::Etrn | Verb::Help | Verb::Unknown => return None,
    })
}

/// The subject of a command at `stage`: the domain of HELO and EHLO, the address (without
/// `<>`) of MAIL and RCPT, the argument of VRFY and EXPN; nothing for the others.
fn subject_of(stage: Stage, arg: &[u8]) -> &[u8] {
    match stage {
        Stage::Helo => command::words(arg).next().unwrap_or_default(),
        Stage::Mail => address(arg, b"FROM:"),
        Stage::Rcpt => address(arg, b"TO:"),
        Stage::Vrfy | Stage::Expn => arg,
        _ => b"",
    }
}

fn address<'a>(arg: &'a [u8], keyword: &[u8]) -> &'a [u8] {
    super::strip_keyword(arg, keyword)
        .and_then(super::split_path)
        .map_or(b"", |(path, _)| super::unbracketed(path))
}

/// A command line once a rule's greeting refused the session: RFC 5321 3.1 has the server
/// wait for QUIT and answer anything else with a bad sequence. Rules have no say here.
pub(super) fn after_refusal(cx: &mut Context, verb: Verb, out: &mut Vec<u8>) -> Action {
    if verb == Verb::Quit {
        return super::goodbye(cx, out);
    }
    out.extend_from_slice(reply::ONLY_QUIT);
    Action::Continue
}

type Answer<'f> = &'f mut dyn FnMut(&mut Session, &mut Context, &mut Vec<u8>) -> Action;

impl Session {
    /// Answers a command at `stage` as the rule that fires says, or with `normal` when none
    /// does. A rule's delay holds the line (it is not used) and returns the pause; the line
    /// is read again at [`Session::resume`], and the rule decided then carries on.
    pub(super) fn answer_by_rules(
        &mut self,
        cx: &mut Context,
        stage: Stage,
        subject: Subject,
        out: &mut Vec<u8>,
        normal: Answer,
    ) -> Action {
        let book = cx.rules;
        let (index, delay) = match self.decided.take() {
            // The delay is over.
            Some(index) => (index, 0),
            None => match self.decide(cx, stage, subject, |_| true) {
                Some(index) => {
                    fired(cx, index);
                    (index, self.delay_of(cx, index))
                }
                None => return normal(self, cx, out),
            },
        };
        // A reload may have replaced the book meanwhile: a rule no longer there says nothing.
        let Some(rule) = book.get(index) else {
            return normal(self, cx, out);
        };
        if delay > 0 {
            let auth = match self.phase {
                Phase::Auth(step) => Some(step),
                _ => None,
            };
            self.phase = Phase::Held(Held::Line { rule: index, auth });
            return Action::Pause { millis: delay };
        }
        self.carry_out(cx, rule, stage, subject, out, normal)
    }

    /// The greeting, as a rule at `connect` may change it.
    pub(super) fn greet_by_rules(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        let decided = self.decide(cx, Stage::Connect, Subject::Arg(b""), |_| true);
        decided.inspect(|&index| fired(cx, index));
        let millis = decided.map_or(0, |index| self.delay_of(cx, index));
        self.say_after(cx, Outcome::Greeting, decided, millis, out)
    }

    /// A message's final reply: `normal` after `millis`, unless a rule at `message` fires.
    pub(super) fn final_reply(
        &mut self,
        cx: &mut Context,
        normal: Outcome,
        millis: u64,
        out: &mut Vec<u8>,
    ) -> Action {
        let decided = if cx.rules.is_empty() {
            None
        } else {
            self.decide(cx, Stage::Message, Subject::Remembered, |r| {
                r.after_bytes.is_none()
            })
        };
        decided.inspect(|&index| fired(cx, index));
        let millis = match decided {
            Some(index) if self.has_delay(cx, index) => self.delay_of(cx, index),
            _ => millis,
        };
        self.say_after(cx, normal, decided, millis, out)
    }

    /// When DATA is accepted: whether a rule at `message` with `after_bytes` cuts it off.
    pub(super) fn decide_cut(&mut self, cx: &mut Context) -> Option<Cut> {
        let only = |r: &Rule| r.after_bytes.is_some();
        let rule = self.decide(cx, Stage::Message, Subject::Remembered, only)?;
        let at = cx.rules.get(rule)?.after_bytes?;
        Some(Cut { at, rule })
    }

    /// `after_bytes` of the message have arrived: the message ends there, and so does the
    /// connection (after the rule's delay).
    pub(super) fn cut(&mut self, cx: &mut Context, cut: Cut, out: &mut Vec<u8>) -> Action {
        self.phase = Phase::Command;
        self.end_transaction();
        fired(cx, cut.rule);
        let millis = self.delay_of(cx, cut.rule);
        self.say_after(cx, Outcome::Cut, Some(cut.rule), millis, out)
    }

    /// Says `normal` or what rule `rule` says instead, now or after `millis`.
    fn say_after(
        &mut self,
        cx: &mut Context,
        normal: Outcome,
        rule: Option<RuleRef>,
        millis: u64,
        out: &mut Vec<u8>,
    ) -> Action {
        if millis > 0 {
            self.phase = Phase::Held(Held::Reply { normal, rule });
            return Action::Pause { millis };
        }
        self.say(cx, normal, rule, out)
    }

    /// Says `normal`, or what rule `rule` (which fired) says instead.
    pub(super) fn say(
        &mut self,
        cx: &mut Context,
        normal: Outcome,
        rule: Option<RuleRef>,
        out: &mut Vec<u8>,
    ) -> Action {
        let mut write = |session: &mut Session, cx: &mut Context, out: &mut Vec<u8>| {
            let policy = cx.policy;
            super::write_outcome(
                normal,
                policy,
                || super::draw_id(&mut session.rng(cx.seed)),
                out,
            )
        };
        let book = cx.rules;
        let stage = match normal {
            Outcome::Greeting => Stage::Connect,
            _ => Stage::Message,
        };
        let start = out.len();
        let rule = rule.and_then(|rule| book.get(rule));
        let action = match rule {
            None => write(self, cx, out),
            Some(rule) => {
                let action = self.carry_out(cx, rule, stage, Subject::Remembered, out, &mut write);
                // A message cut off ends the connection, whatever the rule says beside.
                if normal == Outcome::Cut {
                    Action::Close
                } else {
                    action
                }
            }
        };
        if stage == Stage::Message {
            super::message_answered(cx, rule.map(|r| r.name.as_str()), &out[start..]);
        }
        if normal == Outcome::Cut {
            cx.observer.ending(Ending::Rule);
        }
        action
    }

    /// What a rule that fired says and does, its delay over: `disconnect` closes (`421`
    /// first, or the rule's own reply in its place), a `reply` is sent instead of the normal
    /// one (with what it means for the session, [`Session::after_rule_reply`]), and
    /// `throttle` slows the reading from now on.
    fn carry_out(
        &mut self,
        cx: &mut Context,
        rule: &Rule,
        stage: Stage,
        subject: Subject,
        out: &mut Vec<u8>,
        normal: Answer,
    ) -> Action {
        if let Phase::Auth(_) = self.phase {
            // A rule's answer ends the exchange.
            self.phase = Phase::Command;
        }
        let action = match (rule.disconnect, &rule.reply) {
            (Some(Disconnect::Close), _) => {
                cx.observer.ending(Ending::Rule);
                Action::Close
            }
            (Some(Disconnect::Reply421), reply) => {
                match reply {
                    Some(reply) => out.extend_from_slice(reply.bytes()),
                    None => reply::closing(out, cx.policy.fqdn()),
                }
                cx.observer.ending(Ending::Rule);
                Action::Close
            }
            (None, Some(reply)) => {
                out.extend_from_slice(reply.bytes());
                self.after_rule_reply(cx, stage, subject, reply.code())
            }
            (None, None) => normal(self, cx, out),
        };
        if let Some(bytes_per_sec) = rule.throttle {
            // Zero is no rate: as slow as there is.
            self.throttle = Some(NonZeroU32::new(bytes_per_sec).unwrap_or(NonZeroU32::MIN));
        }
        action
    }

    /// What a rule's own reply to a command means. A command is accepted only by the reply a
    /// client takes as acceptance of it, and only where the command may come: MAIL and RCPT
    /// by a 2xx (RCPT after MAIL, MAIL outside a transaction), DATA by a 3xx once a recipient
    /// is in, AUTH by a 2xx, STARTTLS by a 220; HELO, EHLO and RSET end the transaction on a
    /// 2xx. Any other reply changes nothing, so client and server never disagree on where
    /// the session is. QUIT closes whatever it is told, and so does a 421 anywhere: it says
    /// the service is closing the channel (RFC 5321 3.8). A 4xx or 5xx greeting refuses the
    /// session: from then on only QUIT is taken (RFC 5321 3.1).
    fn after_rule_reply(
        &mut self,
        cx: &mut Context,
        stage: Stage,
        subject: Subject,
        code: u16,
    ) -> Action {
        if stage == Stage::Quit || code == 421 {
            let why = if stage == Stage::Quit {
                Ending::Quit
            } else {
                Ending::Rule
            };
            cx.observer.ending(why);
            return Action::Close;
        }
        let class = code / 100;
        match (stage, subject) {
            (Stage::Connect, _) if class >= 4 => self.phase = Phase::Refused,
            (Stage::Helo, Subject::Arg(arg)) if class == 2 => {
                self.greeted(cx, arg);
            }
            (Stage::Rset, _) if class == 2 => self.drop_transaction(cx),
            (Stage::Mail, Subject::Arg(arg))
                if class == 2 && self.transaction == Transaction::None =>
            {
                self.open_transaction(cx, subject_of(stage, arg))
            }
            // Past the recipient bound a rule's 2xx is its own word: no recipient is added,
            // as none would have been.
            (Stage::Rcpt, Subject::Arg(arg))
                if class == 2
                    && matches!(self.transaction, Transaction::Mail | Transaction::Rcpt)
                    && self.recipients < MAX_RECIPIENTS =>
            {
                self.accept_recipient(cx, subject_of(stage, arg));
            }
            (Stage::Data, Subject::Arg(_))
                if class == 3 && self.transaction == Transaction::Rcpt =>
            {
                self.start_data(cx)
            }
            (Stage::Auth, _) if class == 2 => self.authenticated = true,
            (Stage::Starttls, _) if code == 220 && !self.tls && cx.policy.starttls() => {
                return Action::StartTls;
            }
            _ => {}
        }
        Action::Continue
    }

    /// The rule that fires at `stage`.
    fn decide(
        &mut self,
        cx: &mut Context,
        stage: Stage,
        subject: Subject,
        only: impl Fn(&Rule) -> bool,
    ) -> Option<RuleRef> {
        // Most commands meet no rule of their stage: no generator for them.
        if !cx.rules.has_stage(stage) {
            return None;
        }
        let mut rng = self.rng(cx.seed);
        let (text, remembered) = match subject {
            Subject::Arg(arg) => (subject_of(stage, arg), None),
            Subject::User(user) => (user, None),
            Subject::Remembered => (&b""[..], self.remembered.as_ref()),
            Subject::Bdat => (&b""[..], None),
        };
        let command = Command {
            client: cx.client,
            listener: cx.listener,
            subject: text,
            now_ms: cx.now_ms,
        };
        let book = cx.rules;
        let (index, _) =
            book.decide_among(stage, &command, remembered, cx.rule_state, &mut rng, only)?;
        Some(book.rule_ref(index))
    }

    fn has_delay(&self, cx: &Context, index: RuleRef) -> bool {
        cx.rules.get(index).is_some_and(|r| r.delay.is_some())
    }

    /// The delay rule `index` asks for this time, in ms.
    fn delay_of(&mut self, cx: &Context, index: RuleRef) -> u64 {
        match cx.rules.get(index).and_then(|r| r.delay) {
            Some(delay) => delay.draw(&mut self.rng(cx.seed)),
            None => 0,
        }
    }
}

/// Tells the observer that rule `index` fired.
fn fired(cx: &mut Context, index: RuleRef) {
    if let Some(rule) = cx.rules.get(index) {
        cx.observer.rule_fired(&rule.name);
    }
}
