//! [`FsStore`]: objects as files under a root directory, one path segment per key segment.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{ObjectKey, ObjectStore, StoreError, check_prefix, is_key_segment};

/// Names of in-flight writes start with this. `~` is outside the key alphabet, so a temp file
/// never collides with an object and listings skip it.
const TEMP_PREFIX: &str = ".~tmp.";

/// Distinguishes this process's concurrent writes to the same directory.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How often a write re-creates its directory when a concurrent
/// [`delete_prefix`](ObjectStore::delete_prefix) removes it first.
const CREATE_ATTEMPTS: usize = 5;

/// Objects as files under a root directory: key `a/b/c` is the file `<root>/a/b/c`.
///
/// Writes go to a temp file in the object's directory which is synced and then renamed over the
/// object (and the directory synced), so readers see the old or the new object, never part of
/// one, and a write reported done survives a crash. Content types are not
/// kept: readers derive them from the key's extension. A key cannot be both an object and a
/// prefix of other objects here (`a` and `a/b`): the second write fails with an I/O error.
/// Temp files left by a crash are never listed, deleted or cleaned up.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root`, creating the directory when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        // Resolved once, so a later change of working directory cannot move the store.
        let root = std::path::absolute(&root).map_err(|e| StoreError::Io {
            key: root.display().to_string(),
            source: context(e, "resolve the store's root directory", &root),
        })?;
        std::fs::create_dir_all(&root).map_err(|e| StoreError::Io {
            key: root.display().to_string(),
            source: context(e, "create the store's root directory", &root),
        })?;
        tracing::info!(root = %root.display(), "object store (local files)");
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Runs blocking filesystem work off the async workers.
    async fn blocking<T: Send + 'static>(
        key: &str,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let result = match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(format!(
                "filesystem task did not finish: {join}"
            ))),
        };
        result.map_err(|source| StoreError::Io {
            key: key.to_owned(),
            source,
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for FsStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        let path = self.path(key);
        Self::blocking(key.as_str(), move || write_atomically(&path, &body)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key);
        Self::blocking(key.as_str(), move || match std::fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            // Absent, or a path that names a directory of other objects rather than an object.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::IsADirectory
                        | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(context(e, "read", &path)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        check_prefix(prefix, true)?;
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        Self::blocking(prefix, move || {
            let tree = walk(&root, &prefix_owned)?;
            let mut keys: Vec<ObjectKey> = tree.objects.into_iter().map(|(_, key)| key).collect();
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        check_prefix(prefix, false)?;
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        Self::blocking(prefix, move || delete_tree(&root, &prefix_owned)).await
    }

    fn backend(&self) -> &'static str {
        "fs"
    }
}

/// Writes `body` to a temp file beside `path`, syncs it, renames it over `path` and syncs the
/// directory.
fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut attempt = 1;
    let mut file = loop {
        let opened = std::fs::create_dir_all(dir)
            .map_err(|e| context(e, "create directory", dir))
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temp)
                    .map_err(|e| context(e, "create temp file", &temp))
            });
        match opened {
            Ok(file) => break file,
            // A concurrent delete_prefix removed a directory it had just emptied: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < CREATE_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(body)
        .and_then(|()| file.sync_data())
        .map_err(|e| context(e, "write temp file", &temp));
    drop(file);
    let renamed = written.and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| context(e, "rename temp file to", path))
    });
    // The rename is durable only once the directory entry is: without this, a crash can
    // leave the old object (or none) after the write was reported done.
    let renamed = renamed.and_then(|()| {
        match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            // A concurrent delete_prefix removed the directory, and the object with it,
            // after the rename: the put happened before that delete, and nothing is left
            // to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| context(e, "sync directory", dir)),
        }
    });
    if renamed.is_err() {
        // Best effort: the write already failed, and a leftover temp file is never listed.
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}

/// The objects and directories under a prefix.
struct Tree {
    /// Object files with their keys. Temp files, symbolic links and names no key can produce
    /// are not objects.
    objects: Vec<(PathBuf, ObjectKey)>,
    /// Directories below the prefix's directory, parents before children.
    dirs: Vec<PathBuf>,
}

/// Walks `root/prefix` (`prefix` is empty or ends in '/'). A missing directory is empty.
/// Symbolic links are neither followed nor listed.
fn walk(root: &Path, prefix: &str) -> io::Result<Tree> {
    let mut tree = Tree {
        objects: Vec::new(),
        dirs: Vec::new(),
    };
    let mut pending = vec![(root.join(prefix), prefix.to_owned())];
    while let Some((dir, dir_key)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Absent (never written, or removed concurrently), or an object rather than a
            // directory: nothing under it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(context(e, "read directory", &dir)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| context(e, "read directory", &dir))?;
            let path = entry.path();
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(context(e, "stat", &path)),
            };
            let name = entry.file_name();
            let Some(segment) = name.to_str().filter(|n| is_key_segment(n)) else {
                // No key leads here: a temp file, or something put here by hand.
                continue;
            };
            if file_type.is_dir() {
                tree.dirs.push(path.clone());
                pending.push((path, format!("{dir_key}{segment}/")));
            } else if file_type.is_file() {
                // Deep trees can exceed the key length limit; such files are not objects.
                if let Ok(key) = ObjectKey::new(format!("{dir_key}{segment}")) {
                    tree.objects.push((path, key));
                }
            }
        }
    }
    Ok(tree)
}

/// Removes the objects under `root/prefix`, then the directories left empty, up to but not
/// including `root`. In-flight writes are left alone, and so are their directories.
fn delete_tree(root: &Path, prefix: &str) -> io::Result<u64> {
    let tree = walk(root, prefix)?;
    let mut deleted = 0;
    for (path, _) in &tree.objects {
        match std::fs::remove_file(path) {
            Ok(()) => deleted += 1,
            // Deleted concurrently.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "remove", path)),
        }
    }
    // Children before parents, then the prefix's own directory and its ancestors.
    let ancestors = root
        .join(prefix)
        .ancestors()
        .take_while(|dir| *dir != root)
        .map(Path::to_path_buf)
        .collect::<Vec<_>>();
    for dir in tree.dirs.iter().rev().chain(&ancestors) {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            // Not empty: other objects or an in-flight write live there. Gone: removed
            // concurrently, or never there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
                ) => {}
            Err(e) => return Err(context(e, "remove directory", dir)),
        }
    }
    Ok(deleted)
}

/// `error`, with the operation and path in its message (keeping its kind).
fn context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ObjectKey {
        ObjectKey::new(k).unwrap()
    }

    fn store() -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("root")).unwrap();
        (dir, store)
    }

    /// Every file below `dir`, relative to it.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    out.push(path.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn round_trip_and_layout() {
        let (dir, store) = store();
        let body = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
        store
            .put(&key("live/abc/720p/1.m4s"), body.clone(), "video/mp4")
            .await
            .unwrap();
        assert_eq!(
            store.get(&key("live/abc/720p/1.m4s")).await.unwrap(),
            Some(body)
        );
        assert_eq!(files(&dir.path().join("root")), ["live/abc/720p/1.m4s"]);
        store
            .put(
                &key("live/abc/720p/1.m4s"),
                Bytes::from_static(b"new"),
                "video/mp4",
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get(&key("live/abc/720p/1.m4s"))
                .await
                .unwrap()
                .as_deref(),
            Some(&b"new"[..])
        );
        // No temp files left behind.
        assert_eq!(files(&dir.path().join("root")), ["live/abc/720p/1.m4s"]);
        store
            .put(&key("empty"), Bytes::new(), "text/plain")
            .await
            .unwrap();
        assert_eq!(store.get(&key("empty")).await.unwrap(), Some(Bytes::new()));
    }

    #[tokio::test]
    async fn absent_objects_are_none() {
        let (_dir, store) = store();
        assert_eq!(store.get(&key("nope")).await.unwrap(), None);
        assert_eq!(store.get(&key("a/b/c")).await.unwrap(), None);
        store
            .put(&key("a/b/c"), Bytes::from_static(b"x"), "")
            .await
            .unwrap();
        // A directory of objects is not an object, nor is a path through an object.
        assert_eq!(store.get(&key("a/b")).await.unwrap(), None);
        assert_eq!(store.get(&key("a/b/c/d")).await.unwrap(), None);
        assert!(store.list("a/b/c/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_is_sorted_skips_temp_and_stray_files() {
        let (dir, store) = store();
        for k in ["v/b/2", "v/a/1", "v/a.b", "v/a-b", "v/a/0", "w/x", "top"] {
            store
                .put(&key(k), Bytes::from_static(b"."), "")
                .await
                .unwrap();
        }
        let root = dir.path().join("root");
        std::fs::write(
            root.join("v/a").join(format!("{TEMP_PREFIX}1.2")),
            b"partial",
        )
        .unwrap();
        std::fs::write(root.join("v/not a key"), b"stray").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("v/link")).unwrap();
        let keys = |ks: Vec<ObjectKey>| ks.into_iter().map(|k| k.0).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list("v/").await.unwrap()),
            ["v/a-b", "v/a.b", "v/a/0", "v/a/1", "v/b/2"]
        );
        assert_eq!(keys(store.list("v/a/").await.unwrap()), ["v/a/0", "v/a/1"]);
        assert_eq!(keys(store.list("").await.unwrap()).len(), 7);
        assert!(store.list("missing/").await.unwrap().is_empty());
        assert!(store.list("v").await.is_err(), "prefixes end in '/'");
        assert!(store.list("../").await.is_err());
    }

    #[tokio::test]
    async fn delete_prefix_removes_objects_and_empty_directories() {
        let (dir, store) = store();
        for k in [
            "live/abc/720p/1",
            "live/abc/720p/2",
            "live/abc/480p/1",
            "live/abd/1",
            "live/abcd",
        ] {
            store
                .put(&key(k), Bytes::from_static(b"."), "")
                .await
                .unwrap();
        }
        assert_eq!(store.delete_prefix("live/abc/").await.unwrap(), 3);
        let root = dir.path().join("root");
        assert!(!root.join("live/abc").exists());
        assert_eq!(files(&root), ["live/abcd", "live/abd/1"]);
        assert_eq!(store.delete_prefix("live/abc/").await.unwrap(), 0);
        assert_eq!(store.delete_prefix("live/").await.unwrap(), 2);
        assert!(!root.join("live").exists(), "emptied parents go too");
        assert!(root.is_dir(), "the root stays");
        for bad in ["", "live", "/", "../", "a//"] {
            let err = store.delete_prefix(bad).await.unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn delete_prefix_leaves_in_flight_writes() {
        let (dir, store) = store();
        store
            .put(&key("a/b/1"), Bytes::from_static(b"."), "")
            .await
            .unwrap();
        let temp = dir
            .path()
            .join("root/a/b")
            .join(format!("{TEMP_PREFIX}9.9"));
        std::fs::write(&temp, b"partial").unwrap();
        assert_eq!(store.delete_prefix("a/").await.unwrap(), 1);
        assert!(temp.exists());
    }

    #[tokio::test]
    async fn nothing_escapes_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("outside"), b"secret").unwrap();
        for k in [
            "../outside",
            "a/../../outside",
            "/etc/passwd",
            "..\\outside",
            "a\0b",
            "a//b",
            "",
        ] {
            assert!(ObjectKey::new(k).is_err(), "{k:?}");
        }
        // Accepted literally, with no decoding: stays inside the root.
        let dots = key("a/..b/...");
        store
            .put(&dots, Bytes::from_static(b"x"), "")
            .await
            .unwrap();
        assert!(dir.path().join("root/a/..b/...").is_file());
        assert_eq!(
            std::fs::read(dir.path().join("outside")).unwrap(),
            b"secret"
        );
    }

    #[tokio::test]
    async fn a_key_below_an_object_is_an_io_error() {
        let (_dir, store) = store();
        store
            .put(&key("a"), Bytes::from_static(b"x"), "")
            .await
            .unwrap();
        let err = store
            .put(&key("a/b"), Bytes::from_static(b"y"), "")
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("\"a/b\""), "{err}");
    }

    #[tokio::test]
    async fn concurrent_puts_and_deletes_stay_consistent() {
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..20u8 {
                    let k = key(&format!("c/{i}/x"));
                    store
                        .put(&k, Bytes::from(vec![round; 4096]), "")
                        .await
                        .unwrap();
                    let got = store.get(&k).await.unwrap();
                    if let Some(got) = got {
                        assert!(got.len() == 4096 && got.iter().all(|b| *b == got[0]));
                    }
                    store.delete_prefix("c/").await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[test]
    fn opening_a_root_under_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let err = FsStore::new(dir.path().join("file/root")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }));
        assert!(err.to_string().contains("file/root"), "{err}");
    }
}
