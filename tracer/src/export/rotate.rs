//! `--output FILE` for JSON lines: size-based rotation for log shippers, in the usual shape
//! (FILE is the newest, then FILE.1, FILE.2, ... up to FILE.keep, the oldest).

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

/// A file of lines that moves to FILE.1 (FILE.1 to FILE.2, and so on; FILE.keep is dropped)
/// before a line would take it past `max_bytes`. A line is never split: written bytes are held
/// until their newline, and a line longer than `max_bytes` gets a file of its own.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    /// The start of a line whose newline has not been written yet.
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Opens `path` to append (creating it), counting what it already holds towards
    /// `max_bytes`. With `keep` 0 a full file starts over empty.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> Result<Self> {
        let path = path.into();
        if max_bytes == 0 {
            bail!(
                "the rotation size for {} must be at least 1 byte",
                path.display()
            );
        }
        let file = open_append(&path)
            .with_context(|| format!("cannot open {} to write snapshots", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot read the size of {}", path.display()))?
            .len();
        Ok(RotatingFile {
            path,
            max_bytes,
            keep,
            file,
            size,
            pending: Vec::new(),
        })
    }

    /// FILE.n
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(line)
            .map_err(|e| annotate(e, "writing to", &self.path))?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file
                .set_len(0)
                .map_err(|e| annotate(e, "truncating", &self.path))?;
            self.size = 0;
            return Ok(());
        }
        // Oldest first, so nothing is overwritten before it has moved; rename replaces
        // FILE.keep, which is how the oldest goes.
        for n in (1..self.keep).rev() {
            let from = self.rotated_path(n);
            match fs::rename(&from, self.rotated_path(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(annotate(e, "rotating", &from)),
            }
        }
        fs::rename(&self.path, self.rotated_path(1))
            .map_err(|e| annotate(e, "rotating", &self.path))?;
        self.file = open_append(&self.path).map_err(|e| annotate(e, "creating", &self.path))?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `pending` never holds a newline, so only `buf` needs searching (serializers write
        // a line in many small pieces).
        let mut start = 0;
        while let Some(at) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + at + 1;
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(&buf[start..end]);
            if let Err(e) = self.write_line(&line) {
                line.truncate(line.len() - (end - start));
                self.pending = line;
                // What came before this line is written; the caller retries the rest.
                return if start > 0 { Ok(start) } else { Err(e) };
            }
            start = end;
        }
        self.pending.extend_from_slice(&buf[start..]);
        Ok(buf.len())
    }

    /// Flushes complete lines; a line without its newline yet stays held.
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            // End the unfinished line, so the next run's first line starts on a line of its own.
            let mut line = std::mem::take(&mut self.pending);
            line.push(b'\n');
            let _ = self.write_line(&line);
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn annotate(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// A size such as `1048576`, `512K`, `100M`, `100MiB`, `1G` (K, M and G are powers of 1024;
/// `B` and `iB` suffixes are accepted), at least 1 byte. For the command line's value parsers.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid size {text:?}: expected bytes or a number with K, M or G, e.g. 100M");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("size {text:?} must be at least 1 byte"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{json::JsonLines, testdata::two_hosts};

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// The file names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("lists the dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_before_a_line_would_pass_the_limit_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshots.jsonl");
        let mut file = RotatingFile::open(&path, 10, 2).expect("opens");
        // 4 bytes a line: two fit in 10 bytes, a third would make 12.
        for n in 0..7 {
            file.write_all(format!("ln{n}\n").as_bytes())
                .expect("writes");
        }
        file.flush().expect("flushes");
        assert_eq!(
            names(dir.path()),
            ["snapshots.jsonl", "snapshots.jsonl.1", "snapshots.jsonl.2"]
        );
        assert_eq!(read(&path), "ln6\n");
        assert_eq!(read(&file.rotated_path(1)), "ln4\nln5\n");
        assert_eq!(read(&file.rotated_path(2)), "ln2\nln3\n");
        // ln0 and ln1 were in the oldest file, dropped.
    }

    #[test]
    fn a_line_exactly_at_the_limit_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut file = RotatingFile::open(&path, 8, 1).expect("opens");
        file.write_all(b"abc\ndef\n").expect("writes");
        assert_eq!(
            (read(&path).as_str(), file.rotated_path(1).exists()),
            ("abc\ndef\n", false)
        );
        file.write_all(b"g\n").expect("writes");
        assert_eq!(read(&path), "g\n");
        assert_eq!(read(&file.rotated_path(1)), "abc\ndef\n");
    }

    #[test]
    fn a_line_is_never_split_however_it_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut file = RotatingFile::open(&path, 16, 3).expect("opens");
        // Byte by byte, as a serializer might; the long line is bigger than a whole file.
        let lines = ["short\n", "a line longer than the limit\n", "tail\n"];
        for byte in lines.concat().bytes() {
            file.write_all(&[byte]).expect("writes");
        }
        file.flush().expect("flushes");
        assert_eq!(read(&file.rotated_path(2)), lines[0]);
        assert_eq!(
            read(&file.rotated_path(1)),
            lines[1],
            "alone in its file, whole"
        );
        assert_eq!(read(&path), lines[2]);
    }

    #[test]
    fn an_unfinished_line_is_held_until_its_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut file = RotatingFile::open(&path, 100, 1).expect("opens");
        file.write_all(b"{\"partial\":").expect("writes");
        file.flush().expect("flushes");
        assert_eq!(read(&path), "", "nothing of a line before its end");
        file.write_all(b"1}\n{\"next\"").expect("writes");
        assert_eq!(read(&path), "{\"partial\":1}\n");
        drop(file);
        assert_eq!(read(&path), "{\"partial\":1}\n{\"next\"\n", "ended on drop");
    }

    #[test]
    fn reopening_appends_and_counts_what_is_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        fs::write(&path, "old1\nold2\n").expect("writes");
        let mut file = RotatingFile::open(&path, 12, 1).expect("opens");
        file.write_all(b"new1\n").expect("writes");
        assert_eq!(
            read(&path),
            "new1\n",
            "10 bytes were there: 15 would pass 12"
        );
        assert_eq!(read(&file.rotated_path(1)), "old1\nold2\n");
    }

    #[test]
    fn keep_zero_starts_the_file_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut file = RotatingFile::open(&path, 6, 0).expect("opens");
        file.write_all(b"abc\ndef\nxy\n").expect("writes");
        assert_eq!(names(dir.path()), ["out"]);
        assert_eq!(read(&path), "xy\n");
    }

    #[test]
    fn json_snapshots_rotate_as_whole_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshots.jsonl");
        let snapshot = two_hosts();
        let mut sizer = JsonLines::new(Vec::new());
        sizer
            .write_at(&snapshot, "2026-11-26T00:00:00Z".into())
            .expect("writes");
        let line_len = sizer.into_inner().len() as u64;
        // Room for two lines and a half.
        let file = RotatingFile::open(&path, line_len * 5 / 2, 2).expect("opens");
        let mut out = JsonLines::new(file);
        for _ in 0..5 {
            out.write_at(&snapshot, "2026-11-26T00:00:00Z".into())
                .expect("writes");
        }
        drop(out);
        let file_lines = |p: &Path| {
            let text = read(p);
            assert!(text.ends_with('\n'), "{} ends mid-line", p.display());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
                assert_eq!(v["leaked_total"], 3);
            }
            text.lines().count()
        };
        let rotated = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        // Five lines, two to a file: the newest file has the fifth.
        assert_eq!(
            (
                file_lines(&rotated(2)),
                file_lines(&rotated(1)),
                file_lines(&path)
            ),
            (2, 2, 1)
        );
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no-such-dir/out");
        let e = RotatingFile::open(&path, 100, 1).expect_err("cannot open");
        assert!(
            format!("{e:#}").contains(&path.display().to_string()),
            "{e:#}"
        );
        let e = RotatingFile::open(dir.path().join("out"), 0, 1).expect_err("zero size");
        assert!(format!("{e:#}").contains("at least 1 byte"), "{e:#}");
    }

    #[test]
    fn sizes_parse_in_bytes_and_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("10mb"), Ok(10 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in ["", "M", "10X", "-5", "1.5M", "0", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }
}
