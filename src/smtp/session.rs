//! The SMTP session: one connection's protocol state machine.
//!
//! Bytes in, replies and actions out. It never touches a socket or reads a clock: the event
//! loop hands it what arrived, with the time and the rules in a [`Context`], and carries out
//! what it returns (close, wait before a reply, start TLS) and the rate a rule asks it to read
//! at ([`Session::throttle`]). Every reply of SPEC.md is chosen here; a client can make it
//! reply, never make it store what was sent or panic.

use core::net::IpAddr;
use core::num::{NonZeroU32, NonZeroU64};

use oorandom::Rand64;

use super::command::{self, DataScanner, Line, Verb};
use super::decimal;
use super::greylist::{Greylist, GreylistSettings, Verdict};
use super::observer::{Ending, MessageEnd, Observer};
pub use super::policy::Policy;
use super::policy::{DelayRange, Mode};
use super::reply;
use super::rules;
use super::rules::{Remembered, RuleBook, RuleRef, RuleState, Stage};
use super::switches::Switches;
use auth::AuthStep;
use chunking::AfterChunk;
use faults::{Cut, Subject};

/// The 10th unknown command on a connection closes it.
pub const MAX_UNKNOWN_COMMANDS: u8 = 10;

/// Recipients one transaction may have: more get `452 4.5.3` (RFC 5321 4.5.3.1.8 asks for
/// at least 100). LMTP owes each a reply, so the session counts them.
pub const MAX_RECIPIENTS: u16 = 1000;

/// Output (in the buffer the caller passes, which holds only unsent bytes) above which the
/// session stops taking commands: the caller sends what is there and feeds the rest later,
/// so a pipelining client that never reads cannot make the server buffer without bound.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// What the session is told with each call: its listener's policy, where its random choices
/// come from, and what the rules decide with (the book, the process's counters, the client,
/// the listener and the time).
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub seed: ConnectionSeed,
    pub rules: &'a RuleBook,
    pub rule_state: &'a mut RuleState,
    /// Greylisting's settings and the triplets the process remembers, when it is on.
    pub greylist: Option<(&'a GreylistSettings, &'a mut Greylist)>,
    /// The client's address.
    pub client: IpAddr,
    /// The listener's index, in the configuration's order.
    pub listener: usize,
    /// Milliseconds on the caller's clock.
    pub now_ms: u64,
    /// Who keeps account of what the session sees and says.
    pub observer: &'a mut dyn Observer,
}

/// What the caller must do after [`Session::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the output; feed more input when it comes.
    Continue,
    /// Send the output, then close. The session takes no more input.
    Close,
    /// Send the output, wait this long, then call [`Session::resume`] with the input not
    /// used yet (which writes the reply held back) before feeding the rest of the input.
    Pause { millis: u64 },
    /// Send the output (the 220), then start a TLS handshake and replace this session with
    /// [`Session::for_tls`]. Input after the STARTTLS line was thrown away.
    StartTls,
}

/// The result of [`Session::feed`]: how many input bytes were used, and what to do. Unused
/// bytes are an unfinished line, or input that waits for a pause or for output to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Command,
    /// The message after DATA's `354`, up to its final dot.
    Data,
    /// A BDAT chunk's octets: `left` more, then what its end brings.
    Chunk {
        left: u64,
        then: AfterChunk,
    },
    Auth(AuthStep),
    /// A reply waits for a delay: [`Session::resume`] gives it.
    Held(Held),
    /// A rule's 4xx or 5xx greeting refused the session: QUIT is all it takes.
    Refused,
    Closed,
}

/// What a session says once a delay is over: a small description, never the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The answer to the command line at the head of the caller's input, which rule `rule`
    /// (an index into the book) fired on; the line is read again, in the AUTH step it came in.
    Line {
        rule: RuleRef,
        auth: Option<AuthStep>,
    },
    /// A reply to no command line: `normal`, or what rule `rule` says instead.
    Reply {
        normal: Outcome,
        rule: Option<RuleRef>,
    },
    /// LMTP: the message's delay is over, its recipients' replies are due.
    Replies,
}

/// The message being received, through DATA or BDAT chunks: kept apart from the phase, so
/// that it lasts between chunks, whatever commands come between them. Boxed, and only once
/// the connection sends a message: a connection that sends none holds none.
#[derive(Debug, Clone, Default)]
struct Message {
    scanner: DataScanner,
    switches: Switches,
    /// Where a rule cuts the message off.
    cut: Option<Cut>,
    /// The size of the BDAT chunk being read, for its reply.
    chunk: u64,
}

/// A reply that answers no command line: the greeting, the end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Greeting,
    Accept,
    /// An index into [`reply::BOUNCES`].
    Bounce(u8),
    TooBig,
    /// A rule cut the message off: `421`, and close.
    Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    None,
    /// MAIL accepted, no recipient yet.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
    /// The message's first BDAT chunk has come: more chunks may follow, nothing else.
    Chunks,
}

#[derive(Debug, Clone)]
pub struct Session {
    phase: Phase,
    transaction: Transaction,
    /// Recipients accepted in the transaction; in LMTP, once the message is in, the replies
    /// still owed to them.
    recipients: u16,
    message: Option<Box<Message>>,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    unknown_commands: u8,
    authenticated: bool,
    tls: bool,
    /// Random choices made so far: with the connection's seed, what the next one is drawn
    /// from.
    draws: u32,
    /// The rule that fired on the line a delay held, while that line is read again.
    decided: Option<RuleRef>,
    /// What the rules need of a subject whose reply comes later: the MAIL FROM address
    /// through the transaction, the AUTH LOGIN user name until the password.
    remembered: Option<Remembered>,
    /// The MAIL FROM address as the greylist keys it (8 bytes, not the address); `None` when
    /// greylisting was off at MAIL.
    sender_key: Option<NonZeroU64>,
    /// The rate, in bytes per second, a rule asked to read this connection at from then on,
    /// whatever else it did (paused, started TLS).
    throttle: Option<NonZeroU32>,
}

/// Where one connection's random choices come from: the run's seed and the connection's
/// serial number in its process. A session draws from it and from how many choices it has
/// made, so its replies depend on the seed and on what its client did, never on how the
/// client's bytes were cut into reads or on what other connections did. Mixed only when a
/// choice is drawn, not on every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSeed {
    run: u64,
    serial: u64,
}

impl ConnectionSeed {
    pub fn new(run: u64, serial: u64) -> Self {
        ConnectionSeed { run, serial }
    }
}

/// SplitMix64's finaliser: nearby inputs (serial numbers, draw counts) give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Session {
    /// A session at its start. `tls`: the connection is already encrypted (SMTPS, or after
    /// STARTTLS), so STARTTLS is not offered again.
    pub fn new(tls: bool) -> Self {
        Session {
            phase: Phase::Command,
            transaction: Transaction::None,
            recipients: 0,
            message: None,
            discarding: false,
            unknown_commands: 0,
            authenticated: false,
            tls,
            draws: 0,
            decided: None,
            remembered: None,
            sender_key: None,
            throttle: None,
        }
    }

    /// The session that takes over once TLS starts after STARTTLS: a new one, read no faster
    /// than this one was.
    pub fn for_tls(&self) -> Self {
        Session {
            throttle: self.throttle,
            ..Session::new(true)
        }
    }

    /// How fast to read this connection, in bytes per second, where a rule said.
    pub fn throttle(&self) -> Option<NonZeroU32> {
        self.throttle
    }

    /// Whether a reply waits for [`Session::resume`].
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Held(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a message is being received (the client is sending DATA or a BDAT chunk).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Chunk { .. })
    }

    /// The greeting, as the session starts (not again after STARTTLS).
    pub fn greet(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        if cx.rules.is_empty() {
            out.extend_from_slice(cx.policy.greeting());
            return Action::Continue;
        }
        let action = self.greet_by_rules(cx, out);
        if action == Action::Close {
            self.phase = Phase::Closed;
        }
        action
    }

    /// Takes what the client sent. Replies are appended to `out`.
    pub fn feed(&mut self, cx: &mut Context, input: &[u8], out: &mut Vec<u8>) -> Step {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let (n, action) = match &mut self.phase {
                Phase::Closed => {
                    return Step {
                        consumed: input.len(),
                        action: Action::Close,
                    };
                }
                // Nothing is taken until the caller resumes the held-back reply.
                Phase::Held(_) => (0, None),
                Phase::Data => self.read_data(cx, rest, out),
                &mut Phase::Chunk { left, then } => self.read_chunk(cx, left, then, rest, out),
                Phase::Command | Phase::Auth(_) | Phase::Refused => self.read_line(cx, rest, out),
            };
            used += n;
            if let Some(step) = self.settle(used, input.len(), action) {
                return step;
            }
        }
    }

    /// Where [`Session::feed`] goes after one step: on (`None`), or back to the caller.
    fn settle(&mut self, used: usize, len: usize, action: Option<Action>) -> Option<Step> {
        let action = match action {
            Some(Action::Continue) => return None,
            None => Action::Continue,
            Some(action) => action,
        };
        let consumed = match action {
            // What follows the end of the session, or the start of TLS, is dropped.
            Action::Close | Action::StartTls => len,
            _ => used,
        };
        if action == Action::Close {
            self.phase = Phase::Closed;
        }
        Some(Step { consumed, action })
    }

    /// Writes the reply that a [`Action::Pause`] held back. `input` is what the session has
    /// not used yet: a held command line is answered from it.
    pub fn resume(&mut self, cx: &mut Context, input: &[u8], out: &mut Vec<u8>) -> Step {
        let (n, action) = match self.phase {
            Phase::Held(Held::Line { rule, auth }) => {
                self.phase = auth.map_or(Phase::Command, Phase::Auth);
                self.decided = Some(rule);
                let (n, action) = self.read_line(cx, input, out);
                self.decided = None;
                (n, action)
            }
            Phase::Held(Held::Reply { normal, rule }) => {
                self.phase = Phase::Command;
                let action = self.say(cx, normal, rule, out);
                // LMTP: the next recipients' replies follow this one.
                let more = action == Action::Continue && normal != Outcome::Greeting;
                if more && cx.policy.lmtp() {
                    (0, Some(self.recipient_replies(cx, out)))
                } else {
                    (0, Some(action))
                }
            }
            Phase::Held(Held::Replies) => {
                self.phase = Phase::Command;
                (0, Some(self.recipient_replies(cx, out)))
            }
            _ => (0, None),
        };
        self.settle(n, input.len(), action).unwrap_or(Step {
            consumed: n,
            action: Action::Continue,
        })
    }

    /// The generator for the session's next random choice: made from the connection's seed
    /// and the number of choices made so far (and whether TLS is on, so that a session
    /// restarted by STARTTLS does not repeat the draws of the one before).
    // Out of line: a choice is drawn at most once a message, and the lines around it run once
    // a command.
    #[inline(never)]
    fn rng(&mut self, seed: ConnectionSeed) -> Rand64 {
        let draw = u64::from(self.draws) << 1 | u64::from(self.tls);
        self.draws = self.draws.wrapping_add(1);
        let connection = mix(seed.run ^ mix(seed.serial));
        Rand64::new(u128::from(mix(connection ^ mix(draw))) << 64 | u128::from(connection))
    }

    /// The client sent no complete line for the idle timeout: say so; the caller closes.
    pub fn time_out(&mut self, out: &mut Vec<u8>) {
        self.phase = Phase::Closed;
        out.extend_from_slice(reply::TIMEOUT);
    }

    /// The next command line (or AUTH reply) and its answer: `None` when it has not all
    /// arrived, or when the output is full and must drain first. A line held for a delay is
    /// not used: it is answered at [`Session::resume`].
    #[inline(always)]
    fn read_line(
        &mut self,
        cx: &mut Context,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Action>) {
        if out.len() >= OUTPUT_HIGH_WATER {
            return (0, None);
        }
        let (n, line) = command::next_line(input, &mut self.discarding);
        let action = match line {
            None => None,
            Some(Line::TooLong) => {
                // An over-long reply inside AUTH ends the exchange too.
                if let Phase::Auth(_) = self.phase {
                    self.phase = Phase::Command;
                    self.remembered = None;
                }
                out.extend_from_slice(reply::LINE_TOO_LONG);
                Some(Action::Continue)
            }
            Some(Line::Complete(line)) => match self.line(cx, line, out) {
                action @ Action::Pause { .. } => return (0, Some(action)),
                action => Some(action),
            },
        };
        (n, action)
    }

    /// Message bytes, up to where a rule cuts the message off, and what the end (or the cut)
    /// brings.
    fn read_data(
        &mut self,
        cx: &mut Context,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Action>) {
        let (n, ended) = self.message().read(cx.policy, input);
        let action = if ended {
            Some(self.end_message(cx, out))
        } else {
            self.cut_if_due(cx, out)
        };
        (n, action)
    }

    /// Answers one whole line.
    #[inline(always)]
    fn line(&mut self, cx: &mut Context, line: &[u8], out: &mut Vec<u8>) -> Action {
        if let Phase::Auth(step) = self.phase {
            return self.auth_response(cx, step, line, out);
        }
        let (verb, arg) = command::parse_command(line);
        // A line held for a delay is read again when the delay is over: it was counted then.
        if self.decided.is_none() {
            cx.observer.command(verb);
        }
        if let Phase::Refused = self.phase {
            return faults::after_refusal(cx, verb, out);
        }
        if !cx.rules.is_empty() {
            return self.line_by_rules(cx, verb, arg, out);
        }
        self.normal_answer(cx, verb, arg, out)
    }

    /// A command line where rules are configured. Out of line: without rules, the check
    /// that the book is empty is all they cost.
    #[inline(never)]
    fn line_by_rules(
        &mut self,
        cx: &mut Context,
        verb: Verb,
        arg: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        let Some(stage) = self.stage_of(cx.policy, verb) else {
            return self.normal_answer(cx, verb, arg, out);
        };
        let subject = match verb {
            Verb::Bdat => Subject::Bdat,
            _ => Subject::Arg(arg),
        };
        let action = self.answer_by_rules(cx, stage, subject, out, &mut |s, cx, out| {
            s.normal_answer(cx, verb, arg, out)
        });
        if verb == Verb::Bdat && action == Action::Continue {
            self.skip_unread_chunk(cx, arg);
        }
        action
    }

    /// The stage rules see a command at, if any: a greeting the listener does not speak,
    /// and a BDAT of a listener without CHUNKING, are unknown commands; the BDAT that would
    /// begin a message is the `data` stage's command, the chunks after it are no stage's.
    fn stage_of(&self, policy: &Policy, verb: Verb) -> Option<Stage> {
        let speaks = match verb {
            Verb::Helo | Verb::Ehlo => !policy.lmtp(),
            Verb::Lhlo => policy.lmtp(),
            Verb::Bdat => policy.chunking() && self.transaction != Transaction::Chunks,
            _ => true,
        };
        faults::stage_of(verb).filter(|_| speaks)
    }

    /// The answer to a command when no rule has its say.
    #[inline(always)]
    fn normal_answer(
        &mut self,
        cx: &mut Context,
        verb: Verb,
        arg: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        match verb {
            Verb::Helo | Verb::Ehlo if cx.policy.lmtp() => {
                out.extend_from_slice(reply::NOT_LMTP_GREETING);
            }
            Verb::Lhlo if !cx.policy.lmtp() => return self.unknown(cx, out),
            Verb::Helo | Verb::Ehlo | Verb::Lhlo => {
                out.extend_from_slice(self.greeting(cx, verb, arg));
            }
            Verb::Bdat if cx.policy.chunking() => return self.bdat(cx, arg, out),
            Verb::Bdat => return self.unknown(cx, out),
            Verb::Mail | Verb::Rcpt | Verb::Data | Verb::Rset => {
                out.extend_from_slice(self.transaction_step(cx, verb, arg));
            }
            Verb::Vrfy => vrfy(arg, out),
            Verb::Expn => expn(arg, cx.policy, out),
            Verb::StartTls => return self.starttls(arg, cx.policy, out),
            Verb::Auth => return self.auth(cx, arg, out),
            Verb::Unknown => return self.unknown(cx, out),
            Verb::Quit => return goodbye(cx, out),
            _ => out.extend_from_slice(information(verb, arg)),
        }
        Action::Continue
    }

    /// HELO, EHLO and LHLO: each starts over, with no transaction open.
    fn greeting<'p>(&mut self, cx: &mut Context<'p>, verb: Verb, arg: &[u8]) -> &'p [u8] {
        match (verb, arg.is_empty()) {
            (Verb::Helo, true) => reply::HELO_SYNTAX,
            (Verb::Lhlo, true) => reply::LHLO_SYNTAX,
            (_, true) => reply::EHLO_SYNTAX,
            (Verb::Helo, false) => {
                self.greeted(cx, arg);
                reply::HELO_OK
            }
            (_, false) => {
                self.greeted(cx, arg);
                cx.policy.ehlo(self.tls)
            }
        }
    }

    /// HELO, EHLO or LHLO is accepted with `arg`, whose first word names the client.
    fn greeted(&mut self, cx: &mut Context, arg: &[u8]) {
        self.drop_transaction(cx);
        cx.observer
            .greeted(command::words(arg).next().unwrap_or_default());
    }

    /// MAIL, RCPT, DATA and RSET: the steps of a mail transaction, in RFC 5321 order.
    #[inline(always)]
    fn transaction_step<'r>(&mut self, cx: &mut Context<'r>, verb: Verb, arg: &[u8]) -> &'r [u8] {
        match verb {
            Verb::Mail => self.mail(cx, arg),
            Verb::Rcpt => self.rcpt(cx, arg),
            Verb::Data => self.data(cx),
            _ => {
                self.drop_transaction(cx);
                reply::OK
            }
        }
    }

    /// HELO, EHLO or RSET: a transaction under way ends without a message.
    fn drop_transaction(&mut self, cx: &mut Context) {
        if self.transaction != Transaction::None {
            cx.observer.transaction_dropped();
        }
        self.end_transaction();
    }

    /// No transaction from here on: HELO, EHLO, RSET, the end of a message.
    fn end_transaction(&mut self) {
        self.transaction = Transaction::None;
        self.recipients = 0;
        self.remembered = None;
    }

    fn data(&mut self, cx: &mut Context) -> &'static [u8] {
        match self.transaction {
            Transaction::None => reply::NEED_MAIL,
            Transaction::Mail => reply::NEED_RCPT,
            Transaction::Rcpt => {
                self.start_data(cx);
                reply::START_DATA
            }
            Transaction::Chunks => reply::AFTER_BDAT,
        }
    }

    /// DATA is accepted: the message's bytes come next.
    #[inline]
    fn start_data(&mut self, cx: &mut Context) {
        self.start_message(cx, DataScanner::new());
        self.phase = Phase::Data;
    }

    /// A message begins, read with `scanner`.
    #[inline]
    fn start_message(&mut self, cx: &mut Context, scanner: DataScanner) {
        let cut = if cx.rules.is_empty() {
            None
        } else {
            self.decide_cut(cx)
        };
        *self.message() = Message {
            scanner,
            switches: Switches::default(),
            cut,
            chunk: 0,
        };
    }

    /// The message being received (or the last one); made at the first.
    fn message(&mut self) -> &mut Message {
        self.message.get_or_insert_default()
    }

    /// Where a rule cuts the message off, once that many bytes have come.
    fn cut_if_due(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Option<Action> {
        let message = self.message();
        let cut = message.cut.filter(|cut| message.scanner.size() >= cut.at)?;
        cx.observer
            .data_ended(message.scanner.size(), &message.switches);
        Some(self.cut(cx, cut, out))
    }

    fn starttls(&mut self, arg: &[u8], policy: &Policy, out: &mut Vec<u8>) -> Action {
        let reply = if self.tls {
            reply::ALREADY_TLS
        } else if !policy.starttls() {
            reply::NOT_IMPLEMENTED
        } else if !arg.is_empty() {
            reply::STARTTLS_SYNTAX
        } else {
            out.extend_from_slice(reply::READY_TO_START_TLS);
            return Action::StartTls;
        };
        out.extend_from_slice(reply);
        Action::Continue
    }

    fn unknown(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        self.unknown_commands = self.unknown_commands.saturating_add(1);
        if self.unknown_commands >= MAX_UNKNOWN_COMMANDS {
            out.extend_from_slice(reply::TOO_MANY_UNKNOWN);
            cx.observer.ending(Ending::UnknownCommands);
            return Action::Close;
        }
        out.extend_from_slice(reply::UNKNOWN_COMMAND);
        Action::Continue
    }

    #[inline(always)]
    fn mail(&mut self, cx: &mut Context, arg: &[u8]) -> &'static [u8] {
        let policy = cx.policy;
        if self.transaction != Transaction::None {
            return reply::NESTED_MAIL;
        }
        let Some((path, params)) = strip_keyword(arg, b"FROM:").and_then(split_path) else {
            return reply::MAIL_SYNTAX;
        };
        for param in command::words(params) {
            let (key, value) = split_param(param);
            let error = if key.eq_ignore_ascii_case(b"SIZE") {
                match value.and_then(parse_size) {
                    None => Some(reply::SIZE_SYNTAX),
                    Some(size) if size > policy.max_message_size() => Some(reply::TOO_BIG),
                    Some(_) => None,
                }
            } else if key.eq_ignore_ascii_case(b"BODY") {
                let known = value.is_some_and(|v| {
                    v.eq_ignore_ascii_case(b"7BIT") || v.eq_ignore_ascii_case(b"8BITMIME")
                });
                (!known).then_some(reply::BODY_SYNTAX)
            } else if key.eq_ignore_ascii_case(b"SMTPUTF8") {
                value.map(|_| reply::PARAM_SYNTAX)
            } else if [&b"RET"[..], b"ENVID", b"AUTH"]
                .iter()
                .any(|k| key.eq_ignore_ascii_case(k))
            {
                value.is_none().then_some(reply::PARAM_SYNTAX)
            } else {
                Some(reply::UNKNOWN_PARAM)
            };
            if let Some(error) = error {
                return error;
            }
        }
        self.open_transaction(cx, unbracketed(path));
        reply::MAIL_OK
    }

    /// MAIL is accepted from `sender`.
    #[inline(always)]
    fn open_transaction(&mut self, cx: &mut Context, sender: &[u8]) {
        self.transaction = Transaction::Mail;
        cx.observer.sender(sender);
        self.sender_key = cx.greylist.as_ref().map(|(_, t)| t.sender_key(sender));
        if !cx.rules.is_empty() {
            self.remembered = cx.rules.remember(rules::Stage::Message, sender);
        }
    }

    #[inline(always)]
    fn rcpt<'r>(&mut self, cx: &mut Context<'r>, arg: &[u8]) -> &'r [u8] {
        match self.transaction {
            Transaction::None => return reply::NEED_MAIL,
            Transaction::Chunks => return reply::AFTER_BDAT,
            Transaction::Mail | Transaction::Rcpt => {}
        }
        let Some((path, params)) = strip_keyword(arg, b"TO:").and_then(split_path) else {
            return reply::RCPT_SYNTAX;
        };
        for param in command::words(params) {
            let (key, value) = split_param(param);
            if !(key.eq_ignore_ascii_case(b"NOTIFY") || key.eq_ignore_ascii_case(b"ORCPT")) {
                return reply::UNKNOWN_PARAM;
            }
            if value.is_none() {
                return reply::PARAM_SYNTAX;
            }
        }
        if self.recipients >= MAX_RECIPIENTS {
            return reply::TOO_MANY_RECIPIENTS;
        }
        // A transaction opened while greylisting was off (a reload switched it on since)
        // has no sender key: the session keeps no address to make one from, and hashing every
        // MAIL for a greylist that is off would tax every message. Its recipients pass, as
        // they would have at MAIL time; the next transaction is greylisted.
        if let (Some((settings, triplets)), Some(sender)) =
            (cx.greylist.as_mut(), self.sender_key.map(NonZeroU64::get))
        {
            let settings: &'r GreylistSettings = settings;
            let recipient = unbracketed(path);
            let verdict = triplets.check(settings, cx.client, sender, recipient, cx.now_ms);
            cx.observer.greylisted(verdict == Verdict::Pass);
            if verdict == Verdict::Defer {
                return settings.reply.bytes();
            }
        }
        self.accept_recipient(cx, unbracketed(path));
        reply::RCPT_OK
    }

    /// RCPT is accepted for `address`.
    fn accept_recipient(&mut self, cx: &mut Context, address: &[u8]) {
        self.transaction = Transaction::Rcpt;
        self.recipients += 1;
        cx.observer.recipient(address);
    }

    /// The message has ended: choose its reply, now or after a delay.
    fn end_message(&mut self, cx: &mut Context, out: &mut Vec<u8>) -> Action {
        let policy = cx.policy;
        self.phase = Phase::Command;
        let message = self.message();
        let (size, switches) = (message.scanner.size(), message.switches);
        cx.observer.data_ended(size, &switches);
        if policy.lmtp() {
            return self.end_lmtp_message(cx, out);
        }
        if size > policy.max_message_size() {
            let action = self.final_reply(cx, Outcome::TooBig, 0, out);
            self.end_transaction();
            return action;
        }
        let (mode, delay) = self.message().fate(policy);
        let rng = &mut self.rng(cx.seed);
        let outcome = draw_outcome(rng, mode);
        let millis = delay.map_or(0, |d| draw_millis(rng, d));
        let action = self.answer_message(cx, outcome, millis, rng, out);
        self.end_transaction();
        action
    }

    /// A message's final reply (LMTP: a recipient's), `outcome` after `millis`: as the rules
    /// say when there are any; else written now, or held. `rng` goes on to draw its id.
    fn answer_message(
        &mut self,
        cx: &mut Context,
        outcome: Outcome,
        millis: u64,
        rng: &mut Rand64,
        out: &mut Vec<u8>,
    ) -> Action {
        if !cx.rules.is_empty() {
            return self.final_reply(cx, outcome, millis, out);
        }
        if millis > 0 {
            self.phase = Phase::Held(Held::Reply {
                normal: outcome,
                rule: None,
            });
            return Action::Pause { millis };
        }
        let start = out.len();
        let action = write_outcome(outcome, cx.policy, || draw_id(rng), out);
        message_answered(cx, None, &out[start..]);
        action
    }
}

impl Message {
    /// Message bytes through the scanner, no further than a rule's cut, its switch headers
    /// read on the way. Returns the bytes used and whether the message has ended. This is
    /// the per-byte path of every message: it copies and allocates nothing.
    fn read(&mut self, policy: &Policy, input: &[u8]) -> (usize, bool) {
        let input = match self.cut {
            Some(cut) => &input[..cut.room(self.scanner.size(), input.len())],
            None => input,
        };
        let dynamic = policy.dynamic_switch();
        let switches = &mut self.switches;
        self.scanner.feed(input, |header| {
            if dynamic {
                switches.read_header(header);
            }
        })
    }

    /// The mode and the delay this message gets: its switches, where they may choose.
    fn fate(&self, policy: &Policy) -> (Mode, Option<DelayRange>) {
        if policy.dynamic_switch() {
            (
                self.switches.mode.unwrap_or(policy.mode()),
                self.switches.delay.or(policy.delay()),
            )
        } else {
            (policy.mode(), policy.delay())
        }
    }
}

/// A message's outcome in `mode`.
fn draw_outcome(rng: &mut Rand64, mode: Mode) -> Outcome {
    match mode {
        Mode::Accept => Outcome::Accept,
        Mode::Bounce => Outcome::Bounce(draw(rng, reply::BOUNCES.len())),
        // The accept reply and the ten bounces, each as likely.
        Mode::Random => match draw(rng, reply::BOUNCES.len() + 1) {
            0 => Outcome::Accept,
            n => Outcome::Bounce(n - 1),
        },
    }
}

/// A delay from `range`, in milliseconds.
fn draw_millis(rng: &mut Rand64, range: DelayRange) -> u64 {
    rng.rand_range(u64::from(range.min_secs()) * 1000..u64::from(range.max_secs()) * 1000 + 1)
}

/// VRFY: `pass=` and `fail=` are answered with the argument echoed, anything else with 252.
fn vrfy(arg: &[u8], out: &mut Vec<u8>) {
    if arg.is_empty() {
        out.extend_from_slice(reply::VRFY_SYNTAX);
    } else if command::contains(arg, b"pass=") {
        reply::vrfy(out, true, arg);
    } else if command::contains(arg, b"fail=") {
        reply::vrfy(out, false, arg);
    } else {
        out.extend_from_slice(reply::VRFY_UNKNOWN);
    }
}

/// EXPN: one word, a list name, in angle brackets or not.
fn expn(arg: &[u8], policy: &Policy, out: &mut Vec<u8>) {
    let mut words = command::words(arg);
    let (Some(list), None) = (words.next(), words.next()) else {
        out.extend_from_slice(reply::EXPN_SYNTAX);
        return;
    };
    let list = list
        .strip_prefix(b"<")
        .and_then(|l| l.strip_suffix(b">"))
        .unwrap_or(list);
    // `fail=...` names no list, so it is refused like any unknown one.
    if !reply::expn(out, list, policy.fqdn()) {
        out.extend_from_slice(reply::EXPN_DENIED);
    }
}

/// NOOP, ETRN and HELP: replies that change nothing.
fn information(verb: Verb, arg: &[u8]) -> &'static [u8] {
    match verb {
        Verb::Etrn => reply::ETRN_OK,
        Verb::Help if arg.is_empty() => reply::HELP_ALL,
        Verb::Help => reply::help_for(arg).unwrap_or(reply::HELP_UNKNOWN),
        _ => reply::OK,
    }
}

/// Writes a reply to no command line, with `id` to draw a message id; the action that
/// follows it.
fn write_outcome(
    outcome: Outcome,
    policy: &Policy,
    id: impl FnOnce() -> [u64; 3],
    out: &mut Vec<u8>,
) -> Action {
    match outcome {
        Outcome::Greeting => out.extend_from_slice(policy.greeting()),
        Outcome::Accept => reply::queued(out, id(), policy.fqdn()),
        Outcome::Bounce(n) => out.extend_from_slice(reply::BOUNCES[usize::from(n) % 10]),
        Outcome::TooBig => out.extend_from_slice(reply::TOO_BIG),
        Outcome::Cut => {
            reply::closing(out, policy.fqdn());
            return Action::Close;
        }
    }
    Action::Continue
}

/// QUIT's answer: the session ends.
fn goodbye(cx: &mut Context, out: &mut Vec<u8>) -> Action {
    out.extend_from_slice(reply::GOODBYE);
    cx.observer.ending(Ending::Quit);
    Action::Close
}

/// Tells the observer that a message got its final reply, `reply` (empty: none, the
/// connection was closed without a word).
fn message_answered(cx: &mut Context, rule: Option<&str>, reply: &[u8]) {
    let code = reply
        .get(..3)
        .and_then(decimal::saturating)
        .and_then(|n| u16::try_from(n).ok());
    cx.observer.message(&MessageEnd {
        code,
        rule,
        per_recipient: cx.policy.lmtp(),
    });
}

/// A number below `n` (n <= 256).
fn draw(rng: &mut Rand64, n: usize) -> u8 {
    rng.rand_range(0..n as u64) as u8
}

/// The three numbers of a message id.
fn draw_id(rng: &mut Rand64) -> [u64; 3] {
    let r = rng.rand_u64();
    [r >> 32, r & 0xffff_ffff, rng.rand_range(0..1_000_000)]
}

/// A path without its angle brackets.
fn unbracketed(path: &[u8]) -> &[u8] {
    path.strip_prefix(b"<")
        .and_then(|p| p.strip_suffix(b">"))
        .unwrap_or(path)
}

/// `FROM:` / `TO:` at the start of `arg` (a command's argument, trimmed already), in any
/// case; what follows, without the spaces that may come first.
#[inline(always)]
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = arg.split_at_checked(keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    Some(rest.trim_ascii_start())
}

/// Splits `<path> params` into the path and the parameters. A path in angle brackets may
/// hold spaces; one without is the first word.
#[inline(always)]
fn split_path(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = if rest.first() == Some(&b'<') {
        command::memchr(b'>', rest)? + 1
    } else {
        rest.iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(rest.len())
    };
    (end > 0).then(|| (&rest[..end], &rest[end..]))
}

/// `KEY=VALUE` into its key and value; a bare `KEY` has no value.
fn split_param(param: &[u8]) -> (&[u8], Option<&[u8]>) {
    match command::memchr(b'=', param) {
        Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
        None => (param, None),
    }
}

/// RFC 1870: size-value ::= 1*20DIGIT. Values beyond u64 are simply too big.
fn parse_size(digits: &[u8]) -> Option<u64> {
    if digits.len() > 20 {
        return None;
    }
    decimal::saturating(digits)
}

mod auth;
mod chunking;
mod faults;
mod lmtp;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
