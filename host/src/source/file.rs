//! The TOML file weir was started with.

use std::path::{Path, PathBuf};

use super::{Source, SourceError};
use crate::config::Config;

/// A config file, read again whole on every load. Its changes are seen by
/// the reloader's file watcher (it is in [`Source::files`]) and asked for
/// by SIGHUP and `POST /reload`.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The file at `path` (best absolute, so a later `chdir` cannot move
    /// it).
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&self) -> Result<Config, SourceError> {
        Ok(Config::load(&self.path)?)
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_file_again_each_time_and_names_its_line_when_invalid() {
        let dir = std::env::temp_dir().join(format!("weir-file-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weir.toml");
        let good = "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"web\"\n\n[[upstreams.web.backends]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        std::fs::write(&path, good).unwrap();
        let source = FileSource::new(path.clone());
        assert_eq!(source.files(), vec![path.clone()]);
        assert!(source.changes().is_none());
        assert_eq!(source.load().unwrap().upstreams.len(), 1);

        std::fs::write(
            &path,
            good.replace("upstream = \"web\"", "upstream = \"nope\""),
        )
        .unwrap();
        let error = source.load().unwrap_err().to_string();
        assert!(error.contains("weir.toml:5:"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
