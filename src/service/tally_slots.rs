//! The memory every serving process keeps its [`Tally`] in: one slot per worker in a
//! `memfd` mapped shared, so that whichever worker answers a scrape reads every worker's
//! counters. The supervisor creates it before starting workers and keeps it for its lifetime;
//! a worker inherits the descriptor (named in its environment, [`TallySlots::handle`]) and
//! writes only its own slot; a restarted worker claims the dead one's slot. Without workers
//! there is one slot and the same code.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::report::tally::{Tally, Totals};

/// Slots one memory holds at most: `workers` is at most 256, with room to spare.
pub const MAX_SLOTS: usize = 1024;

/// Set in a worker's environment: [`TallySlots::handle`] of the supervisor's slots.
pub const TALLY_SLOTS: &str = "BLACKHOLE_TALLY_SLOTS";

/// `count` tallies in shared memory, mapped for as long as this value lives.
#[derive(Debug)]
pub struct TallySlots {
    /// The memory's descriptor, to hand on to workers; closed on drop.
    file: File,
    slots: NonNull<Tally>,
    count: usize,
}

impl TallySlots {
    /// New memory of `count` empty slots (1 to [`MAX_SLOTS`]), not inherited by children
    /// until [`TallySlots::share_with_children`].
    pub fn create(count: usize) -> io::Result<TallySlots> {
        let len = byte_len(count)?;
        let file = File::from(memfd_create("blackhole-tally", MFdFlags::MFD_CLOEXEC)?);
        // A fresh memfd grown with ftruncate reads as zeros: every slot an empty tally.
        file.set_len(len as u64)?;
        TallySlots::map(file, count)
    }

    /// The slots a supervisor created, from the [`TallySlots::handle`] it passed down with
    /// the descriptor. The memory is reopened through `/proc/self/fd`, so that this value
    /// owns a descriptor of its own; the inherited one is left as it is.
    pub fn inherit(handle: &str) -> io::Result<TallySlots> {
        let (fd, count) = parse_handle(handle)
            .ok_or_else(|| invalid(format!("{TALLY_SLOTS}={handle:?} is not FD:COUNT")))?;
        let len = byte_len(count)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))?;
        let size = file.metadata()?.len();
        if size != len as u64 {
            return Err(invalid(format!(
                "descriptor {fd} holds {size} bytes, not {count} tally slots ({len} bytes)"
            )));
        }
        TallySlots::map(file, count)
    }

    fn map(file: File, count: usize) -> io::Result<TallySlots> {
        let len = byte_len(count)?;
        // SAFETY: a fresh mapping (no address asked for) of `len` bytes of a file exactly
        // `len` bytes long (set or checked by both callers), so that no access through it
        // can fault; the kernel reports failure as MAP_FAILED, checked below.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = NonNull::new(address.cast::<Tally>())
            .ok_or_else(|| invalid("mmap returned no address".to_owned()))?;
        Ok(TallySlots { file, slots, count })
    }

    /// What a worker is told to find the slots by: `FD:COUNT`.
    pub fn handle(&self) -> String {
        format!("{}:{}", self.file.as_raw_fd(), self.count)
    }

    /// The memory's descriptor, to keep open across a worker's exec.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Lets processes started from now on inherit the descriptor (clears close-on-exec).
    pub fn share_with_children(&self) -> io::Result<()> {
        fcntl(&self.file, FcntlArg::F_SETFD(FdFlag::empty()))?;
        Ok(())
    }

    /// Every slot, in order.
    pub fn all(&self) -> &[Tally] {
        // SAFETY: `slots` is the start of a live mapping (unmapped only on drop, which this
        // borrow outlives not) of `count` tallies, page-aligned so aligned for `Tally`.
        // Every byte pattern is a valid `Tally`: it is `repr(C)` and made only of atomic
        // integers, so other processes writing the same memory concurrently is no data
        // race, only atomics seen from two sides.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.count) }
    }

    /// Slot `index`, if there is one.
    pub fn slot(&self, index: usize) -> Option<&Tally> {
        self.all().get(index)
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Every slot's figures, summed.
    pub fn totals(&self) -> Totals {
        Totals::of(self.all())
    }

    /// The pids of the processes that claimed a slot (0s left out).
    pub fn pids(&self) -> Vec<u32> {
        self.all()
            .iter()
            .map(Tally::pid)
            .filter(|&pid| pid != 0)
            .collect()
    }
}

impl Drop for TallySlots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing borrows it any more (every
        // `&Tally` borrows `self`).
        unsafe {
            libc::munmap(self.slots.as_ptr().cast(), byte_len_unchecked(self.count));
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn byte_len_unchecked(count: usize) -> usize {
    count * size_of::<Tally>()
}

/// The bytes `count` slots take, if `count` is 1 to [`MAX_SLOTS`].
fn byte_len(count: usize) -> io::Result<usize> {
    if (1..=MAX_SLOTS).contains(&count) {
        Ok(byte_len_unchecked(count))
    } else {
        Err(invalid(format!("{count} tally slots: 1 to {MAX_SLOTS}")))
    }
}

/// `FD:COUNT`, both decimal.
fn parse_handle(handle: &str) -> Option<(i32, usize)> {
    let (fd, count) = handle.split_once(':')?;
    Some((fd.parse().ok().filter(|&fd| fd >= 0)?, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::command::Verb;

    #[test]
    fn new_slots_are_empty_tallies() {
        let slots = TallySlots::create(3).expect("a memfd");
        assert_eq!(slots.all().len(), 3);
        assert_eq!(slots.totals(), Totals::default());
        assert!(slots.pids().is_empty());
        assert!(slots.slot(2).is_some() && slots.slot(3).is_none());
    }

    #[test]
    fn writes_through_one_mapping_are_read_through_another() {
        let supervisor = TallySlots::create(2).expect("a memfd");
        let worker = TallySlots::inherit(&supervisor.handle()).expect("the same memory");
        let slot = worker.slot(1).expect("slot 1");
        slot.claim(4242);
        slot.connection_opened(0, true);
        slot.command(Verb::Ehlo);
        slot.message(0, 250, 10);
        slot.rule_fired("slow");
        let seen = supervisor.totals();
        assert_eq!(seen.connections_opened(), 1);
        assert_eq!(seen.connections_open, 1);
        assert_eq!(seen.messages_by_code().get(&250), Some(&1));
        assert_eq!(seen.rules.values().sum::<u64>(), 1);
        assert_eq!(supervisor.pids(), [4242]);
        supervisor.slot(0).expect("slot 0").recipient();
        assert_eq!(worker.totals().recipients, 1, "and the other way");
    }

    /// Run as a child by the test below: writes into the slots it inherited, then exits.
    #[test]
    fn a_child_writes_its_slot() {
        let Ok(handle) = std::env::var(TALLY_SLOTS) else {
            return;
        };
        let slots = TallySlots::inherit(&handle).expect("the inherited memory");
        let slot = slots.slot(1).expect("slot 1");
        slot.claim(std::process::id());
        slot.message(3, 451, 2048);
    }

    #[test]
    fn a_process_started_with_the_handle_writes_what_its_parent_reads() {
        let slots = TallySlots::create(2).expect("a memfd");
        slots.share_with_children().expect("fcntl");
        let status = std::process::Command::new(std::env::current_exe().expect("this test"))
            .args([
                "--exact",
                "service::tally_slots::tests::a_child_writes_its_slot",
            ])
            .env(TALLY_SLOTS, slots.handle())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("the child ran");
        assert!(status.success());
        let totals = slots.totals();
        assert_eq!(totals.messages_by_code().get(&451), Some(&1));
        assert_eq!(totals.message_bytes, 2048);
        assert_eq!(slots.pids().len(), 1);
        assert_ne!(slots.pids()[0], std::process::id());
    }

    #[test]
    fn a_handle_must_name_memory_of_the_right_size() {
        let slots = TallySlots::create(2).expect("a memfd");
        let fd = slots.handle().split(':').next().map(str::to_owned);
        let fd = fd.expect("FD:COUNT");
        for bad in [
            format!("{fd}:3"),
            format!("{fd}:0"),
            fd.clone(),
            "x:1".to_owned(),
        ] {
            assert!(TallySlots::inherit(&bad).is_err(), "{bad}");
        }
        assert!(TallySlots::inherit(&format!("{fd}:2")).is_ok());
    }

    #[test]
    fn counts_are_bounded() {
        assert!(TallySlots::create(0).is_err());
        assert!(TallySlots::create(MAX_SLOTS + 1).is_err());
        assert_eq!(parse_handle("7:4"), Some((7, 4)));
        assert_eq!(parse_handle("-1:4"), None);
    }

    #[test]
    fn sharing_clears_close_on_exec() {
        let slots = TallySlots::create(1).expect("a memfd");
        let flags = |s: &TallySlots| fcntl(&s.file, FcntlArg::F_GETFD).expect("flags");
        assert_ne!(flags(&slots) & libc::FD_CLOEXEC, 0);
        slots.share_with_children().expect("fcntl");
        assert_eq!(flags(&slots) & libc::FD_CLOEXEC, 0);
    }
}
