//! A supervisor (`workers = N`) that a test starts with a config of its own. On drop it is
//! killed, and so is every process still naming that config: its workers.

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use super::procfs::{kill_every_process_naming, workers_of};
use super::{TempDir, spawn_with_config};

pub struct Supervisor {
    pub child: Child,
    pub config: PathBuf,
    pub dir: TempDir,
}

impl Supervisor {
    /// Started with `args` and `text` as its whole config.
    pub fn spawn(args: &[&str], text: &str) -> Supervisor {
        let dir = TempDir::new();
        let (child, config) = spawn_with_config(&dir, args, text);
        Supervisor { child, config, dir }
    }

    /// What it and its workers wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Its live worker processes, sorted.
    pub fn workers(&self) -> Vec<u32> {
        workers_of(self.child.id())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_every_process_naming(&self.config.display().to_string());
    }
}
