//! Who can reach r1d and what it shares with other users of the machine, decided at start:
//! the listen address (loopback unless the user says otherwise), the token file (readable by the
//! owner only), the state folder (never changed if it exists; refused if shared), and the
//! descriptor limit (raised so that clients cannot starve checkpoint writes of descriptors).

use std::fs::DirBuilder;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why r1d refuses to start with the options it was given.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    /// The listen address is reachable from other machines and `--allow-remote` was not given.
    #[error(
        "--listen {0}: this address is reachable from other machines, and r1d speaks plain HTTP \
         (the bearer token would cross the network in the clear); listen on 127.0.0.1 or ::1, \
         or pass --allow-remote and put a TLS reverse proxy in front"
    )]
    Remote(SocketAddr),
    /// The token file can be read (or written) by users other than its owner.
    #[error(
        "token file {path}: readable or writable by others (mode {mode:03o}): anyone who can read \
         it controls r1d; run `chmod 600 {path}`"
    )]
    TokenShared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The state folder can be written by other users.
    #[error(
        "state directory {path}: writable by group or others (mode {mode:03o}); r1d keeps its \
         token and runs there and does not change the mode of an existing directory: give it a \
         directory of its own (a missing one is created 0700), or `chmod go-w {path}` if it is \
         yours alone"
    )]
    StateShared {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The state folder belongs to another user.
    #[error(
        "state directory {path}: owned by uid {owner}, not by r1d's user (uid {uid}); give r1d \
         a directory of its own (a missing one is created 0700)"
    )]
    StateNotOwned {
        /// The folder.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective user.
        uid: u32,
    },
    /// The state path exists and is not a directory.
    #[error("state directory {0}: exists and is not a directory")]
    StateNotDir(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExposureError + '_ {
    move |source| ExposureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether r1d may listen on `addr`: a loopback address always; any other only with
/// `allow_remote`, and then the returned warning is for the log (TLS belongs to a proxy).
pub fn listen_policy(
    addr: SocketAddr,
    allow_remote: bool,
) -> Result<Option<String>, ExposureError> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    if !allow_remote {
        return Err(ExposureError::Remote(addr));
    }
    Ok(Some(format!(
        "listening on {addr}, reachable from other machines (--allow-remote): r1d serves plain \
         HTTP; terminate TLS in a reverse proxy and keep this port closed to everything else"
    )))
}

/// Checks an existing token file: readable and writable by its owner only.
pub fn check_token_file(path: &Path) -> Result<(), ExposureError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ExposureError::TokenShared {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The state folder (systemd may pass several, colon-separated: the first is r1d's), made
/// ready: a missing one is created with mode 0700; an existing one is used as it is if r1d's
/// user owns it and nobody else can write to it, and refused otherwise — never chmod-ed, since
/// `--state-dir /tmp` would break /tmp for everyone. Returns its canonical path.
pub fn prepare_state_dir(given: &Path) -> Result<PathBuf, ExposureError> {
    let dir = PathBuf::from(
        given
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default(),
    );
    match std::fs::metadata(&dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(ExposureError::StateNotDir(dir));
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            if meta.uid() != uid {
                return Err(ExposureError::StateNotOwned {
                    path: dir,
                    owner: meta.uid(),
                    uid,
                });
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(ExposureError::StateShared { path: dir, mode });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
            // The umask may have taken bits away, never added any: 0700 at most.
        }
        Err(e) => return Err(io(&dir)(e)),
    }
    dir.canonicalize().map_err(io(&dir))
}

/// Raises the soft limit on open descriptors to the hard limit (capped at 1 Mi when the hard
/// limit is unlimited); returns the soft limit in force afterwards. The default soft limit
/// (often 1024) lets a few hundred idle clients take every descriptor a checkpoint write needs.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if wanted > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
        tracing::warn!(
            "could not raise the descriptor limit from {} to {wanted}: {}",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
    Ok(limit.rlim_cur)
}

/// Connections the server holds open at once, all workers together: at most `wanted`, and at
/// most a quarter of the descriptor limit, so that model, data and checkpoint files, sled and the
/// code sandbox always have descriptors left. At least 8.
pub fn connection_cap(descriptors: u64, wanted: usize) -> usize {
    let quarter = usize::try_from(descriptors / 4).unwrap_or(usize::MAX);
    wanted.min(quarter).max(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens_without_allow_remote() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let local6: SocketAddr = "[::1]:7878".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        assert!(listen_policy(local, false).unwrap().is_none());
        assert!(listen_policy(local6, false).unwrap().is_none());
        let err = listen_policy(any, false).unwrap_err().to_string();
        assert!(
            err.contains("--allow-remote") && err.contains("0.0.0.0:7878"),
            "{err}"
        );
        let warning = listen_policy(any, true).unwrap().unwrap();
        assert!(
            warning.contains("TLS") && warning.contains("reverse proxy"),
            "{warning}"
        );
    }

    #[test]
    fn a_token_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_token_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("token"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_token_file(&path).unwrap();
    }

    #[test]
    fn a_shared_state_dir_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare_state_dir(&shared).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "an existing directory is never chmod-ed");

        let fresh = dir.path().join("a/b/state");
        let made = prepare_state_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "created private: {mode:o}");
        // An existing private one is used as it is.
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o750)).unwrap();
        prepare_state_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn connections_leave_descriptors_for_files() {
        assert_eq!(connection_cap(1024, 256), 256);
        assert_eq!(connection_cap(256, 256), 64);
        assert_eq!(connection_cap(16, 256), 8);
    }
}
