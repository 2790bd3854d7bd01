//! Reading a corpus from disk, and checking the default tiny Shakespeare corpus (the
//! `download` feature fetches it, in the `download` module).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::DataError;
use crate::atomic::write_file;

/// A corpus that quill knows how to download and verify.
#[derive(Debug, Clone, Copy)]
pub struct KnownCorpus {
    /// Short name.
    pub name: &'static str,
    /// Where it is downloaded from.
    pub url: &'static str,
    /// Expected size in bytes.
    pub len: u64,
    /// Expected sha256, lower-case hex.
    pub sha256: &'static str,
    /// Where it lives, relative to the working directory.
    pub default_path: &'static str,
}

/// Tiny Shakespeare: the char-rnn repository's `data/tinyshakespeare/input.txt`, the URL
/// the "Let's build GPT" notebook uses.
pub const TINY_SHAKESPEARE: KnownCorpus = KnownCorpus {
    name: "tiny Shakespeare",
    url: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    len: 1_115_394,
    sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    default_path: "data/tinyshakespeare/input.txt",
};

/// A corpus loaded into memory.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The whole text.
    pub text: String,
    /// The file or directory it came from.
    pub source: PathBuf,
}

impl Corpus {
    /// Reads `path`: a UTF-8 text file, or a directory whose `*.txt` files are read in
    /// sorted order and concatenated.
    pub fn read(path: &Path) -> Result<Corpus, DataError> {
        if !path.exists() {
            return Err(DataError::NotFound(path.to_path_buf()));
        }
        let text = if path.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(path)
                .map_err(|e| DataError::io(path, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "txt"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(DataError::NoTextFiles(path.to_path_buf()));
            }
            let mut text = String::new();
            for file in &files {
                text.push_str(&read_utf8(file)?);
            }
            text
        } else {
            read_utf8(path)?
        };
        if text.is_empty() {
            return Err(DataError::Empty(path.to_path_buf()));
        }
        Ok(Corpus {
            text,
            source: path.to_path_buf(),
        })
    }

    /// Reads a known corpus at `path`, checking its sha256.
    pub fn read_verified(known: &KnownCorpus, path: &Path) -> Result<Corpus, DataError> {
        if !path.exists() {
            return Err(DataError::NotFound(path.to_path_buf()));
        }
        let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
        check_sha256(path, &bytes, known.sha256)?;
        Corpus::read(path)
    }
}

impl KnownCorpus {
    /// Puts the copy `from` (a regular file the user has) in place at `dest`, after
    /// checking its size and sha256: what lets a machine without network train on the
    /// known corpus. Returns whether it was written (`false`: `dest` already held it).
    pub fn place_from(&self, from: &Path, dest: &Path) -> Result<bool, DataError> {
        if dest.exists() && Corpus::read_verified(self, dest).is_ok() {
            return Ok(false);
        }
        let file = crate::files::open_regular(from).map_err(|e| DataError::io(from, e))?;
        let len = file.metadata().map_err(|e| DataError::io(from, e))?.len();
        if len != self.len {
            return Err(DataError::Checksum {
                path: from.to_path_buf(),
                expected: format!("{} ({} bytes)", self.sha256, self.len),
                actual: format!("a file of {len} bytes"),
            });
        }
        let bytes =
            crate::files::read_regular(from, self.len).map_err(|e| DataError::io(from, e))?;
        check_sha256(from, &bytes, self.sha256)?;
        write_file(dest, &bytes)?;
        Ok(true)
    }
}

/// Tiny Shakespeare at its place under the directory `root` (a checkout:
/// `root/data/tinyshakespeare/input.txt`), put there first when it is missing — copied
/// from `copy` when one is given (a local copy: what a machine without network holds),
/// else downloaded (feature `download`) — and verified either way, every write atomic.
/// What the tests that train on the real corpus call; without the corpus and without
/// network the error says how to put it in place.
pub fn tiny_shakespeare(root: &Path, copy: Option<&Path>) -> Result<PathBuf, DataError> {
    // One thread of the process puts it in place; the others then find it there.
    static PLACING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _placing = PLACING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let known = &TINY_SHAKESPEARE;
    let path = root.join(known.default_path);
    if !path.exists() {
        let placed = match copy {
            Some(copy) => std::fs::File::open(copy)
                .map_err(|e| DataError::io(copy, e))
                .and_then(|file| write_verified(file, &path, known.sha256))
                .map(drop)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "download")]
            None => crate::download::fetch(known, &path, |_, _| {})
                .map(drop)
                .map_err(|e| e.to_string()),
            #[cfg(not(feature = "download"))]
            None => Err("no copy was given, and this build cannot download".to_string()),
        };
        placed.map_err(|reason| DataError::CorpusMissing {
            path: path.clone(),
            reason,
        })?;
    }
    Corpus::read_verified(known, &path)?;
    Ok(path)
}

fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// The sha256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_sha256(path: &Path, bytes: &[u8], expected: &str) -> Result<(), DataError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Copies `reader` to `dest` atomically: the bytes go to a temporary file beside `dest`,
/// which is renamed to `dest` only when their sha256 equals `expected`. On any error
/// (a read failure, a checksum mismatch) nothing is left behind.
pub fn write_verified(mut reader: impl Read, dest: &Path, expected: &str) -> Result<(), DataError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(dest, e))?;
    check_sha256(dest, &bytes, expected)?;
    write_file(dest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        fs::write(&path, "to be\n").unwrap();
        assert_eq!(Corpus::read(&path).unwrap().text, "to be\n");
    }

    #[test]
    fn reads_a_directory_of_txt_files_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.txt"), "second").unwrap();
        fs::write(dir.path().join("a.txt"), "first ").unwrap();
        fs::write(dir.path().join("c.md"), "ignored").unwrap();
        assert_eq!(Corpus::read(dir.path()).unwrap().text, "first second");
    }

    #[test]
    fn missing_empty_and_dir_without_txt_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        assert!(matches!(
            Corpus::read(&missing),
            Err(DataError::NotFound(_))
        ));
        assert!(matches!(
            Corpus::read(dir.path()),
            Err(DataError::NoTextFiles(_))
        ));
        let empty = dir.path().join("empty.txt");
        fs::write(&empty, "").unwrap();
        assert!(matches!(Corpus::read(&empty), Err(DataError::Empty(_))));
    }

    #[test]
    fn non_utf8_reports_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        fs::write(&path, b"abc\xffdef").unwrap();
        let err = Corpus::read(&path).unwrap_err();
        assert!(matches!(err, DataError::NotUtf8 { offset: 3, .. }), "{err}");
        assert!(err.to_string().contains("byte offset 3"));
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verified_write_lands_the_file_when_the_checksum_matches() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/input.txt");
        write_verified(&b"abc"[..], &dest, &sha256_hex(b"abc")).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abc");
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn checksum_mismatch_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("input.txt");
        let err =
            write_verified(&b"not shakespeare"[..], &dest, TINY_SHAKESPEARE.sha256).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn cached_corpus_with_wrong_checksum_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("input.txt");
        fs::write(&dest, "tampered").unwrap();
        let err = Corpus::read_verified(&TINY_SHAKESPEARE, &dest).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    }
}
