//! Random input through the session core, as a fuzzer would send it: SMTP words, dot lines,
//! switch headers, AUTH exchanges, junk bytes and over-long runs, cut into random pieces.
//!
//! Checked after every piece: no panic; what the caller must keep of the input stays under
//! one line unless the session has stopped for a pause or for its output; every reply line
//! is `DDD` + space or dash and ends in CRLF; a closed session stays closed.
//!
//! `cargo test --release --lib fuzz` runs a short round; set `BLACKHOLE_FUZZ_INPUTS` (and
//! optionally `BLACKHOLE_FUZZ_SEED`) for a long one.

use super::*;
use crate::smtp::command::MAX_LINE;
use crate::smtp::policy::DelayRange;

const WORDS: [&[u8]; 28] = [
    b"HELO x\r\n",
    b"EHLO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b> SIZE=",
    b"RCPT TO:<c@d>\r\n",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b".\r\n",
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
    b"VRFY ",
    b"EXPN all\r\n",
    b"HELP ",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    b"\r\n",
    b"\n",
    b"\r",
];

fn random_input(rng: &mut Rand64) -> Vec<u8> {
    let target = rng.rand_range(1..600) as usize;
    let mut input = Vec::with_capacity(target + 64);
    while input.len() < target {
        match rng.rand_range(0..10) {
            0 => input.extend((0..rng.rand_range(1..16)).map(|_| rng.rand_u64() as u8)),
            1 => input.extend(
                (0..rng.rand_range(1..8)).map(|_| b"0123456789, -"[rng.rand_range(0..13) as usize]),
            ),
            2 if rng.rand_range(0..20) == 0 => input.extend(std::iter::repeat_n(
                b'a',
                rng.rand_range(1..2 * MAX_LINE as u64) as usize,
            )),
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

/// Every complete line of `out` is a reply line; a trailing partial line is not allowed.
fn assert_replies(out: &[u8], input: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "unterminated reply for {input:?}"
    );
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let ok = line.len() >= 5
            && line[..3].iter().all(u8::is_ascii_digit)
            && (line[3] == b' ' || line[3] == b'-')
            && line.ends_with(b"\r");
        assert!(
            ok,
            "bad reply line {:?} for input {input:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fn run_one(policy: &Policy, input: &[u8], rng: &mut Rand64) {
    let mut session = Session::new(rng.rand_range(0..2) == 0);
    let mut out = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + rng.rand_range(1..300) as usize).min(input.len());
        tail.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            let step = session.feed(policy, rng, &tail, &mut out);
            assert!(step.consumed <= tail.len());
            tail.drain(..step.consumed);
            match step.action {
                Action::Pause { millis } => {
                    assert!(millis <= 60_000);
                    session.resume(policy, rng, &mut out);
                }
                Action::Continue if out.len() >= OUTPUT_HIGH_WATER => out.clear(),
                Action::Continue => break,
                Action::Close | Action::StartTls => {
                    assert_replies(&out, input);
                    if step.action == Action::Close {
                        let again = session.feed(policy, rng, b"NOOP\r\n", &mut out);
                        assert_eq!(again.action, Action::Close, "a closed session reopened");
                    }
                    return;
                }
            }
        }
        assert!(tail.len() < MAX_LINE, "kept {} bytes of input", tail.len());
    }
    assert_replies(&out, input);
}

#[test]
fn fuzz_session_core() {
    let inputs: u64 = std::env::var("BLACKHOLE_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u128 = std::env::var("BLACKHOLE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let policies = policies();
    let mut rng = Rand64::new(seed);
    for n in 0..inputs {
        let input = random_input(&mut rng);
        run_one(&policies[(n % 3) as usize], &input, &mut rng);
    }
}
