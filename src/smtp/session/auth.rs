//! AUTH PLAIN, LOGIN and CRAM-MD5 as a client drives them: the outcome is the client's to
//! choose (`fail=` in what it sends, in clear or in base64), so nothing here checks a
//! password. It must not keep what a client sent beyond the line being answered.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use oorandom::Rand64;

use super::faults::Subject;
use super::{Action, Context, Phase, Policy, Session, Transaction};
use crate::smtp::command::{self, MAX_LINE};
use crate::smtp::observer::AuthResult;
use crate::smtp::reply;
use crate::smtp::rules::Stage;

/// The reply an AUTH exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { fail: bool },
    CramMd5,
}

/// The mechanisms, as a rule's `match` reads the user name from their responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mechanism {
    Plain,
    Login,
    CramMd5,
}

impl Mechanism {
    /// The mechanism an AUTH command names, if it is one of these.
    fn named(word: &[u8]) -> Option<Mechanism> {
        [
            (&b"PLAIN"[..], Mechanism::Plain),
            (b"LOGIN", Mechanism::Login),
            (b"CRAM-MD5", Mechanism::CramMd5),
        ]
        .into_iter()
        .find_map(|(name, mechanism)| word.eq_ignore_ascii_case(name).then_some(mechanism))
    }

    /// Its name as metrics label it.
    fn label(self) -> &'static str {
        match self {
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::CramMd5 => "cram-md5",
        }
    }
}

impl AuthStep {
    fn mechanism(self) -> Mechanism {
        match self {
            AuthStep::Plain => Mechanism::Plain,
            AuthStep::LoginUser | AuthStep::LoginPassword { .. } => Mechanism::Login,
            AuthStep::CramMd5 => Mechanism::CramMd5,
        }
    }
}

/// How an AUTH command or response ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    Reply(&'static [u8]),
    /// Authenticated, unless the client asked to fail.
    Outcome {
        fail: bool,
    },
}

impl Session {
    /// AUTH: starts an exchange, or answers at once.
    pub(super) fn auth(&mut self, cx: &mut Context, arg: &[u8], out: &mut Vec<u8>) -> Action {
        let mut words = command::words(arg);
        let (word, initial) = (words.next(), words.next());
        let mechanism = word.and_then(Mechanism::named);
        // The user name a response names, decoded here once for the observer and the rules.
        let mut decoded = [0u8; MAX_LINE];
        match self.auth_command(word, mechanism, initial, words.next()) {
            Ok(step) => {
                match step {
                    AuthStep::CramMd5 => cram_md5_challenge(cx.policy, &mut self.rng(cx.seed), out),
                    AuthStep::Plain => out.extend_from_slice(reply::AUTH_EMPTY_CHALLENGE),
                    AuthStep::LoginUser => out.extend_from_slice(reply::AUTH_USERNAME),
                    AuthStep::LoginPassword { .. } => {
                        let response = initial.unwrap_or_default();
                        let user = told_user(cx, Mechanism::Login, response, &mut decoded);
                        self.remember_user(cx, user);
                        out.extend_from_slice(reply::AUTH_PASSWORD);
                    }
                }
                self.phase = Phase::Auth(step);
                Action::Continue
            }
            Err(end) => {
                let subject = match (mechanism, initial) {
                    (Some(Mechanism::Plain), Some(response)) => {
                        Subject::User(told_user(cx, Mechanism::Plain, response, &mut decoded))
                    }
                    _ => Subject::Arg(b""),
                };
                let label = mechanism.map_or("other", Mechanism::label);
                self.auth_final(cx, end, label, subject, out)
            }
        }
    }

    /// What an AUTH command starts (the step it waits in), or how it ends at once.
    fn auth_command(
        &self,
        word: Option<&[u8]>,
        mechanism: Option<Mechanism>,
        initial: Option<&[u8]>,
        extra: Option<&[u8]>,
    ) -> Result<AuthStep, Final> {
        if self.authenticated {
            return Err(Final::Reply(reply::AUTH_TWICE));
        }
        if self.transaction != Transaction::None {
            return Err(Final::Reply(reply::AUTH_IN_TRANSACTION));
        }
        if word.is_none() {
            return Err(Final::Reply(reply::AUTH_SYNTAX));
        }
        if extra.is_some() {
            return Err(Final::Reply(reply::AUTH_EXTRA_WORDS));
        }
        match (mechanism, initial) {
            (Some(Mechanism::Plain | Mechanism::Login), Some(b"*")) => {
                Err(Final::Reply(reply::AUTH_CANCELLED))
            }
            (Some(Mechanism::Plain), Some(response)) => Err(Final::Outcome {
                fail: mentions_fail(response),
            }),
            (Some(Mechanism::Plain), None) => Ok(AuthStep::Plain),
            // The initial response answers the first challenge: it is the user name.
            (Some(Mechanism::Login), Some(user)) => Ok(AuthStep::LoginPassword {
                fail: mentions_fail(user),
            }),
            (Some(Mechanism::Login), None) => Ok(AuthStep::LoginUser),
            (Some(Mechanism::CramMd5), None) => Ok(AuthStep::CramMd5),
            // CRAM-MD5 starts with the server's challenge: there is no initial response.
            (Some(Mechanism::CramMd5), Some(_)) => Err(Final::Reply(reply::AUTH_EXTRA_WORDS)),
            (None, _) => Err(Final::Reply(reply::AUTH_SYNTAX)),
        }
    }

    /// A client's response inside an exchange (the phase is still the step it answers).
    pub(super) fn auth_response(
        &mut self,
        cx: &mut Context,
        step: AuthStep,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        let mut decoded = [0u8; MAX_LINE];
        let (end, subject) = match step {
            _ if line == b"*" => (Final::Reply(reply::AUTH_CANCELLED), Subject::Remembered),
            AuthStep::Plain | AuthStep::CramMd5 => {
                let fail = mentions_fail(line);
                let user = told_user(cx, step.mechanism(), line, &mut decoded);
                (Final::Outcome { fail }, Subject::User(user))
            }
            // The documented shortcut: `pass=`/`fail=` in clear answers at once.
            AuthStep::LoginUser
                if command::contains(line, b"pass=") || command::contains(line, b"fail=") =>
            {
                let fail = command::contains(line, b"fail=");
                let user = told_user(cx, Mechanism::Login, line, &mut decoded);
                (Final::Outcome { fail }, Subject::User(user))
            }
            AuthStep::LoginUser => {
                let user = told_user(cx, Mechanism::Login, line, &mut decoded);
                self.remember_user(cx, user);
                self.phase = Phase::Auth(AuthStep::LoginPassword {
                    fail: mentions_fail(line),
                });
                out.extend_from_slice(reply::AUTH_PASSWORD);
                return Action::Continue;
            }
            AuthStep::LoginPassword { fail } => {
                let fail = fail || mentions_fail(line);
                (Final::Outcome { fail }, Subject::Remembered)
            }
        };
        self.auth_final(cx, end, step.mechanism().label(), subject, out)
    }

    /// The reply that ends an exchange, as the rules at `auth` may change it.
    fn auth_final(
        &mut self,
        cx: &mut Context,
        end: Final,
        mechanism: &'static str,
        subject: Subject,
        out: &mut Vec<u8>,
    ) -> Action {
        let before = self.authenticated;
        let action = self.auth_answer(cx, end, subject, out);
        let cancelled = end == Final::Reply(reply::AUTH_CANCELLED);
        // An exchange ends with an outcome or a cancel, once its reply (delayed or not) is
        // out; a syntax error or a second AUTH is no exchange.
        if !self.is_waiting() && (cancelled || matches!(end, Final::Outcome { .. })) {
            let result = match (cancelled, self.authenticated && !before) {
                (true, _) => AuthResult::Cancelled,
                (false, true) => AuthResult::Accepted,
                (false, false) => AuthResult::Refused,
            };
            cx.observer.auth(mechanism, result);
        }
        action
    }

    /// The reply to an exchange's end, or what the rules at `auth` say instead.
    fn auth_answer(
        &mut self,
        cx: &mut Context,
        end: Final,
        subject: Subject,
        out: &mut Vec<u8>,
    ) -> Action {
        let mut normal = |session: &mut Session, _: &mut Context, out: &mut Vec<u8>| {
            session.phase = Phase::Command;
            out.extend_from_slice(match end {
                Final::Reply(reply) => reply,
                Final::Outcome { fail } => session.auth_outcome(fail),
            });
            Action::Continue
        };
        if cx.rules.is_empty() {
            return normal(self, cx, out);
        }
        let action = self.answer_by_rules(cx, Stage::Auth, subject, out, &mut normal);
        if !self.is_waiting() && self.transaction == Transaction::None {
            // The user name was only kept for this reply.
            self.remembered = None;
        }
        action
    }

    /// Keeps which rules `user`, the name a LOGIN response gave, matches, for the reply
    /// after the password.
    fn remember_user(&mut self, cx: &Context, user: &[u8]) {
        if !cx.rules.is_empty() {
            self.remembered = cx.rules.remember(Stage::Auth, user);
        }
    }

    fn auth_outcome(&mut self, fail: bool) -> &'static [u8] {
        if fail {
            reply::AUTH_FAILED
        } else {
            self.authenticated = true;
            reply::AUTH_OK
        }
    }
}

/// The user name a response names, decoded into `buf`, once the observer is told of it.
fn told_user<'b>(
    cx: &mut Context,
    mechanism: Mechanism,
    response: &'b [u8],
    buf: &'b mut [u8; MAX_LINE],
) -> &'b [u8] {
    let user = user_name(mechanism, response, buf);
    cx.observer.auth_user(user);
    user
}

/// The user name in a response: PLAIN's authentication identity (`authzid NUL authcid NUL
/// password`), LOGIN's whole response, CRAM-MD5's first word. A response that is not base64
/// is taken as it is (the documented `pass=`/`fail=` in clear).
fn user_name<'b>(
    mechanism: Mechanism,
    response: &'b [u8],
    buf: &'b mut [u8; MAX_LINE],
) -> &'b [u8] {
    let decoded: &[u8] = match BASE64.decode_slice(response, &mut buf[..]) {
        Ok(len) => &buf[..len],
        Err(_) => response,
    };
    match mechanism {
        Mechanism::Plain => decoded.split(|&b| b == 0).nth(1).unwrap_or_default(),
        Mechanism::Login => decoded,
        Mechanism::CramMd5 => decoded.split(|&b| b == b' ').next().unwrap_or_default(),
    }
}

/// `334` and the base64 of a fresh message id, the challenge CRAM-MD5 clients sign.
fn cram_md5_challenge(policy: &Policy, rng: &mut Rand64, out: &mut Vec<u8>) {
    let mut id = Vec::with_capacity(64);
    reply::message_id(&mut id, super::draw_id(rng), policy.fqdn());
    let mut line = String::from("334 ");
    general_purpose::STANDARD.encode_string(&id, &mut line);
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
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
