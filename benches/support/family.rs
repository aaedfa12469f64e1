//! A server and its worker processes read as one from /proc, and the descriptor limit they
//! inherit from the bench.

use std::fs;

use super::procfs;

/// `pid` and its children (a supervisor's workers, or the event log's writer).
pub fn processes(pid: u32) -> Vec<u32> {
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok()),
        )
        .collect()
}

/// VmRSS of `pid` and of its children, summed, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    processes(pid).into_iter().map(procfs::rss_kib).sum()
}

/// CPU seconds (utime+stime) of `pid` and of its children, summed.
pub fn cpu_seconds(pid: u32) -> f64 {
    processes(pid).into_iter().map(procfs::cpu_seconds).sum()
}

/// Descriptors `pid` has open.
pub fn open_descriptors(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Raises this process's descriptor limits, soft and hard, to `want` where the hard limit
/// is lower and the process may raise it (root, or CAP_SYS_RESOURCE); else the soft limit
/// to the hard one. Returns the (soft, hard) limits now in force, and the hard limit found.
pub fn raise_nofile_limit_to(want: u64) -> ((u64, u64), u64) {
    let mut found = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `found` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut found) } != 0 {
        return ((0, 0), 0);
    }
    if found.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return ((want, want), found.rlim_max);
        }
    }
    (procfs::raise_nofile_limit(), found.rlim_max)
}
