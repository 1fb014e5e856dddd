//! Where a server keeps its runtime files (the `--upgrade` hand-over socket, a generated
//! certificate): a directory only its user can enter, never a predictable name in a shared
//! `/tmp` that another user could have created first.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `$XDG_RUNTIME_DIR/cascade` when the session has a runtime directory, else
/// `<temp dir>/cascade-<uid>`; created with mode 0700 if missing. An existing directory must
/// be a real directory (not a link), owned by this user, and closed to everyone else.
pub fn dir() -> io::Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() => runtime.join("cascade"),
        _ => std::env::temp_dir().join(format!("cascade-{uid}")),
    };
    private_dir(&dir, uid)?;
    Ok(dir)
}

/// Creates `dir` (mode 0700) or checks that the one there is private to `uid`.
pub fn private_dir(dir: &Path, uid: u32) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create the runtime directory {}: {e}", dir.display()),
            ));
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || meta.uid() != uid || mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of user {uid} (owner {}, mode {mode:o}{}); \
                 remove it, or set XDG_RUNTIME_DIR",
                dir.display(),
                meta.uid(),
                if meta.is_dir() {
                    ""
                } else {
                    ", not a directory"
                }
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        private_dir(&dir, uid()).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        private_dir(&dir, uid()).unwrap();
    }

    #[test]
    fn an_open_directory_a_link_or_another_users_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&open, uid()).unwrap_err();
        assert!(err.to_string().contains("mode 777"), "{err}");

        let link = root.path().join("link");
        std::os::unix::fs::symlink(root.path(), &link).unwrap();
        let err = private_dir(&link, uid()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        let mine = root.path().join("mine");
        private_dir(&mine, uid()).unwrap();
        let err = private_dir(&mine, uid().wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains("not a private directory"), "{err}");
    }
}
