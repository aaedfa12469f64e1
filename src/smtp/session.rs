//! The SMTP session: one connection's protocol state machine.
//!
//! Bytes in, replies and actions out. It never touches a socket or reads a clock: the event
//! loop hands it what arrived and carries out what it returns (close, wait before the final
//! reply, start TLS). Every reply of SPEC.md is chosen here; a client can make it reply, never
//! make it store what was sent or panic.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use oorandom::Rand64;

use super::command::{self, DataScanner, Line, MAX_LINE, Verb};
use super::decimal;
use super::policy::Mode;
pub use super::policy::Policy;
use super::reply;
use super::switches::Switches;

/// The 10th unknown command on a connection closes it.
pub const MAX_UNKNOWN_COMMANDS: u8 = 10;

/// Output (in the buffer the caller passes, which holds only unsent bytes) above which the
/// session stops taking commands: the caller sends what is there and feeds the rest later, so a pipelining client that never reads cannot make the
/// server buffer without bound.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { fail: bool },
    CramMd5,
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
        rng: &mut Rand64,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Step {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let action = match &mut self.phase {
                Phase::Closed => {
                    return Step {
                        consumed: input.len(),
                        action: Action::Close,
                    };
                }
                // Nothing is taken until the caller resumes the held-back reply.
                Phase::Waiting(_) => {
                    return Step {
                        consumed: used,
                        action: Action::Continue,
                    };
                }
                Phase::Data { scanner, switches } => {
                    let dynamic = policy.dynamic_switch;
                    let (n, ended) = scanner.feed(rest, |header| {
                        if dynamic {
                            switches.read_header(header);
                        }
                    });
                    used += n;
                    if !ended {
                        return Step {
                            consumed: used,
                            action: Action::Continue,
                        };
                    }
                    let (size, switches) = (scanner.size(), *switches);
                    self.end_message(policy, rng, size, switches, out)
                }
                Phase::Command | Phase::Auth(_) => {
                    if out.len() >= OUTPUT_HIGH_WATER {
                        return Step {
                            consumed: used,
                            action: Action::Continue,
                        };
                    }
                    let (n, line) = command::next_line(rest, &mut self.discarding);
                    used += n;
                    match line {
                        None => {
                            return Step {
                                consumed: used,
                                action: Action::Continue,
                            };
                        }
                        Some(Line::TooLong) => {
                            // An over-long reply inside AUTH ends the exchange too.
                            self.phase = Phase::Command;
                            out.extend_from_slice(reply::LINE_TOO_LONG);
                            Action::Continue
                        }
                        Some(Line::Complete(line)) => self.line(policy, rng, line, out),
                    }
                }
            };
            match action {
                Action::Continue => {}
                Action::Pause { .. } => {
                    return Step {
                        consumed: used,
                        action,
                    };
                }
                Action::Close | Action::StartTls => {
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
    pub fn resume(&mut self, policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
        if let Phase::Waiting(outcome) = self.phase {
            self.phase = Phase::Command;
            write_outcome(outcome, policy, rng, out);
        }
    }

    /// The client sent no complete line for the idle timeout: say so; the caller closes.
    pub fn time_out(&mut self, out: &mut Vec<u8>) {
        self.phase = Phase::Closed;
        out.extend_from_slice(reply::TIMEOUT);
    }

    fn line(
        &mut self,
        policy: &Policy,
        rng: &mut Rand64,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        if let Phase::Auth(step) = self.phase {
            self.phase = Phase::Command;
            return self.auth_response(step, line, out);
        }
        let (verb, arg) = command::parse_command(line);
        let reply: &[u8] = match verb {
            Verb::Helo | Verb::Ehlo if arg.is_empty() => match verb {
                Verb::Helo => reply::HELO_SYNTAX,
                _ => reply::EHLO_SYNTAX,
            },
            Verb::Helo => {
                self.transaction = Transaction::None;
                reply::HELO_OK
            }
            Verb::Ehlo => {
                self.transaction = Transaction::None;
                policy.ehlo(self.tls)
            }
            Verb::Mail => self.mail(arg, policy),
            Verb::Rcpt => self.rcpt(arg),
            Verb::Data => match self.transaction {
                Transaction::None => reply::NEED_MAIL,
                Transaction::Mail => reply::NEED_RCPT,
                Transaction::Rcpt => {
                    self.phase = Phase::Data {
                        scanner: DataScanner::new(),
                        switches: Switches::default(),
                    };
                    reply::START_DATA
                }
            },
            Verb::Rset => {
                self.transaction = Transaction::None;
                reply::OK
            }
            Verb::Noop => reply::OK,
            Verb::Quit => {
                out.extend_from_slice(reply::GOODBYE);
                return Action::Close;
            }
            Verb::Vrfy => {
                if arg.is_empty() {
                    reply::VRFY_SYNTAX
                } else if command::contains(arg, b"pass=") {
                    reply::vrfy(out, true, arg);
                    return Action::Continue;
                } else if command::contains(arg, b"fail=") {
                    reply::vrfy(out, false, arg);
                    return Action::Continue;
                } else {
                    reply::VRFY_UNKNOWN
                }
            }
            Verb::Expn => {
                let mut words = command::words(arg);
                match (words.next(), words.next()) {
                    (Some(list), None) => {
                        let list = list
                            .strip_prefix(b"<")
                            .and_then(|l| l.strip_suffix(b">"))
                            .unwrap_or(list);
                        if command::contains(list, b"fail=")
                            || !reply::expn(out, list, &policy.fqdn)
                        {
                            reply::EXPN_DENIED
                        } else {
                            return Action::Continue;
                        }
                    }
                    _ => reply::EXPN_SYNTAX,
                }
            }
            Verb::Etrn => reply::ETRN_OK,
            Verb::Help if arg.is_empty() => reply::HELP_ALL,
            Verb::Help => reply::help_for(arg).unwrap_or(reply::HELP_UNKNOWN),
            Verb::Auth => {
                self.auth(arg, policy, rng, out);
                return Action::Continue;
            }
            Verb::StartTls => {
                if self.tls {
                    reply::ALREADY_TLS
                } else if !policy.starttls {
                    reply::NOT_IMPLEMENTED
                } else if !arg.is_empty() {
                    reply::STARTTLS_SYNTAX
                } else {
                    out.extend_from_slice(reply::READY_TO_START_TLS);
                    return Action::StartTls;
                }
            }
            Verb::Unknown => {
                self.unknown_commands = self.unknown_commands.saturating_add(1);
                if self.unknown_commands >= MAX_UNKNOWN_COMMANDS {
                    out.extend_from_slice(reply::TOO_MANY_UNKNOWN);
                    return Action::Close;
                }
                reply::UNKNOWN_COMMAND
            }
        };
        out.extend_from_slice(reply);
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
                    Some(size) if size > policy.max_message_size => Some(reply::TOO_BIG),
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

    fn auth(&mut self, arg: &[u8], policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
        let reply = if self.authenticated {
            reply::AUTH_TWICE
        } else if self.transaction != Transaction::None {
            reply::AUTH_IN_TRANSACTION
        } else {
            let mut words = command::words(arg);
            match (words.next(), words.next(), words.next()) {
                (None, ..) => reply::AUTH_SYNTAX,
                (Some(_), _, Some(_)) => reply::AUTH_EXTRA_WORDS,
                (Some(mechanism), initial, None) => {
                    if mechanism.eq_ignore_ascii_case(b"CRAM-MD5") && initial.is_none() {
                        self.phase = Phase::Auth(AuthStep::CramMd5);
                        return cram_md5_challenge(policy, rng, out);
                    }
                    self.auth_start(mechanism, initial)
                }
            }
        };
        out.extend_from_slice(reply);
    }

    /// AUTH PLAIN and LOGIN, with or without an initial response.
    fn auth_start(&mut self, mechanism: &[u8], initial: Option<&[u8]>) -> &'static [u8] {
        if mechanism.eq_ignore_ascii_case(b"PLAIN") {
            match initial {
                Some(b"*") => reply::AUTH_CANCELLED,
                Some(response) => self.auth_outcome(mentions_fail(response)),
                None => {
                    self.phase = Phase::Auth(AuthStep::Plain);
                    reply::AUTH_EMPTY_CHALLENGE
                }
            }
        } else if mechanism.eq_ignore_ascii_case(b"LOGIN") {
            match initial {
                Some(b"*") => reply::AUTH_CANCELLED,
                // The initial response answers the first challenge: it is the user name.
                Some(user) => {
                    self.phase = Phase::Auth(AuthStep::LoginPassword {
                        fail: mentions_fail(user),
                    });
                    reply::AUTH_PASSWORD
                }
                None => {
                    self.phase = Phase::Auth(AuthStep::LoginUser);
                    reply::AUTH_USERNAME
                }
            }
        } else if mechanism.eq_ignore_ascii_case(b"CRAM-MD5") {
            // CRAM-MD5 starts with the server's challenge: there is no initial response.
            reply::AUTH_EXTRA_WORDS
        } else {
            reply::AUTH_SYNTAX
        }
    }

    fn auth_response(&mut self, step: AuthStep, line: &[u8], out: &mut Vec<u8>) -> Action {
        let reply = if line == b"*" {
            reply::AUTH_CANCELLED
        } else {
            match step {
                AuthStep::Plain | AuthStep::CramMd5 => self.auth_outcome(mentions_fail(line)),
                // The documented shortcut: `pass=`/`fail=` in clear answers at once.
                AuthStep::LoginUser
                    if command::contains(line, b"pass=") || command::contains(line, b"fail=") =>
                {
                    self.auth_outcome(command::contains(line, b"fail="))
                }
                AuthStep::LoginUser => {
                    self.phase = Phase::Auth(AuthStep::LoginPassword {
                        fail: mentions_fail(line),
                    });
                    reply::AUTH_PASSWORD
                }
                AuthStep::LoginPassword { fail } => self.auth_outcome(fail || mentions_fail(line)),
            }
        };
        out.extend_from_slice(reply);
        Action::Continue
    }

    fn auth_outcome(&mut self, fail: bool) -> &'static [u8] {
        if fail {
            reply::AUTH_FAILED
        } else {
            self.authenticated = true;
            reply::AUTH_OK
        }
    }

    /// The message has ended: choose its reply, now or after a delay.
    fn end_message(
        &mut self,
        policy: &Policy,
        rng: &mut Rand64,
        size: u64,
        switches: Switches,
        out: &mut Vec<u8>,
    ) -> Action {
        self.phase = Phase::Command;
        self.transaction = Transaction::None;
        if size > policy.max_message_size {
            out.extend_from_slice(reply::TOO_BIG);
            return Action::Continue;
        }
        let (mode, delay) = if policy.dynamic_switch {
            (
                switches.mode.unwrap_or(policy.mode),
                switches.delay.or(policy.delay),
            )
        } else {
            (policy.mode, policy.delay)
        };
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

/// `334` and the base64 of a fresh message id, the challenge CRAM-MD5 clients sign.
fn cram_md5_challenge(policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
    let mut id = Vec::with_capacity(64);
    reply::message_id(&mut id, draw_id(rng), &policy.fqdn);
    let mut line = String::from("334 ");
    general_purpose::STANDARD.encode_string(&id, &mut line);
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
}

fn write_outcome(outcome: Outcome, policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
    match outcome {
        Outcome::Accept => reply::queued(out, draw_id(rng), &policy.fqdn),
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

/// Lenient base64: real clients differ in padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether an AUTH response asks to fail: `fail=` in clear, or inside its base64.
fn mentions_fail(response: &[u8]) -> bool {
    if command::contains(response, b"fail=") {
        return true;
    }
    let mut decoded = [0u8; MAX_LINE];
    match BASE64.decode_slice(response, &mut decoded) {
        Ok(len) => command::contains(&decoded[..len], b"fail="),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
