//! The greylist's memory: bytes per remembered triplet at 1,000,000 entries (the target is at
//! most 200), and that past `max_entries` it stays flat. Measured in this process, on the
//! core's own `Greylist`, from the growth of its resident memory.
//!
//!     cargo bench --bench greylist

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use blackhole::smtp::greylist::{Greylist, GreylistSettings, Verdict};

const ENTRIES: u32 = 1_000_000;
const TARGET_BYTES_PER_ENTRY: u64 = 200;

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Checks `count` new triplets, from a spread of clients and recipients, `from` on.
fn fill(greylist: &mut Greylist, settings: &GreylistSettings, from: u32, count: u32) {
    for n in from..from + count {
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n % 65_536)));
        let recipient = format!("user{n}@example.net");
        let sender = greylist.sender_key(b"sender@example.com").get();
        let verdict = greylist.check(settings, client, sender, recipient.as_bytes(), 0);
        assert_eq!(verdict, Verdict::Defer, "a new triplet is deferred");
    }
}

fn main() {
    let settings = GreylistSettings {
        max_entries: ENTRIES as usize,
        ..GreylistSettings::default()
    };
    let mut greylist = Greylist::default();
    let before = rss_kib();
    let started = Instant::now();
    fill(&mut greylist, &settings, 0, ENTRIES);
    let elapsed = started.elapsed();
    let full = rss_kib();
    let per_entry = (full - before) * 1024 / u64::from(ENTRIES);
    // Twice as many again: the oldest make room, memory stays where it was.
    fill(&mut greylist, &settings, ENTRIES, 2 * ENTRIES);
    let after = rss_kib();

    println!("== Greylist memory");
    println!("entries          {:>12}", greylist.len());
    println!("RSS growth       {:>9} KiB", full - before);
    println!("per entry        {per_entry:>10} B   (target: at most {TARGET_BYTES_PER_ENTRY} B)");
    println!(
        "checks/s         {:>12.0}",
        f64::from(ENTRIES) / elapsed.as_secs_f64()
    );
    println!(
        "past max_entries {:>9} KiB after {} more triplets ({} evicted)",
        after.saturating_sub(full),
        2 * ENTRIES,
        greylist.evicted()
    );
    let flat = after <= full + full / 20;
    let result = if per_entry <= TARGET_BYTES_PER_ENTRY && flat {
        "PASS"
    } else {
        "FAIL"
    };
    println!("{result}");
    if result == "FAIL" {
        std::process::exit(1);
    }
}
