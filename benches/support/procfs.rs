//! What /proc says about a process (CPU time, resident memory, context switches) and about
//! the machine (busy CPU, accept-queue overflows), plus this process's descriptor limit.
//!
//! Readings are taken from outside, the way `/work/shared/bench/benchlib.py` takes them, so
//! the figures mean the same for blackhole and for smtp-sink. A process that is gone reads as
//! zero rather than failing: the caller knows whether it stopped it. Linux only.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// Kernel clock ticks per second, the unit of utime and stime. Asked of `getconf` once: it
/// is fixed for the life of the kernel, and almost always 100.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// The numeric fields of /proc/PID/stat after the command name (which may itself hold spaces
/// and parentheses) and the state letter: index 0 is field 4 (ppid).
fn stat_fields(pid: &str) -> Vec<u64> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    let Some(end_of_name) = text.rfind(')') else {
        return Vec::new();
    };
    text[end_of_name + 1..]
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect()
}

fn field(fields: &[u64], number: usize) -> u64 {
    // `number` as proc(5) counts: 1 is the pid, 3 the state, the first kept here.
    fields.get(number - 4).copied().unwrap_or(0)
}

/// User plus system CPU seconds of `pid`, all its threads together (stat fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(&pid.to_string());
    (field(&fields, 14) + field(&fields, 15)) as f64 / clock_ticks() as f64
}

/// CPU seconds of this process (every thread of the load generator) and, separately, of its
/// children that have been waited for (stat fields 16 and 17): the delta of the second
/// across one `smtp-source` run is that run's own CPU.
pub fn own_cpu_seconds() -> (f64, f64) {
    let fields = stat_fields("self");
    let ticks = clock_ticks() as f64;
    (
        (field(&fields, 14) + field(&fields, 15)) as f64 / ticks,
        (field(&fields, 16) + field(&fields, 17)) as f64 / ticks,
    )
}

/// One `Key: value` line of /proc/PID/status (or of a task's), as its first number.
fn status_value(path: &str, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    status_value(&format!("/proc/{pid}/status"), "VmRSS")
}

/// Voluntary plus non-voluntary context switches of every thread of `pid`. Each one is the
/// process going to sleep or being taken off the CPU, so with nothing to do the count must
/// stand still: a rising count while idle means something wakes the process.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| {
            let status = task.path().join("status");
            let status = status.to_string_lossy();
            status_value(&status, "voluntary_ctxt_switches")
                + status_value(&status, "nonvoluntary_ctxt_switches")
        })
        .sum()
}

/// Machine-wide busy and total CPU seconds (all CPUs) from /proc/stat: the busy time nobody
/// in the run accounts for is other load on the machine, which skews what we measure.
pub fn machine_cpu_seconds() -> (f64, f64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let per_second = clock_ticks() as f64;
    (
        (total - idle) as f64 / per_second,
        total as f64 / per_second,
    )
}

/// TcpExt ListenOverflows of the network namespace: connections dropped because some
/// listener's accept queue was full. A server that accepts too slowly shows up here.
pub fn listen_overflows() -> u64 {
    let text = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        return names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "ListenOverflows")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
    }
    0
}

/// Whether this process runs as root (smtp-sink then needs `-u nobody`).
pub fn running_as_root() -> bool {
    status_value("/proc/self/status", "Uid") == 0
}

#[repr(C)]
struct Rlimit {
    soft: u64,
    hard: u64,
}

// Std has no way to change a resource limit; these two libc calls are all it takes, and
// libc is linked anyway. RLIMIT_NOFILE is 7 on every Linux architecture but alpha, mips,
// sparc and parisc, where this bench does not run.
const RLIMIT_NOFILE: i32 = 7;
unsafe extern "C" {
    fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
}

/// Raises this process's soft descriptor limit to its hard limit, so the load generator can
/// hold 10,000 connections and the servers it starts (which inherit the limit) can accept
/// them. Returns the (soft, hard) limits now in force.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut limit = Rlimit { soft: 0, hard: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
        return (0, 0);
    }
    if limit.soft < limit.hard {
        let raised = Rlimit {
            soft: limit.hard,
            hard: limit.hard,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            limit.soft = limit.hard;
        }
    }
    (limit.soft, limit.hard)
}
