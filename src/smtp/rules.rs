//! Scripted faults: `[[rule]]` tables as the core decides with them.
//!
//! A rule names a stage of the session (`on`), conditions that make a command *match* it
//! (`match`, `client`, `listener`), conditions that make a match *fire* (`probability`,
//! `first`, `every`, `rate`), and what it does when it fires (a reply, a delay, a disconnect,
//! a cut mid-message, a throttled link). For each command the rules are tried in file order,
//! and the first that matches and fires decides ([`RuleBook::decide_among`]).
//!
//! Everything here is a value checked when it is built (a glob, a CIDR, a rate, a reply line,
//! a delay), so a rule that exists is one the session can carry out. The counters that
//! `first`, `every` and `rate` need live in a [`RuleState`] the event loop keeps for the whole
//! process; time comes in as milliseconds from the caller, never from a clock here.

use core::net::IpAddr;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use oorandom::Rand64;

/// Longest `delay` a rule may ask for, in seconds.
pub const MAX_RULE_DELAY_SECS: u32 = 600;
/// Longest glob pattern, in bytes: a guard against typos, far beyond any address.
pub const MAX_GLOB: usize = 256;
/// Clients whose `rate` the state tracks at once, over all rules. Past it, clients whose
/// window has emptied are forgotten first; a client that cannot be tracked is not limited.
pub const MAX_RATE_CLIENTS: usize = 100_000;

/// Where in the session a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The greeting.
    Connect,
    /// HELO, EHLO (and LHLO).
    Helo,
    Mail,
    Rcpt,
    /// The DATA command itself.
    Data,
    /// The final reply after the message.
    Message,
    Auth,
    Starttls,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    /// Every stage.
    Any,
}

const STAGES: [(&str, Stage); 14] = [
    ("connect", Stage::Connect),
    ("helo", Stage::Helo),
    ("mail", Stage::Mail),
    ("rcpt", Stage::Rcpt),
    ("data", Stage::Data),
    ("message", Stage::Message),
    ("auth", Stage::Auth),
    ("starttls", Stage::Starttls),
    ("rset", Stage::Rset),
    ("noop", Stage::Noop),
    ("quit", Stage::Quit),
    ("vrfy", Stage::Vrfy),
    ("expn", Stage::Expn),
    ("any", Stage::Any),
];

impl Stage {
    /// Its place among the stages, for tables indexed by stage.
    /// (`STAGES` lists the stages in their declared order; a test holds it to that.)
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        STAGES[self.index()].0
    }
}

impl FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        STAGES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, stage)| *stage)
            .ok_or_else(|| {
                let names: Vec<&str> = STAGES.iter().map(|(name, _)| *name).collect();
                format!("`{s}` is not a stage: use one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A case-insensitive glob: `*` any run of bytes, `?` one byte, anything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<u8>);

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("an empty pattern matches nothing: use \"*\" for everything".into());
        }
        if pattern.len() > MAX_GLOB {
            return Err(format!("a pattern is at most {MAX_GLOB} bytes"));
        }
        if pattern.bytes().any(|b| b.is_ascii_control()) {
            return Err("a pattern holds no control characters".into());
        }
        Ok(Glob(
            pattern.bytes().map(|b| b.to_ascii_lowercase()).collect(),
        ))
    }

    /// Whether `subject` matches, in time linear in both lengths (one backtrack point: the
    /// last `*`).
    pub fn matches(&self, subject: &[u8]) -> bool {
        let pattern = &self.0;
        let (mut p, mut s) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while s < subject.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    star = Some((p, s));
                    p += 1;
                }
                Some(&c) if c == b'?' || c == subject[s].to_ascii_lowercase() => {
                    p += 1;
                    s += 1;
                }
                _ => match star {
                    Some((star_p, star_s)) => {
                        p = star_p + 1;
                        s = star_s + 1;
                        star = Some((star_p, star_s + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// A block of client addresses: `ADDRESS/PREFIX`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `client` is in the block. An IPv4 client seen on an IPv6 socket
    /// (`::ffff:a.b.c.d`) is the IPv4 address it is.
    pub fn contains(&self, client: IpAddr) -> bool {
        match (self.network, client.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_bits(u32::from(net).into(), 32, self.prefix)
                    == prefix_bits(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_bits(u128::from(net), 128, self.prefix)
                    == prefix_bits(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn prefix_bits(address: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        address >> (width - prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not an address block: write e.g. 10.0.0.0/8, ::1 or 2001:db8::/32")
        };
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let written: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let width = if written.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => super::decimal::saturating(p.trim().as_bytes())
                .filter(|&p| p <= u64::from(width))
                .ok_or_else(bad)? as u8,
        };
        let network = written.to_canonical();
        // `::ffff:a.b.c.d/N` is the IPv4 block a.b.c.d/(N - 96): it must not reach below
        // the mapped prefix, or it would name IPv6 addresses an IPv4 block cannot hold.
        let prefix = match (written, network) {
            (IpAddr::V6(_), IpAddr::V4(_)) if prefix < 96 => return Err(bad()),
            (IpAddr::V6(_), IpAddr::V4(_)) => prefix - 96,
            _ => prefix,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `rate = "N/SECONDS"`: a client's matches beyond N within any SECONDS fire. Counted over
/// a sliding window (this window's matches, and the last window's weighted by how much of it
/// the sliding window still covers), which needs 16 bytes per client however large N is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per_secs: u32,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a rate: write \"N/SECONDS\", e.g. \"10/60\" (more than 10 \
                 matches from one client within a minute), N from 0, SECONDS from 1 to 86400"
            )
        };
        let (count, per) = s.split_once('/').ok_or_else(bad)?;
        let number = |t: &str| super::decimal::saturating(t.trim().as_bytes());
        let count = number(count)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        let per_secs = number(per)
            .filter(|n| (1..=86_400).contains(n))
            .ok_or_else(bad)? as u32;
        Ok(Rate { count, per_secs })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per_secs)
    }
}

/// `reply = "CODE TEXT"`: one reply line, as wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine(Vec<u8>);

impl ReplyLine {
    /// The reply's code, 200 to 599.
    pub fn code(&self) -> u16 {
        self.0[..3]
            .iter()
            .fold(0, |n, d| n * 10 + u16::from(d - b'0'))
    }

    /// A 4xx or 5xx reply: the command is refused.
    pub fn refuses(&self) -> bool {
        self.code() >= 400
    }

    /// The line, CRLF included.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl FromStr for ReplyLine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let code = s.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
        let code = code.and_then(|c| c.parse::<u16>().ok());
        if !code.is_some_and(|c| (200..=599).contains(&c)) {
            return Err(format!(
                "`{s}` does not start with a reply code from 200 to 599, e.g. \"450 4.2.0 Try later\""
            ));
        }
        if s.len() > 3 && !s[3..].starts_with(' ') {
            return Err(format!(
                "`{s}`: the code is followed by a space, then the text"
            ));
        }
        if s.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
            return Err(
                "a reply is one line of ASCII: no line breaks, control characters or 8-bit bytes"
                    .into(),
            );
        }
        if s.len() + 2 > super::reply::MAX_REPLY_LINE {
            return Err(format!(
                "a reply line is at most {} characters",
                super::reply::MAX_REPLY_LINE - 2
            ));
        }
        let mut line = s.as_bytes().to_vec();
        line.extend_from_slice(b"\r\n");
        Ok(ReplyLine(line))
    }
}

/// `delay`: milliseconds, fixed or drawn from `min..=max`, at most 600 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleDelay {
    min_ms: u64,
    max_ms: u64,
}

impl RuleDelay {
    /// The delay for one firing.
    pub fn draw(&self, rng: &mut Rand64) -> u64 {
        if self.min_ms == self.max_ms {
            self.min_ms
        } else {
            rng.rand_range(self.min_ms..self.max_ms + 1)
        }
    }
}

impl FromStr for RuleDelay {
    type Err = String;

    /// `N` or `MIN-MAX` seconds, decimals allowed (to the millisecond).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a delay: give seconds as N or \"MIN-MAX\", decimals allowed, \
                 e.g. 2.5 or \"1-30\", at most {MAX_RULE_DELAY_SECS}"
            )
        };
        let (min, max) = match s.split_once('-') {
            Some((min, max)) => (min, max),
            None => (s, s),
        };
        let (min_ms, max_ms) = (millis(min).ok_or_else(bad)?, millis(max).ok_or_else(bad)?);
        if max_ms > u64::from(MAX_RULE_DELAY_SECS) * 1000 {
            return Err(format!(
                "`{s}` is too long a delay: at most {MAX_RULE_DELAY_SECS} seconds"
            ));
        }
        if min_ms > max_ms {
            return Err(format!(
                "`{s}` has MIN above MAX: write the smaller number first"
            ));
        }
        Ok(RuleDelay { min_ms, max_ms })
    }
}

/// Seconds written `N`, `N.F` or `.F` (up to three decimals), as milliseconds.
fn millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.len() > 3 {
        return None;
    }
    let whole = if whole.is_empty() {
        0
    } else {
        super::decimal::saturating(whole.as_bytes())?
    };
    let fraction = if fraction.is_empty() {
        0
    } else {
        super::decimal::saturating(fraction.as_bytes())? * 10u64.pow(3 - fraction.len() as u32)
    };
    whole.checked_mul(1000)?.checked_add(fraction)
}

/// `probability`: from 0 to 1, kept as a fraction of 2^32 so that rules compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probability(u64);

impl Probability {
    const ONE: u64 = 1 << 32;

    pub fn new(p: f64) -> Result<Probability, String> {
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "{p} is not a probability: give a number from 0 to 1"
            ));
        }
        Ok(Probability((p * Self::ONE as f64).round() as u64))
    }

    fn happens(self, rng: &mut Rand64) -> bool {
        self.0 >= Self::ONE || (self.0 > 0 && rng.rand_u64() >> 32 < self.0)
    }
}

/// `disconnect`: close without a word, or say `421` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    Close,
    Reply421,
}

impl FromStr for Disconnect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "close" => Ok(Disconnect::Close),
            "421" => Ok(Disconnect::Reply421),
            _ => Err(format!(
                "`{s}` is not a disconnect: use \"close\" or \"421\""
            )),
        }
    }
}

/// One `[[rule]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// For logs: `name`, else `rule N`.
    pub name: String,
    pub on: Stage,
    // What makes a command match.
    pub subject: Option<Glob>,
    /// Empty: every client.
    pub clients: Vec<Cidr>,
    /// The index of the listener (in the configuration's order), or every listener.
    pub listener: Option<usize>,
    // What makes a match fire.
    /// `None`: always.
    pub probability: Option<Probability>,
    pub first: Option<u64>,
    pub every: Option<u64>,
    pub rate: Option<Rate>,
    // What a firing does: at least one of them.
    pub reply: Option<ReplyLine>,
    pub delay: Option<RuleDelay>,
    pub disconnect: Option<Disconnect>,
    /// With `on = message` and `disconnect`: cut the message after this many bytes.
    pub after_bytes: Option<u64>,
    /// Bytes per second to read the connection at from then on.
    pub throttle: Option<u32>,
}

impl Rule {
    /// A rule on `on` that matches everything, fires always and does nothing yet: the
    /// configuration fills in the rest.
    pub fn new(name: String, on: Stage) -> Rule {
        Rule {
            name,
            on,
            subject: None,
            clients: Vec::new(),
            listener: None,
            probability: None,
            first: None,
            every: None,
            rate: None,
            reply: None,
            delay: None,
            disconnect: None,
            after_bytes: None,
            throttle: None,
        }
    }

    /// Whether it does anything when it fires.
    pub fn has_effect(&self) -> bool {
        self.reply.is_some()
            || self.delay.is_some()
            || self.disconnect.is_some()
            || self.throttle.is_some()
    }

    /// Whether it applies to `command`'s listener and client (its stage is the book's
    /// index, its `match` the caller's).
    fn applies(&self, command: &Command) -> bool {
        self.listener.is_none_or(|l| l == command.listener)
            && (self.clients.is_empty() || self.clients.iter().any(|c| c.contains(command.client)))
    }
}

/// The rules' names in their order: the labels their counts go by.
pub fn names(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(|rule| rule.name.clone()).collect()
}

/// A rule of one book, by that book's identity and the rule's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    book: u32,
    index: u32,
}

/// What a command is, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// The client's address (as the PROXY header says, where one is used).
    pub client: IpAddr,
    /// The listener it came through, by index.
    pub listener: usize,
    /// What `match` is tried on: the address for MAIL and RCPT, the domain for HELO, ...
    pub subject: &'a [u8],
    /// Milliseconds on the caller's clock, for `rate`.
    pub now_ms: u64,
}

/// The rules, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleBook {
    rules: Vec<Rule>,
    /// Which book this is, among the books of this process: a reference to a rule made with
    /// one book ([`RuleRef`]) finds nothing in another (a reload's).
    id: u32,
    /// For each stage (by [`Stage::index`]), the rules that apply there (`on` that stage or
    /// `any`), in file order: a command tries only those.
    by_stage: Vec<Vec<usize>>,
}

impl RuleBook {
    pub fn new(rules: Vec<Rule>) -> RuleBook {
        let by_stage = STAGES
            .iter()
            .map(|&(_, stage)| {
                (0..rules.len())
                    .filter(|&i| rules[i].on == stage || rules[i].on == Stage::Any)
                    .collect()
            })
            .collect();
        // 0 is the empty default book's; books that hold rules count from 1.
        static BOOKS: AtomicU32 = AtomicU32::new(1);
        let id = BOOKS.fetch_add(1, Ordering::Relaxed);
        RuleBook {
            rules,
            id,
            by_stage,
        }
    }

    /// A reference to rule `index` of this book, to keep across a delay or a message.
    pub fn rule_ref(&self, index: usize) -> RuleRef {
        RuleRef {
            book: self.id,
            index: u32::try_from(index).unwrap_or(u32::MAX),
        }
    }

    /// The rule `rule` refers to, if it was made with this book: after a reload, a rule held
    /// across a delay is no longer there, and the command is answered as if none had fired.
    pub fn get(&self, rule: RuleRef) -> Option<&Rule> {
        if rule.book != self.id {
            return None;
        }
        self.rules.get(rule.index as usize)
    }

    /// The rules that apply at `stage`, by index, in file order.
    fn at_stage(&self, stage: Stage) -> &[usize] {
        self.by_stage.get(stage.index()).map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule applies at `stage`: lets the session skip building a subject.
    pub fn has_stage(&self, stage: Stage) -> bool {
        !self.at_stage(stage).is_empty()
    }

    /// [`RuleBook::decide_among`] all the rules, on `command`'s own subject.
    #[cfg(test)]
    pub fn decide(
        &self,
        stage: Stage,
        command: &Command,
        state: &mut RuleState,
        rng: &mut Rand64,
    ) -> Option<(usize, &Rule)> {
        self.decide_among(stage, command, None, state, rng, |_| true)
    }

    /// The first rule among those `only` keeps that matches `command` at `stage` and fires,
    /// with its index. Every rule tried that matches counts the match (for `first`, `every`
    /// and `rate`), fired or not; the rules `only` leaves out are not tried. With
    /// `remembered`, `match` is taken from what a subject seen earlier passed
    /// ([`RuleBook::remember`]), not from `command.subject`.
    pub fn decide_among(
        &self,
        stage: Stage,
        command: &Command,
        remembered: Option<&Remembered>,
        state: &mut RuleState,
        rng: &mut Rand64,
        only: impl Fn(&Rule) -> bool,
    ) -> Option<(usize, &Rule)> {
        if self.rules.is_empty() {
            return None;
        }
        state.fit(self.rules.len());
        for &index in self.at_stage(stage) {
            let rule = &self.rules[index];
            let subject = |rule: &Rule| match remembered {
                Some(remembered) => rule.subject.is_none() || remembered.passed(index),
                None => rule
                    .subject
                    .as_ref()
                    .is_none_or(|g| g.matches(command.subject)),
            };
            if only(rule)
                && rule.applies(command)
                && subject(rule)
                && state.fires(index, rule, command, rng)
            {
                return Some((index, rule));
            }
        }
        None
    }

    /// Which rules at `stage` the `match` of `subject` passes, for a decision that comes
    /// later (a message's final reply is decided on its MAIL FROM address): the subject itself
    /// need not be kept. `None` when no rule at `stage` has a `match`.
    pub fn remember(&self, stage: Stage, subject: &[u8]) -> Option<Remembered> {
        let at_stage = self.at_stage(stage);
        if !at_stage.iter().any(|&i| self.rules[i].subject.is_some()) {
            return None;
        }
        let mut bits = vec![0u64; self.rules.len().div_ceil(64)];
        for &index in at_stage {
            if self.rules[index]
                .subject
                .as_ref()
                .is_some_and(|g| g.matches(subject))
            {
                bits[index / 64] |= 1 << (index % 64);
            }
        }
        Some(Remembered(bits.into_boxed_slice()))
    }
}

/// What [`RuleBook::remember`] keeps of a subject: one bit per rule, set where its `match`
/// passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered(Box<[u64]>);

impl Remembered {
    /// Whether rule `index` passed; a rule beyond the book it was made with did not.
    fn passed(&self, index: usize) -> bool {
        self.0
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// The counters behind `first`, `every` and `rate`, for one process: kept by the event loop
/// across connections, started afresh when the rules are re-read.
#[derive(Debug, Default)]
pub struct RuleState {
    /// Matches so far, per rule.
    matches: Vec<u64>,
    /// Per (rule, client): the client's matches in its rate's fixed windows.
    rates: HashMap<(usize, IpAddr), Window>,
    /// While the table is full of clients still counted, until when (ms) a new client is not
    /// tracked without sweeping the table again: at most one sweep a window.
    full_until: u64,
}

/// A client's matches of one rule, in windows of the rule's SECONDS.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Which window (`now / SECONDS`) `current` counts.
    number: u64,
    current: u32,
    /// The window before it.
    previous: u32,
}

impl Window {
    /// Counts a match at `now` (ms) in windows of `length` ms; returns the matches within
    /// the last `length` ms, this one included, estimated from the two windows.
    fn count(&mut self, now: u64, length: u64) -> u64 {
        let number = now / length;
        if number == self.number + 1 {
            self.previous = self.current;
            self.current = 0;
        } else if number != self.number {
            self.previous = 0;
            self.current = 0;
        }
        self.number = number;
        self.current = self.current.saturating_add(1);
        let uncovered = now % length;
        u64::from(self.previous) * (length - uncovered) / length + u64::from(self.current)
    }
}

impl RuleState {
    fn fit(&mut self, rules: usize) {
        if self.matches.len() != rules {
            self.matches = vec![0; rules];
            self.rates.clear();
        }
    }

    /// Counts a match of rule `index` and says whether it fires.
    fn fires(&mut self, index: usize, rule: &Rule, command: &Command, rng: &mut Rand64) -> bool {
        self.matches[index] = self.matches[index].saturating_add(1);
        let n = self.matches[index];
        let first = rule.first.is_none_or(|first| n <= first);
        let every = rule
            .every
            .is_none_or(|every| every > 0 && n.is_multiple_of(every));
        let rate = rule
            .rate
            .is_none_or(|rate| self.over_rate(index, rate, command));
        let chance = rule.probability.is_none_or(|p| p.happens(rng));
        first && every && rate && chance
    }

    /// Whether this match takes the client beyond its rate.
    fn over_rate(&mut self, index: usize, rate: Rate, command: &Command) -> bool {
        if rate.count == 0 {
            return true;
        }
        let length = u64::from(rate.per_secs) * 1000;
        let now = command.now_ms;
        let key = (index, command.client.to_canonical());
        if !self.rates.contains_key(&key) && self.rates.len() >= MAX_RATE_CLIENTS {
            if now < self.full_until {
                return false;
            }
            // Clients whose last two windows are over count nothing: forget them.
            let current = now / length;
            self.rates.retain(|_, w| w.number + 1 >= current);
            if self.rates.len() >= MAX_RATE_CLIENTS {
                self.full_until = now.saturating_add(length);
                return false;
            }
        }
        let window = self.rates.entry(key).or_insert(Window {
            number: now / length,
            current: 0,
            previous: 0,
        });
        window.count(now, length) > u64::from(rate.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("*@example.com").matches(b"Alice@EXAMPLE.com"));
        assert!(!g("*@example.com").matches(b"alice@example.org"));
        assert!(g("a?c").matches(b"abc") && !g("a?c").matches(b"ac"));
        assert!(g("*").matches(b"") && g("**").matches(b"x"));
        assert!(g("*a*b*c").matches(b"xxaxxbxxbxc"));
        assert!(!g("*a*b*c").matches(b"xxaxxbxxbx"));
        assert!(g("bounce-*@*").matches(b"bounce-42@example.net"));
        // Linear time: a pathological subject for naive backtracking.
        let subject = vec![b'a'; 2048];
        assert!(!g("*a*a*a*a*a*a*b").matches(&subject));
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a\rb").is_err());
        assert!(Glob::new(&"x".repeat(MAX_GLOB + 1)).is_err());
    }

    #[test]
    fn cidrs() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let v4 = |a, b, cc, d| IpAddr::V4(Ipv4Addr::new(a, b, cc, d));
        assert!(c("10.0.0.0/8").contains(v4(10, 1, 2, 3)));
        assert!(!c("10.0.0.0/8").contains(v4(11, 0, 0, 1)));
        assert!(c("127.0.0.1").contains(v4(127, 0, 0, 1)));
        assert!(!c("127.0.0.1").contains(v4(127, 0, 0, 2)));
        assert!(c("0.0.0.0/0").contains(v4(1, 2, 3, 4)));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 9, 8, 7).to_ipv6_mapped());
        assert!(
            c("10.0.0.0/8").contains(mapped),
            "IPv4 seen on an IPv6 socket"
        );
        assert!(c("::1").contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(c("2001:db8::/32").contains("2001:db8:1::5".parse().unwrap()));
        assert!(!c("2001:db8::/32").contains(v4(10, 0, 0, 1)));
        // An IPv4 block written as IPv4-mapped IPv6 is that IPv4 block.
        assert_eq!(c("::ffff:192.0.2.0/120"), c("192.0.2.0/24"));
        assert_eq!(c("::ffff:192.0.2.1"), c("192.0.2.1"));
        assert!(c("::ffff:192.0.2.0/120").contains(v4(192, 0, 2, 200)));
        assert!(!c("::ffff:192.0.2.0/120").contains(v4(192, 0, 3, 1)));
        assert!("::ffff:192.0.2.0/95".parse::<Cidr>().is_err());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_reply_lines_delays_stages() {
        assert!("10/60".parse::<Rate>().is_ok() && "0/1".parse::<Rate>().is_ok());
        for bad in ["10", "10/0", "x/60", "10/86401", "-1/5", "10/60/2"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let reply: ReplyLine = "450 4.2.0 Try later".parse().unwrap();
        assert_eq!(reply.bytes(), b"450 4.2.0 Try later\r\n");
        assert!(reply.refuses() && reply.code() == 450);
        assert!(!"250 OK".parse::<ReplyLine>().unwrap().refuses());
        for bad in [
            "199 x",
            "450 \u{fc}ber",
            "600 x",
            "45 x",
            "450x",
            "450 a\r\nb",
            "450 a\nb",
            "OK",
        ] {
            assert!(bad.parse::<ReplyLine>().is_err(), "{bad:?}");
        }
        let d = |s: &str| s.parse::<RuleDelay>();
        assert_eq!(
            d("2.5").unwrap(),
            RuleDelay {
                min_ms: 2500,
                max_ms: 2500
            }
        );
        assert_eq!(
            d("1-30").unwrap(),
            RuleDelay {
                min_ms: 1000,
                max_ms: 30_000
            }
        );
        assert_eq!(d(".25").unwrap().min_ms, 250);
        assert!(d("600").is_ok());
        for bad in ["600.001", "601", "5-2", "1.2345", "x", "-1", "", "."] {
            assert!(d(bad).is_err(), "{bad}");
        }
        for bad in [-0.1, 1.01, f64::NAN] {
            assert!(Probability::new(bad).is_err(), "{bad}");
        }
        let mut rng = Rand64::new(3);
        assert!(Probability::new(1.0).unwrap().happens(&mut rng));
        assert!(!Probability::new(0.0).unwrap().happens(&mut rng));
        assert_eq!("RCPT".parse::<Stage>(), Ok(Stage::Rcpt));
        assert!("bogus".parse::<Stage>().is_err());
        for (place, (name, stage)) in STAGES.into_iter().enumerate() {
            assert_eq!(stage.as_str(), name);
            assert_eq!(stage.index(), place, "{name}");
        }
        assert_eq!(STAGES.len(), Stage::Any.index() + 1);
    }

    fn command(subject: &[u8], now_ms: u64) -> Command<'_> {
        Command {
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            listener: 0,
            subject,
            now_ms,
        }
    }

    fn reject(on: Stage) -> Rule {
        let mut rule = Rule::new("r".into(), on);
        rule.reply = Some("550 5.1.1 No such user".parse().unwrap());
        rule
    }

    #[test]
    fn first_then_rest_every_nth_and_file_order() {
        let mut fail_twice = reject(Stage::Rcpt);
        fail_twice.first = Some(2);
        let mut every_third = reject(Stage::Any);
        every_third.every = Some(3);
        let book = RuleBook::new(vec![fail_twice, every_third]);
        let (mut state, mut rng) = (RuleState::default(), Rand64::new(1));
        let fired: Vec<Option<usize>> = (0..7)
            .map(|_| {
                book.decide(Stage::Rcpt, &command(b"x", 0), &mut state, &mut rng)
                    .map(|(i, _)| i)
            })
            .collect();
        // The first two fire rule 0 (rule 1 is not tried once one has decided); from the
        // third on rule 0 rests, and rule 1 counts its own matches, firing on its 3rd.
        assert_eq!(fired, [Some(0), Some(0), None, None, Some(1), None, None]);
        // Another stage reaches only the `any` rule.
        assert_eq!(
            book.decide(Stage::Mail, &command(b"x", 0), &mut state, &mut rng)
                .map(|(i, _)| i),
            Some(1)
        );
    }

    #[test]
    fn subject_client_listener_and_probability() {
        let mut rule = reject(Stage::Rcpt);
        rule.subject = Some(Glob::new("nobody@*").unwrap());
        rule.clients = vec!["192.0.2.0/24".parse().unwrap()];
        rule.listener = Some(0);
        let book = RuleBook::new(vec![rule.clone()]);
        let (mut state, mut rng) = (RuleState::default(), Rand64::new(1));
        let mut decide = |c: &Command| book.decide(Stage::Rcpt, c, &mut state, &mut rng).is_some();
        assert!(decide(&command(b"nobody@example.net", 0)));
        assert!(!decide(&command(b"somebody@example.net", 0)));
        let mut elsewhere = command(b"nobody@example.net", 0);
        elsewhere.client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        assert!(!decide(&elsewhere));
        elsewhere = command(b"nobody@example.net", 0);
        elsewhere.listener = 1;
        assert!(!decide(&elsewhere));

        rule.probability = Some(Probability::new(0.25).unwrap());
        let book = RuleBook::new(vec![rule]);
        let (mut state, mut rng) = (RuleState::default(), Rand64::new(7));
        let fired = (0..4000)
            .filter(|_| {
                book.decide(Stage::Rcpt, &command(b"nobody@x", 0), &mut state, &mut rng)
                    .is_some()
            })
            .count();
        assert!((800..1200).contains(&fired), "{fired} of 4000 at 0.25");
    }

    #[test]
    fn rate_fires_beyond_n_within_the_window() {
        let mut rule = reject(Stage::Mail);
        rule.rate = Some("3/10".parse().unwrap());
        let book = RuleBook::new(vec![rule]);
        let (mut state, mut rng) = (RuleState::default(), Rand64::new(1));
        let mut at = |ms: u64| {
            book.decide(Stage::Mail, &command(b"", ms), &mut state, &mut rng)
                .is_some()
        };
        // Three pass, and every match beyond them within the ten seconds fires.
        assert_eq!([at(0), at(1), at(2)], [false, false, false]);
        assert_eq!([at(4000), at(7000), at(9999)], [true, true, true]);
        // Early in the next window the last one still counts nearly whole.
        assert!(at(10_500));
        // Two windows later nothing is left: three pass again, the fourth fires.
        assert_eq!(
            [at(30_000), at(30_001), at(30_002), at(30_003)],
            [false, false, false, true]
        );
        // Another client has its own count.
        let mut other = command(b"", 30_004);
        other.client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert!(
            book.decide(Stage::Mail, &other, &mut state, &mut rng)
                .is_none()
        );
        // Large N within a short window: the 5,000th passes, the 5,001st fires.
        let mut many = reject(Stage::Mail);
        many.rate = Some("5000/1".parse().unwrap());
        let book = RuleBook::new(vec![many]);
        let mut state = RuleState::default();
        let fired: Vec<bool> = (0..5001)
            .map(|n| {
                book.decide(Stage::Mail, &command(b"", n / 10), &mut state, &mut rng)
                    .is_some()
            })
            .collect();
        assert!(fired[..5000].iter().all(|f| !f) && fired[5000]);
    }
}
