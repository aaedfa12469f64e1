//! The SMTP session: one connection's protocol state machine.
//!
//! Bytes in, replies and actions out. It never touches a socket or reads a clock: the event
//! loop hands it what arrived and carries out what it returns (close, wait before the final
//! reply, start TLS). Every reply of SPEC.md is chosen here; a client can make it reply, never
//! make it store what was sent or panic.

use oorandom::Rand64;

use super::command::{self, DataScanner, Line, Verb};
use super::decimal;
use super::policy::Mode;
pub use super::policy::Policy;
use super::reply;
use super::switches::Switches;
use auth::AuthStep;

/// The 10th unknown command on a connection closes it.
pub const MAX_UNKNOWN_COMMANDS: u8 = 10;

/// Output (in the buffer the caller passes, which holds only unsent bytes) above which the
/// session stops taking commands: the caller sends what is there and feeds the rest later,
/// so a pipelining client that never reads cannot make the server buffer without bound.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// What the caller must do after [`Session::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the output; feed more input when it comes.
    Continue,
    /// Send the output, then close. The session takes no more input.
    Close,
    /// Send the output, wait this long, then call [`Session::resume`] (which writes the final
    /// reply) before feeding the rest of the input.
    Pause { millis: u64 },
    /// Send the output (the 220), then start a TLS handshake and replace this session with
    /// [`Session::new`]`(true)`. Input after the STARTTLS line was thrown away.
    StartTls,
}

/// The result of [`Session::feed`]: how many input bytes were used, and what to do. Unused
/// bytes are an unfinished line, or input that waits for a pause or for output to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub action: Action,
}

#[derive(Debug, Clone)]
enum Phase {
    Command,
    Data {
        scanner: DataScanner,
        switches: Switches,
    },
    Auth(AuthStep),
    /// The message has ended; its final reply waits for a delay.
    Waiting(Outcome),
    Closed,
}

/// The final reply to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accept,
    /// An index into [`reply::BOUNCES`].
    Bounce(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    None,
    /// MAIL accepted, no recipient yet.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
}

#[derive(Debug, Clone)]
pub struct Session {
    phase: Phase,
    transaction: Transaction,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    unknown_commands: u8,
    authenticated: bool,
    tls: bool,
    /// Random choices made so far: with the connection's seed, what the next one is drawn
    /// from.
    draws: u32,
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
            discarding: false,
            unknown_commands: 0,
            authenticated: false,
            tls,
            draws: 0,
        }
    }

    /// Whether the final reply waits for [`Session::resume`].
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Waiting(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a message is being received (the client is sending DATA).
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data { .. })
    }

    /// Takes what the client sent. Replies are appended to `out`.
    pub fn feed(
        &mut self,
        policy: &Policy,
        seed: ConnectionSeed,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Step {
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
                Phase::Waiting(_) => (0, None),
                Phase::Data { scanner, switches } => {
                    let (n, ended) = read_message(scanner, switches, policy, rest);
                    let action = ended.map(|(size, switches)| {
                        self.end_message(policy, seed, size, switches, out)
                    });
                    (n, action)
                }
                Phase::Command | Phase::Auth(_) => self.read_line(policy, seed, rest, out),
            };
            used += n;
            match action {
                Some(Action::Continue) => {}
                None => {
                    return Step {
                        consumed: used,
                        action: Action::Continue,
                    };
                }
                Some(action @ Action::Pause { .. }) => {
                    return Step {
                        consumed: used,
                        action,
                    };
                }
                // What follows the end of the session, or the start of TLS, is dropped.
                Some(action @ (Action::Close | Action::StartTls)) => {
                    if action == Action::Close {
                        self.phase = Phase::Closed;
                    }
                    return Step {
                        consumed: input.len(),
                        action,
                    };
                }
            }
        }
    }

    /// Writes the final reply that a [`Action::Pause`] held back.
    pub fn resume(&mut self, policy: &Policy, seed: ConnectionSeed, out: &mut Vec<u8>) {
        if let Phase::Waiting(outcome) = self.phase {
            self.phase = Phase::Command;
            write_outcome(outcome, policy, &mut self.rng(seed), out);
        }
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
    /// arrived, or when the output is full and must drain first.
    fn read_line(
        &mut self,
        policy: &Policy,
        seed: ConnectionSeed,
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
                self.phase = Phase::Command;
                out.extend_from_slice(reply::LINE_TOO_LONG);
                Some(Action::Continue)
            }
            Some(Line::Complete(line)) => Some(self.line(policy, seed, line, out)),
        };
        (n, action)
    }

    /// Answers one whole line.
    fn line(
        &mut self,
        policy: &Policy,
        seed: ConnectionSeed,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        if let Phase::Auth(step) = self.phase {
            self.phase = Phase::Command;
            return self.auth_response(step, line, out);
        }
        let (verb, arg) = command::parse_command(line);
        match verb {
            Verb::Helo | Verb::Ehlo => out.extend_from_slice(self.greeting(verb, arg, policy)),
            Verb::Mail | Verb::Rcpt | Verb::Data | Verb::Rset => {
                out.extend_from_slice(self.transaction_step(verb, arg, policy));
            }
            Verb::Auth => self.auth(arg, policy, seed, out),
            Verb::Vrfy => vrfy(arg, out),
            Verb::Expn => expn(arg, policy, out),
            Verb::Noop | Verb::Etrn | Verb::Help => out.extend_from_slice(information(verb, arg)),
            Verb::StartTls => return self.starttls(arg, policy, out),
            Verb::Unknown => return self.unknown(out),
            Verb::Quit => {
                out.extend_from_slice(reply::GOODBYE);
                return Action::Close;
            }
        }
        Action::Continue
    }

    /// HELO and EHLO: each starts over, with no transaction open.
    fn greeting<'p>(&mut self, verb: Verb, arg: &[u8], policy: &'p Policy) -> &'p [u8] {
        match (verb, arg.is_empty()) {
            (Verb::Helo, true) => reply::HELO_SYNTAX,
            (_, true) => reply::EHLO_SYNTAX,
            (Verb::Helo, false) => {
                self.transaction = Transaction::None;
                reply::HELO_OK
            }
            (_, false) => {
                self.transaction = Transaction::None;
                policy.ehlo(self.tls)
            }
        }
    }

    /// MAIL, RCPT, DATA and RSET: the steps of a mail transaction, in RFC 5321 order.
    fn transaction_step(&mut self, verb: Verb, arg: &[u8], policy: &Policy) -> &'static [u8] {
        match verb {
            Verb::Mail => self.mail(arg, policy),
            Verb::Rcpt => self.rcpt(arg),
            Verb::Data => self.data(),
            _ => {
                self.transaction = Transaction::None;
                reply::OK
            }
        }
    }

    fn data(&mut self) -> &'static [u8] {
        match self.transaction {
            Transaction::None => reply::NEED_MAIL,
            Transaction::Mail => reply::NEED_RCPT,
            Transaction::Rcpt => {
                self.phase = Phase::Data {
                    scanner: DataScanner::new(),
                    switches: Switches::default(),
                };
                reply::START_DATA
            }
        }
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

    fn unknown(&mut self, out: &mut Vec<u8>) -> Action {
        self.unknown_commands = self.unknown_commands.saturating_add(1);
        if self.unknown_commands >= MAX_UNKNOWN_COMMANDS {
            out.extend_from_slice(reply::TOO_MANY_UNKNOWN);
            return Action::Close;
        }
        out.extend_from_slice(reply::UNKNOWN_COMMAND);
        Action::Continue
    }

    fn mail(&mut self, arg: &[u8], policy: &Policy) -> &'static [u8] {
        if self.transaction != Transaction::None {
            return reply::NESTED_MAIL;
        }
        let Some((_path, params)) = strip_keyword(arg, b"FROM:").and_then(split_path) else {
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
        self.transaction = Transaction::Mail;
        reply::MAIL_OK
    }

    fn rcpt(&mut self, arg: &[u8]) -> &'static [u8] {
        if self.transaction == Transaction::None {
            return reply::NEED_MAIL;
        }
        let Some((_path, params)) = strip_keyword(arg, b"TO:").and_then(split_path) else {
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
        self.transaction = Transaction::Rcpt;
        reply::RCPT_OK
    }

    /// The message has ended: choose its reply, now or after a delay.
    fn end_message(
        &mut self,
        policy: &Policy,
        seed: ConnectionSeed,
        size: u64,
        switches: Switches,
        out: &mut Vec<u8>,
    ) -> Action {
        self.phase = Phase::Command;
        self.transaction = Transaction::None;
        if size > policy.max_message_size() {
            out.extend_from_slice(reply::TOO_BIG);
            return Action::Continue;
        }
        let (mode, delay) = if policy.dynamic_switch() {
            (
                switches.mode.unwrap_or(policy.mode()),
                switches.delay.or(policy.delay()),
            )
        } else {
            (policy.mode(), policy.delay())
        };
        let rng = &mut self.rng(seed);
        let outcome = match mode {
            Mode::Accept => Outcome::Accept,
            Mode::Bounce => Outcome::Bounce(draw(rng, reply::BOUNCES.len())),
            // The accept reply and the ten bounces, each as likely.
            Mode::Random => match draw(rng, reply::BOUNCES.len() + 1) {
                0 => Outcome::Accept,
                n => Outcome::Bounce(n - 1),
            },
        };
        let millis = delay.map_or(0, |d| {
            rng.rand_range(u64::from(d.min_secs()) * 1000..u64::from(d.max_secs()) * 1000 + 1)
        });
        if millis == 0 {
            write_outcome(outcome, policy, rng, out);
            Action::Continue
        } else {
            self.phase = Phase::Waiting(outcome);
            Action::Pause { millis }
        }
    }
}

/// Message bytes through the DATA scanner, its switch headers read on the way. Returns the
/// bytes used and, once the message has ended, its size and switches. This is the per-byte
/// path of every message: it copies and allocates nothing.
fn read_message(
    scanner: &mut DataScanner,
    switches: &mut Switches,
    policy: &Policy,
    input: &[u8],
) -> (usize, Option<(u64, Switches)>) {
    let dynamic = policy.dynamic_switch();
    let (n, ended) = scanner.feed(input, |header| {
        if dynamic {
            switches.read_header(header);
        }
    });
    (n, ended.then(|| (scanner.size(), *switches)))
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

fn write_outcome(outcome: Outcome, policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
    match outcome {
        Outcome::Accept => reply::queued(out, draw_id(rng), policy.fqdn()),
        Outcome::Bounce(n) => out.extend_from_slice(reply::BOUNCES[usize::from(n) % 10]),
    }
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

/// `FROM:` / `TO:` at the start of `arg`, in any case; what follows, trimmed.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| command::trim(&arg[keyword.len()..]))
}

/// Splits `<path> params` into the path and the parameters. A path in angle brackets may
/// hold spaces; one without is the first word.
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
