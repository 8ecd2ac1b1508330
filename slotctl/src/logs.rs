//! Per-slot log files. ttyd writes straight into its file (stdout and stderr
//! opened with O_APPEND), so no pipe through the daemon can break or fill
//! when the daemon is away. Rotation copies the file aside and truncates it
//! in place (O_APPEND writers carry on at the new end). Reading: the last N
//! lines, and following with notify.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs").join("slots")
}

pub fn log_path(data_dir: &Path, slot: &str) -> PathBuf {
    log_dir(data_dir).join(format!("{slot}.log"))
}

/// Open (create) a log for appending.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Append one supervisor line (`[slotctl] …`) to a slot's log.
pub fn note(path: &Path, line: &str) {
    if let Ok(mut f) = open_append(path) {
        let ts = crate::clock::rfc3339_now();
        let _ = writeln!(f, "[slotctl {ts}] {line}");
    }
}

/// Rotate when larger than `max`: `x.log` → `x.log.1` → … → `x.log.<keep>`.
/// Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        OpenOptions::new().write(true).open(path)?.set_len(0)?;
        return Ok(true);
    }
    let _ = fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = fs::rename(numbered(n), numbered(n + 1));
    }
    fs::copy(path, numbered(1))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `n` lines of a file (reads at most the last 4 MiB).
pub fn tail(path: &Path, n: usize) -> io::Result<(Vec<String>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(4 << 20);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
    }
    let skip = lines.len().saturating_sub(n);
    Ok((lines.split_off(skip), len))
}

/// Read what was appended since `offset`. A file that shrank (rotated or
/// truncated) is read again from its start. Returns complete lines and the
/// new offset (a trailing partial line is left for the next call).
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<String>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(1 << 20).read_to_end(&mut buf)?;
    let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
        return Ok((vec![], from));
    };
    let text = String::from_utf8_lossy(&buf[..last_nl]);
    let lines = text.lines().map(str::to_string).collect();
    Ok((lines, from + last_nl as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_n_and_writers_continue() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.log");
        let mut w = open_append(&p).unwrap();
        for round in 0..4 {
            writeln!(w, "round {round} {}", "x".repeat(100)).unwrap();
            assert!(rotate_if_needed(&p, 50, 2).unwrap());
        }
        writeln!(w, "after").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "after\n");
        assert!(fs::read_to_string(dir.path().join("s.log.1"))
            .unwrap()
            .starts_with("round 3"));
        assert!(fs::read_to_string(dir.path().join("s.log.2"))
            .unwrap()
            .starts_with("round 2"));
        assert!(!dir.path().join("s.log.3").exists());
        assert!(!rotate_if_needed(&p, 50, 2).unwrap());
    }

    #[test]
    fn tail_and_incremental_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.log");
        fs::write(&p, "a\nb\nc\npartial").unwrap();
        assert_eq!(tail(&p, 2).unwrap().0, vec!["c", "partial"]);
        let (lines, off) = read_from(&p, 0).unwrap();
        assert_eq!(lines, vec!["a", "b", "c"]);
        fs::write(&p, "a\nb\nc\npartial line\nd\n").unwrap();
        let (lines, off2) = read_from(&p, off).unwrap();
        assert_eq!(lines, vec!["partial line", "d"]);
        // Truncation starts over.
        fs::write(&p, "new\n").unwrap();
        let (lines, _) = read_from(&p, off2).unwrap();
        assert_eq!(lines, vec!["new"]);
    }
}
