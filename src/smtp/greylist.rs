//! Greylisting: the memory of (client, sender, recipient) triplets, and the verdict at RCPT.
//!
//! The first sight of a triplet is deferred; a retry once `delay` has passed gets through and
//! is let through for `pass_for` after each pass; a triplet not retried within `expire` is
//! forgotten. A triplet is kept as a 64-bit keyed hash, never as its text, so an entry costs
//! the same whatever the addresses are, and at most `max_entries` are kept: past it the oldest
//! go first, and are counted. Time comes in as milliseconds from the caller.

use core::net::IpAddr;
use core::num::NonZeroU64;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use super::rules::ReplyLine;

/// `[greylist]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreylistSettings {
    /// How long a client must wait before a retry is let through.
    pub delay_ms: u64,
    /// How long an untried triplet is remembered.
    pub expire_ms: u64,
    /// How long a passed triplet is let through after its last pass.
    pub pass_for_ms: u64,
    /// What a deferred RCPT is told.
    pub reply: ReplyLine,
    /// The most triplets remembered.
    pub max_entries: usize,
}

impl Default for GreylistSettings {
    /// postgrey's defaults: 60 s, 4 h, 36 days; a million triplets.
    fn default() -> Self {
        GreylistSettings {
            delay_ms: 60_000,
            expire_ms: 4 * 3600 * 1000,
            pass_for_ms: 36 * 24 * 3600 * 1000,
            reply: "451 4.7.1 Greylisted, try again later"
                .parse()
                .unwrap_or_else(|_| unreachable!("a valid reply line")),
            max_entries: 1_000_000,
        }
    }
}

/// What greylisting says of a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Defer,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Let through until then, once passed; 0 while waiting.
    pass_until: u64,
    /// In ms: while waiting, when the triplet was first seen (or seen again after it
    /// expired); once passed, when it was last let through. The order of eviction, least
    /// recent first, so that a flood of new triplets pushes out its own kind before the
    /// passed ones that real senders rely on.
    touched: u64,
}

/// The triplets one process remembers. Kept across reloads.
#[derive(Debug)]
pub struct Greylist {
    entries: HashMap<u64, Entry>,
    /// Keys in the order they were inserted or let through, with that time: the least
    /// recent is evicted first. An item whose entry has since been dropped or touched again
    /// is skipped when reached.
    order: VecDeque<(u64, u64)>,
    /// Keys the hashes with a secret of this process's, so a client cannot aim collisions.
    hasher: RandomState,
    evicted: u64,
}

impl Default for Greylist {
    fn default() -> Self {
        Greylist {
            entries: HashMap::new(),
            order: VecDeque::new(),
            hasher: RandomState::new(),
            evicted: 0,
        }
    }
}

impl Greylist {
    /// Triplets remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Triplets dropped, oldest first, to stay within `max_entries`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// What a sender contributes to its triplets' keys: worked out once, at MAIL, so that the
    /// session keeps 8 bytes through the transaction, not the address.
    /// Never zero, so that a session keeps "no key" in the same 8 bytes.
    pub fn sender_key(&self, sender: &[u8]) -> NonZeroU64 {
        let mut h = self.hasher.build_hasher();
        write_address(&mut h, sender);
        NonZeroU64::new(h.finish()).unwrap_or(NonZeroU64::MIN)
    }

    /// The verdict on a recipient of the sender whose key is `sender` ([`Greylist::sender_key`]),
    /// remembering the triplet. Addresses compare without case.
    pub fn check(
        &mut self,
        settings: &GreylistSettings,
        client: IpAddr,
        sender: u64,
        recipient: &[u8],
        now_ms: u64,
    ) -> Verdict {
        let key = self.key(client, sender, recipient);
        if let Some(entry) = self.entries.get_mut(&key) {
            let waiting = entry.pass_until == 0;
            let age = now_ms.saturating_sub(entry.touched);
            let passes = entry.pass_until > now_ms
                || (waiting && age < settings.expire_ms && age >= settings.delay_ms);
            if passes {
                entry.pass_until = now_ms.saturating_add(settings.pass_for_ms);
                entry.touched = now_ms;
                self.order.push_back((key, now_ms));
                self.sweep();
                return Verdict::Pass;
            }
            if waiting && age < settings.expire_ms {
                return Verdict::Defer;
            }
            // Expired, untried or no longer passed: seen as new.
            self.entries.remove(&key);
        }
        self.insert(settings, key, now_ms);
        Verdict::Defer
    }

    fn insert(&mut self, settings: &GreylistSettings, key: u64, now_ms: u64) {
        while self.entries.len() >= settings.max_entries.max(1) {
            let Some((oldest, seen)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).is_some_and(|e| e.touched == seen) {
                self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.entries.insert(
            key,
            Entry {
                pass_until: 0,
                touched: now_ms,
            },
        );
        self.order.push_back((key, now_ms));
        self.sweep();
    }

    /// Items for entries since dropped or touched again are skipped when reached; once they
    /// outnumber the live ones they are swept out, at a cost spread over as many pushes.
    fn sweep(&mut self) {
        if self.order.len() > 2 * self.entries.len().max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(key, seen)| entries.get(key).is_some_and(|e| e.touched == *seen));
        }
    }

    fn key(&self, client: IpAddr, sender: u64, recipient: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        match client.to_canonical() {
            IpAddr::V4(ip) => h.write(&ip.octets()),
            IpAddr::V6(ip) => h.write(&ip.octets()),
        }
        h.write_u64(sender);
        write_address(&mut h, recipient);
        h.finish()
    }
}

/// An address into a hash, without case; its length first, so that no address's encoding is
/// a prefix of another's.
fn write_address(h: &mut impl Hasher, address: &[u8]) {
    h.write_usize(address.len());
    for &b in address {
        h.write_u8(b.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    fn settings() -> GreylistSettings {
        GreylistSettings {
            delay_ms: 60_000,
            expire_ms: 3_600_000,
            pass_for_ms: 86_400_000,
            max_entries: 1000,
            ..GreylistSettings::default()
        }
    }

    #[test]
    fn first_sight_defers_a_retry_after_the_delay_passes_and_is_remembered() {
        let (s, mut g) = (settings(), Greylist::default());
        let check = |g: &mut Greylist, rcpt: &[u8], t| {
            let sender = g.sender_key(b"a@x").get();
            g.check(&s, CLIENT, sender, rcpt, t)
        };
        assert_eq!(check(&mut g, b"b@y", 0), Verdict::Defer);
        assert_eq!(
            check(&mut g, b"b@y", 59_999),
            Verdict::Defer,
            "retried too early"
        );
        assert_eq!(
            check(&mut g, b"B@Y", 60_000),
            Verdict::Pass,
            "case is not a new triplet"
        );
        // Let through for pass_for after each pass.
        assert_eq!(check(&mut g, b"b@y", 60_000 + 86_399_999), Verdict::Pass);
        assert_eq!(
            check(&mut g, b"b@y", 60_000 + 2 * 86_399_999),
            Verdict::Pass
        );
        // Another recipient, sender or client is another triplet.
        assert_eq!(check(&mut g, b"c@y", 100_000), Verdict::Defer);
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        assert_eq!(
            g.check(&s, other, g.sender_key(b"a@x").get(), b"b@y", 100_000),
            Verdict::Defer
        );
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"z@x").get(), b"b@y", 100_000),
            Verdict::Defer
        );
        // Boundaries between the parts count: ("a@x", "b@y") is not ("a@xb", "@y").
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"a@xb").get(), b"@y", 100_000),
            Verdict::Defer
        );
    }

    #[test]
    fn an_untried_triplet_expires_and_a_stale_pass_starts_again() {
        let (s, mut g) = (settings(), Greylist::default());
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"a").get(), b"b", 0),
            Verdict::Defer
        );
        // Retried only after expire: seen as new.
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"a").get(), b"b", 3_600_000),
            Verdict::Defer
        );
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"a").get(), b"b", 3_660_000),
            Verdict::Pass
        );
        // A pass not renewed within pass_for ends.
        let later = 3_660_000 + 86_400_000;
        assert_eq!(
            g.check(&s, CLIENT, g.sender_key(b"a").get(), b"b", later),
            Verdict::Defer
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn renewed_entries_do_not_grow_the_order_behind_a_long_lived_one() {
        let (mut s, mut g) = (settings(), Greylist::default());
        s.expire_ms = 10;
        s.delay_ms = 1;
        // One triplet passed and kept alive at the front of the order...
        g.check(&s, CLIENT, g.sender_key(b"old").get(), b"x", 0);
        g.check(&s, CLIENT, g.sender_key(b"old").get(), b"x", 5);
        // ...while another expires and is seen anew, over and over.
        for t in 0..10_000u64 {
            g.check(&s, CLIENT, g.sender_key(b"old").get(), b"x", 100 + t * 100);
            g.check(
                &s,
                CLIENT,
                g.sender_key(b"churn").get(),
                b"y",
                100 + t * 100 + 50,
            );
        }
        assert!(
            g.order.len() <= 2 * 16 + 1,
            "order grew to {}",
            g.order.len()
        );
    }

    #[test]
    fn a_flood_of_new_triplets_evicts_its_own_kind_before_passed_ones() {
        let mut s = settings();
        s.max_entries = 100;
        s.delay_ms = 10;
        let mut g = Greylist::default();
        let sender = g.sender_key(b"mta@example.com").get();
        // A real sender's triplet, seen first of all, then passed.
        assert_eq!(g.check(&s, CLIENT, sender, b"rcpt@x", 0), Verdict::Defer);
        assert_eq!(g.check(&s, CLIENT, sender, b"rcpt@x", 20), Verdict::Pass);
        // A flood of 1,000 new triplets from elsewhere.
        let flood = g.sender_key(b"flood@example.net").get();
        for n in 0..1000u32 {
            let rcpt = format!("r{n}@y");
            g.check(&s, CLIENT, flood, rcpt.as_bytes(), 30 + u64::from(n));
            // The passed triplet is let through all along, so it stays the most recent.
            if n % 50 == 0 {
                let t = 30 + u64::from(n);
                assert_eq!(
                    g.check(&s, CLIENT, sender, b"rcpt@x", t),
                    Verdict::Pass,
                    "{n}"
                );
            }
        }
        assert_eq!(g.check(&s, CLIENT, sender, b"rcpt@x", 2000), Verdict::Pass);
    }

    #[test]
    fn past_max_entries_the_oldest_go_first_and_memory_stays_flat() {
        let mut s = settings();
        s.max_entries = 100;
        let mut g = Greylist::default();
        for n in 0..1000u32 {
            let rcpt = format!("r{n}@example.net");
            g.check(
                &s,
                CLIENT,
                g.sender_key(b"a").get(),
                rcpt.as_bytes(),
                u64::from(n),
            );
            assert!(g.len() <= 100);
            assert!(
                g.order.len() <= 2 * 100 + 1,
                "order grew to {}",
                g.order.len()
            );
        }
        assert_eq!(g.len(), 100);
        assert_eq!(g.evicted(), 900);
        // The newest are kept: the last recipient retried after the delay passes.
        assert_eq!(
            g.check(
                &s,
                CLIENT,
                g.sender_key(b"a").get(),
                b"r999@example.net",
                70_000
            ),
            Verdict::Pass
        );
        // The oldest is gone: seen as new.
        assert_eq!(
            g.check(
                &s,
                CLIENT,
                g.sender_key(b"a").get(),
                b"r0@example.net",
                70_000
            ),
            Verdict::Defer
        );
    }
}
