//! The pidfile: written whole once the listeners are bound, removed on a clean exit, and a
//! guard against starting twice.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes this process's id to `path` whole: to a temporary file beside it, then renamed
/// over it, so a reader (a script waiting for the port, then reading the pidfile) never sees
/// it empty or half-written.
pub fn write(path: &Path, file: &str) -> Result<(), String> {
    let cannot = |e: std::io::Error| {
        format!(
            "{file}: option `pidfile`: cannot write {}: {e}; choose a path in a directory this \
             user can write",
            path.display()
        )
    };
    let temporary = temporary_path(path).ok_or_else(|| {
        format!(
            "{file}: option `pidfile`: {} is not a file name; give the path of a file, e.g. \
             /run/blackhole/blackhole.pid",
            path.display()
        )
    })?;
    let written = write_new(&temporary, &format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(cannot)
}

/// Where the pidfile is written before it is renamed into place: the same folder, so the
/// rename is atomic; a name of this process's own, so that two starts at the same moment
/// never remove or rename each other's file.
fn temporary_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    Some(path.with_file_name(format!(".{name}.{}.tmp", std::process::id())))
}

/// Creates `path` afresh with `text`. A file already there (left by a crash) is removed
/// first rather than opened: opening would follow a symbolic link planted in a shared
/// folder such as /tmp and write through it.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    let mut out = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create()?
        }
        other => other?,
    };
    out.write_all(text.as_bytes())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// An empty folder of its own for one test.
    fn folder(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("blackhole-pidfile-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ours() -> String {
        format!("{}\n", std::process::id())
    }

    #[test]
    fn the_temporary_file_is_another_name_in_the_same_folder() {
        let path = Path::new("/run/blackhole/blackhole.pid");
        let temporary = temporary_path(path).unwrap();
        assert_ne!(temporary, path);
        assert_eq!(temporary.parent(), path.parent());
        // Its own per process: a second start at the same moment writes elsewhere.
        let name = temporary
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.contains(&std::process::id().to_string()), "{name}");
        assert_eq!(temporary_path(Path::new("/")), None);
    }

    #[test]
    fn a_stale_pidfile_is_replaced_whole_not_rewritten() {
        let dir = folder("stale");
        let path = dir.join("blackhole.pid");
        std::fs::write(&path, "2147483647\nmore than a pid line\n").unwrap();
        let stale = std::fs::metadata(&path).unwrap().ino();
        write(&path, "test.toml").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ours());
        // A new file renamed into place: a reader holding the old one never saw it
        // truncated, and nobody sees the new one before its text is in.
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), stale);
        assert!(!temporary_path(&path).unwrap().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_leftover_temporary_file_does_not_stop_the_next_start() {
        let dir = folder("leftover");
        let path = dir.join("blackhole.pid");
        let temporary = temporary_path(&path).unwrap();
        std::fs::write(&temporary, "12").unwrap();
        write(&path, "test.toml").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ours());
        assert!(!temporary.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn links_in_the_way_are_replaced_not_written_through() {
        let dir = folder("links");
        let path = dir.join("blackhole.pid");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, temporary_path(&path).unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, "test.toml").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ours());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_that_is_not_there_is_told() {
        let dir = folder("missing");
        let path = dir.join("no-such-folder").join("blackhole.pid");
        let err = write(&path, "test.toml").unwrap_err();
        assert!(
            err.starts_with("test.toml: option `pidfile`: cannot write"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_start_is_refused_while_the_recorded_process_lives() {
        let dir = folder("running");
        let path = dir.join("blackhole.pid");
        // The test runner's parent is alive and is not this process.
        std::fs::write(&path, format!("{}\n", std::os::unix::process::parent_id())).unwrap();
        let err = check_not_running(&path, "test.toml").unwrap_err();
        assert!(err.contains("already running"), "{err}");
        // Above any pid the kernel hands out: gone.
        std::fs::write(&path, "2147483647\n").unwrap();
        assert_eq!(check_not_running(&path, "test.toml"), Ok(()));
        // Its own pidfile (written just now) does not stop a process.
        write(&path, "test.toml").unwrap();
        assert_eq!(check_not_running(&path, "test.toml"), Ok(()));
        remove(&path);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
