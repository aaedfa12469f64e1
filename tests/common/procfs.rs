//! What the tests read of a process from /proc (Linux): its state, parent, session, CPU
//! time, memory, sockets and wake-ups. One parser for every test file.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The fields of /proc/PID/stat the tests need.
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    pub session: u32,
    pub tty_nr: i64,
    /// User plus system CPU time, in clock ticks (1/100 s on Linux).
    pub cpu_ticks: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields start after the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        tty_nr: fields.get(4)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

/// The process exists and is not a zombie (PID 1 here need not reap orphans).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// The process's command line, arguments separated by spaces.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

pub fn all_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// The live children of `parent`, by the ppid in /proc/PID/stat.
pub fn children(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == parent) && alive(pid))
        .collect()
}

/// The live `--worker` children of `supervisor`, sorted.
pub fn workers_of(supervisor: u32) -> Vec<u32> {
    children(supervisor)
        .into_iter()
        .filter(|&pid| cmdline(pid).contains("--worker"))
        .collect()
}

/// The inodes of the process's open sockets (its /proc/PID/fd links `socket:[INODE]`).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let target = fs::read_link(entry.path()).ok()?;
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One TCP socket, as a row of /proc/net/tcp or /proc/net/tcp6 shows it.
pub struct TcpSocket {
    pub local_port: u16,
    /// The far end's address, for IPv4 sockets.
    pub remote_v4: Option<Ipv4Addr>,
    pub remote_port: u16,
    /// The kernel's TCP state: 0x01 established, 0x0A listening.
    pub state: u8,
    /// Bytes received but not yet read by the socket's owner.
    pub rx_queue: u64,
    pub inode: u64,
}

const TCP_LISTEN: u8 = 0x0A;

/// Every TCP socket of this network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .into_iter()
        .flat_map(|table| {
            let text = fs::read_to_string(table).unwrap_or_default();
            text.lines().skip(1).filter_map(tcp_row).collect::<Vec<_>>()
        })
        .collect()
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`,
/// addresses as `HEXADDR:HEXPORT`.
fn tcp_row(line: &str) -> Option<TcpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    Some(TcpSocket {
        local_port: port(fields.get(1)?)?,
        remote_port: port(fields.get(2)?)?,
        // IPv4 rows write the address as the hex of its four bytes as they lie in memory.
        remote_v4: fields
            .get(2)?
            .split_once(':')
            .filter(|(hex, _)| hex.len() == 8)
            .and_then(|(hex, _)| u32::from_str_radix(hex, 16).ok())
            .map(|n| Ipv4Addr::from(n.to_ne_bytes())),
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        rx_queue: u64::from_str_radix(fields.get(4)?.split_once(':')?.1, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// The inodes of the TCP sockets listening on `port`, any address.
pub fn listening_inodes(port: u16) -> HashSet<u64> {
    tcp_sockets()
        .into_iter()
        .filter(|socket| socket.state == TCP_LISTEN && socket.local_port == port)
        .map(|socket| socket.inode)
        .collect()
}

/// The process's TCP connections (its listening sockets left out).
pub fn connections(pid: u32) -> Vec<TcpSocket> {
    let own: HashSet<u64> = socket_inodes(pid).into_iter().collect();
    tcp_sockets()
        .into_iter()
        .filter(|socket| socket.state != TCP_LISTEN && own.contains(&socket.inode))
        .collect()
}

/// The process sleeps while its connection from `peer_port` holds bytes it has not read: it
/// has stopped reading that connection, rather than fallen behind.
pub fn stopped_reading(pid: u32, peer_port: u16) -> bool {
    let asleep = || stat(pid).is_some_and(|s| s.state == 'S');
    let unread = || {
        connections(pid)
            .iter()
            .any(|socket| socket.remote_port == peer_port && socket.rx_queue > 0)
    };
    asleep() && unread() && asleep()
}

/// How many descriptors the process has open.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

/// The process holds a socket listening on `port`.
pub fn listens(pid: u32, port: u16) -> bool {
    let listening = listening_inodes(port);
    socket_inodes(pid)
        .iter()
        .any(|inode| listening.contains(inode))
}

/// The value of a `Key:` line of /proc/PID/status, its words separated by one space.
pub fn status_line(pid: u32, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {key}: line in /proc/{pid}/status:\n{text}"))
}

/// `kill -s SIGNAL PID`, ignoring failure (for clean-up, where the process may be gone).
pub fn kill_quietly(signal: &str, pid: u32) {
    let _ = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\" 2>/dev/null",
            "sh",
            signal,
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills every live process whose command line holds `marker` (a test's own config path).
pub fn kill_every_process_naming(marker: &str) {
    let me = std::process::id();
    for pid in all_pids() {
        if pid != me && alive(pid) && cmdline(pid).contains(marker) {
            kill_quietly("KILL", pid);
        }
    }
}

/// The process's resident memory, in KiB (`VmRSS`), or `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    value.split_whitespace().next()?.parse().ok()
}

/// Context switches of every thread of `pid` so far: each wake-up of the process counts one.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(("voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches", count)) =
                line.split_once(':')
            {
                total += count.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// The number of threads of `pid`.
pub fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// The process's soft and hard limits on open files ("Max open files  SOFT  HARD  files"
/// in /proc/PID/limits); 0 for a limit that cannot be read, `u64::MAX` for "unlimited".
pub fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let column = |n: usize| {
        line.and_then(|l| l.split_whitespace().nth(n))
            .map_or(0, |v| {
                if v == "unlimited" {
                    u64::MAX
                } else {
                    v.parse().unwrap_or(0)
                }
            })
    };
    (column(3), column(4))
}
