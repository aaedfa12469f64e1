//! Random input through the session core, as a fuzzer would send it: SMTP words, dot lines,
//! switch headers, AUTH exchanges, VRFY echoes, junk bytes, over-long runs and floods of one
//! command, cut into random pieces.
//!
//! Checked after every piece: no panic; what the caller must keep of the input stays under
//! one line; the output, split on CRLF, holds only reply lines (`DDD` then a space or a dash,
//! no other CR or LF, at most 512 octets) and ends in CRLF; it is checked at its peak, when it
//! reaches the high-water mark and the session stops taking commands, and is then never more
//! than one reply over that mark; a closed session stays closed.
//!
//! `cargo test --release --lib fuzz` runs a short round; set `BLACKHOLE_FUZZ_INPUTS` (and
//! optionally `BLACKHOLE_FUZZ_SEED`) for a long one.

use std::str::FromStr;

use super::tests::{feed, resume};
use super::*;
use crate::smtp::command::MAX_LINE;
use crate::smtp::policy::DelayRange;
use crate::smtp::reply::MAX_REPLY_LINE;

const WORDS: [&[u8]; 30] = [
    b"HELO x\r\n",
    b"EHLO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b> SIZE=",
    b"RCPT TO:<c@d>\r\n",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b".",
    b"\n.\n",
    b"\r.\r",
    b"..\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH PLAIN AGZhaWw9YQBi\r\n",
    b"*\r\n",
    b"X-Blackhole-Delay: ",
    b"X-Blackhole-Mode: random\r\n",
    b"X-Blackhole-Mode: bounce\r\n",
    b"RSET\r\n",
    b"VRFY pass=",
    b"VRFY fail=",
    b"EXPN all\r\n",
    b"HELP ",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"\r\n",
    b"\n",
    b"\r",
];

/// The most one command adds to the output: `EXPN all`, the longest reply, is about 600
/// octets. The session stops taking commands at the high-water mark, so the output never
/// goes further past it than this.
const LONGEST_REPLY: usize = 1024;

fn random_input(rng: &mut Rand64) -> Vec<u8> {
    // Mostly short inputs; now and then a long one, to fill the output to its high water.
    let target = match rng.rand_range(0..20) {
        0 => rng.rand_range(1..20_000),
        _ => rng.rand_range(1..600),
    } as usize;
    let mut input = Vec::with_capacity(target + 2 * MAX_LINE);
    while input.len() < target {
        match rng.rand_range(0..12) {
            0 => input.extend((0..rng.rand_range(1..16)).map(|_| rng.rand_u64() as u8)),
            1 => input.extend(
                (0..rng.rand_range(1..8)).map(|_| b"0123456789, -"[rng.rand_range(0..13) as usize]),
            ),
            2 if rng.rand_range(0..5) == 0 => input.extend(std::iter::repeat_n(
                b'a',
                rng.rand_range(1..2 * MAX_LINE as u64) as usize,
            )),
            // A flood of one command, as a pipelining client that never reads sends it.
            3 if rng.rand_range(0..10) == 0 => {
                let word = WORDS[rng.rand_range(0..WORDS.len() as u64) as usize];
                for _ in 0..rng.rand_range(1..200) {
                    input.extend_from_slice(word);
                }
            }
            _ => input.extend_from_slice(WORDS[rng.rand_range(0..WORDS.len() as u64) as usize]),
        }
    }
    input
}

fn policies() -> [Policy; 3] {
    let delay = DelayRange::new(0, 2);
    [
        Policy::new(
            "mx.example".into(),
            Mode::Accept,
            None,
            true,
            512_000,
            false,
        ),
        Policy::new("mx.example".into(), Mode::Random, delay, true, 200, true),
        Policy::new("mx.example".into(), Mode::Bounce, delay, false, 1, true),
    ]
}

/// `out` split on CRLF. The part after the last CRLF is returned as the last line, so an
/// unterminated reply is seen.
fn crlf_lines(out: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = out;
    while let Some(end) = memchr::memmem::find(rest, b"\r\n") {
        lines.push(&rest[..end]);
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

/// `out` is whole reply lines: each ends in CRLF, holds no other CR or LF, starts `DDD`
/// with a space or a dash, and fits in a reply line.
fn assert_replies(out: &[u8], input: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "unterminated reply {:?} for input {input:?}",
        String::from_utf8_lossy(out)
    );
    for line in crlf_lines(out) {
        let shaped = line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && (line[3] == b' ' || line[3] == b'-');
        let one_line = !line.iter().any(|&b| b == b'\r' || b == b'\n');
        assert!(
            shaped && one_line && line.len() + 2 <= MAX_REPLY_LINE,
            "bad reply line {:?} for input {input:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// The output before the caller sends (clears) it: well-formed replies, and never more than
/// one reply past the high-water mark. Checked whenever the session hands control back with
/// output the loop would send (at the mark, on close, on STARTTLS, at the end), so the bound
/// is seen at its peak.
fn assert_output(out: &[u8], input: &[u8]) {
    assert!(
        out.len() < OUTPUT_HIGH_WATER + LONGEST_REPLY,
        "{} bytes of output for input {input:?}",
        out.len()
    );
    assert_replies(out, input);
}

/// Feeds `input` in random pieces as the event loop does. Returns how many times the
/// output reached the high-water mark.
fn run_one(policy: &Policy, input: &[u8], rng: &mut Rand64) -> usize {
    let mut session = Session::new(rng.rand_range(0..2) == 0);
    let seed = ConnectionSeed::new(rng.rand_u64(), rng.rand_u64());
    let mut out = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut peaks = 0;
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + rng.rand_range(1..700) as usize).min(input.len());
        tail.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            let step = feed(&mut session, policy, seed, &tail, &mut out);
            assert!(step.consumed <= tail.len());
            tail.drain(..step.consumed);
            match step.action {
                Action::Pause { millis } => {
                    assert!(millis <= 60_000);
                    let step = resume(&mut session, policy, seed, &tail, &mut out);
                    tail.drain(..step.consumed);
                }
                Action::Throttle { .. } => {}
                Action::Continue if out.len() >= OUTPUT_HIGH_WATER => {
                    assert_output(&out, input);
                    peaks += 1;
                    out.clear();
                }
                Action::Continue => break,
                Action::Close | Action::StartTls => {
                    assert_output(&out, input);
                    if step.action == Action::Close {
                        let again = feed(&mut session, policy, seed, b"NOOP\r\n", &mut out);
                        assert_eq!(again.action, Action::Close, "a closed session reopened");
                    }
                    return peaks;
                }
            }
        }
        assert!(tail.len() < MAX_LINE, "kept {} bytes of input", tail.len());
    }
    assert_output(&out, input);
    peaks
}

/// A number from the environment, or `default` when it is not set. A value that does not
/// parse stops the run: a long run asked for must not quietly become a short one.
fn from_env<T: FromStr>(name: &str, default: T) -> T {
    let value = match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => None,
        Ok(value) => Some(value),
        Err(error) => panic!("{name}: {error}"),
    };
    setting(name, value.as_deref(), default).unwrap_or_else(|error| panic!("{error}"))
}

fn setting<T: FromStr>(name: &str, value: Option<&str>, default: T) -> Result<T, String> {
    match value {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a number")),
    }
}

#[test]
fn fuzz_session_core() {
    let inputs: u64 = from_env("BLACKHOLE_FUZZ_INPUTS", 20_000);
    let seed: u128 = from_env("BLACKHOLE_FUZZ_SEED", 0x5eed);
    let policies = policies();
    let mut rng = Rand64::new(seed);
    let mut peaks = 0;
    for n in 0..inputs {
        let input = random_input(&mut rng);
        peaks += run_one(&policies[(n % 3) as usize], &input, &mut rng);
    }
    // Floods fill the output about once in a few hundred inputs: a run of the default
    // length that never did has not tested the high-water mark.
    assert!(
        inputs < 20_000 || peaks > 0,
        "the output never reached its high-water mark"
    );
}

#[test]
fn a_fuzz_setting_that_does_not_parse_is_an_error() {
    let name = "BLACKHOLE_FUZZ_INPUTS";
    assert_eq!(setting(name, None, 7u64), Ok(7));
    assert_eq!(setting(name, Some("500000"), 7u64), Ok(500_000));
    for bad in ["", "20k", "-1", "1e6"] {
        assert!(setting(name, Some(bad), 7u64).is_err(), "{bad:?}");
    }
}
