//! Token files on disk, read through a memory map: resident memory does not grow with
//! the corpus.
//!
//! Two layouts:
//!
//! - **llm.c shards** ([`TokenFormat::LlmC`], the default): a header of 256
//!   little-endian `int32`s (`[0]` magic 20240520, `[1]` version, `[2]` token count, the
//!   rest zero), then the tokens, little-endian. Version 1 stores `uint16` tokens (what
//!   llm.c and modded-nanogpt write for GPT-2); version 7 stores `uint32` tokens, for
//!   vocabularies over 65,536 (llm.c's LLaMA-3 shards).
//! - **nanoGPT** ([`TokenFormat::NanoGpt`]): raw little-endian `uint16` tokens, no
//!   header, as nanoGPT's `prepare.py` scripts write `train.bin` / `val.bin`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// llm.c's magic number, the first `int32` of a shard.
pub const MAGIC: i32 = 20_240_520;
/// The header's length in bytes (256 `int32`s).
pub const HEADER_BYTES: usize = 1024;

/// How tokens are laid out in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// llm.c / modded-nanogpt shards: a 1 KiB header, then the tokens.
    #[serde(rename = "llmc")]
    LlmC,
    /// nanoGPT's raw `uint16` tokens.
    #[serde(rename = "nanogpt")]
    NanoGpt,
}

/// The width of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// Two bytes: vocabularies of at most 65,536 tokens.
    Uint16,
    /// Four bytes.
    Uint32,
}

impl std::fmt::Display for TokenFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenFormat::LlmC => "llm.c shards (1 KiB header)",
            TokenFormat::NanoGpt => "nanoGPT's raw tokens",
        })
    }
}

impl std::fmt::Display for TokenDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenDtype::Uint16 => "uint16",
            TokenDtype::Uint32 => "uint32",
        })
    }
}

impl TokenDtype {
    /// The narrowest type that holds ids below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> TokenDtype {
        if vocab_size <= 1 << 16 {
            TokenDtype::Uint16
        } else {
            TokenDtype::Uint32
        }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Uint32 => 4,
        }
    }

    fn version(self) -> i32 {
        match self {
            TokenDtype::Uint16 => 1,
            TokenDtype::Uint32 => 7,
        }
    }
}

/// Writes a token file; [`TokenWriter::finish`] fills in the header's count.
pub struct TokenWriter {
    file: BufWriter<File>,
    path: PathBuf,
    format: TokenFormat,
    dtype: TokenDtype,
    count: u64,
}

impl TokenWriter {
    /// Creates `path`. nanoGPT's layout only has `uint16` tokens.
    pub fn create(
        path: &Path,
        format: TokenFormat,
        dtype: TokenDtype,
    ) -> Result<TokenWriter, DataError> {
        if format == TokenFormat::NanoGpt && dtype != TokenDtype::Uint16 {
            return Err(DataError::BadTokenizer(
                "nanoGPT's token files hold uint16 ids; a vocabulary over 65,536 tokens needs --format llmc".into(),
            ));
        }
        let io = |e| DataError::io(path, e);
        let mut file = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
        if format == TokenFormat::LlmC {
            file.write_all(&[0; HEADER_BYTES]).map_err(io)?;
        }
        Ok(TokenWriter {
            file,
            path: path.to_path_buf(),
            format,
            dtype,
            count: 0,
        })
    }

    /// Appends `tokens`.
    pub fn push(&mut self, tokens: &[u32]) -> Result<(), DataError> {
        let io = |e| DataError::io(&self.path, e);
        for &t in tokens {
            match self.dtype {
                TokenDtype::Uint16 => self.file.write_all(&(t as u16).to_le_bytes()),
                TokenDtype::Uint32 => self.file.write_all(&t.to_le_bytes()),
            }
            .map_err(io)?;
        }
        self.count += tokens.len() as u64;
        Ok(())
    }

    /// Writes the header, flushes and syncs; returns the token count.
    pub fn finish(mut self) -> Result<u64, DataError> {
        let io = |e| DataError::io(&self.path, e);
        if self.format == TokenFormat::LlmC {
            let count = i32::try_from(self.count).map_err(|_| {
                DataError::BadTokenizer(format!(
                    "{} tokens exceed an llm.c shard's int32 count; use --format nanogpt",
                    self.count
                ))
            })?;
            let mut header = [0u8; HEADER_BYTES];
            for (i, v) in [MAGIC, self.dtype.version(), count].into_iter().enumerate() {
                header[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
            self.file.seek(SeekFrom::Start(0)).map_err(io)?;
            self.file.write_all(&header).map_err(io)?;
        }
        let file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(self.count)
    }
}

/// A memory-mapped token file.
#[derive(Debug)]
pub struct TokenFile {
    map: Mmap,
    path: PathBuf,
    offset: usize,
    dtype: TokenDtype,
    len: usize,
    vocab_size: usize,
}

impl TokenFile {
    /// Maps `path`, checking its header (llm.c) or size (nanoGPT) against the file's
    /// length. Ids are checked against `vocab_size` as windows are read.
    pub fn open(
        path: &Path,
        format: TokenFormat,
        vocab_size: usize,
    ) -> Result<TokenFile, DataError> {
        let bad = |reason: String| DataError::BadTokenFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        // SAFETY: the map is read-only; quill writes token files once, atomically, and
        // never modifies them in place. Another program truncating the file while it is
        // mapped is outside what any reader can guard against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        // Windows are drawn at random offsets: read-ahead would only fill memory.
        let _ = map.advise(Advice::Random);
        let bytes = map.len();
        let (offset, dtype, len) = match format {
            TokenFormat::NanoGpt => {
                if bytes % 2 != 0 {
                    return Err(bad(format!(
                        "{bytes} bytes is not a whole number of uint16 tokens"
                    )));
                }
                (0, TokenDtype::Uint16, bytes / 2)
            }
            TokenFormat::LlmC => {
                if bytes < HEADER_BYTES {
                    return Err(bad(format!(
                        "{bytes} bytes is shorter than the 1024-byte header"
                    )));
                }
                let int = |i: usize| {
                    i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().expect("4 bytes"))
                };
                if int(0) != MAGIC {
                    return Err(bad(format!(
                        "magic number {} is not llm.c's {MAGIC}",
                        int(0)
                    )));
                }
                let dtype = match int(1) {
                    1 => TokenDtype::Uint16,
                    7 => TokenDtype::Uint32,
                    v => return Err(bad(format!("unknown version {v} (1: uint16, 7: uint32)"))),
                };
                let count = usize::try_from(int(2))
                    .map_err(|_| bad(format!("negative token count {}", int(2))))?;
                let held = (bytes - HEADER_BYTES) / dtype.width();
                if count * dtype.width() != bytes - HEADER_BYTES {
                    return Err(bad(format!(
                        "the header says {count} tokens but the file holds {held} (truncated or foreign)"
                    )));
                }
                (HEADER_BYTES, dtype, count)
            }
        };
        if dtype == TokenDtype::Uint16 && vocab_size > 1 << 16 {
            return Err(bad(format!(
                "uint16 tokens cannot hold a vocabulary of {vocab_size}"
            )));
        }
        Ok(TokenFile {
            map,
            path: path.to_path_buf(),
            offset,
            dtype,
            len,
            vocab_size,
        })
    }

    /// Tokens in the file.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The token width.
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    /// Appends tokens `start..start + n` to `out`; an id outside the vocabulary is an
    /// error (the file does not belong to this tokenizer).
    pub fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError> {
        assert!(
            start + n <= self.len,
            "window {start}+{n} past {}",
            self.len
        );
        let w = self.dtype.width();
        let bytes = &self.map[self.offset + start * w..self.offset + (start + n) * w];
        let first = out.len();
        match self.dtype {
            TokenDtype::Uint16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            ),
            TokenDtype::Uint32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        self.release(self.offset + start * w, n * w);
        if let Some(&id) = out[first..]
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(DataError::BadTokenFile {
                path: self.path.clone(),
                reason: format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    self.vocab_size
                ),
            });
        }
        Ok(())
    }
}

impl TokenFile {
    /// Unmaps the pages around bytes `offset..offset + len` once a window is copied out,
    /// so that the resident set does not grow with the windows read: a kernel that
    /// keeps the page cache in large folios maps up to 2 MiB around each fault (measured:
    /// +240 MiB of file pages over 50 steps on a 1 GB corpus without this). The pages
    /// stay in the page cache; the next read of them faults them back in.
    fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        {
            const SPAN: usize = 2 << 20;
            let start = offset / SPAN * SPAN;
            let end = ((offset + len).div_ceil(SPAN) * SPAN).min(self.map.len());
            // SAFETY: the map is read-only and file-backed: MADV_DONTNEED only drops this
            // process's page-table entries; the data is read from the file again on the
            // next access, and no reference into the range outlives `read_window`.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, format: TokenFormat, dtype: TokenDtype, tokens: &[u32]) -> u64 {
        let mut w = TokenWriter::create(path, format, dtype).unwrap();
        w.push(&tokens[..2]).unwrap();
        w.push(&tokens[2..]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn llmc_header_is_llm_cs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        assert_eq!(
            write(&path, TokenFormat::LlmC, TokenDtype::Uint16, &[1, 2, 65535]),
            3
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1024 + 6);
        assert_eq!(&bytes[..12], &[136, 216, 52, 1, 1, 0, 0, 0, 3, 0, 0, 0]);
        assert!(bytes[12..1024].iter().all(|&b| b == 0));
        assert_eq!(&bytes[1024..], &[1, 0, 2, 0, 255, 255]);
        let file = TokenFile::open(&path, TokenFormat::LlmC, 65536).unwrap();
        let mut out = vec![];
        file.read_window(1, 2, &mut out).unwrap();
        assert_eq!(out, vec![2, 65535]);
    }

    #[test]
    fn uint32_and_nanogpt_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bin");
        write(
            &path,
            TokenFormat::LlmC,
            TokenDtype::Uint32,
            &[70_000, 0, 5],
        );
        let file = TokenFile::open(&path, TokenFormat::LlmC, 100_000).unwrap();
        assert_eq!((file.len(), file.dtype()), (3, TokenDtype::Uint32));
        let mut out = vec![];
        file.read_window(0, 3, &mut out).unwrap();
        assert_eq!(out, vec![70_000, 0, 5]);

        let path = dir.path().join("c.bin");
        write(
            &path,
            TokenFormat::NanoGpt,
            TokenDtype::Uint16,
            &[7, 8, 9, 10],
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![7, 0, 8, 0, 9, 0, 10, 0]);
        assert_eq!(
            TokenFile::open(&path, TokenFormat::NanoGpt, 11)
                .unwrap()
                .len(),
            4
        );
        assert!(TokenWriter::create(&path, TokenFormat::NanoGpt, TokenDtype::Uint32).is_err());
    }

    #[test]
    fn corrupted_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.bin");
        write(&good, TokenFormat::LlmC, TokenDtype::Uint16, &[1, 2, 3, 4]);
        let bytes = std::fs::read(&good).unwrap();
        let cases: [(&str, Vec<u8>, &str); 5] = [
            (
                "short",
                bytes[..100].to_vec(),
                "shorter than the 1024-byte header",
            ),
            (
                "truncated",
                bytes[..bytes.len() - 2].to_vec(),
                "header says 4 tokens but the file holds 3",
            ),
            (
                "magic",
                [&[0u8; 4][..], &bytes[4..]].concat(),
                "magic number 0",
            ),
            (
                "version",
                [&bytes[..4], &[9, 0, 0, 0], &bytes[8..]].concat(),
                "unknown version 9",
            ),
            ("odd", vec![1, 2, 3], "not a whole number"),
        ];
        for (name, content, message) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let format = if name == "odd" {
                TokenFormat::NanoGpt
            } else {
                TokenFormat::LlmC
            };
            let err = TokenFile::open(&path, format, 10).unwrap_err().to_string();
            assert!(err.contains(message), "{name}: {err}");
        }
        // Ids the vocabulary does not have: a file of another tokenizer.
        let file = TokenFile::open(&good, TokenFormat::LlmC, 3).unwrap();
        let err = file.read_window(0, 4, &mut vec![]).unwrap_err().to_string();
        assert!(
            err.contains("token id 3 is outside the vocabulary of 3 tokens"),
            "{err}"
        );
    }
}
