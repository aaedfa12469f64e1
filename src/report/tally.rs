//! One process's counters, laid out to live in shared memory: `#[repr(C)]`, atomics only,
//! no pointers, fixed size, and all-zero bytes are an empty tally. Each slot is written by
//! one process only (its worker), so a counter is bumped with a plain load and store; any
//! process may read every slot to answer a scrape.
//!
//! Labels with few values (listener index, verb, mechanism) index arrays; labels with many
//! (a message's listener and reply code, a rule's name) go into small open-addressed tables
//! keyed by a `u64`. Past a table's bound, or past [`MAX_LISTENERS`], counts go to an
//! `other` figure: never lost, never a growth.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::histogram::{
    DELAY_LATENESS, Histogram, HistogramTotals, MESSAGE_SIZE, SESSION_DURATION,
};
use crate::smtp::command::Verb;
use crate::smtp::observer::AuthResult;

/// Listeners counted one by one (as many as a configuration may have); connections on any
/// listener past these count as `other`.
pub const MAX_LISTENERS: usize = 64;
/// The index connections on listeners past [`MAX_LISTENERS`] are counted under.
pub const OTHER_LISTENER: usize = MAX_LISTENERS;
/// Distinct (listener, reply code) pairs counted one by one; the rest count as `other`.
pub const MESSAGE_KINDS: usize = 256;
/// Distinct rule names counted one by one; the rest count as `other`.
pub const RULE_NAMES: usize = 1024;

/// Every verb, in the order the `commands` counters keep them; lower-case as exposed.
pub const VERBS: [(Verb, &str); 17] = [
    (Verb::Helo, "helo"),
    (Verb::Ehlo, "ehlo"),
    (Verb::Mail, "mail"),
    (Verb::Rcpt, "rcpt"),
    (Verb::Data, "data"),
    (Verb::Rset, "rset"),
    (Verb::Noop, "noop"),
    (Verb::Quit, "quit"),
    (Verb::Vrfy, "vrfy"),
    (Verb::Expn, "expn"),
    (Verb::Etrn, "etrn"),
    (Verb::Help, "help"),
    (Verb::Auth, "auth"),
    (Verb::StartTls, "starttls"),
    (Verb::Bdat, "bdat"),
    (Verb::Lhlo, "lhlo"),
    (Verb::Unknown, "unknown"),
];

/// The AUTH mechanisms counted, then `other` (a client naming one the server does not offer).
pub const MECHANISMS: [&str; 4] = ["plain", "login", "cram-md5", "other"];
/// AUTH results in the order they are counted.
pub const AUTH_RESULTS: [AuthResult; 3] = [
    AuthResult::Accepted,
    AuthResult::Refused,
    AuthResult::Cancelled,
];

/// Adds `n` to a counter only this process writes: no read-modify-write needed.
#[inline]
pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Subtracts one from a gauge only this process writes (two's complement in a `u64`).
#[inline]
fn drop_one(gauge: &AtomicU64) {
    gauge.store(
        gauge.load(Ordering::Relaxed).wrapping_sub(1),
        Ordering::Relaxed,
    );
}

/// A verb's place in [`VERBS`], which lists them in `Verb`'s own order (a test holds it).
fn verb_index(verb: Verb) -> usize {
    verb as usize
}

fn mechanism_index(mechanism: &str) -> usize {
    MECHANISMS[..3]
        .iter()
        .position(|m| m.eq_ignore_ascii_case(mechanism))
        .unwrap_or(3)
}

fn auth_result_index(result: AuthResult) -> usize {
    match result {
        AuthResult::Accepted => 0,
        AuthResult::Refused => 1,
        AuthResult::Cancelled => 2,
    }
}

/// The key a message of this listener and reply code is counted under (never zero).
pub fn message_key(listener: usize, code: u16) -> u64 {
    let listener = listener.min(OTHER_LISTENER) as u64;
    ((listener + 1) << 16) | u64::from(code)
}

/// The listener and reply code a message key stands for.
pub fn message_of_key(key: u64) -> (usize, u16) {
    (((key >> 16) - 1) as usize, key as u16)
}

/// The key a rule's firings are counted under: the name's FNV-1a hash, the same in every
/// process of one binary, low bit set so that it is never zero.
pub fn rule_key(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1
}

/// Counts by a `u64` key in `N` open-addressed places; a key that finds no place counts in
/// `other`. A key, once placed, stays: a process's distinct keys are few and long-lived.
#[repr(C)]
#[derive(Debug)]
struct Table<const N: usize> {
    /// Zero: an empty place.
    keys: [AtomicU64; N],
    counts: [AtomicU64; N],
    other: AtomicU64,
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Table {
            keys: [const { AtomicU64::new(0) }; N],
            counts: [const { AtomicU64::new(0) }; N],
            other: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Table<N> {
    /// Counts one under `key`, which is not zero.
    #[inline]
    fn bump(&self, key: u64) {
        let start = (key % N as u64) as usize;
        for i in (start..N).chain(0..start) {
            let placed = self.keys[i].load(Ordering::Relaxed);
            if placed == key {
                return bump(&self.counts[i], 1);
            }
            if placed == 0 {
                // The key is published before its count: a reader may see it at zero.
                self.keys[i].store(key, Ordering::Release);
                return bump(&self.counts[i], 1);
            }
        }
        bump(&self.other, 1);
    }

    /// Everything counted, under any key or none.
    fn sum(&self) -> u64 {
        self.counts
            .iter()
            .chain([&self.other])
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    fn add_into(&self, totals: &mut BTreeMap<u64, u64>, other: &mut u64) {
        for (key, count) in self.keys.iter().zip(&self.counts) {
            let key = key.load(Ordering::Acquire);
            if key != 0 {
                let total = totals.entry(key).or_default();
                *total = total.wrapping_add(count.load(Ordering::Relaxed));
            }
        }
        *other = other.wrapping_add(self.other.load(Ordering::Relaxed));
    }
}

/// One process's counters and gauges. See the module's documentation for the layout's rules.
#[repr(C)]
#[derive(Debug)]
pub struct Tally {
    pid: AtomicU32,
    _align: AtomicU32,
    /// By listener index and TLS (SMTPS) or not.
    connections_opened: [[AtomicU64; 2]; MAX_LISTENERS + 1],
    connections_open: AtomicU64,
    session_duration: Histogram,
    connections_refused: AtomicU64,
    timeouts: AtomicU64,
    /// Failed, then ok.
    tls_handshakes: [AtomicU64; 2],
    commands: [AtomicU64; VERBS.len()],
    messages: Table<MESSAGE_KINDS>,
    message_bytes: AtomicU64,
    message_size: Histogram,
    recipients: AtomicU64,
    auth: [[AtomicU64; AUTH_RESULTS.len()]; MECHANISMS.len()],
    rules: Table<RULE_NAMES>,
    /// Deferred, then passed.
    greylist: [AtomicU64; 2],
    greylist_entries: AtomicU64,
    /// As the running greylist last said: it counts from zero in each process.
    greylist_evicted: AtomicU64,
    /// Evictions counted by the processes this slot served before, so that the total
    /// never falls when a restarted worker takes the slot.
    greylist_evicted_before: AtomicU64,
    delayed_replies_pending: AtomicU64,
    delay_lateness: Histogram,
    event_log_dropped: AtomicU64,
    proxy_rejected: AtomicU64,
}

const fn zeros<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            pid: AtomicU32::new(0),
            _align: AtomicU32::new(0),
            connections_opened: [const { zeros() }; MAX_LISTENERS + 1],
            connections_open: AtomicU64::new(0),
            session_duration: Histogram::default(),
            connections_refused: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            tls_handshakes: zeros(),
            commands: zeros(),
            messages: Table::default(),
            message_bytes: AtomicU64::new(0),
            message_size: Histogram::default(),
            recipients: AtomicU64::new(0),
            auth: [const { zeros() }; MECHANISMS.len()],
            rules: Table::default(),
            greylist: zeros(),
            greylist_entries: AtomicU64::new(0),
            greylist_evicted: AtomicU64::new(0),
            greylist_evicted_before: AtomicU64::new(0),
            delayed_replies_pending: AtomicU64::new(0),
            delay_lateness: Histogram::default(),
            event_log_dropped: AtomicU64::new(0),
            proxy_rejected: AtomicU64::new(0),
        }
    }
}

impl Tally {
    /// Makes the slot this process's: records its pid and zeroes the gauges a process that
    /// served it before left (its connections, delays and greylist died with it). Counters
    /// go on from where they were.
    pub fn claim(&self, pid: u32) {
        self.reset_gauges();
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The pid of the process that last claimed the slot; 0 if none has.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Zeroes what describes the present rather than counts the past.
    pub fn reset_gauges(&self) {
        self.connections_open.store(0, Ordering::Relaxed);
        self.delayed_replies_pending.store(0, Ordering::Relaxed);
        self.greylist_entries.store(0, Ordering::Relaxed);
        let evicted = self.greylist_evicted.swap(0, Ordering::Relaxed);
        bump(&self.greylist_evicted_before, evicted);
    }

    /// A connection was accepted on listener `listener` (its index in the configuration),
    /// SMTPS or not. It is open until [`Tally::connection_closed`].
    #[inline]
    pub fn connection_opened(&self, listener: usize, tls: bool) {
        let listener = listener.min(OTHER_LISTENER);
        bump(&self.connections_opened[listener][usize::from(tls)], 1);
        bump(&self.connections_open, 1);
    }

    /// An opened connection closed after `duration_micros`.
    #[inline]
    pub fn connection_closed(&self, duration_micros: u64) {
        drop_one(&self.connections_open);
        self.session_duration
            .observe(&SESSION_DURATION, duration_micros);
    }

    /// A connection was turned away at `max_connections` (never counted as opened).
    #[inline]
    pub fn connection_refused(&self) {
        bump(&self.connections_refused, 1);
    }

    /// A connection was closed for idling past the timeout.
    #[inline]
    pub fn connection_timed_out(&self) {
        bump(&self.timeouts, 1);
    }

    #[inline]
    pub fn tls_handshake(&self, ok: bool) {
        bump(&self.tls_handshakes[usize::from(ok)], 1);
    }

    #[inline]
    pub fn command(&self, verb: Verb) {
        bump(&self.commands[verb_index(verb)], 1);
    }

    /// A message on listener `listener` got its final reply `code` after `size` octets.
    #[inline]
    pub fn message(&self, listener: usize, code: u16, size: u64) {
        self.message_data(size);
        self.message_answered(listener, code);
    }

    /// A message's data ended after `size` octets (its final reply may come later, after a
    /// delay, or never, when a rule closes the connection).
    #[inline]
    pub fn message_data(&self, size: u64) {
        bump(&self.message_bytes, size);
        self.message_size.observe(&MESSAGE_SIZE, size);
    }

    /// A message on listener `listener` got its final reply `code`.
    #[inline]
    pub fn message_answered(&self, listener: usize, code: u16) {
        self.messages.bump(message_key(listener, code));
    }

    /// Messages given a final reply, over every listener and code: what a bound on messages
    /// counts, without adding up the rest.
    pub fn messages_answered(&self) -> u64 {
        self.messages.sum()
    }

    /// A recipient was accepted.
    #[inline]
    pub fn recipient(&self) {
        bump(&self.recipients, 1);
    }

    /// An AUTH exchange with `mechanism` (any case) ended with `result`.
    #[inline]
    pub fn auth(&self, mechanism: &str, result: AuthResult) {
        let counter = &self.auth[mechanism_index(mechanism)][auth_result_index(result)];
        bump(counter, 1);
    }

    /// The rule named `name` fired.
    #[inline]
    pub fn rule_fired(&self, name: &str) {
        self.rules.bump(rule_key(name));
    }

    /// Greylisting deferred a recipient (`false`) or let it pass (`true`).
    #[inline]
    pub fn greylisted(&self, passed: bool) {
        bump(&self.greylist[usize::from(passed)], 1);
    }

    /// The greylist holds `entries` triplets and has evicted `evicted` since this process
    /// started it.
    #[inline]
    pub fn greylist_memory(&self, entries: u64, evicted: u64) {
        self.greylist_entries.store(entries, Ordering::Relaxed);
        self.greylist_evicted.store(evicted, Ordering::Relaxed);
    }

    /// A reply is held back by a delay, until [`Tally::delayed_reply_done`].
    #[inline]
    pub fn delayed_reply_pending(&self) {
        bump(&self.delayed_replies_pending, 1);
    }

    /// A held-back reply left, or was dropped with its connection.
    #[inline]
    pub fn delayed_reply_done(&self) {
        drop_one(&self.delayed_replies_pending);
    }

    /// A held-back reply left `micros` after its due time.
    #[inline]
    pub fn delay_lateness(&self, micros: u64) {
        self.delay_lateness.observe(&DELAY_LATENESS, micros);
    }

    /// `lines` event lines were dropped because the writer fell behind.
    #[inline]
    pub fn event_log_dropped(&self, lines: u64) {
        bump(&self.event_log_dropped, lines);
    }

    /// A PROXY header was refused (untrusted sender or bad header).
    #[inline]
    pub fn proxy_rejected(&self) {
        bump(&self.proxy_rejected, 1);
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The figures of any number of tallies, summed: what a scrape and a summary show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections_opened: PerListener,
    /// Gauges are summed as two's complement: a slot seen between its worker's close and
    /// claim may be a little off, never wildly so.
    pub connections_open: i64,
    pub session_duration: HistogramTotals,
    pub connections_refused: u64,
    pub timeouts: u64,
    /// Failed, then ok.
    pub tls_handshakes: [u64; 2],
    /// In the order of [`VERBS`].
    pub commands: [u64; VERBS.len()],
    /// By [`message_key`].
    pub messages: BTreeMap<u64, u64>,
    pub messages_other: u64,
    pub message_bytes: u64,
    pub message_size: HistogramTotals,
    pub recipients: u64,
    /// By [`MECHANISMS`], then [`AUTH_RESULTS`].
    pub auth: [[u64; AUTH_RESULTS.len()]; MECHANISMS.len()],
    /// By [`rule_key`].
    pub rules: BTreeMap<u64, u64>,
    pub rules_other: u64,
    /// Deferred, then passed.
    pub greylist: [u64; 2],
    pub greylist_entries: u64,
    pub greylist_evicted: u64,
    pub delayed_replies_pending: i64,
    pub delay_lateness: HistogramTotals,
    pub event_log_dropped: u64,
    pub proxy_rejected: u64,
}

/// Connections opened, by listener index, then plain (0) or SMTPS (1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerListener(pub [[u64; 2]; MAX_LISTENERS + 1]);

impl Default for PerListener {
    fn default() -> Self {
        PerListener([[0; 2]; MAX_LISTENERS + 1])
    }
}

fn add_all<const N: usize>(totals: &mut [u64; N], counters: &[AtomicU64; N]) {
    for (total, counter) in totals.iter_mut().zip(counters) {
        *total = total.wrapping_add(load(counter));
    }
}

fn add(total: &mut u64, counter: &AtomicU64) {
    *total = total.wrapping_add(load(counter));
}

fn add_gauge(total: &mut i64, gauge: &AtomicU64) {
    *total = total.wrapping_add(load(gauge) as i64);
}

impl Totals {
    /// Adds one tally's figures.
    pub fn add(&mut self, tally: &Tally) {
        for (totals, counters) in self
            .connections_opened
            .0
            .iter_mut()
            .zip(&tally.connections_opened)
        {
            add_all(totals, counters);
        }
        add_gauge(&mut self.connections_open, &tally.connections_open);
        self.session_duration.add(&tally.session_duration);
        add(&mut self.connections_refused, &tally.connections_refused);
        add(&mut self.timeouts, &tally.timeouts);
        add_all(&mut self.tls_handshakes, &tally.tls_handshakes);
        add_all(&mut self.commands, &tally.commands);
        tally
            .messages
            .add_into(&mut self.messages, &mut self.messages_other);
        add(&mut self.message_bytes, &tally.message_bytes);
        self.message_size.add(&tally.message_size);
        add(&mut self.recipients, &tally.recipients);
        for (totals, counters) in self.auth.iter_mut().zip(&tally.auth) {
            add_all(totals, counters);
        }
        tally.rules.add_into(&mut self.rules, &mut self.rules_other);
        add_all(&mut self.greylist, &tally.greylist);
        add(&mut self.greylist_entries, &tally.greylist_entries);
        add(&mut self.greylist_evicted, &tally.greylist_evicted);
        add(&mut self.greylist_evicted, &tally.greylist_evicted_before);
        add_gauge(
            &mut self.delayed_replies_pending,
            &tally.delayed_replies_pending,
        );
        self.delay_lateness.add(&tally.delay_lateness);
        add(&mut self.event_log_dropped, &tally.event_log_dropped);
        add(&mut self.proxy_rejected, &tally.proxy_rejected);
    }

    /// The totals of every tally in `tallies`.
    pub fn of<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Totals {
        let mut totals = Totals::default();
        for tally in tallies {
            totals.add(tally);
        }
        totals
    }

    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.0.iter().flatten().sum()
    }

    /// Messages by final reply code, over all listeners; `other` not included.
    /// Messages given a final reply, over every listener and code.
    pub fn messages_answered(&self) -> u64 {
        self.messages.values().sum::<u64>() + self.messages_other
    }

    /// Firings by the configured `names` (each name once, the first time it is given), and
    /// the firings of no configured name: a rule since renamed or removed, or none found.
    pub fn rules_by_name<'a>(&self, names: &'a [String]) -> (Vec<(&'a str, u64)>, u64) {
        let mut unnamed = self.rules.clone();
        let mut named = Vec::with_capacity(names.len());
        let mut shown = BTreeSet::new();
        for name in names {
            let key = rule_key(name);
            if shown.insert(key) {
                named.push((name.as_str(), unnamed.remove(&key).unwrap_or(0)));
            }
        }
        (named, self.rules_other + unnamed.values().sum::<u64>())
    }

    pub fn messages_by_code(&self) -> BTreeMap<u16, u64> {
        let mut by_code = BTreeMap::new();
        for (&key, &count) in &self.messages {
            *by_code.entry(message_of_key(key).1).or_default() += count;
        }
        by_code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(tally: &Tally) -> Totals {
        Totals::of([tally])
    }

    #[test]
    fn every_verb_is_counted_at_its_own_place() {
        // `Unknown` is the last verb: the table names every one, in their order.
        assert_eq!(VERBS.len(), Verb::Unknown as usize + 1);
        for (place, &(verb, _)) in VERBS.iter().enumerate() {
            assert_eq!(verb_index(verb), place, "{verb:?}");
        }
    }

    #[test]
    fn an_empty_tally_adds_nothing() {
        assert_eq!(totals(&Tally::default()), Totals::default());
    }

    #[test]
    fn connections_count_by_listener_and_tls_and_stay_open_until_closed() {
        let tally = Tally::default();
        tally.connection_opened(0, false);
        tally.connection_opened(0, false);
        tally.connection_opened(1, true);
        tally.connection_opened(MAX_LISTENERS + 7, false);
        tally.connection_closed(20_000);
        let totals = totals(&tally);
        assert_eq!(totals.connections_opened.0[0], [2, 0]);
        assert_eq!(totals.connections_opened.0[1], [0, 1]);
        assert_eq!(totals.connections_opened.0[OTHER_LISTENER], [1, 0]);
        assert_eq!(totals.connections_opened(), 4);
        assert_eq!(totals.connections_open, 3);
        assert_eq!(totals.session_duration.count(), 1);
        assert_eq!(totals.session_duration.sum, 20_000);
    }

    #[test]
    fn messages_count_by_listener_and_code_and_past_the_table_as_other() {
        let tally = Tally::default();
        tally.message(0, 250, 100);
        tally.message(0, 250, 200);
        tally.message(2, 550, 1);
        for code in 0..MESSAGE_KINDS as u16 {
            tally.message(5, 300 + code, 0);
        }
        let totals = totals(&tally);
        assert_eq!(totals.messages.get(&message_key(0, 250)), Some(&2));
        assert_eq!(totals.messages.get(&message_key(2, 550)), Some(&1));
        assert_eq!(totals.messages.len(), MESSAGE_KINDS);
        assert_eq!(totals.messages_other, 2, "two kinds found no place");
        let answered = 3 + MESSAGE_KINDS as u64;
        assert_eq!(totals.messages_answered(), answered);
        assert_eq!(tally.messages_answered(), answered);
        assert_eq!(totals.message_bytes, 301);
        assert_eq!(totals.messages_by_code().get(&250), Some(&2));
        assert_eq!(message_of_key(message_key(2, 550)), (2, 550));
        assert_eq!(message_of_key(message_key(999, 421)), (OTHER_LISTENER, 421));
    }

    #[test]
    fn rules_count_by_name_hash() {
        let tally = Tally::default();
        tally.rule_fired("slow");
        tally.rule_fired("slow");
        tally.rule_fired("fail twice");
        let totals = totals(&tally);
        assert_eq!(totals.rules.get(&rule_key("slow")), Some(&2));
        assert_eq!(totals.rules.get(&rule_key("fail twice")), Some(&1));
        assert_ne!(rule_key("slow"), rule_key("slot"));
    }

    #[test]
    fn rules_are_named_once_each_and_the_rest_is_other() {
        let tally = Tally::default();
        tally.rule_fired("slow");
        tally.rule_fired("slow");
        tally.rule_fired("removed since");
        let names = ["slow", "quiet", "slow"].map(String::from);
        let (named, other) = totals(&tally).rules_by_name(&names);
        assert_eq!(named, [("slow", 2), ("quiet", 0)]);
        assert_eq!(other, 1);
    }

    #[test]
    fn verbs_and_mechanisms_each_have_a_counter() {
        let tally = Tally::default();
        for (verb, _) in VERBS {
            tally.command(verb);
        }
        tally.command(Verb::Mail);
        tally.auth("PLAIN", AuthResult::Accepted);
        tally.auth("cram-md5", AuthResult::Cancelled);
        tally.auth("XOAUTH2", AuthResult::Refused);
        let totals = totals(&tally);
        assert_eq!(totals.commands[verb_index(Verb::Mail)], 2);
        assert_eq!(totals.commands.iter().sum::<u64>(), VERBS.len() as u64 + 1);
        assert_eq!(totals.auth[0], [1, 0, 0]);
        assert_eq!(totals.auth[2], [0, 0, 1]);
        assert_eq!(totals.auth[3], [0, 1, 0], "an unknown mechanism is other");
    }

    #[test]
    fn a_new_claim_zeroes_gauges_and_keeps_counters() {
        let tally = Tally::default();
        tally.claim(41);
        tally.connection_opened(0, false);
        tally.delayed_reply_pending();
        tally.greylist_memory(10, 3);
        tally.greylisted(false);
        tally.claim(42);
        tally.greylist_memory(1, 2);
        let totals = totals(&tally);
        assert_eq!(tally.pid(), 42);
        assert_eq!(totals.connections_open, 0);
        assert_eq!(totals.delayed_replies_pending, 0);
        assert_eq!(totals.greylist_entries, 1);
        assert_eq!(totals.greylist_evicted, 5, "evictions never fall");
        assert_eq!(totals.connections_opened(), 1);
        assert_eq!(totals.greylist, [1, 0]);
    }

    #[test]
    fn gauges_sum_across_tallies_even_below_zero_in_one() {
        let (a, b) = (Tally::default(), Tally::default());
        a.delayed_reply_pending();
        a.delayed_reply_pending();
        b.delayed_reply_done();
        b.delay_lateness(700);
        let totals = Totals::of([&a, &b]);
        assert_eq!(totals.delayed_replies_pending, 1);
        assert_eq!(totals.delay_lateness.sum, 700);
    }
}
