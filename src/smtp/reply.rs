//! Every reply the server sends, as wire bytes.
//!
//! Fixed replies are constants so the hot path copies bytes and formats nothing. Replies that
//! carry the mail name, a message id or a client's own words (VRFY's, made safe to send) are
//! written by the small functions below. This module knows the words of the protocol, not
//! when to say them.

pub const GOODBYE: &[u8] = b"221 2.0.0 Goodbye\r\n";
pub const OK: &[u8] = b"250 2.0.0 OK\r\n";
pub const HELO_OK: &[u8] = b"250 OK\r\n";
pub const MAIL_OK: &[u8] = b"250 2.1.0 OK\r\n";
pub const RCPT_OK: &[u8] = b"250 2.1.5 OK\r\n";
pub const START_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
pub const TIMEOUT: &[u8] = b"421 Timeout\r\n";
pub const TOO_MANY_CONNECTIONS: &[u8] = b"421 4.3.2 Too many connections\r\n";
pub const ETRN_OK: &[u8] = b"250 Queueing started\r\n";
pub const VRFY_UNKNOWN: &[u8] = b"252 2.0.0 Will attempt delivery\r\n";

pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Line too long\r\n";
pub const NOT_IMPLEMENTED: &[u8] = b"500 Not implemented\r\n";
pub const UNKNOWN_COMMAND: &[u8] = b"502 5.5.2 Command not recognised\r\n";
pub const TOO_MANY_UNKNOWN: &[u8] = b"502 5.5.3 Too many unknown commands\r\n";

pub const HELO_SYNTAX: &[u8] = b"501 5.5.4 Syntax: HELO domain.tld\r\n";
pub const EHLO_SYNTAX: &[u8] = b"501 5.5.4 Syntax: EHLO domain.tld\r\n";
pub const MAIL_SYNTAX: &[u8] = b"501 5.5.4 Syntax: MAIL FROM: <address>\r\n";
pub const RCPT_SYNTAX: &[u8] = b"501 5.5.4 Syntax: RCPT TO: <address>\r\n";
pub const VRFY_SYNTAX: &[u8] = b"501 5.5.4 Syntax: VRFY <address>\r\n";
pub const EXPN_SYNTAX: &[u8] = b"501 5.5.4 Syntax: EXPN <list1 | list2 | list3 | all>\r\n";
pub const SIZE_SYNTAX: &[u8] = b"501 5.5.4 Syntax: SIZE=<number of octets>\r\n";
pub const BODY_SYNTAX: &[u8] = b"501 5.5.4 Syntax: BODY=7BIT|8BITMIME\r\n";
pub const PARAM_SYNTAX: &[u8] = b"501 5.5.4 Syntax: parameters are KEYWORD or KEYWORD=VALUE\r\n";
pub const UNKNOWN_PARAM: &[u8] = b"555 5.5.4 Unsupported parameter\r\n";
pub const READY_TO_START_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
pub const STARTTLS_SYNTAX: &[u8] = b"501 5.5.4 Syntax: STARTTLS\r\n";
pub const NEED_MAIL: &[u8] = b"503 5.5.1 Error: need MAIL command\r\n";
pub const NEED_RCPT: &[u8] = b"503 5.5.1 Error: need RCPT command\r\n";
pub const NESTED_MAIL: &[u8] = b"503 5.5.1 Error: nested MAIL command\r\n";
pub const ALREADY_TLS: &[u8] = b"503 5.5.1 Error: TLS already active\r\n";
/// Any command but QUIT once the greeting refused the session (RFC 5321 3.1).
pub const ONLY_QUIT: &[u8] = b"503 5.5.1 Error: service refused, only QUIT is accepted\r\n";
pub const TOO_BIG: &[u8] = b"552 Message size exceeds fixed maximum message size\r\n";
/// RCPT beyond [`crate::smtp::session::MAX_RECIPIENTS`] in one transaction.
pub const TOO_MANY_RECIPIENTS: &[u8] = b"452 4.5.3 Too many recipients\r\n";

pub const BDAT_SYNTAX: &[u8] = b"501 5.5.4 Syntax: BDAT size [LAST]\r\n";
/// BDAT after MAIL whose recipients were all refused (Postfix's words for DATA then).
pub const NO_VALID_RECIPIENTS: &[u8] = b"554 5.5.1 Error: no valid recipients\r\n";
/// DATA, or RCPT, once a message's BDAT chunks have begun (RFC 3030 2).
pub const AFTER_BDAT: &[u8] = b"503 5.5.1 Error: bad sequence of commands after BDAT\r\n";
pub const LHLO_SYNTAX: &[u8] = b"501 5.5.4 Syntax: LHLO domain.tld\r\n";
/// HELO or EHLO on an LMTP listener (RFC 2033 4.1).
pub const NOT_LMTP_GREETING: &[u8] = b"500 5.5.1 Error: this is an LMTP service, use LHLO\r\n";

pub const EXPN_DENIED: &[u8] = b"550 Not authorised\r\n";

pub const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
pub const AUTH_FAILED: &[u8] = b"535 5.7.8 Authentication failed\r\n";
pub const AUTH_SYNTAX: &[u8] = b"501 5.5.4 Syntax: AUTH mechanism\r\n";
pub const AUTH_EXTRA_WORDS: &[u8] = b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n";
pub const AUTH_CANCELLED: &[u8] = b"501 5.7.0 Authentication cancelled\r\n";
pub const AUTH_TWICE: &[u8] = b"503 5.5.1 Already authenticated\r\n";
pub const AUTH_IN_TRANSACTION: &[u8] =
    b"503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n";
pub const AUTH_EMPTY_CHALLENGE: &[u8] = b"334 \r\n";
pub const AUTH_USERNAME: &[u8] = b"334 VXNlcm5hbWU6\r\n";
pub const AUTH_PASSWORD: &[u8] = b"334 UGFzc3dvcmQ6\r\n";

/// The verbs HELP lists, in the order it lists them.
pub const HELP_ALL: &[u8] =
    b"250 Supported commands: AUTH DATA EHLO ETRN EXPN HELO MAIL NOOP QUIT RCPT RSET VRFY\r\n";
pub const HELP_UNKNOWN: &[u8] =
    b"501 Supported commands: AUTH DATA EHLO ETRN EXPN HELO MAIL NOOP QUIT RCPT RSET VRFY\r\n";

/// `HELP VERB`: the syntax line of each verb HELP knows.
pub fn help_for(verb: &[u8]) -> Option<&'static [u8]> {
    const TABLE: [(&[u8], &[u8]); 12] = [
        (b"AUTH", b"250 Syntax: AUTH CRAM-MD5 LOGIN PLAIN\r\n"),
        (b"DATA", b"250 Syntax: DATA\r\n"),
        (b"EHLO", b"250 Syntax: EHLO domain.tld\r\n"),
        (b"ETRN", b"250 Syntax: ETRN\r\n"),
        (
            b"EXPN",
            b"250 Syntax: EXPN <list1 | list2 | list3 | all>\r\n",
        ),
        (b"HELO", b"250 Syntax: HELO domain.tld\r\n"),
        (b"MAIL", b"250 Syntax: MAIL FROM: <address>\r\n"),
        (b"NOOP", b"250 Syntax: NOOP\r\n"),
        (b"QUIT", b"250 Syntax: QUIT\r\n"),
        (b"RCPT", b"250 Syntax: RCPT TO: <address>\r\n"),
        (b"RSET", b"250 Syntax: RSET\r\n"),
        (b"VRFY", b"250 Syntax: VRFY <address>\r\n"),
    ];
    TABLE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(verb))
        .map(|&(_, line)| line)
}

/// The ten bounce replies, one of which is chosen at random for a bounced message.
pub const BOUNCES: [&[u8]; 10] = [
    b"450 Requested mail action not taken: mailbox unavailable\r\n",
    b"451 Requested action aborted: local error in processing\r\n",
    b"452 Requested action not taken: insufficient system storage\r\n",
    b"458 Unable to queue message\r\n",
    b"521 Machine does not accept mail\r\n",
    b"550 Requested action not taken: mailbox unavailable\r\n",
    b"551 User not local\r\n",
    b"552 Requested mail action aborted: exceeded storage allocation\r\n",
    b"553 Requested action not taken: mailbox name not allowed\r\n",
    b"571 Blocked\r\n",
];

/// The greeting: `220 {fqdn} ESMTP`.
pub fn greeting(out: &mut Vec<u8>, fqdn: &str) {
    out.extend_from_slice(b"220 ");
    out.extend_from_slice(fqdn.as_bytes());
    out.extend_from_slice(b" ESMTP\r\n");
}

/// `421 4.4.2 {fqdn} closing connection`: what a rule's `disconnect = "421"` says.
pub fn closing(out: &mut Vec<u8>, fqdn: &str) {
    out.extend_from_slice(b"421 4.4.2 ");
    out.extend_from_slice(fqdn.as_bytes());
    out.extend_from_slice(b" closing connection\r\n");
}

/// The whole EHLO (and LHLO) reply, built once per listener: it only depends on the mail
/// name, the size limit, and whether STARTTLS and CHUNKING are on offer.
pub fn ehlo(fqdn: &str, max_message_size: u64, starttls: bool, chunking: bool) -> Vec<u8> {
    let mut out = format!(
        "250-{fqdn}\r\n250-HELP\r\n250-PIPELINING\r\n250-AUTH CRAM-MD5 LOGIN PLAIN\r\n250-SIZE {max_message_size}\r\n250-VRFY\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-EXPN\r\n"
    );
    if chunking {
        out.push_str("250-CHUNKING\r\n");
    }
    if starttls {
        out.push_str("250-STARTTLS\r\n");
    }
    out.push_str("250 DSN\r\n");
    out.into_bytes()
}

/// A message id, `<DIGITS.DIGITS.DIGITS@{fqdn}>`, from three numbers the caller draws.
pub fn message_id(out: &mut Vec<u8>, parts: [u64; 3], fqdn: &str) {
    out.push(b'<');
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        decimal(out, part);
    }
    out.push(b'@');
    out.extend_from_slice(fqdn.as_bytes());
    out.push(b'>');
}

/// Appends `n` in decimal (without the formatting machinery: this runs for every message).
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// `250 2.0.0 {n} octets received`: a BDAT chunk that is not the last has all arrived.
pub fn chunk_received(out: &mut Vec<u8>, octets: u64) {
    out.extend_from_slice(b"250 2.0.0 ");
    decimal(out, octets);
    out.extend_from_slice(b" octets received\r\n");
}

/// `250 2.0.0 OK: queued as {msgid}`.
pub fn queued(out: &mut Vec<u8>, parts: [u64; 3], fqdn: &str) {
    out.extend_from_slice(b"250 2.0.0 OK: queued as ");
    message_id(out, parts, fqdn);
    out.extend_from_slice(b"\r\n");
}

/// RFC 5321 4.5.3.1.5: the longest reply line, CRLF included.
pub const MAX_REPLY_LINE: usize = 512;

/// The most of a VRFY argument that is echoed: what fits in one reply line beside the
/// longest frame around it, `550 5.7.1 <` and `> unknown` CRLF.
pub const MAX_VRFY_ECHO: usize = MAX_REPLY_LINE - b"550 5.7.1 <".len() - b"> unknown\r\n".len();

/// VRFY of an argument containing `pass=` or `fail=`: the argument is echoed in brackets.
pub fn vrfy(out: &mut Vec<u8>, known: bool, arg: &[u8]) {
    out.extend_from_slice(if known {
        b"250 2.0.0 <"
    } else {
        b"550 5.7.1 <"
    });
    echo(out, arg);
    out.extend_from_slice(if known { b"> OK\r\n" } else { b"> unknown\r\n" });
}

/// Appends client bytes to a reply line so that it stays one line: control bytes (a CR, a
/// NUL, a tab...) become `?`, as Postfix prints them, and more than [`MAX_VRFY_ECHO`] bytes
/// are cut, at the start of a UTF-8 character, and marked `...`.
fn echo(out: &mut Vec<u8>, arg: &[u8]) {
    const CUT: &[u8] = b"...";
    let shown = if arg.len() <= MAX_VRFY_ECHO {
        arg
    } else {
        let mut end = MAX_VRFY_ECHO - CUT.len();
        // A UTF-8 character has at most three continuation bytes.
        for _ in 0..3 {
            if arg[end] & 0xc0 != 0x80 {
                break;
            }
            end -= 1;
        }
        &arg[..end]
    };
    out.extend(
        shown
            .iter()
            .map(|&b| if b.is_ascii_control() { b'?' } else { b }),
    );
    if shown.len() < arg.len() {
        out.extend_from_slice(CUT);
    }
}

/// The members of the lists EXPN knows, in the order the original answers them.
const LIST1: &[&str] = &["Shadow", "Wednesday", "Low-key Liesmith"];
const LIST2: &[&str] = &["Jim Holden", "Naomi Nagata", "Alex Kamal", "Amos Burton"];
const LIST3: &[&str] = &[
    "Takeshi Kovacs",
    "Laurens Bancroft",
    "Kristin Ortega",
    "Quellcrist Falconer",
    "Virginia Vidaura",
    "Reileen Kawahara",
];

/// `EXPN list`: one line per member; false for a list nobody knows (nothing written).
pub fn expn(out: &mut Vec<u8>, list: &[u8], fqdn: &str) -> bool {
    let lists: &[&[&str]] = if list.eq_ignore_ascii_case(b"list1") {
        &[LIST1]
    } else if list.eq_ignore_ascii_case(b"list2") {
        &[LIST2]
    } else if list.eq_ignore_ascii_case(b"list3") {
        &[LIST3]
    } else if list.eq_ignore_ascii_case(b"all") {
        &[LIST1, LIST2, LIST3]
    } else {
        return false;
    };
    let count: usize = lists.iter().map(|l| l.len()).sum();
    for (i, name) in lists.iter().flat_map(|l| l.iter()).enumerate() {
        out.extend_from_slice(if i + 1 == count { b"250 " } else { b"250-" });
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b" <");
        for c in name.chars() {
            let c = if c == ' ' {
                '.'
            } else {
                c.to_ascii_lowercase()
            };
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.push(b'@');
        out.extend_from_slice(fqdn.as_bytes());
        out.extend_from_slice(b">\r\n");
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_three_numbers_at_the_mail_name() {
        let mut out = Vec::new();
        super::message_id(&mut out, [0, 42, u64::MAX], "mx.example");
        assert_eq!(out, b"<0.42.18446744073709551615@mx.example>");
    }

    #[test]
    fn a_vrfy_reply_is_one_line_whatever_the_argument() {
        let longest = crate::smtp::command::MAX_LINE;
        for arg in [
            vec![0x80; longest],
            vec![b'\r'; longest],
            b"\n\0".repeat(300),
        ] {
            for known in [true, false] {
                let mut out = Vec::new();
                super::vrfy(&mut out, known, &arg);
                assert!(out.len() <= super::MAX_REPLY_LINE, "{} bytes", out.len());
                let breaks = out.iter().filter(|&&b| b == b'\r' || b == b'\n').count();
                assert_eq!((breaks, out.ends_with(b"\r\n")), (2, true), "{out:?}");
            }
        }
    }
}
