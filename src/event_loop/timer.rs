//! A hierarchical timer wheel in integer ticks, generic over its payload.
//!
//! This module owns the pending deadlines of the event loop: it stores them,
//! cancels them in O(1), says exactly when the earliest one is due (the poll
//! timeout) and hands back the payloads of those that are due. It never reads
//! the clock: the caller passes "now" in ticks to [`TimerWheel::advance`], so
//! tests drive it with injected ticks. It never does I/O and never calls back
//! into the caller.
//!
//! Layout, after tokio's `runtime/time/wheel`: six levels of 64 slots, level
//! `n` slot width `64^n` ticks, so the wheel spans `2^36` ticks (about 795 days
//! at one millisecond a tick). Later deadlines are clamped into the top level,
//! where their slot comes round once per rotation until they fall within range
//! and cascade down. Entries live in a slab; each slot is an intrusive doubly
//! linked list of slab indices, and each level has an occupancy bitmap.

use std::fmt;
use std::num::NonZeroU64;

use slab::Slab;

const SLOT_BITS: usize = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
const LEVELS: usize = 6;
const TOP: usize = LEVELS - 1;
/// Ticks covered by one rotation of the top level.
const SPAN: u64 = 1 << (SLOT_BITS * LEVELS);
/// List terminator; slab indices are kept as `u32` to keep entries small.
const NIL: u32 = u32::MAX;

/// Names one inserted timer. The `id` is never reused, so a key kept after
/// its timer fired or was cancelled cannot cancel a later entry that happens
/// to occupy the same slab slot. It is never zero, so an `Option<TimerKey>`
/// (one or two in every connection) takes no more room than a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    index: u32,
    id: NonZeroU64,
}

struct Entry<T> {
    payload: T,
    deadline: u64,
    id: NonZeroU64,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
}

#[derive(Clone, Copy)]
struct Slot {
    head: u32,
    tail: u32,
    /// Smallest deadline linked here since the slot was last emptied. Cancel
    /// does not raise it (that would need a walk of the list), so it is a
    /// lower bound; it becomes exact again when the slot is next emptied.
    min: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        head: NIL,
        tail: NIL,
        min: u64::MAX,
    };
}

#[derive(Clone, Copy)]
struct Level {
    occupied: u64,
    slots: [Slot; SLOTS],
}

impl Level {
    const EMPTY: Level = Level {
        occupied: 0,
        slots: [Slot::EMPTY; SLOTS],
    };
}

/// A timer wheel holding payloads of type `T` keyed by deadline in ticks.
///
/// Invariant: every occupied slot starts after `elapsed`, except level 0's
/// current slot, which holds what is already due. Above level 0 a slot's
/// entries have deadlines within the slot's width from its start, except
/// entries clamped into the top level, which lie at least a rotation later.
pub struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    // Boxed so that moving the wheel does not copy six kilobytes of slots.
    levels: Box<[Level; LEVELS]>,
    elapsed: u64,
    next_id: NonZeroU64,
    // Reused between advances so firing does not allocate in steady state.
    due: Vec<(u64, T)>,
}

fn slot_width(level: usize) -> u64 {
    1 << (SLOT_BITS * level)
}

/// The level is set by the highest bit in which `elapsed` and `when` differ:
/// below it they share a 64^(level+1)-tick block, so the slot index at that
/// level is ahead of the current one and cannot wrap.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | SLOT_MASK;
    let significant = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    (significant / SLOT_BITS).min(TOP)
}

impl<T> TimerWheel<T> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    pub fn with_capacity(n: usize) -> Self {
        TimerWheel {
            entries: Slab::with_capacity(n),
            levels: Box::new([Level::EMPTY; LEVELS]),
            elapsed: 0,
            next_id: NonZeroU64::MIN,
            due: Vec::new(),
        }
    }

    /// Schedules `payload` for `deadline`. A deadline at or before the
    /// current time fires on the next [`advance`](Self::advance), whatever
    /// `now` that call is given.
    ///
    /// # Panics
    /// If more than `u32::MAX - 1` timers are pending at once.
    pub fn insert(&mut self, deadline: u64, payload: T) -> TimerKey {
        let id = self.next_id;
        self.next_id = id.saturating_add(1);
        let index = self.entries.insert(Entry {
            payload,
            deadline,
            id,
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
        });
        let index = u32::try_from(index)
            .ok()
            .filter(|&i| i != NIL)
            .expect("timer wheel is limited to u32::MAX - 1 pending timers");
        self.link(index);
        TimerKey { index, id }
    }

    /// Removes a pending timer and returns its payload; `None` if the key's
    /// timer already fired or was cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if self.entries.get(key.index as usize)?.id != key.id {
            return None;
        }
        self.unlink(key.index);
        Some(self.entries.remove(key.index as usize).payload)
    }

    /// The earliest pending deadline, meant as the poll timeout, so that the
    /// loop never wakes before something is due. It may lie at or before
    /// the last `advance` if an overdue timer was inserted since.
    ///
    /// It is exact unless the earliest timer of some slot was cancelled, or
    /// the only timers in the next top-level slot lie more than a rotation
    /// (2^36 ticks) ahead: then it is a lower bound, and advancing to it
    /// moves it forward.
    pub fn next_deadline(&self) -> Option<u64> {
        (0..LEVELS)
            .filter_map(|level| {
                let (slot, start) = self.next_slot(level)?;
                let min = self.levels[level].slots[slot].min;
                if level == TOP {
                    // A top slot holding only clamped entries must not hide
                    // the later slots: nothing in them is due before this
                    // slot's end.
                    Some(min.min(start.saturating_add(slot_width(TOP))))
                } else {
                    Some(min)
                }
            })
            .min()
    }

    /// Moves time to `now` (an earlier `now` is taken as the current time)
    /// and appends to `fired` the payloads of every timer due by then, in
    /// deadline order.
    ///
    /// The work done is proportional to the timers and slots touched, not to
    /// the ticks elapsed.
    pub fn advance(&mut self, now: u64, fired: &mut Vec<T>) {
        let now = now.max(self.elapsed);
        if now - self.elapsed >= SPAN {
            // Stepping through every rotation would visit clamped entries
            // once per rotation; sorting out everything once is cheaper.
            self.rebase(now, fired);
            return;
        }
        while let Some((level, slot, start)) = self.earliest_slot() {
            if start > now {
                break;
            }
            // All lower slots started earlier and are empty now, and every
            // other slot holds later deadlines, so this batch, sorted, is
            // next in deadline order.
            let head = self.take_slot(level, slot);
            self.elapsed = start;
            // Entries not yet due, placed relative to the slot's start, land
            // in a lower level (or a later rotation of the top level).
            self.sort_out(head, now);
            self.flush_due(fired);
        }
        self.elapsed = now;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn rebase(&mut self, now: u64, fired: &mut Vec<T>) {
        let mut heads = Vec::new();
        for level in 0..LEVELS {
            let mut occupied = self.levels[level].occupied;
            while occupied != 0 {
                let slot = occupied.trailing_zeros() as usize;
                occupied &= occupied - 1;
                heads.push(self.take_slot(level, slot));
            }
        }
        self.elapsed = now;
        for head in heads {
            self.sort_out(head, now);
        }
        self.flush_due(fired);
    }

    /// Goes through an unlinked list: entries due by `now` are removed and
    /// queued to fire, the others linked again where they now belong.
    fn sort_out(&mut self, mut index: u32, now: u64) {
        while index != NIL {
            let entry = &self.entries[index as usize];
            let next = entry.next;
            if entry.deadline <= now {
                let entry = self.entries.remove(index as usize);
                self.due.push((entry.deadline, entry.payload));
            } else {
                self.link(index);
            }
            index = next;
        }
    }

    fn flush_due(&mut self, fired: &mut Vec<T>) {
        // Stable, so equal deadlines keep their list (insertion) order.
        self.due.sort_by_key(|&(deadline, _)| deadline);
        fired.extend(self.due.drain(..).map(|(_, payload)| payload));
    }

    /// The occupied slot that starts first, over all levels.
    fn earliest_slot(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS)
            .filter_map(|level| {
                self.next_slot(level)
                    .map(|(slot, start)| (level, slot, start))
            })
            .min_by_key(|&(_, _, start)| start)
    }

    /// The first occupied slot of `level` in rotation order from the current
    /// position, and the tick at which it starts.
    fn next_slot(&self, level: usize) -> Option<(usize, u64)> {
        let occupied = self.levels[level].occupied;
        if occupied == 0 {
            return None;
        }
        let width = slot_width(level);
        let current = (self.elapsed >> (SLOT_BITS * level)) & SLOT_MASK;
        // Level 0's current slot holds what is due now. Above level 0 the
        // current slot can only be occupied at the top level, by entries a
        // whole rotation ahead, so it is searched last.
        let skip = u64::from(level != 0);
        let rotated = occupied.rotate_right(((current + skip) & SLOT_MASK) as u32);
        let offset = u64::from(rotated.trailing_zeros()) + skip;
        let slot = ((current + offset) & SLOT_MASK) as usize;
        // Cannot overflow for an occupied slot (its start is at most the
        // deadline of its entries); saturating keeps that assumption cheap.
        let start = (self.elapsed & !(width - 1)).saturating_add(offset * width);
        Some((slot, start))
    }

    /// Empties a slot and returns the head of its former list; the entries
    /// keep their `next` links so the caller can walk them.
    fn take_slot(&mut self, level: usize, slot: usize) -> u32 {
        let lvl = &mut self.levels[level];
        lvl.occupied &= !(1 << slot);
        let head = lvl.slots[slot].head;
        lvl.slots[slot] = Slot::EMPTY;
        head
    }

    /// Links an entry at the tail of the slot its deadline maps to from the
    /// current `elapsed`.
    fn link(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        let deadline = entry.deadline;
        // Overdue entries go to level 0's current slot so the next advance
        // fires them, whatever `now` it is given.
        let when = deadline.max(self.elapsed);
        let level = level_for(self.elapsed, when);
        let slot = ((when >> (SLOT_BITS * level)) & SLOT_MASK) as usize;
        let lvl = &mut self.levels[level];
        let tail = lvl.slots[slot].tail;
        entry.level = level as u8;
        entry.slot = slot as u8;
        entry.prev = tail;
        entry.next = NIL;
        lvl.occupied |= 1 << slot;
        let s = &mut lvl.slots[slot];
        s.min = s.min.min(deadline);
        s.tail = index;
        if tail == NIL {
            s.head = index;
        } else {
            self.entries[tail as usize].next = index;
        }
    }

    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (prev, next) = (entry.prev, entry.next);
        let (level, slot) = (usize::from(entry.level), usize::from(entry.slot));
        let lvl = &mut self.levels[level];
        if prev == NIL {
            lvl.slots[slot].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            lvl.slots[slot].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if lvl.slots[slot].head == NIL {
            lvl.occupied &= !(1 << slot);
            lvl.slots[slot].min = u64::MAX;
        }
    }
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Walks every list and checks links, bitmaps, slot minima and the
    /// "slots start after elapsed" invariant against the slab.
    fn check_structure<T>(w: &TimerWheel<T>) {
        let mut seen = 0;
        for level in 0..LEVELS {
            let lvl = &w.levels[level];
            for slot in 0..SLOTS {
                let s = &lvl.slots[slot];
                let bit = lvl.occupied & (1 << slot) != 0;
                assert_eq!(bit, s.head != NIL, "bitmap at {level}/{slot}");
                assert_eq!(s.head == NIL, s.tail == NIL);
                let mut prev = NIL;
                let mut index = s.head;
                while index != NIL {
                    let e = &w.entries[index as usize];
                    assert_eq!(e.prev, prev);
                    assert_eq!((usize::from(e.level), usize::from(e.slot)), (level, slot));
                    assert!(s.min <= e.deadline, "slot min above an entry");
                    seen += 1;
                    prev = index;
                    index = e.next;
                }
                assert_eq!(s.tail, prev);
            }
            if let Some((slot, start)) = w.next_slot(level) {
                if level == 0 {
                    assert!(start >= w.elapsed);
                } else {
                    assert!(start > w.elapsed, "level {level} slot {slot} not ahead");
                }
            }
        }
        assert_eq!(seen, w.len());
    }

    /// Pending model entries as (deadline, payload id).
    type Model = Vec<(u64, u64)>;

    fn advance_and_compare(w: &mut TimerWheel<u64>, model: &mut Model, now: u64) {
        let mut fired = Vec::new();
        w.advance(now, &mut fired);
        let mut expected: Vec<(u64, u64)> =
            model.iter().copied().filter(|&(d, _)| d <= now).collect();
        model.retain(|&(d, _)| d > now);
        expected.sort_unstable();
        let deadline_of = |id: u64| expected.iter().find(|&&(_, i)| i == id).map(|&(d, _)| d);
        let fired_deadlines: Vec<u64> = fired
            .iter()
            .map(|&id| {
                deadline_of(id).unwrap_or_else(|| panic!("{id} fired early or twice at {now}"))
            })
            .collect();
        assert!(
            fired_deadlines.windows(2).all(|p| p[0] <= p[1]),
            "fired out of deadline order at {now}"
        );
        let mut fired_sorted = fired.clone();
        fired_sorted.sort_unstable();
        let mut expected_ids: Vec<u64> = expected.iter().map(|&(_, id)| id).collect();
        expected_ids.sort_unstable();
        assert_eq!(fired_sorted, expected_ids, "fired set at {now}");
        assert_eq!(w.len(), model.len());
        check_structure(w);
    }

    fn model_min(model: &Model) -> Option<u64> {
        model.iter().map(|&(d, _)| d).min()
    }

    fn random_delay(rng: &mut XorShift, max_bits: u32) -> u64 {
        match rng.below(5) {
            0 => rng.below(64),
            1 => rng.below(5_000),
            2 => rng.below(1 << 20),
            _ => rng.below(1 << max_bits),
        }
    }

    #[test]
    fn random_deadlines_fire_in_order_with_exact_next_deadline() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut w = TimerWheel::new();
        let mut model = Model::new();
        let mut now = 0u64;
        let mut id = 0u64;
        for _round in 0..400 {
            for _ in 0..rng.below(20) {
                let deadline = if rng.below(10) == 0 {
                    now - rng.below(now + 1)
                } else {
                    now + random_delay(&mut rng, 35)
                };
                w.insert(deadline, id);
                model.push((deadline, id));
                id += 1;
            }
            check_structure(&w);
            // Within one rotation and with no cancels, this must be exact.
            assert_eq!(w.next_deadline(), model_min(&model));
            now += match rng.below(4) {
                0 => 0,
                1 => rng.below(100),
                2 => rng.below(100_000),
                _ => random_delay(&mut rng, 34),
            };
            advance_and_compare(&mut w, &mut model, now);
            assert_eq!(w.next_deadline(), model_min(&model));
            if let Some(d) = w.next_deadline() {
                assert!(d > now);
            }
        }
        advance_and_compare(&mut w, &mut model, u64::MAX);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn random_with_cancels_and_far_deadlines() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut w = TimerWheel::new();
        let mut model = Model::new();
        let mut keys: Vec<(TimerKey, u64)> = Vec::new();
        let mut now = 0u64;
        let mut id = 0u64;
        for _round in 0..600 {
            for _ in 0..rng.below(16) {
                let deadline = match rng.below(12) {
                    0 => now - rng.below(now + 1),
                    // Beyond the top level's rotation.
                    1 => now.saturating_add(SPAN + rng.below(1 << 40)),
                    2 => u64::MAX - rng.below(3),
                    _ => now + random_delay(&mut rng, 37),
                };
                keys.push((w.insert(deadline, id), id));
                model.push((deadline, id));
                id += 1;
            }
            for _ in 0..rng.below(6) {
                if keys.is_empty() {
                    break;
                }
                let (key, kid) = keys.swap_remove(rng.below(keys.len() as u64) as usize);
                let pending = model.iter().position(|&(_, i)| i == kid);
                assert_eq!(w.cancel(key), pending.map(|_| kid));
                if let Some(p) = pending {
                    model.swap_remove(p);
                }
                assert_eq!(w.cancel(key), None);
            }
            assert_eq!(w.len(), model.len());
            check_structure(&w);
            // Cancels and clamped entries leave a lower bound.
            match (w.next_deadline(), model_min(&model)) {
                (Some(got), Some(min)) => assert!(got <= min),
                (got, min) => assert_eq!(got, min),
            }
            // Sometimes behave like the poll loop and wake at next_deadline.
            now = match (rng.below(3), w.next_deadline()) {
                (0, Some(d)) => d.max(now),
                _ => now.saturating_add(random_delay(&mut rng, 36)),
            };
            advance_and_compare(&mut w, &mut model, now);
            if let Some(d) = w.next_deadline() {
                assert!(d > now, "advancing to {now} left next_deadline {d}");
            }
        }
        advance_and_compare(&mut w, &mut model, u64::MAX);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_before_fire() {
        let mut w = TimerWheel::new();
        let a = w.insert(100, "a");
        let b = w.insert(100, "b");
        let c = w.insert(5_000, "c");
        assert_eq!(w.len(), 3);
        assert_eq!(w.cancel(a), Some("a"));
        assert_eq!(w.cancel(c), Some("c"));
        assert_eq!(w.len(), 1);
        let mut fired = Vec::new();
        w.advance(10_000, &mut fired);
        assert_eq!(fired, ["b"]);
        assert_eq!(w.cancel(b), None);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn cancel_of_fired_or_cancelled_key_is_none() {
        let mut w = TimerWheel::new();
        let k = w.insert(10, 1);
        let mut fired = Vec::new();
        w.advance(10, &mut fired);
        assert_eq!(fired, [1]);
        assert_eq!(w.cancel(k), None);
        let k = w.insert(20, 2);
        assert_eq!(w.cancel(k), Some(2));
        assert_eq!(w.cancel(k), None);
        assert!(w.is_empty());
    }

    #[test]
    fn stale_key_does_not_cancel_reused_slot() {
        let mut w = TimerWheel::new();
        let old = w.insert(50, "old");
        assert_eq!(w.cancel(old), Some("old"));
        let new = w.insert(50, "new");
        assert_eq!(old.index, new.index, "test needs the slab slot reused");
        assert_ne!(old, new);
        assert_eq!(w.cancel(old), None);
        assert_eq!(w.len(), 1);

        // Same after the old entry fired rather than being cancelled.
        let mut fired = Vec::new();
        w.advance(50, &mut fired);
        assert_eq!(fired, ["new"]);
        let newer = w.insert(60, "newer");
        assert_eq!(new.index, newer.index);
        assert_eq!(w.cancel(new), None);
        fired.clear();
        w.advance(60, &mut fired);
        assert_eq!(fired, ["newer"]);
    }

    /// Advances in `step`s up to `end`, checking the entry fires at the first
    /// step at or past its deadline and not before, and that next_deadline
    /// never lies beyond it.
    fn step_until_fired(w: &mut TimerWheel<u64>, deadline: u64, step: u64, id: u64) {
        let mut fired = Vec::new();
        let mut now = w.elapsed;
        loop {
            let nd = w.next_deadline().expect("entry pending");
            assert!(nd <= deadline, "next_deadline {nd} after {deadline}");
            now = now.saturating_add(step).min(deadline.max(now));
            w.advance(now, &mut fired);
            check_structure(w);
            if now >= deadline {
                assert_eq!(fired, [id], "did not fire at {now}");
                return;
            }
            assert!(fired.is_empty(), "fired early at {now}");
        }
    }

    #[test]
    fn far_future_deadlines() {
        const DAY: u64 = 86_400_000;
        let mut w = TimerWheel::new();
        w.insert(3 * DAY, 1);
        assert_eq!(w.next_deadline(), Some(3 * DAY));
        step_until_fired(&mut w, 3 * DAY, 3_600_000, 1);

        // Beyond the top level (2^36 ticks), walked a slot at a time.
        let far = w.elapsed + (1 << 40) + 12_345;
        w.insert(far, 2);
        step_until_fired(&mut w, far, 1 << 30, 2);

        // Beyond the top level, reached by one jump and by steps larger
        // than a rotation.
        let far = w.elapsed + (1 << 45) + 7;
        w.insert(far, 3);
        step_until_fired(&mut w, far, 3 << 36, 3);
        w.insert(u64::MAX, 4);
        let mut fired = Vec::new();
        w.advance(u64::MAX - 1, &mut fired);
        assert!(fired.is_empty());
        w.advance(u64::MAX, &mut fired);
        assert_eq!(fired, [4]);
        assert!(w.is_empty());
    }

    #[test]
    fn clamped_entry_does_not_hide_nearer_ones() {
        let mut w = TimerWheel::new();
        // Lands in top slot 1, but only after many rotations.
        w.insert((1 << 40) + (1 << 30), 1);
        // Lands in top slot 5 of this rotation.
        w.insert(5 << 30, 2);
        let nd = w.next_deadline().unwrap();
        assert!(nd <= 5 << 30);
        let mut fired = Vec::new();
        w.advance(nd, &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.next_deadline(), Some(5 << 30));
        w.advance(5 << 30, &mut fired);
        assert_eq!(fired, [2]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let mut w = TimerWheel::new();
        let mut fired = Vec::new();
        w.advance(1_000, &mut fired);
        w.insert(500, "past");
        w.insert(1_000, "now");
        w.insert(1_001, "later");
        assert_eq!(w.next_deadline(), Some(500));
        // Even an advance that does not move time fires what is due.
        w.advance(1_000, &mut fired);
        assert_eq!(fired, ["past", "now"]);
        fired.clear();
        // Time never moves backwards.
        w.advance(10, &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.next_deadline(), Some(1_001));
        w.insert(0, "zero");
        w.advance(0, &mut fired);
        assert_eq!(fired, ["zero"]);
    }

    #[test]
    fn next_deadline_is_exact() {
        let mut w = TimerWheel::new();
        w.insert(60_000, ());
        assert_eq!(w.next_deadline(), Some(60_000));
        let mut fired = Vec::new();
        w.advance(59_999, &mut fired);
        assert!(fired.is_empty());
        assert_eq!(w.next_deadline(), Some(60_000));
        w.advance(60_000, &mut fired);
        assert_eq!(fired.len(), 1);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn idle_connections_cause_no_early_wakeups() {
        // 1,000 connections arriving over ten seconds, each with a 60 s idle
        // timeout, driven the way the poll loop drives the wheel.
        let mut rng = XorShift(42);
        let mut arrivals: Vec<u64> = (0..1_000).map(|_| rng.below(10_000)).collect();
        arrivals.sort_unstable();
        let mut w = TimerWheel::new();
        let mut fired = Vec::new();
        let mut next_arrival = arrivals.iter().copied().peekable();
        let mut total = 0;
        let mut now = 0;
        loop {
            match (next_arrival.peek().copied(), w.next_deadline()) {
                (None, None) => break,
                (Some(a), nd) if nd.is_none_or(|d| a < d) => {
                    now = a;
                    w.advance(now, &mut fired);
                    total += fired.len();
                    fired.clear();
                    w.insert(now + 60_000, now);
                    next_arrival.next();
                }
                (_, Some(d)) => {
                    assert!(d >= now);
                    now = d;
                    w.advance(now, &mut fired);
                    assert!(!fired.is_empty(), "woke at {now} with nothing due");
                    assert!(fired.iter().all(|&t| t + 60_000 == now));
                    total += fired.len();
                    fired.clear();
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(total, 1_000);
    }

    #[test]
    fn huge_advance_over_empty_wheel_is_instant() {
        let mut w: TimerWheel<u32> = TimerWheel::default();
        let mut fired = Vec::new();
        for i in 1..=1_000u64 {
            w.advance(i * 1_000_000_000, &mut fired);
        }
        w.insert(u64::MAX / 2, 7);
        w.advance(u64::MAX / 2 - 1, &mut fired);
        assert!(fired.is_empty());
        w.advance(u64::MAX / 2, &mut fired);
        assert_eq!(fired, [7]);
    }

    #[test]
    fn len_bookkeeping() {
        let mut w = TimerWheel::with_capacity(8);
        assert!(w.is_empty());
        let keys: Vec<TimerKey> = (0..10).map(|i| w.insert(i * 100, i)).collect();
        assert_eq!(w.len(), 10);
        assert_eq!(w.cancel(keys[3]), Some(3));
        assert_eq!(w.len(), 9);
        let mut fired = Vec::new();
        w.advance(450, &mut fired);
        assert_eq!(fired, [0, 1, 2, 4]);
        assert_eq!(w.len(), 5);
        assert_eq!(w.cancel(keys[4]), None);
        assert_eq!(w.len(), 5);
        w.advance(u64::MAX, &mut fired);
        assert_eq!(w.len(), 0);
        assert!(w.is_empty());
    }
}
