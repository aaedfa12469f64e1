//! The pidfile: written once the listeners are bound, removed on a clean exit, and a guard
//! against starting twice.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Refuses to start when `path` names a process that is alive (a second blackhole on the
/// same pidfile). A stale file, from a process that is gone, is fine.
pub fn check_not_running(path: &Path, file: &str) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|&p| p > 0) else {
        return Ok(());
    };
    if pid == std::process::id() as i32 {
        return Ok(());
    }
    match kill(Pid::from_raw(pid), None) {
        // EPERM: alive, under another user.
        Ok(()) | Err(Errno::EPERM) => Err(format!(
            "{file}: option `pidfile`: {} says blackhole is already running as process {pid}: \
             stop it first (kill {pid}), or remove the file if that process is not blackhole",
            path.display()
        )),
        Err(_) => Ok(()),
    }
}

/// Writes this process's id to `path`.
pub fn write(path: &Path, file: &str) -> Result<(), String> {
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
        format!(
            "{file}: option `pidfile`: cannot write {}: {e}; choose a path in a directory this \
             user can write",
            path.display()
        )
    })
}

/// Gives the pidfile to the user the process is about to become, so that user can remove it
/// on exit (in a sticky directory such as /tmp only the owner may).
pub fn hand_over(path: &Path, identity: &super::privileges::Identity) {
    let _ = nix::unistd::chown(path, identity.uid, Some(identity.gid));
}

/// Removes `path` if it still names this process.
pub fn remove(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours && let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot remove the pidfile {}: {e}", path.display());
    }
}
