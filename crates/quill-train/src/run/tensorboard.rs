//! TensorBoard event files, written directly: the format is small.
//!
//! A file is a sequence of records — a little-endian `u64` length, the masked CRC-32C
//! of those 8 bytes, the data, the masked CRC-32C of the data — each holding one
//! protobuf `Event` (tensorflow/core/util/event.proto): the first says
//! `file_version: "brain.Event:2"`, the others carry a `Summary` of values at a step.
//! Scalars are `simple_value`s; text is a string tensor with the `text` plugin's
//! metadata, as `tf.summary.text` writes it. Only the fields quill writes are encoded
//! (and read back, to cut a resumed run's file at its checkpoint).
//!
//! The files are named `events.out.tfevents.<seconds>.<nanoseconds>.quill`: TensorBoard
//! reads any name with `tfevents` in it, and the `.quill` ending marks the files quill
//! wrote, the only ones it removes.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::TrainError;

const PREFIX: &str = "events.out.tfevents.";
const SUFFIX: &str = ".quill";
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// An event file being written; records are buffered until [`EventFile::flush`].
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl EventFile {
    /// A new event file in `dir`, starting with the file-version event.
    pub fn create(dir: &Path) -> Result<EventFile, TrainError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!(
            "{PREFIX}{:010}.{:09}{SUFFIX}",
            now.as_secs(),
            now.subsec_nanos()
        ));
        let file = File::options()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        let mut events = EventFile {
            path,
            writer: BufWriter::new(file),
        };
        let mut event = Vec::new();
        field_f64(&mut event, 1, wall_time());
        field_bytes(&mut event, 3, b"brain.Event:2");
        events.record(&event)?;
        Ok(events)
    }

    /// Scalars `(tag, value)` at `step`, in one event.
    pub fn scalars(&mut self, step: usize, values: &[(&str, f64)]) -> Result<(), TrainError> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            field_bytes(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            field_bytes(&mut summary, 1, &v);
        }
        self.summary(step, &summary)
    }

    /// `text` under `tag` at `step` (TensorBoard's Text tab renders it as Markdown).
    pub fn text(&mut self, step: usize, tag: &str, text: &str) -> Result<(), TrainError> {
        let mut plugin = Vec::new();
        field_bytes(&mut plugin, 1, b"text");
        let mut metadata = Vec::new();
        field_bytes(&mut metadata, 1, &plugin);
        let mut tensor = Vec::new();
        key(&mut tensor, 1, 0);
        varint(&mut tensor, 7); // DT_STRING
        field_bytes(&mut tensor, 2, &[]); // a scalar: no dimensions
        field_bytes(&mut tensor, 8, text.as_bytes());
        let mut v = Vec::new();
        field_bytes(&mut v, 1, tag.as_bytes());
        field_bytes(&mut v, 8, &tensor);
        field_bytes(&mut v, 9, &metadata);
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, &v);
        self.summary(step, &summary)
    }

    /// Writes the buffered records to the file.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        let path = &self.path;
        self.writer.flush().map_err(|e| TrainError::io(path, e))
    }

    fn summary(&mut self, step: usize, summary: &[u8]) -> Result<(), TrainError> {
        let mut event = Vec::new();
        field_f64(&mut event, 1, wall_time());
        key(&mut event, 2, 0);
        varint(&mut event, step as u64);
        field_bytes(&mut event, 5, summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<(), TrainError> {
        let path = &self.path;
        self.writer
            .write_all(&frame(data))
            .map_err(|e| TrainError::io(path, e))
    }
}

/// One record: length, its masked CRC, the data, its masked CRC.
fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TensorFlow's masked CRC-32C: rotated right by 15 bits, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_f64(out: &mut Vec<u8>, field: u64, value: f64) {
    key(out, field, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

/// The event files quill wrote in `dir`, oldest first.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// The data of each whole record of the event file at `path`, up to the first torn or
/// corrupt one (a writer killed mid-record).
pub fn read_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes =
        quill_data::files::read_regular(path, quill_data::files::RECORD_LIMIT).unwrap_or_default();
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 12) {
        let (length, crc) = head.split_at(8);
        let len = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
        if masked_crc(length) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            break;
        }
        let Some(data) = bytes.get(at + 12..(at + 12).saturating_add(len)) else {
            break;
        };
        let Some(tail) = bytes.get(at + 12 + len..at + 16 + len) else {
            break;
        };
        if masked_crc(data) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
            break;
        }
        records.push(data.to_vec());
        at += 16 + len;
    }
    records
}

/// An event's step and the tags of its summary values (none for the file-version
/// event); `None` for bytes that are not an event quill writes.
pub fn step_and_tags(event: &[u8]) -> Option<(u64, Vec<String>)> {
    let (mut step, mut tags) = (0, Vec::new());
    for (field, value) in fields(event)? {
        match (field, value) {
            (2, Field::Varint(v)) => step = v,
            (5, Field::Bytes(summary)) => {
                for (f, value) in fields(summary)? {
                    if let (1, Field::Bytes(v)) = (f, value) {
                        for (f, tag) in fields(v)? {
                            if let (1, Field::Bytes(tag)) = (f, tag) {
                                tags.push(String::from_utf8_lossy(tag).into_owned());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some((step, tags))
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The top-level fields of a protobuf message; `None` if it does not parse.
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let k = read_varint(&mut bytes)?;
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut bytes)?),
            1 | 5 => {
                let n = if k & 7 == 1 { 8 } else { 4 };
                bytes = bytes.get(n..)?;
                Field::Fixed
            }
            2 => {
                let n = read_varint(&mut bytes)? as usize;
                let (data, rest) = (bytes.get(..n)?, bytes.get(n..)?);
                bytes = rest;
                Field::Bytes(data)
            }
            _ => return None,
        };
        out.push((k >> 3, field));
    }
    Some(out)
}

/// Keeps, of every event file quill wrote in `dir`, the events `keep(step, tags)`
/// accepts, in one new file (written whole before the old ones are removed), which it
/// returns open for more. Used on resume: the resumed run continues the curves from
/// its checkpoint without the steps a stopped run recorded past it.
pub fn keep_events(
    dir: &Path,
    keep: impl Fn(u64, &[String]) -> bool,
) -> Result<EventFile, TrainError> {
    let old = event_files(dir);
    let mut kept = Vec::new();
    // A rewrite killed before it removed the old files left their events twice: each
    // step's values are kept once.
    let mut seen = std::collections::HashSet::new();
    for file in &old {
        for record in read_records(file) {
            match step_and_tags(&record) {
                // The old files' version events: the new file has its own.
                Some((_, tags)) if tags.is_empty() => {}
                Some((step, tags)) if keep(step, &tags) && seen.insert((step, tags.clone())) => {
                    kept.push(record)
                }
                _ => {}
            }
        }
    }
    let mut events = EventFile::create(dir)?;
    for record in &kept {
        events.record(record)?;
    }
    events.flush()?;
    events
        .writer
        .get_ref()
        .sync_all()
        .map_err(|e| TrainError::io(&events.path, e))?;
    for file in old.iter().filter(|f| *f != &events.path) {
        fs::remove_file(file).map_err(|e| TrainError::io(file, e))?;
    }
    Ok(events)
}

/// Removes the event files quill wrote in `dir` (a fresh run's start).
pub fn remove_event_files(dir: &Path) -> Result<(), TrainError> {
    for file in event_files(dir) {
        fs::remove_file(&file).map_err(|e| TrainError::io(&file, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // CRC-32C's check value; TensorBoard's own reader checks the masked records
        // (scripts/tensorboard_check.py).
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = EventFile::create(dir.path()).unwrap();
        events
            .scalars(3, &[("train/loss", 2.5), ("train/lr", 1e-3)])
            .unwrap();
        events.text(4, "eval/sample", "ROMEO:\nhi").unwrap();
        events.flush().unwrap();
        let path = events.path.clone();
        let records = read_records(&path);
        let parsed: Vec<_> = records.iter().map(|r| step_and_tags(r).unwrap()).collect();
        assert_eq!(
            parsed,
            [
                (0, vec![]),
                (3, vec!["train/loss".to_string(), "train/lr".to_string()]),
                (4, vec!["eval/sample".to_string()]),
            ]
        );
        // A record cut short by a killed writer ends the file's readable part.
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, bytes).unwrap();
        assert_eq!(read_records(&path).len(), 2);
        // Keeping steps ≤ 3 leaves one file with the version event and step 3.
        drop(events);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let kept = keep_events(dir.path(), |step, _| step <= 3).unwrap();
        assert_eq!(event_files(dir.path()), std::slice::from_ref(&kept.path));
        assert_eq!(read_records(&kept.path).len(), 2);
        // A rewrite killed before removing the old file: the events are kept once.
        let copy = dir
            .path()
            .join("events.out.tfevents.0000000000.000000000.quill");
        fs::copy(&kept.path, &copy).unwrap();
        drop(kept);
        let kept = keep_events(dir.path(), |_, _| true).unwrap();
        assert_eq!(read_records(&kept.path).len(), 2);
        // Files that are not quill's are left alone.
        fs::write(dir.path().join("events.out.tfevents.1.other"), b"x").unwrap();
        remove_event_files(dir.path()).unwrap();
        assert!(dir.path().join("events.out.tfevents.1.other").exists());
        assert!(event_files(dir.path()).is_empty());
    }
}
