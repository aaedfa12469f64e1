//! A real Prometheus server for the metrics tests, and a bare HTTP GET.
//!
//! Prometheus runs on a free loopback port with its storage in a scratch folder, scrapes one
//! target every second, and is read back through its HTTP API (`/api/v1/query`), as a
//! dashboard would read it. It is killed and its storage removed on drop.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{TempDir, free_port, require_program, wait_for};

/// How long Prometheus may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(20);
/// How long one HTTP exchange may take.
const HTTP_LIMIT: Duration = Duration::from_secs(5);

/// `GET path` over HTTP/1.0 (so no chunked body), the connection closed after: the status
/// and the body, or `None` if the server could not be reached or answered nothing HTTP.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_LIMIT).ok()?;
    stream.set_read_timeout(Some(HTTP_LIMIT)).ok()?;
    stream.set_write_timeout(Some(HTTP_LIMIT)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `text` with every byte but the unreserved ones of RFC 3986 percent-encoded.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of an instant vector: its labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`/metrics`) every second, and waits until it is
    /// ready to answer queries.
    pub fn start(target: SocketAddr) -> Prometheus {
        let program = require_program("prometheus", "prometheus");
        let dir = TempDir::new();
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: blackhole\n    static_configs:\n\
                 \x20     - targets: ['{target}']\n"
            ),
        );
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("create its log");
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { child, addr, dir };
        let ready = wait_for(READY_LIMIT, || {
            let exited = prometheus.child.try_wait().expect("try_wait").is_some();
            assert!(!exited, "prometheus exited:\n{}", prometheus.log());
            http_get(addr, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        assert!(
            ready,
            "prometheus not ready in {READY_LIMIT:?}:\n{}",
            prometheus.log()
        );
        prometheus
    }

    /// What Prometheus has logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector `promql` evaluates to now. Panics on an error answer.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let path = format!("/api/v1/query?query={}", percent_encoded(promql));
        let (status, body) = http_get(self.addr, &path)
            .unwrap_or_else(|| panic!("no answer from prometheus to {promql}"));
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(answer["status"], "success", "{promql}: {body}");
        let result = answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: not a vector: {body}"));
        result
            .iter()
            .map(|sample| parse_sample(sample, &body))
            .collect()
    }

    /// The value of a query that gives at most one sample (`sum(...)`), `None` for none.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql);
        assert!(samples.len() <= 1, "{promql}: {samples:?}");
        samples.first().map(|(_, value)| *value)
    }
}

fn parse_sample(sample: &Value, body: &str) -> Sample {
    let labels = sample["metric"]
        .as_object()
        .unwrap_or_else(|| panic!("a sample without labels: {body}"))
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect();
    // The value is `[time, "text"]`: Prometheus writes sample values as strings.
    let value = sample["value"][1]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a sample without a value: {body}"));
    (labels, value)
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
