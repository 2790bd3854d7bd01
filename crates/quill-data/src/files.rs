//! Reading files that may come from elsewhere: regular files only, each kind with a size
//! bound, so that a FIFO never hangs a command and a link to `/dev/zero` or a huge file
//! never fills the memory.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// The most bytes of a JSON settings or state file (`config.json`, `state.json`,
/// `meta.json`): real ones are a few kilobytes.
pub const JSON_LIMIT: u64 = 1 << 20;
/// The most bytes of a tokenizer file (GPT-2's `tokenizer.json` is 1.4 MB).
pub const TOKENIZER_LIMIT: u64 = 64 << 20;
/// The most bytes of a run's record (`metrics.jsonl`, `steps.jsonl`).
pub const RECORD_LIMIT: u64 = 1 << 30;

/// Opens `path` for reading if it is a regular file (following links), without
/// blocking on a FIFO: anything else is an error naming what it is.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading waits for a writer unless non-blocking.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a regular file (a {}); quill reads only regular files",
                describe(kind)
            ),
        ));
    }
    Ok(file)
}

/// The bytes of the regular file `path`, which may hold at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    let too_big = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes or more, past the {limit} a file of its kind may hold"),
        )
    };
    if len > limit {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
}

fn describe(kind: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "device";
        }
        if kind.is_socket() {
            return "socket";
        }
    }
    match kind.is_dir() {
        true => "directory",
        false => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_their_bound_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        fs::write(&file, "{}").unwrap();
        assert_eq!(read_regular(&file, 2).unwrap(), b"{}");
        let err = read_regular(&file, 1).unwrap_err().to_string();
        assert_eq!(
            err,
            "2 bytes or more, past the 1 a file of its kind may hold"
        );
        let err = read_regular(dir.path(), 10).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a directory)"), "{err}");
        #[cfg(unix)]
        {
            let zero = dir.path().join("zero");
            std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
            let err = read_regular(&zero, 10).unwrap_err().to_string();
            assert!(err.contains("not a regular file (a device)"), "{err}");
            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let err = read_regular(&fifo, 10).unwrap_err().to_string();
            assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        }
    }
}
