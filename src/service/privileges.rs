//! Dropping root: the `user` and `group` options, taken after the listeners are bound so
//! ports below 1024 can be bound as root and mail is then handled without it.

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};

/// Who to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<String>,
    pub uid: Option<Uid>,
    pub gid: Gid,
    pub group: String,
}

/// Why the identity could not be resolved or taken, and the exit code that says so.
#[derive(Debug)]
pub struct PrivilegeError {
    pub message: String,
    pub exit_code: u8,
}

/// Looks the names up. `group` defaults to the user's primary group. Unknown names are a
/// configuration error (64). `file` names the config file in messages.
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
    file: &str,
) -> Result<Option<Identity>, PrivilegeError> {
    let usage = |message: String| PrivilegeError {
        message,
        exit_code: 64,
    };
    let found_user = match user {
        None => None,
        Some(name) => Some(
            User::from_name(name)
                .map_err(|e| usage(format!("{file}: option `user`: cannot look up {name:?}: {e}")))?
                .ok_or_else(|| {
                    usage(format!(
                        "{file}: option `user`: there is no user {name:?} on this system: create it \
                         (useradd --system blackhole) or name an existing one"
                    ))
                })?,
        ),
    };
    let (gid, group_name) = match (group, &found_user) {
        (Some(name), _) => {
            let found = Group::from_name(name)
                .map_err(|e| usage(format!("{file}: option `group`: cannot look up {name:?}: {e}")))?
                .ok_or_else(|| {
                    usage(format!(
                        "{file}: option `group`: there is no group {name:?} on this system: create it \
                         (groupadd --system {name}) or name an existing one"
                    ))
                })?;
            (found.gid, found.name)
        }
        (None, Some(user)) => (user.gid, user.gid.to_string()),
        (None, None) => return Ok(None),
    };
    Ok(Some(Identity {
        user: found_user.as_ref().map(|u| u.name.clone()),
        uid: found_user.map(|u| u.uid),
        gid,
        group: group_name,
    }))
}

/// Becomes `identity`: supplementary groups dropped, then the group, then the user (in that
/// order: once the user is not root, the group can no longer be changed).
pub fn become_identity(identity: &Identity) -> Result<(), PrivilegeError> {
    let target = match &identity.user {
        Some(user) => format!("user {user} and group {}", identity.group),
        None => format!("group {}", identity.group),
    };
    let denied = |step: &str, e: Errno| PrivilegeError {
        message: format!(
            "options `user`/`group`: cannot switch to {target} ({step} failed: {e}); only root \
             can switch: start blackhole as root, or remove `user` and `group` and start it as \
             the user it should run as"
        ),
        exit_code: if e == Errno::EPERM { 77 } else { 70 },
    };
    if identity.uid.is_none_or(|uid| uid != Uid::effective()) || identity.gid != Gid::effective() {
        setgroups(&[identity.gid]).map_err(|e| denied("setgroups", e))?;
    }
    setgid(identity.gid).map_err(|e| denied("setgid", e))?;
    if let Some(uid) = identity.uid {
        setuid(uid).map_err(|e| denied("setuid", e))?;
    }
    Ok(())
}
