//! Downloading a known corpus over HTTP (feature `download`), verified before it lands.

use std::io::Read;
use std::path::Path;

use crate::corpus::{KnownCorpus, write_verified};
use crate::{Corpus, DataError};

/// Downloads `known` to `dest`, verifying its checksum; nothing lands unless it matches.
/// `progress(bytes_so_far, total_bytes)` is called as bytes arrive (the total from the
/// server, else the expected size), so the caller can draw a progress bar.
pub fn fetch(
    known: &KnownCorpus,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), DataError> {
    let download_error = |reason: String| DataError::Download {
        url: known.url.to_string(),
        reason,
    };
    let mut response = ureq::get(known.url)
        .call()
        .map_err(|e| download_error(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(known.len);
    let reader = Reporting {
        inner: response.body_mut().as_reader(),
        read: 0,
        progress: |read| progress(read, total),
    };
    write_verified(reader, dest, known.sha256)
}

/// Downloads `url` to `dest`, streamed through a temporary file that is renamed into
/// place only when complete: as many bytes as the server announced, if it did.
/// `progress(bytes_so_far, total_bytes)` as in [`fetch`] (total 0 when unknown).
/// Returns the number of bytes written.
pub fn fetch_url(
    url: &str,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, DataError> {
    let download_error = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let mut response = ureq::get(url)
        .call()
        .map_err(|e| download_error(e.to_string()))?;
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut reader = Reporting {
        inner: response.body_mut().with_config().limit(u64::MAX).reader(),
        read: 0,
        progress: |read| progress(read, total.unwrap_or(0)),
    };
    let mut written = 0;
    crate::atomic::write_with(dest, |file| {
        written = std::io::copy(&mut reader, file)?;
        match total {
            Some(total) if total != written => Err(std::io::Error::other(format!(
                "the download ended after {written} of {total} bytes"
            ))),
            _ => Ok(()),
        }
    })?;
    Ok(written)
}

/// A reader that reports how many bytes have passed through it.
struct Reporting<R, F> {
    inner: R,
    read: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for Reporting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

impl Corpus {
    /// Reads the known corpus at `path`, downloading it first (see [`fetch`]) if it is
    /// missing, and verifying its checksum either way.
    pub fn read_or_fetch(
        known: &KnownCorpus,
        path: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<Corpus, DataError> {
        if !path.exists() {
            fetch(known, path, progress)?;
        }
        Corpus::read_verified(known, path)
    }
}
