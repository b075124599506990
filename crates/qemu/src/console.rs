//! The guest's serial console log (`<instance dir>/console.log`).
//!
//! QEMU writes the serial port to this file (append mode, so a resumed QEMU
//! continues it). The driver serves it as Nova's `os-getConsoleOutput`, and
//! tests wait for the guest's greppable markers in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// Errors reading the console log.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text did not show up in time.
    #[error("{pattern:?} not seen in {path} within {waited:?}; last output:\n{tail}")]
    Timeout {
        /// The log file.
        path: PathBuf,
        /// What was awaited.
        pattern: String,
        /// How long.
        waited: Duration,
        /// The end of the log, for diagnosis.
        tail: String,
    },
}

/// A console log file.
#[derive(Debug, Clone)]
pub struct ConsoleLog {
    path: PathBuf,
}

impl ConsoleLog {
    /// Wrap a path (the file may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConsoleLog { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log as (lossy) UTF-8; empty if it does not exist yet.
    pub async fn read(&self) -> Result<String, ConsoleError> {
        match tokio::fs::read(&self.path).await {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(ConsoleError::Io { path: self.path.clone(), source }),
        }
    }

    /// The last `lines` lines (Nova's `length` parameter).
    pub async fn tail(&self, lines: usize) -> Result<String, ConsoleError> {
        let text = self.read().await?;
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Wait until a line containing `pattern` appears after byte offset
    /// `from`; returns that line and the offset just past it.
    pub async fn wait_for(
        &self,
        pattern: &str,
        from: usize,
        within: Duration,
    ) -> Result<(String, usize), ConsoleError> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.read().await?;
            if let Some(found) = find_line(&text, pattern, from) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(ConsoleError::Timeout {
                    path: self.path.clone(),
                    pattern: pattern.to_owned(),
                    waited: within,
                    tail: self.tail(15).await.unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Find the first complete line containing `pattern` at or after byte `from`.
fn find_line(text: &str, pattern: &str, from: usize) -> Option<(String, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let end = offset + line.len();
        if end > from && line.ends_with('\n') && line.contains(pattern) {
            return Some((line.trim_end().to_owned(), end));
        }
        offset = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_complete_lines_after_offset() {
        let t = "a marker 1\nb\nc marker 2\nd marker 3";
        assert_eq!(find_line(t, "marker", 0), Some(("a marker 1".into(), 11)));
        assert_eq!(find_line(t, "marker", 11), Some(("c marker 2".into(), 24)));
        // the last line is incomplete: not reported yet
        assert_eq!(find_line(t, "marker", 24), None);
    }

    #[tokio::test]
    async fn wait_for_times_out_with_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        std::fs::write(&p, "hello\n").unwrap();
        let c = ConsoleLog::new(&p);
        let e = c.wait_for("nope", 0, Duration::from_millis(120)).await.unwrap_err();
        assert!(e.to_string().contains("hello"), "{e}");
        assert_eq!(c.wait_for("hel", 0, Duration::ZERO).await.unwrap().0, "hello");
    }
}
