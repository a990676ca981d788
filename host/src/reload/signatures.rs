//! What the watched files hold: a content digest per file, so an event or a
//! new modification time without new bytes does not reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::plugin::{MAX_PLUGIN_BYTES, digest};

/// The content of each watched file, as last looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    files: BTreeMap<PathBuf, Signature>,
}

/// One file: its content (what comparisons look at) and the metadata it
/// was read with (to skip reading it again while that stays the same).
#[derive(Debug, Clone)]
struct Signature {
    content: Content,
    meta: Option<Meta>,
}

impl PartialEq for Signature {
    fn eq(&self, other: &Signature) -> bool {
        self.content == other.content
    }
}

impl Eq for Signature {}

/// What a file holds, as far as a reload cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    /// No file (or one that cannot be read).
    Missing,
    /// The digest of its bytes, the one plugin versions are named by.
    Digest(u64),
    /// Too large to be a plugin: not read; its size and time stand in.
    TooLarge(Meta),
}

/// Metadata that changes whenever the bytes might have: size, modification
/// and (on Unix) change time and inode, which a rename or `cp -p` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
    inode: u64,
}

impl Meta {
    fn of(path: &Path) -> Option<Meta> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (changed, inode) = {
            use std::os::unix::fs::MetadataExt;
            ((m.ctime(), m.ctime_nsec()), m.ino())
        };
        #[cfg(not(unix))]
        let (changed, inode) = ((0, 0), 0);
        Some(Meta {
            len: m.len(),
            modified: m.modified().ok(),
            changed,
            inode,
        })
    }
}

impl Signatures {
    /// Reads every file in `paths` now.
    pub fn read(paths: &[PathBuf]) -> Signatures {
        Signatures::default().update(paths, true)
    }

    /// `paths` now; a file whose metadata is as `self` last saw it keeps its
    /// digest unread, unless `reread` (an event said something happened).
    pub fn update(&self, paths: &[PathBuf], reread: bool) -> Signatures {
        let files = paths
            .iter()
            .map(|path| {
                let meta = Meta::of(path);
                let known = self.files.get(path).filter(|s| !reread && s.meta == meta);
                let signature = match known {
                    Some(known) => known.clone(),
                    None => Signature {
                        content: content(path, meta),
                        meta,
                    },
                };
                (path.clone(), signature)
            })
            .collect();
        Signatures { files }
    }

    /// Whether any of `paths` differs between `self` and `other` (a path
    /// only one of them knows differs).
    pub fn differ_in(&self, other: &Signatures, paths: &[PathBuf]) -> bool {
        paths
            .iter()
            .any(|path| self.files.get(path) != other.files.get(path))
    }

    /// How many files are known.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is known.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn content(path: &Path, meta: Option<Meta>) -> Content {
    match meta {
        None => Content::Missing,
        Some(meta) if meta.len > MAX_PLUGIN_BYTES => Content::TooLarge(meta),
        Some(_) => {
            std::fs::read(path).map_or(Content::Missing, |bytes| Content::Digest(digest(&bytes)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weir-signatures-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn same_bytes_are_the_same_signature_whatever_the_time() {
        let dir = temp("touch");
        let file = dir.join("p.wasm");
        std::fs::write(&file, b"one").unwrap();
        let paths = vec![file.clone()];
        let before = Signatures::read(&paths);
        // Written again with the same bytes: new times, same content.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&file, b"one").unwrap();
        assert_eq!(before.update(&paths, false), before);
        assert_eq!(before.update(&paths, true), before);

        std::fs::write(&file, b"two").unwrap();
        let after = before.update(&paths, false);
        assert_ne!(after, before);
        assert!(after.differ_in(&before, &paths));

        std::fs::remove_file(&file).unwrap();
        let gone = after.update(&paths, false);
        assert_ne!(gone, after);
        assert_eq!(gone, Signatures::read(&[dir.join("p.wasm")]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_too_large_to_be_a_plugin_is_not_read() {
        let dir = temp("large");
        let file = dir.join("huge.wasm");
        let huge = std::fs::File::create(&file).unwrap();
        huge.set_len(MAX_PLUGIN_BYTES + 1).unwrap();
        let paths = vec![file.clone()];
        let signatures = Signatures::read(&paths);
        assert!(matches!(
            signatures.files[&file].content,
            Content::TooLarge(meta) if meta.len == MAX_PLUGIN_BYTES + 1
        ));
        huge.set_len(MAX_PLUGIN_BYTES + 2).unwrap();
        assert_ne!(signatures.update(&paths, false), signatures);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_only_one_side_knows_differs() {
        let dir = temp("new");
        let (a, b) = (dir.join("a.wasm"), dir.join("b.wasm"));
        std::fs::write(&a, b"a").unwrap();
        let one = Signatures::read(std::slice::from_ref(&a));
        let two = Signatures::read(&[a.clone(), b.clone()]);
        assert!(!one.differ_in(&two, std::slice::from_ref(&a)));
        assert!(one.differ_in(&two, &[b]));
        assert_eq!(two.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
