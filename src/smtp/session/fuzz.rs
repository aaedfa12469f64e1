//! Random input through the session core, as a fuzzer would send it: SMTP words, dot lines,
//! switch headers, AUTH exchanges, VRFY echoes, junk bytes, over-long runs and floods of one
//! command, cut into random pieces, with time moving on between them. Half of the inputs
//! meet a random rule book (1 to 8 `[[rule]]`s of every stage, with `match` globs made of the
//! words sent, clients and listeners that are the session's or not, every condition and every
//! effect); each session starts with its greeting, and its pauses are waited out and resumed
//! as the event loop does.
//!
//! Checked after every piece: no panic; what the caller must keep of the input stays under
//! one line; the output, split on CRLF, holds only reply lines (a code from 200 to 599, alone
//! or followed by a space or a dash, no other CR or LF, at most 512 octets) and ends in CRLF;
//! it is checked whenever the loop would send it, and at its peak, when it reaches the
//! high-water mark and the session stops taking commands, it is never more than one reply over
//! that mark; a pause is no longer than a delay may be; a session told to close stays closed
//! and says nothing more.
//!
//! `cargo test --release --lib fuzz` runs a short round; set `BLACKHOLE_FUZZ_INPUTS` (and
//! optionally `BLACKHOLE_FUZZ_SEED`) for a long one.

use core::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::*;
use crate::smtp::command::MAX_LINE;
use crate::smtp::greylist::{Greylist, GreylistSettings};
use crate::smtp::observer::{Ending, MessageEnd, Observer};
use crate::smtp::policy::{DelayRange, MAX_DELAY_SECS};
use crate::smtp::reply::MAX_REPLY_LINE;
use crate::smtp::rules::{
    Disconnect, Glob, MAX_RULE_DELAY_SECS, Probability, ReplyLine, Rule, Stage,
};

const WORDS: [&[u8]; 45] = [
    b"HELO x\r\n",
    b"EHLO x\r\n",
    b"EHLO client.example\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<bounce-7@Example.NET>\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@b> SIZE=",
    b"RCPT TO:<c@d>\r\n",
    b"RCPT TO:<Nobody@example.org>\r\n",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b".",
    b"\n.\n",
    b"\r.\r",
    b"..\r\n",
    b"AUTH LOGIN\r\n",
    // `nobody`, as the user name of AUTH LOGIN, at once or when asked.
    b"AUTH LOGIN bm9ib2R5\r\n",
    b"bm9ib2R5\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH PLAIN AGZhaWw9YQBi\r\n",
    b"*\r\n",
    b"X-Blackhole-Delay: ",
    b"X-Blackhole-Mode: random\r\n",
    b"X-Blackhole-Mode: bounce\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY pass=",
    b"VRFY fail=",
    b"EXPN all\r\n",
    b"HELP ",
    b"STARTTLS\r\n",
    b"QUIT\r\n",
    // Chunks: sizes that are right, that lie (the octets that follow are another count),
    // that do not parse, and one no client will ever finish.
    b"BDAT 5\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 40\r\n",
    b"BDAT x\r\n",
    b"BDAT 99999999999 LAST\r\n",
    b"LHLO x\r\n",
    b"LHLO client.example\r\n",
    b"\r\n",
    b"\n",
    b"\r",
];

/// The most the output can grow past the high-water mark: `EXPN all`, the longest reply,
/// is about 600 octets; with rules, a DATA taken just below the mark can bring two rule
/// replies of at most 512 octets (its own, then the message's), ending 1023 past it. The
/// session stops taking commands at the mark, so the output never goes further past it.
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

fn policies() -> [Policy; 4] {
    let delay = DelayRange::new(0, 2);
    let accept = |chunking| {
        Policy::new(
            "mx.example".into(),
            Mode::Accept,
            None,
            true,
            512_000,
            false,
        )
        .with_chunking(chunking)
    };
    [
        accept(false),
        Policy::new("mx.example".into(), Mode::Random, delay, true, 200, true).with_chunking(true),
        Policy::new("mx.example".into(), Mode::Bounce, delay, false, 1, true)
            .with_chunking(true)
            .with_lmtp(true),
        accept(false).with_lmtp(true),
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

/// `out` is whole reply lines: each ends in CRLF, holds no other CR or LF, is a code from
/// 200 to 599 alone or followed by a space or a dash (RFC 5321 4.2: the text is optional),
/// and fits in a reply line.
fn assert_replies(out: &[u8], input: &[u8]) {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "unterminated reply {:?} for input {input:?}",
        String::from_utf8_lossy(out)
    );
    for line in crlf_lines(out) {
        let shaped = line.len() >= 3
            && (b'2'..=b'5').contains(&line[0])
            && line[1..3].iter().all(u8::is_ascii_digit)
            && line.get(3).is_none_or(|&b| b == b' ' || b == b'-');
        let one_line = !line.iter().any(|&b| b == b'\r' || b == b'\n');
        assert!(
            shaped && one_line && line.len() + 2 <= MAX_REPLY_LINE,
            "bad reply line {:?} for input {input:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// The output before the caller sends (clears) it: well-formed replies, and never more than
/// one reply past the high-water mark (in LMTP, one message's replies, one per recipient).
/// Checked whenever the session hands control back with output the loop would send (at the
/// mark, on close, on STARTTLS, at the end), so the bound is seen at its peak.
fn assert_output(out: &[u8], input: &[u8], policy: &Policy) {
    let past = if policy.lmtp() {
        LONGEST_REPLY + usize::from(MAX_RECIPIENTS) * MAX_REPLY_LINE
    } else {
        LONGEST_REPLY
    };
    assert!(
        out.len() < OUTPUT_HIGH_WATER + past,
        "{} bytes of output for input {input:?}",
        out.len()
    );
    assert_replies(out, input);
}

/// The subjects the rules see in [`WORDS`]: HELO domains, MAIL and RCPT addresses, VRFY and
/// EXPN arguments, AUTH user names. `match` globs are made of pieces of them.
const SUBJECTS: [&str; 10] = [
    "x",
    "client.example",
    "a@b",
    "c@d",
    "bounce-7@Example.NET",
    "Nobody@example.org",
    "nobody",
    "fail=a",
    "pass=",
    "all",
];

/// Where the sessions' clients come from: the last is an IPv4 client seen on an IPv6 socket.
const CLIENTS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201)),
];

/// `client` blocks: some hold a client of [`CLIENTS`], some none.
const BLOCKS: [&str; 8] = [
    "192.0.2.0/24",
    "::ffff:192.0.2.0/120",
    "192.0.2.1",
    "198.51.100.0/24",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/32",
    "10.0.0.0/8",
];

const STAGES: [Stage; 14] = [
    Stage::Connect,
    Stage::Helo,
    Stage::Mail,
    Stage::Rcpt,
    Stage::Data,
    Stage::Message,
    Stage::Auth,
    Stage::Starttls,
    Stage::Rset,
    Stage::Noop,
    Stage::Quit,
    Stage::Vrfy,
    Stage::Expn,
    Stage::Any,
];

/// `delay` values: none at all, the shortest, the longest, ranges.
const DELAYS: [&str; 7] = ["0", "0.001", "0.5", "2.5", "1-30", "0-600", "600"];

fn pick<T: Copy>(rng: &mut Rand64, items: &[T]) -> T {
    items[rng.rand_range(0..items.len() as u64) as usize]
}

/// True one time in `n`.
fn one_in(rng: &mut Rand64, n: u64) -> bool {
    rng.rand_range(0..n) == 0
}

/// 1 to 8 rules, each one a configuration would accept.
fn random_book(rng: &mut Rand64) -> RuleBook {
    let rules = (0..rng.rand_range(1..9))
        .map(|n| {
            let mut rule = Rule::new(format!("rule {n}"), pick(rng, &STAGES));
            add_conditions(&mut rule, rng);
            add_effects(&mut rule, rng);
            rule
        })
        .collect();
    RuleBook::new(rules)
}

/// What makes the rule match (`match`, `client`, `listener`) and fire (`probability`,
/// `first`, `every`, `rate`), each present or not.
fn add_conditions(rule: &mut Rule, rng: &mut Rand64) {
    if one_in(rng, 2) {
        rule.subject = Some(random_glob(rng));
    }
    if one_in(rng, 2) {
        rule.clients = (0..rng.rand_range(1..4))
            .map(|_| pick(rng, &BLOCKS).parse().expect("a block"))
            .collect();
    }
    if one_in(rng, 3) {
        rule.listener = Some(rng.rand_range(0..2) as usize);
    }
    if one_in(rng, 4) {
        let p = pick(rng, &[0.0, 0.3, 0.5, 1.0]);
        rule.probability = Some(Probability::new(p).expect("a probability"));
    }
    if one_in(rng, 4) {
        rule.first = Some(rng.rand_range(1..5));
    }
    if one_in(rng, 4) {
        rule.every = Some(rng.rand_range(1..4));
    }
    if one_in(rng, 5) {
        let rate = format!("{}/{}", rng.rand_range(0..5), rng.rand_range(1..5));
        rule.rate = Some(rate.parse().expect("a rate"));
    }
}

/// Pieces of [`SUBJECTS`], `*` and `?`, one to four of them.
fn random_glob(rng: &mut Rand64) -> Glob {
    let mut pattern = String::new();
    for _ in 0..rng.rand_range(1..5) {
        match rng.rand_range(0..4) {
            0 => pattern.push('*'),
            1 => pattern.push('?'),
            _ => {
                let subject = pick(rng, &SUBJECTS);
                let start = rng.rand_range(0..subject.len() as u64) as usize;
                let end = rng.rand_range(start as u64 + 1..subject.len() as u64 + 1) as usize;
                pattern.push_str(&subject[start..end]);
            }
        }
    }
    Glob::new(&pattern).expect("a pattern")
}

/// What the rule does: at least one of `reply` (or `disconnect`, not both), `delay` and
/// `throttle`; `after_bytes` where it may be.
fn add_effects(rule: &mut Rule, rng: &mut Rand64) {
    if one_in(rng, 2) {
        rule.reply = Some(random_reply(rng));
    } else if one_in(rng, 3) {
        rule.disconnect = Some(pick(rng, &[Disconnect::Close, Disconnect::Reply421]));
    }
    if one_in(rng, 3) {
        rule.delay = Some(pick(rng, &DELAYS).parse().expect("a delay"));
    }
    if one_in(rng, 4) {
        rule.throttle = Some(pick(rng, &[1, 100, 65_536, 1_000_000_000]));
    }
    if rule.on == Stage::Message && rule.disconnect.is_some() && one_in(rng, 2) {
        rule.after_bytes = Some(rng.rand_range(1..3000));
    }
    if !rule.has_effect() {
        rule.delay = Some(pick(rng, &DELAYS).parse().expect("a delay"));
    }
}

/// A code from 200 to 599, refusing or accepting, with no text, a short one, or one that
/// fills the reply line.
fn random_reply(rng: &mut Rand64) -> ReplyLine {
    let code = rng.rand_range(200..600);
    let text_len = match rng.rand_range(0..4) {
        0 => 0,
        1 => MAX_REPLY_LINE - b"DDD \r\n".len(),
        _ => rng.rand_range(1..40) as usize,
    };
    let text: String = (0..text_len)
        .map(|_| char::from(rng.rand_range(0x21..0x7f) as u8))
        .collect();
    format!("{code} {text}").parse().expect("a reply line")
}

/// What the sessions of one input are told: their listener's policy and index, the rules
/// and their counters, the client, and the time, which moves on between reads and by every
/// pause.
struct Scene<'p> {
    policy: &'p Policy,
    book: RuleBook,
    state: RuleState,
    /// Greylisting for some sessions, with a delay short enough that retries pass.
    greylist: Option<GreylistSettings>,
    triplets: Greylist,
    client: IpAddr,
    listener: usize,
    now_ms: u64,
    witness: Witness,
}

/// An observer that checks the account a session gives of itself is coherent: a message
/// is answered only after its data ended, a recipient only inside a transaction, a reply
/// code is a real one, and nothing is reported after the session said it ended.
#[derive(Default)]
struct Witness {
    in_transaction: bool,
    /// Recipients accepted in the transaction: in LMTP, the final replies a message gets.
    recipients: u16,
    lmtp: bool,
    data_ended: bool,
    ended: bool,
}

impl Observer for Witness {
    fn command(&mut self, _verb: Verb) {
        assert!(!self.ended, "a command after the session ended");
    }
    fn sender(&mut self, _address: &[u8]) {
        assert!(!self.in_transaction, "a sender inside a transaction");
        self.in_transaction = true;
        self.recipients = 0;
    }
    fn recipient(&mut self, _address: &[u8]) {
        assert!(self.in_transaction, "a recipient outside a transaction");
        assert!(
            self.recipients < MAX_RECIPIENTS,
            "a recipient past the limit"
        );
        self.recipients += 1;
    }
    fn transaction_dropped(&mut self) {
        assert!(
            self.in_transaction,
            "a transaction dropped that was not open"
        );
        self.in_transaction = false;
    }
    fn data_ended(&mut self, _size: u64, _switches: &Switches) {
        assert!(self.in_transaction, "message data outside a transaction");
        assert!(!self.data_ended, "data ended twice before one reply");
        self.data_ended = true;
    }
    fn message(&mut self, message: &MessageEnd) {
        assert!(
            self.data_ended,
            "a final reply with no message data before it"
        );
        if let Some(code) = message.code {
            assert!((200..600).contains(&code), "final reply code {code}");
        }
        assert_eq!(
            message.per_recipient, self.lmtp,
            "one reply per recipient in LMTP only"
        );
        // LMTP: one reply per recipient, for one end of the data.
        self.recipients = self.recipients.saturating_sub(1);
        if !self.lmtp || self.recipients == 0 {
            self.data_ended = false;
            self.in_transaction = false;
        }
    }
    fn ending(&mut self, _why: Ending) {
        self.ended = true;
    }
}

impl Scene<'_> {
    fn context(&mut self, seed: ConnectionSeed) -> Context<'_> {
        Context {
            policy: self.policy,
            seed,
            rules: &self.book,
            rule_state: &mut self.state,
            greylist: self.greylist.as_ref().map(|s| (s, &mut self.triplets)),
            client: self.client,
            listener: self.listener,
            now_ms: self.now_ms,
            observer: &mut self.witness,
        }
    }

    /// The longest pause a session may ask for.
    fn longest_pause(&self) -> u64 {
        if self.book.is_empty() {
            MAX_SWITCH_DELAY_MS
        } else {
            u64::from(MAX_RULE_DELAY_SECS) * 1000
        }
    }
}

/// The longest delay a policy or an `X-Blackhole-Delay` header asks for.
const MAX_SWITCH_DELAY_MS: u64 = MAX_DELAY_SECS as u64 * 1000;

/// What the sessions did, counted to show that a run went where it should.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Times the output reached the high-water mark.
    peaks: usize,
    /// Pauses longer than a policy or a switch header may ask for: only a rule does.
    long_pauses: usize,
    throttles: usize,
    closes: usize,
}

impl Seen {
    fn add(&mut self, other: Seen) {
        self.peaks += other.peaks;
        self.long_pauses += other.long_pauses;
        self.throttles += other.throttles;
        self.closes += other.closes;
    }
}

/// Where one session is after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Feed it again: input may be left that it has not looked at.
    Feed,
    /// It wants more input.
    Read,
    /// It has ended.
    Ended,
}

/// One connection as the event loop keeps it: its session, its unsent output and the input
/// not used yet.
struct Conn<'i> {
    session: Session,
    seed: ConnectionSeed,
    out: Vec<u8>,
    tail: Vec<u8>,
    seen: Seen,
    /// The whole input, for messages.
    input: &'i [u8],
}

impl Conn<'_> {
    /// What it saw, a session slowed by a rule counted once.
    fn seen(&self) -> Seen {
        let throttles = usize::from(self.session.throttle().is_some());
        Seen {
            throttles,
            ..self.seen
        }
    }

    /// Carries out `action` as the loop does, checking the output whenever the loop would
    /// send it: a pause is waited out and resumed; STARTTLS starts a new session.
    fn follow(&mut self, scene: &mut Scene, mut action: Action) -> Flow {
        let mut resumed = false;
        loop {
            match action {
                Action::Pause { millis } => {
                    assert!(millis <= scene.longest_pause(), "a pause of {millis} ms");
                    assert!(self.session.is_waiting(), "a pause with no reply held");
                    // The loop sends what is there before it waits.
                    assert_output(&self.out, self.input, scene.policy);
                    self.out.clear();
                    self.seen.long_pauses += usize::from(millis > MAX_SWITCH_DELAY_MS);
                    scene.now_ms += millis;
                    let step = self.session.resume(
                        &mut scene.context(self.seed),
                        &self.tail,
                        &mut self.out,
                    );
                    self.take(step.consumed);
                    (action, resumed) = (step.action, true);
                }
                Action::Continue if self.out.len() >= OUTPUT_HIGH_WATER => {
                    assert_output(&self.out, self.input, scene.policy);
                    self.seen.peaks += 1;
                    self.out.clear();
                    return Flow::Feed;
                }
                Action::Continue if !resumed => return Flow::Read,
                Action::Continue => return Flow::Feed,
                Action::StartTls => {
                    assert_output(&self.out, self.input, scene.policy);
                    self.out.clear();
                    assert!(self.tail.is_empty(), "input kept across STARTTLS");
                    self.session = self.session.for_tls();
                    // A new session: whatever transaction was open is gone.
                    scene.witness.in_transaction = false;
                    return Flow::Read;
                }
                Action::Close => {
                    assert_output(&self.out, self.input, scene.policy);
                    self.seen.closes += 1;
                    self.assert_silent(scene);
                    return Flow::Ended;
                }
            }
        }
    }

    /// Drops the `consumed` bytes at the head of the kept input.
    fn take(&mut self, consumed: usize) {
        assert!(consumed <= self.tail.len(), "used more than it was given");
        self.tail.drain(..consumed);
    }

    /// A closed session stays closed and says nothing more, whatever comes.
    fn assert_silent(&mut self, scene: &mut Scene) {
        let said = self.out.len();
        let cx = &mut scene.context(self.seed);
        let again = self.session.feed(cx, b"NOOP\r\nQUIT\r\n", &mut self.out);
        assert_eq!(again.action, Action::Close, "a closed session reopened");
        // The loop resumes only a session that waits; one that does not says nothing.
        self.session.resume(cx, b"NOOP\r\n", &mut self.out);
        assert!(
            self.out.len() == said && self.session.is_closed(),
            "a closed session said {:?} for input {:?}",
            String::from_utf8_lossy(&self.out[said..]),
            self.input
        );
    }
}

/// Greets, then feeds `input` in random pieces as the event loop does, time moving on
/// between them. Returns what it saw happen.
fn run_one(scene: &mut Scene, input: &[u8], rng: &mut Rand64) -> Seen {
    let mut conn = Conn {
        session: Session::new(one_in(rng, 2)),
        seed: ConnectionSeed::new(rng.rand_u64(), rng.rand_u64()),
        out: Vec::new(),
        tail: Vec::new(),
        seen: Seen::default(),
        input,
    };
    let greeting = conn
        .session
        .greet(&mut scene.context(conn.seed), &mut conn.out);
    if conn.follow(scene, greeting) == Flow::Ended {
        return conn.seen();
    }
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + rng.rand_range(1..700) as usize).min(input.len());
        conn.tail.extend_from_slice(&input[offset..end]);
        offset = end;
        scene.now_ms += rng.rand_range(0..1500);
        loop {
            let step = conn
                .session
                .feed(&mut scene.context(conn.seed), &conn.tail, &mut conn.out);
            conn.take(step.consumed);
            match conn.follow(scene, step.action) {
                Flow::Feed => {}
                Flow::Read => break,
                Flow::Ended => return conn.seen(),
            }
        }
        assert!(
            conn.tail.len() < MAX_LINE,
            "kept {} bytes of input",
            conn.tail.len()
        );
    }
    assert_output(&conn.out, input, scene.policy);
    conn.seen()
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
    let (mut seen, mut now_ms) = (Seen::default(), 0);
    for n in 0..inputs {
        let input = random_input(&mut rng);
        // Half of the inputs meet rules, the other half the session as it is without any.
        let book = if n % 2 == 0 {
            RuleBook::default()
        } else {
            random_book(&mut rng)
        };
        let mut scene = Scene {
            policy: &policies[(n / 2 % 4) as usize],
            book,
            state: RuleState::default(),
            greylist: (rng.rand_range(0..3) == 0).then(|| GreylistSettings {
                delay_ms: rng.rand_range(0..2000),
                max_entries: 64,
                ..GreylistSettings::default()
            }),
            triplets: Greylist::default(),
            client: pick(&mut rng, &CLIENTS),
            listener: rng.rand_range(0..2) as usize,
            now_ms,
            witness: Witness {
                lmtp: policies[(n / 2 % 4) as usize].lmtp(),
                ..Witness::default()
            },
        };
        seen.add(run_one(&mut scene, &input, &mut rng));
        now_ms = scene.now_ms;
    }
    // Floods fill the output about once in a few hundred inputs, and rules slow the reading
    // or pause longer than a policy can in thousands: a run of the default length that never
    // did has not tested the high-water mark, or the rules.
    let Seen {
        peaks,
        long_pauses,
        throttles,
        closes,
    } = seen;
    assert!(
        inputs < 20_000 || peaks * long_pauses * throttles * closes > 0,
        "not all seen: {seen:?}"
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
