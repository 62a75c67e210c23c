//! A fuzz input: one or more named files (a job config alone, or a model directory's
//! `config.json` + `model.safetensors`), how it is stored in the corpus, and how it crosses the
//! pipe to a worker process.
//!
//! On disk a corpus entry is either a file (an input of one member, named like the file) or a
//! directory (one member per file in it, in name order). A saved finding is always a directory,
//! so a model directory that crashed the loader can be handed to `r1ctl` as it is.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Files that never become members of an input: notes the harness writes beside a finding.
const NOT_MEMBERS: [&str; 1] = ["finding.txt"];

/// One input: named files, the bytes of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// (file name, content); names are plain file names, never paths.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Input {
    /// An input of one file.
    pub fn single(name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        Input {
            files: vec![(name.to_string(), bytes.into())],
        }
    }

    /// The member called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// Total bytes over every member.
    pub fn len(&self) -> usize {
        self.files.iter().map(|(_, b)| b.len()).sum()
    }

    /// Whether every member is empty (or there is none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short stable hash of names and contents (FNV-1a): names saved findings.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (name, bytes) in &self.files {
            for &b in name.as_bytes().iter().chain([0u8].iter()).chain(bytes) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// Writes every member into `dir` (created), replacing what is there.
    pub fn write_into(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(safe_name(name)), bytes)?;
        }
        Ok(())
    }

    /// Reads a corpus entry: a file is an input of one member, a directory one of each file in
    /// it (sub-directories and the harness's own notes are not members).
    pub fn read(path: &Path) -> io::Result<Input> {
        let meta = std::fs::metadata(path)?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "input".into());
            return Ok(Input::single(&name, std::fs::read(path)?));
        }
        let mut files = Vec::new();
        for entry in sorted_entries(path)? {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if entry.is_file() && !NOT_MEMBERS.contains(&name.as_str()) {
                files.push((name, std::fs::read(&entry)?));
            }
        }
        Ok(Input { files })
    }

    /// Serialises for the worker pipe: member count, then (name length, name, length, bytes),
    /// every number a little-endian u32.
    pub fn encode(&self, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(self.len() + 64);
        buf.extend((self.files.len() as u32).to_le_bytes());
        for (name, bytes) in &self.files {
            buf.extend((name.len() as u32).to_le_bytes());
            buf.extend(name.as_bytes());
            buf.extend((bytes.len() as u32).to_le_bytes());
            buf.extend(bytes);
        }
        out.write_all(&buf)?;
        out.flush()
    }

    /// Reads what [`Input::encode`] wrote; `Ok(None)` at a clean end of stream.
    pub fn decode(input: &mut impl Read) -> io::Result<Option<Input>> {
        let mut word = [0u8; 4];
        match input.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let count = u32::from_le_bytes(word) as usize;
        let mut files = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = String::from_utf8_lossy(&read_blob(input)?).into_owned();
            files.push((name, read_blob(input)?));
        }
        Ok(Some(Input { files }))
    }
}

/// One length-prefixed byte string of the pipe format.
fn read_blob(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut word = [0u8; 4];
    input.read_exact(&mut word)?;
    let n = u32::from_le_bytes(word) as usize;
    // The parent is trusted, but a desynchronised pipe must not become a huge allocation.
    if n > MAX_INPUT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a member of {n} bytes is over the {MAX_INPUT_BYTES}-byte limit"),
        ));
    }
    let mut bytes = vec![0u8; n];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The largest member the mutator produces or the pipe accepts (inputs stay small: the bugs are
/// in what the bytes say, not in how many there are).
pub const MAX_INPUT_BYTES: usize = 8 << 20;

/// A member name as a plain file name: separators and parent references cannot leave the folder.
pub fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "input".into()
    } else {
        cleaned
    }
}

/// The entries of a folder, sorted by name (hidden files skipped).
pub fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_cross_the_pipe_unchanged() {
        let input = Input {
            files: vec![
                ("config.json".into(), b"{}".to_vec()),
                ("model.safetensors".into(), vec![0, 1, 2, 255]),
            ],
        };
        let mut pipe = Vec::new();
        input.encode(&mut pipe).unwrap();
        input.encode(&mut pipe).unwrap();
        let mut reader = pipe.as_slice();
        assert_eq!(Input::decode(&mut reader).unwrap().as_ref(), Some(&input));
        assert_eq!(Input::decode(&mut reader).unwrap().as_ref(), Some(&input));
        assert_eq!(Input::decode(&mut reader).unwrap(), None);
    }

    #[test]
    fn a_directory_entry_reads_back_as_written_without_the_notes() {
        let dir = tempfile::tempdir().unwrap();
        let input = Input {
            files: vec![("a.json".into(), b"1".to_vec()), ("b.bin".into(), vec![9])],
        };
        input.write_into(&dir.path().join("entry")).unwrap();
        std::fs::write(dir.path().join("entry/finding.txt"), "panic").unwrap();
        assert_eq!(Input::read(&dir.path().join("entry")).unwrap(), input);
        assert_eq!(safe_name("../x/y"), ".._x_y");
        assert_eq!(safe_name(".."), "input");
    }
}
