//! Reading and parsing a configuration file, and errors that name the file,
//! line and column.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Config, ConfigSource};

/// The largest configuration file weir reads, in bytes (4 MiB): room for
/// tens of thousands of backends, while a runaway file (or `/dev/zero`) is
/// refused before it is read whole.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// A configuration that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid weir configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong, in words.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    ///
    /// At most [`MAX_CONFIG_BYTES`] are read; a longer file, or one that is
    /// not UTF-8, is an error at the line where it goes wrong.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(MAX_CONFIG_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(read_error)?;
        check_size(path, &bytes)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            invalid_at(
                path,
                bytes,
                at,
                format!("not UTF-8 text (byte 0x{:02x})", bytes[at]),
            )
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`, naming it `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        check_size(path, text.as_bytes())?;
        let source = ConfigSource {
            path: path.to_path_buf(),
            text: text.to_string(),
        };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .unwrap_or_else(|| spanless_error_at(text, e.message()));
            source.error(span, e.message().trim().to_string())
        })?;
        config.source = source;
        config.validate()?;
        Ok(config)
    }

    /// An error pointing at `span` in this configuration's file.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.source.error(span, message.into())
    }
}

/// Refuses more than [`MAX_CONFIG_BYTES`], at the line where the limit falls.
fn check_size(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    if bytes.len() <= MAX_CONFIG_BYTES {
        return Ok(());
    }
    Err(invalid_at(
        path,
        bytes,
        MAX_CONFIG_BYTES,
        format!(
            "the file is larger than {} MiB, the most weir reads",
            MAX_CONFIG_BYTES >> 20
        ),
    ))
}

/// Where an error that toml gives without a span belongs. The only such
/// error weir has met is a dotted key nested past toml's recursion limit
/// (`a.a.a…`, 80 parts): the first line with that many dots.
fn spanless_error_at(text: &str, message: &str) -> Range<usize> {
    const DOTTED_KEY_LIMIT: usize = 79;
    if !message.contains("recursion limit") {
        return 0..0;
    }
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if line.matches('.').count() >= DOTTED_KEY_LIMIT {
            let indent = line.len() - line.trim_start().len();
            return start + indent..start + line.len();
        }
        start += line.len();
    }
    0..0
}

fn invalid_at(path: &Path, bytes: &[u8], offset: usize, message: String) -> ConfigError {
    let (line, column) = line_column(bytes, offset);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

impl ConfigSource {
    pub(super) fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        invalid_at(&self.path, self.text.as_bytes(), span.start, message)
    }
}

/// 1-based line and column (in bytes) of byte `offset` in `text`.
fn line_column(text: impl AsRef<[u8]>, offset: usize) -> (usize, usize) {
    let text = text.as_ref();
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    (line, before.len() - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    use super::super::testing::{GOOD, assert_refused_at, parse};

    /// A file of its own under the system's temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> TempFile {
            let dir =
                std::env::temp_dir().join(format!("weir-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("weir.toml");
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn a_ten_megabyte_file_is_refused_at_the_line_past_the_limit() {
        let line = "# padding padding padding padding padding padding padding padding\n";
        let text = GOOD.to_string() + &line.repeat(10 * 1024 * 1024 / line.len());
        let (limit_line, column) = line_column(&text, MAX_CONFIG_BYTES);
        let expected = format!("weir.toml:{limit_line}:{column}: the file is larger than 4 MiB");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with(&expected), "{err}");
        let file = TempFile::new("huge", text.as_bytes());
        let err = Config::load(&file.0).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "weir.toml:{limit_line}:{column}: the file is larger"
            )),
            "{err}"
        );
        // Just under the limit is read (and then judged on its content).
        let text = GOOD.to_string() + &"#".repeat(MAX_CONFIG_BYTES - GOOD.len());
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn non_utf8_bytes_are_refused_at_their_line() {
        let mut bytes = GOOD.replace("weight = 2", "weight = 2 # caf").into_bytes();
        let at = bytes.len() - 1;
        bytes.insert(at, 0xff);
        let file = TempFile::new("latin1", &bytes);
        let err = Config::load(&file.0).unwrap_err().to_string();
        assert!(err.ends_with(":15:17: not UTF-8 text (byte 0xff)"), "{err}");
        assert!(err.starts_with(&file.0.display().to_string()), "{err}");
    }

    #[test]
    fn an_unreadable_path_is_a_read_error() {
        let file = TempFile::new("dir", b"");
        let dir = file.0.parent().unwrap();
        let err = Config::load(dir).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        let err = Config::load(&dir.join("absent.toml")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_at_its_line() {
        let deep = 100_000;
        for (what, value) in [
            (
                "arrays",
                format!("{}{}", "[".repeat(deep), "]".repeat(deep)),
            ),
            (
                "inline tables",
                format!("{}1{}", "{ a = ".repeat(deep), "}".repeat(deep)),
            ),
        ] {
            let text = GOOD.replace("settings = { answer = 42 }", &format!("settings = {value}"));
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("weir.toml:11:"), "{what}: {err}");
            assert!(err.contains("recursion"), "{what}: {err}");
        }
        let dotted = format!("x{} = 1", ".a".repeat(deep));
        let text = GOOD.replace("settings = { answer = 42 }", &dotted);
        let err = assert_refused_at(&text, "x.a.a", &["recursion limit"]);
        assert!(err.starts_with("weir.toml:11:1:"), "{err}");
        let header = format!("[upstreams.web.balancer.settings{}]", ".a".repeat(deep));
        let text = format!("{GOOD}\n{header}\n");
        assert_refused_at(&text, &header, &["recursion limit"]);
        // Nesting within toml's limit is fine, and reaches the plugin as JSON.
        let value = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let text = GOOD.replace("{ answer = 42 }", &format!("{{ answer = {value} }}"));
        let config = parse(&text).unwrap();
        let json = config.upstreams["web"]
            .balancer
            .as_ref()
            .unwrap()
            .settings_json();
        assert!(json.contains(&value), "{json}");
    }
}
