//! The standard `process_*` figures of the serving processes, read from `/proc` when a
//! scrape asks: CPU time, memory, descriptors and start time, summed over the pids given
//! (the start time is the oldest's). A process that is gone, or whose files cannot be read,
//! is left out; nothing here blocks on anything but the kernel's own files.

use std::fs;

use nix::unistd::{SysconfVar, sysconf};

use crate::report::exposition::ProcessFigures;

/// The figures of `pids` summed, or `None` when none of them could be read.
pub fn read(pids: &[u32]) -> Option<ProcessFigures> {
    let clock = Clock::read()?;
    let mut sum: Option<ProcessFigures> = None;
    for &pid in pids {
        let Some(one) = read_one(pid, &clock) else {
            continue;
        };
        sum = Some(match sum {
            None => one,
            Some(sum) => add(sum, one),
        });
    }
    sum
}

/// What turns `/proc/PID/stat`'s clock ticks into seconds.
struct Clock {
    ticks_per_second: f64,
    boot_time_seconds: f64,
}

impl Clock {
    fn read() -> Option<Clock> {
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten()?;
        let boot = boot_time(&fs::read_to_string("/proc/stat").ok()?)?;
        Some(Clock {
            ticks_per_second: ticks as f64,
            boot_time_seconds: boot as f64,
        })
    }
}

/// Descriptors open in a process. Linux 6.2 and later give the count as the size of its
/// `fd` directory, at once; listing 10,000 descriptors would cost a scrape milliseconds.
fn open_fds(fd_dir: &str) -> Option<u64> {
    match fs::metadata(fd_dir).ok()?.len() {
        0 => Some(fs::read_dir(fd_dir).ok()?.count() as u64),
        count => Some(count),
    }
}

fn read_one(pid: u32, clock: &Clock) -> Option<ProcessFigures> {
    let dir = format!("/proc/{pid}");
    let stat = parse_stat(&fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    let limits = fs::read_to_string(format!("{dir}/limits")).ok()?;
    let open_fds = open_fds(&format!("{dir}/fd"))?;
    Some(ProcessFigures {
        cpu_seconds: (stat.utime + stat.stime) as f64 / clock.ticks_per_second,
        resident_memory_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        virtual_memory_bytes: status_kib(&status, "VmSize:").unwrap_or(0) * 1024,
        open_fds,
        max_fds: max_open_files(&limits).unwrap_or(0),
        start_time_seconds: clock.boot_time_seconds
            + stat.start_ticks as f64 / clock.ticks_per_second,
    })
}

fn add(a: ProcessFigures, b: ProcessFigures) -> ProcessFigures {
    ProcessFigures {
        cpu_seconds: a.cpu_seconds + b.cpu_seconds,
        resident_memory_bytes: a.resident_memory_bytes + b.resident_memory_bytes,
        virtual_memory_bytes: a.virtual_memory_bytes + b.virtual_memory_bytes,
        open_fds: a.open_fds + b.open_fds,
        max_fds: a.max_fds.saturating_add(b.max_fds),
        start_time_seconds: a.start_time_seconds.min(b.start_time_seconds),
    }
}

/// What `/proc/PID/stat` says of CPU time and start, in clock ticks.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// Fields 14, 15 and 22 of `/proc/PID/stat`, counted after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3, the state.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: the boot, in seconds since the Unix epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A `NAME:   1234 kB` line of `/proc/PID/status`, in KiB.
fn status_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(name))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The soft limit on open files in `/proc/PID/limits` (`unlimited` is `u64::MAX`).
pub fn max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let text = "20628 (a) b) (c) R 20620 20620 31337 0 -1 4194304 101 0 0 0 \
                    7 3 0 0 20 0 1 0 903972 2998272 393 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 7,
                stime: 3,
                start_ticks: 903_972,
            })
        );
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        let status = "Name:\tblackhole\nVmSize:\t    3060 kB\nVmRSS:\t    1592 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1592));
        assert_eq!(status_kib(status, "VmSize:"), Some(3060));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit Soft Limit Hard Limit Units\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(max_open_files(limits), Some(20_000));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            Some(u64::MAX)
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1796124403\n"),
            Some(1_796_124_403)
        );
    }

    #[test]
    fn this_process_is_read_and_a_vanished_one_left_out() {
        let me = std::process::id();
        let one = read(&[me]).expect("this process's /proc");
        assert!(one.resident_memory_bytes > 0 && one.virtual_memory_bytes > 0);
        assert!(one.open_fds >= 3, "{one:?}");
        assert!(one.max_fds >= one.open_fds, "{one:?}");
        assert!(one.start_time_seconds > 1_000_000_000.0, "{one:?}");
        // pid_max is at most 2^22: this pid cannot exist.
        let twice = read(&[me, 1 << 23, me]).expect("this process twice");
        assert_eq!(
            twice.max_fds,
            2 * one.max_fds,
            "summed, the vanished one left out"
        );
        assert!(twice.resident_memory_bytes >= one.resident_memory_bytes);
        assert_eq!(twice.start_time_seconds, one.start_time_seconds);
        assert_eq!(read(&[1 << 23]), None);
    }

    #[test]
    fn open_descriptors_are_counted_as_a_listing_counts_them() {
        let held: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
            .collect();
        let counted = open_fds("/proc/self/fd").expect("a count");
        // The listing holds one descriptor of its own, on the directory; other tests'
        // threads may open and close files meanwhile.
        let listed = fs::read_dir("/proc/self/fd").expect("list").count() as u64;
        assert!(counted >= held.len() as u64, "{counted} < {}", held.len());
        assert!(
            counted.abs_diff(listed) <= 8,
            "counted {counted}, listed {listed}"
        );
    }
}
