//! Soak: 1,000,000 messages over 1,000 connections against the release binary. Zero errors,
//! and the server's RSS at the end at most 1 MiB above its RSS after warm-up: nothing a
//! steady load does may grow memory.
//!
//!     cargo bench --bench soak                       # 1,000,000 messages
//!     BLACKHOLE_SOAK_MESSAGES=100000 cargo bench --bench soak
//!
//! Ten client threads each own 100 connections; every round a thread writes one whole
//! pipelined message (MAIL, RCPT, DATA, body, dot) to each of its connections, then reads the
//! four replies of each, so 1,000 messages are in flight at once.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 1000;
const THREADS: usize = 10;
const WARM_UP_FRACTION: u64 = 10;
const RSS_GROWTH_ALLOWED_KIB: u64 = 1024;

const MESSAGE: &[u8] = b"MAIL FROM:<soak@example.com>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n\
From: soak@example.com\r\nTo: sink@example.net\r\nSubject: soak\r\n\r\n\
The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.\r\n\
The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.\r\n.\r\n";

fn main() {
    let total: u64 = std::env::var("BLACKHOLE_SOAK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let binary = release_binary();
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("blackhole-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("blackhole.toml");
    std::fs::write(
        &config,
        format!("listen = [\"127.0.0.1:{port}\"]\ntimeout = 180\nmailname = \"soak.test\"\n"),
    )
    .expect("write config");
    let mut server = Command::new(&binary)
        .arg("-q")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .spawn()
        .expect("start blackhole");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    let pid = server.id();

    let per_thread = total / THREADS as u64;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(Barrier::new(THREADS + 1));
    let warm_up_rounds = (per_thread / (CONNECTIONS / THREADS) as u64 / WARM_UP_FRACTION).max(1);
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (done, errors, warmed) = (done.clone(), errors.clone(), warmed.clone());
            thread::spawn(move || client(addr, per_thread, warm_up_rounds, &done, &errors, &warmed))
        })
        .collect();
    warmed.wait();
    thread::sleep(Duration::from_millis(200));
    let rss_warm = rss_kib(pid);
    let warm_at = done.load(Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("client thread");
    }
    let elapsed = started.elapsed();
    thread::sleep(Duration::from_millis(200));
    let rss_end = rss_kib(pid);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let sent = done.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let growth = rss_end.saturating_sub(rss_warm);
    println!(
        "soak: {sent} messages over {CONNECTIONS} connections in {:.1} s ({:.0} msgs/s)",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("errors (replies other than 250/354, or I/O): {errors}");
    println!(
        "RSS after warm-up ({warm_at} messages): {rss_warm} KiB; at the end: {rss_end} KiB; growth {growth} KiB (allowed {RSS_GROWTH_ALLOWED_KIB})"
    );
    let pass =
        errors == 0 && sent == per_thread * THREADS as u64 && growth <= RSS_GROWTH_ALLOWED_KIB;
    println!("soak: {}", if pass { "PASS" } else { "FAIL" });
    if !pass {
        std::process::exit(1);
    }
}

/// One client thread: its connections, `messages` messages spread over them.
fn client(
    addr: SocketAddr,
    messages: u64,
    warm_up_rounds: u64,
    done: &AtomicU64,
    errors: &AtomicU64,
    warmed: &Barrier,
) {
    let count = CONNECTIONS / THREADS;
    let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = (0..count)
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("220 "), "greeting {line:?}");
            (stream, reader)
        })
        .collect();
    let mut left = messages;
    let mut round = 0;
    while left > 0 {
        let batch = left.min(count as u64) as usize;
        for (stream, _) in &mut conns[..batch] {
            if stream.write_all(MESSAGE).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (_, reader) in &mut conns[..batch] {
            for expected in ["250 ", "250 ", "354 ", "250 "] {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || !line.starts_with(expected) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        left -= batch as u64;
        done.fetch_add(batch as u64, Ordering::Relaxed);
        round += 1;
        if round == warm_up_rounds {
            warmed.wait();
        }
    }
    if round < warm_up_rounds {
        warmed.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn release_binary() -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--bin", "blackhole"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/blackhole")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "blackhole did not listen on {addr}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
