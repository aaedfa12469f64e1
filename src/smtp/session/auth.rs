//! AUTH PLAIN, LOGIN and CRAM-MD5 as a client drives them: the outcome is the client's to
//! choose (`fail=` in what it sends, in clear or in base64), so nothing here checks a
//! password. It must not keep what a client sent beyond the line being answered.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use oorandom::Rand64;

use super::{Action, ConnectionSeed, Phase, Policy, Session, Transaction};
use crate::smtp::command::{self, MAX_LINE};
use crate::smtp::reply;

/// The reply an AUTH exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { fail: bool },
    CramMd5,
}

impl Session {
    /// AUTH: starts an exchange, or refuses one.
    pub(super) fn auth(
        &mut self,
        arg: &[u8],
        policy: &Policy,
        seed: ConnectionSeed,
        out: &mut Vec<u8>,
    ) {
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
                        return cram_md5_challenge(policy, &mut self.rng(seed), out);
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

    pub(super) fn auth_response(
        &mut self,
        step: AuthStep,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
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
