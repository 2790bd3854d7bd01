//! Atomic writes of files and directories, the directories quill owns, and the
//! clean-up after writers that were killed: a reader sees a path either absent, or
//! complete, and quill replaces or removes only what it wrote itself.
//!
//! A directory quill writes whole (a checkpoint, a dataset, an export, a run) carries a
//! [`Marker`]: a JSON file whose `format` field is quill's tag for that kind of
//! directory. [`replace_dir`] writes only over a directory that is absent, empty or
//! carries its marker ([`check_owned`]); anything else is refused with the names found.
//!
//! | entry | what | left behind when a writer is killed |
//! |---|---|---|
//! | `.FILE.PID.tmp` | a file being written ([`write_file`]) | removed by [`recover_files`], for the file names asked for |
//! | `.NAME.tmp-PID/` | a directory being written ([`replace_dir`]), holding [`PARTIAL`] until complete | removed, or renamed into place when `NAME` is missing ([`recover_dir`]) |
//! | `.NAME.old-PID/` | the directory being replaced (it carries its marker) | removed, or put back |
//!
//! Leftovers are touched only when the process `PID` is gone, and a temporary
//! directory only when it carries [`PARTIAL`] or the marker: a user's directory that
//! merely has such a name is left alone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::DataError;

/// The file inside a directory being written by [`replace_dir`]; it holds the tag of
/// the [`Marker`] the directory will carry, and is removed just before the directory
/// is renamed into place.
pub const PARTIAL: &str = ".quill-partial";

/// How quill recognises a directory of its own: `dir/file` is a JSON object whose
/// `format` field is `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The marker file's name inside the directory.
    pub file: &'static str,
    /// Its `format` tag.
    pub format: &'static str,
    /// Files quill writes in some directories of this kind and not in others (the
    /// tokenizer's files): replacing one such directory by another drops them. Any
    /// other file the new directory lacks is a user's, and [`replace_dir`] refuses.
    /// One `*` stands for any text (`train*.bin`).
    pub alternates: &'static [&'static str],
}

impl Marker {
    /// Whether `dir` carries this marker, with this tag.
    pub fn is_on(&self, dir: &Path) -> bool {
        let Ok(bytes) = crate::files::read_regular(&dir.join(self.file), crate::files::JSON_LIMIT)
        else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .is_ok_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(self.format))
    }

    /// The marker's content: `{"format": TAG}` (for directories whose marker holds
    /// nothing else).
    pub fn content(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "format": self.format }))
            .expect("a JSON value serialises")
    }

    /// Whether `dir` carries [`PARTIAL`] with this marker's tag: a directory quill was
    /// filling, or removing (see [`remove_marked`]).
    fn is_partial(&self, dir: &Path) -> bool {
        crate::files::read_regular(&dir.join(PARTIAL), crate::files::JSON_LIMIT)
            .is_ok_and(|tag| tag == self.format.as_bytes())
    }

    /// Whether `dir` is a temporary directory [`replace_dir`] was filling for this
    /// marker, or a complete one (see the module table).
    fn is_temporary_of(&self, dir: &Path) -> bool {
        self.is_partial(dir) || self.is_on(dir)
    }
}

/// Checks that quill may write `dir` as a directory marked by `marker`: it is absent,
/// an empty directory, or carries the marker. Otherwise [`DataError::NotOurs`], which
/// names what is there.
pub fn check_owned(dir: &Path, marker: &Marker) -> Result<(), DataError> {
    let names = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err(DataError::NotOurs {
                path: dir.to_path_buf(),
                found: "is a file".into(),
            });
        }
        Err(e) => return Err(DataError::io(dir, e)),
    };
    if names.is_empty() || marker.is_on(dir) {
        return Ok(());
    }
    Err(not_ours(dir, names))
}

/// [`DataError::NotOurs`] for `dir`, naming up to three of its entries.
pub fn not_ours(dir: &Path, mut names: Vec<String>) -> DataError {
    names.sort();
    let more = names.len() > 3;
    names.truncate(3);
    if more {
        names.push("…".into());
    }
    DataError::NotOurs {
        path: dir.to_path_buf(),
        found: format!("holds files quill did not write ({})", names.join(", ")),
    }
}

/// `path`'s parent directory (`.` for a bare file name), created if missing.
fn parent_of(path: &Path) -> Result<&Path, DataError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    Ok(dir)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Makes the entries of `dir` (a rename into it, a file created in it) durable: a
/// rename is only on disk once its directory is (a no-op where directories cannot be
/// opened, as on Windows).
pub fn sync_dir(dir: &Path) -> Result<(), DataError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DataError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `dest` through a temporary file, `fsync` and a rename (then an
/// `fsync` of the directory), creating parent directories as needed.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_with(dest, |file| file.write_all(bytes))
}

/// [`write_file`] for content that `fill` streams into the temporary file; nothing
/// lands at `dest` unless `fill` succeeds.
pub fn write_with(
    dest: &Path,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<(), DataError> {
    let dir = parent_of(dest)?;
    // This process's own temporary name: one left by an earlier process that had the
    // same id (a container's processes often do) is overwritten.
    let tmp = dir.join(format!(".{}.{}.tmp", file_name(dest), std::process::id()));
    let mut opened = false;
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        opened = true;
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        // Only the file this call wrote into: one it could not open stays as it is.
        if opened {
            let _ = fs::remove_file(&tmp);
        }
        return Err(DataError::io(dest, e));
    }
    sync_dir(dir)
}

/// Replaces the directory `dest` by one that `fill` writes, which must put `marker` in
/// it. `dest` must be absent, empty or already carry `marker` ([`check_owned`]).
/// `fill` gets an empty temporary directory beside `dest`, which is renamed into place
/// only when `fill` succeeds (the old `dest`, if any, is moved aside first and removed
/// last). What killed writers of `dest` left beside it is cleaned up first
/// ([`recover_dir`]).
pub fn replace_dir<E: From<DataError>>(
    dest: &Path,
    marker: &Marker,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    check_owned(dest, marker)?;
    let dir = parent_of(dest)?;
    recover_dir(dest, marker)?;
    let (name, pid) = (file_name(dest), std::process::id());
    let tmp = dir.join(format!(".{name}.tmp-{pid}"));
    let old = dir.join(format!(".{name}.old-{pid}"));
    fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let filled = write_file(&tmp.join(PARTIAL), marker.format.as_bytes())
        .map_err(E::from)
        .and_then(|()| fill(&tmp))
        .and_then(|()| match marker.is_on(&tmp) {
            true => Ok(()),
            false => Err(E::from(DataError::io(
                tmp.join(marker.file),
                std::io::Error::other("the writer put no format marker here"),
            ))),
        });
    if let Err(e) = filled {
        let _ = remove_marked(&tmp, marker);
        return Err(e);
    }
    // A user's file inside quill's directory is never replaced away.
    let foreign = foreign_names(dest, &tmp, marker);
    if !foreign.is_empty() {
        let _ = remove_marked(&tmp, marker);
        return Err(E::from(not_ours(dest, foreign)));
    }
    let publish = || -> Result<(), DataError> {
        fs::remove_file(tmp.join(PARTIAL)).map_err(|e| DataError::io(&tmp, e))?;
        if dest.exists() {
            fs::rename(dest, &old).map_err(|e| DataError::io(dest, e))?;
        }
        fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))?;
        sync_dir(dir)
    };
    publish()?;
    if old.exists() {
        let _ = remove_marked(&old, marker);
    }
    Ok(())
}

/// The names in `dest` (an existing directory) that `written` (its replacement) lacks
/// and that `marker`'s kind of directory never holds: a user's files.
fn foreign_names(dest: &Path, written: &Path, marker: &Marker) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let new = names(written);
    names(dest)
        .into_iter()
        .filter(|n| !new.contains(n) && !marker.alternates.iter().any(|a| matches(a, n)))
        .collect()
}

/// Whether `name` is `pattern`, whose one `*` (if any) stands for any text.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

/// Removes the directory `dir` that quill wrote, recoverably: it is marked
/// [`PARTIAL`] first and the mark goes last, so that a removal killed part way leaves a
/// directory [`recover_dir`] still knows as quill's and finishes removing.
fn remove_marked(dir: &Path, marker: &Marker) -> Result<(), DataError> {
    if !marker.is_partial(dir) {
        write_file(&dir.join(PARTIAL), marker.format.as_bytes())?;
    }
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name() == PARTIAL {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => fs::remove_dir_all(&path),
            false => fs::remove_file(&path),
        };
        removed.map_err(|e| DataError::io(&path, e))?;
    }
    fs::remove_file(dir.join(PARTIAL)).map_err(|e| DataError::io(dir, e))?;
    fs::remove_dir(dir).map_err(|e| DataError::io(dir, e))
}

/// Whether the process `pid` may still be running (and so still writing). This
/// process does not count: the recovery runs before it writes the entries it cleans
/// up, and what carries its id was left by an earlier process that had the same id (a
/// container's processes often do). Where the question cannot be asked, every other
/// process counts as running.
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let found = unsafe { libc::kill(pid, 0) } == 0;
        found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    true
}

/// The process id in `name` after `prefix` and before `suffix`, if that is all digits.
fn pid_in(name: &str, prefix: &str, suffix: &str) -> Option<u32> {
    let pid = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    match !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
        true => pid.parse().ok(),
        false => None,
    }
}

/// Cleans up what killed writers of the directory `dest` ([`replace_dir`]) left beside
/// it: `.NAME.tmp-PID/` and `.NAME.old-PID/` of processes that are gone, and only those
/// that are quill's (the old one carries `marker`, the new one [`PARTIAL`] or
/// `marker`). When `dest` is missing, the newest complete one is put in its place.
/// Returns one line per entry handled.
pub fn recover_dir(dest: &Path, marker: &Marker) -> Result<Vec<String>, DataError> {
    let dir = parent_of(dest)?;
    let name = file_name(dest);
    let (tmp_prefix, old_prefix) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    // (is the new one, path) of every leftover that is quill's.
    let mut leftovers: Vec<(bool, PathBuf)> = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let (newer, pid) = match (
            pid_in(&entry_name, &tmp_prefix, ""),
            pid_in(&entry_name, &old_prefix, ""),
        ) {
            (Some(pid), _) => (true, pid),
            (None, Some(pid)) => (false, pid),
            (None, None) => continue,
        };
        let path = entry.path();
        // A directory being removed carries PARTIAL too (see `remove_marked`).
        let ours = marker.is_temporary_of(&path);
        if ours && !alive(pid) && path.is_dir() {
            leftovers.push((newer, path));
        }
    }
    let mut notes = Vec::new();
    if !dest.exists() {
        // A writer was killed between its two renames (or before its only one): the
        // new directory, once complete, else the old one, goes back in place.
        let complete = |path: &Path| marker.is_on(path) && !marker.is_partial(path);
        let source = leftovers
            .iter()
            .position(|(newer, path)| *newer && complete(path))
            .or_else(|| (leftovers.iter()).position(|(newer, path)| !newer && complete(path)));
        if let Some(i) = source {
            let (_, source) = leftovers.swap_remove(i);
            fs::rename(&source, dest).map_err(|e| DataError::io(dest, e))?;
            sync_dir(dir)?;
            notes.push(format!(
                "restored {name}/ from {}, left by a writer that was killed",
                file_name(&source)
            ));
        }
    }
    leftovers.sort();
    for (_, path) in leftovers {
        remove_marked(&path, marker)?;
        notes.push(format!(
            "removed {}, left by a writer that was killed",
            file_name(&path)
        ));
    }
    Ok(notes)
}

/// Removes the temporary files (`.FILE.PID.tmp`, see [`write_file`]) that killed
/// writers of `files` left in `dir`, for processes that are gone. Call it only on a
/// directory quill owns; returns one line per file removed.
pub fn recover_files(dir: &Path, files: &[&str]) -> Result<Vec<String>, DataError> {
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            files.iter().any(|file| {
                pid_in(name, &format!(".{file}."), ".tmp").is_some_and(|pid| !alive(pid))
            })
        })
        .collect();
    names.sort();
    let mut notes = Vec::new();
    for name in names {
        let path = dir.join(&name);
        if path.is_file() {
            fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
            notes.push(format!("removed {name}, left by a writer that was killed"));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: Marker = Marker {
        file: "state.json",
        format: "quill-test-v1",
        alternates: &["vocab.json"],
    };

    /// Process ids that no process has: Linux's ids stay below 2^22.
    const GONE: u32 = 4_194_305;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn checkpoint(dir: &Path, text: &str) {
        fs::create_dir_all(dir).unwrap();
        let state = serde_json::json!({"format": MARK.format, "text": text});
        fs::write(dir.join("state.json"), state.to_string()).unwrap();
    }

    fn text_of(dir: &Path) -> String {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("state.json")).unwrap()).unwrap();
        state["text"].as_str().unwrap().to_string()
    }

    #[test]
    fn only_absent_empty_or_marked_directories_are_ours() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        check_owned(&d.join("absent"), &MARK).unwrap();
        fs::create_dir(d.join("empty")).unwrap();
        check_owned(&d.join("empty"), &MARK).unwrap();
        checkpoint(&d.join("ours"), "x");
        check_owned(&d.join("ours"), &MARK).unwrap();
        // The marker's file with another tag, or none, is not quill's.
        fs::create_dir(d.join("theirs")).unwrap();
        fs::write(d.join("theirs/state.json"), r#"{"format": "other"}"#).unwrap();
        fs::write(d.join("theirs/main.rs"), "fn main() {}").unwrap();
        let err = check_owned(&d.join("theirs"), &MARK)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "theirs holds files quill did not write (main.rs, state.json); use an empty directory"
            ),
            "{err}"
        );
        fs::write(d.join("file"), "x").unwrap();
        let err = check_owned(&d.join("file"), &MARK).unwrap_err().to_string();
        assert!(
            err.ends_with("file is a file; use an empty directory"),
            "{err}"
        );
        for i in 0..5 {
            fs::write(d.join(format!("many{i}")), "").unwrap();
        }
        fs::create_dir(d.join("many")).unwrap();
        for i in 0..5 {
            fs::write(d.join(format!("many/{i}")), "").unwrap();
        }
        let err = check_owned(&d.join("many"), &MARK).unwrap_err().to_string();
        assert!(err.contains("(0, 1, 2, …)"), "{err}");
    }

    #[test]
    fn a_directory_quill_did_not_write_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("last");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("thesis.txt"), "years of work").unwrap();
        let err = replace_dir(&dest, &MARK, |tmp| -> Result<(), DataError> {
            write_file(&tmp.join("state.json"), &MARK.content())
        })
        .unwrap_err();
        assert!(matches!(err, DataError::NotOurs { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(dest.join("thesis.txt")).unwrap(),
            "years of work"
        );
        assert_eq!(names(dir.path()), ["last"]);
    }

    #[test]
    fn a_users_file_inside_quills_directory_is_never_replaced_away() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ckpt");
        checkpoint(&dest, "first");
        fs::write(dest.join("vocab.json"), "{}").unwrap();
        fs::create_dir(dest.join("src")).unwrap();
        fs::write(dest.join("src/main.rs"), "fn main() {}").unwrap();
        let write = |text: &str| {
            replace_dir(&dest, &MARK, |tmp| -> Result<(), DataError> {
                checkpoint(tmp, text);
                Ok(())
            })
        };
        let err = write("second").unwrap_err().to_string();
        assert!(
            err.ends_with("ckpt holds files quill did not write (src); use an empty directory"),
            "{err}"
        );
        assert_eq!(names(&dest), ["src", "state.json", "vocab.json"]);
        assert_eq!(text_of(&dest), "first");
        assert_eq!(names(dir.path()), ["ckpt"]);
        // Without the user's file, the replacement drops what quill wrote (the
        // tokenizer file of the other kind too).
        fs::remove_dir_all(dest.join("src")).unwrap();
        write("second").unwrap();
        assert_eq!(names(&dest), ["state.json"]);
        assert_eq!(text_of(&dest), "second");
    }

    #[test]
    fn a_removal_killed_part_way_is_finished_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        checkpoint(&d.join("last"), "new");
        // What remove_marked leaves when killed after the marker file went.
        let old = d.join(format!(".last.old-{GONE}"));
        fs::create_dir(&old).unwrap();
        fs::write(old.join(PARTIAL), MARK.format).unwrap();
        fs::write(old.join("model.safetensors"), "half").unwrap();
        let notes = recover_dir(&d.join("last"), &MARK).unwrap();
        assert_eq!(
            notes,
            [format!(
                ".last.old-{GONE}, left by a writer that was killed"
            )]
            .map(|n| format!("removed {n}"))
        );
        assert_eq!(names(d), ["last"]);
        // A half-removed old directory is never put back in place of a missing one.
        fs::create_dir(&old).unwrap();
        fs::write(old.join(PARTIAL), MARK.format).unwrap();
        fs::write(old.join("state.json"), MARK.content()).unwrap();
        fs::remove_dir_all(d.join("last")).unwrap();
        recover_dir(&d.join("last"), &MARK).unwrap();
        assert!(names(d).is_empty());
    }

    #[test]
    fn a_writer_must_leave_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let err = replace_dir(&dest, &MARK, |tmp| -> Result<(), DataError> {
            write_file(&tmp.join("other.json"), b"{}")
        })
        .unwrap_err();
        assert!(err.to_string().contains("no format marker"), "{err}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn killed_writers_leftovers_are_removed_or_restored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // best/ is in place; a killed write left its temporary beside it.
        checkpoint(&d.join("best"), "best");
        fs::create_dir(d.join(format!(".best.tmp-{GONE}"))).unwrap();
        fs::write(d.join(format!(".best.tmp-{GONE}/{PARTIAL}")), MARK.format).unwrap();
        // last/ was moved aside and its complete replacement not yet renamed in.
        checkpoint(&d.join(format!(".last.old-{}", GONE + 1)), "old");
        checkpoint(&d.join(format!(".last.tmp-{}", GONE + 1)), "new");
        fs::write(d.join(format!(".metrics.jsonl.{}.tmp", GONE + 2)), "{").unwrap();
        // Left by an earlier process with this process's id (as in a container).
        let me = std::process::id();
        fs::write(d.join(format!(".steps.jsonl.{me}.tmp")), "{").unwrap();
        fs::write(d.join("notes.txt"), "mine").unwrap();
        let mut notes = recover_dir(&d.join("last"), &MARK).unwrap();
        notes.extend(recover_dir(&d.join("best"), &MARK).unwrap());
        notes.extend(recover_files(d, &["metrics.jsonl", "steps.jsonl"]).unwrap());
        assert_eq!(text_of(&d.join("best")), "best");
        assert_eq!(text_of(&d.join("last")), "new");
        assert_eq!(fs::read_to_string(d.join("notes.txt")).unwrap(), "mine");
        assert_eq!(names(d), ["best", "last", "notes.txt"]);
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert!(notes[0].starts_with(&format!("restored last/ from .last.tmp-{}", GONE + 1)));
    }

    /// Names of the shapes quill uses, which quill did not write or whose writer still
    /// runs, are left exactly as they are.
    #[cfg(unix)]
    #[test]
    fn entries_that_only_look_like_leftovers_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let running = std::os::unix::process::parent_id();
        // A user's directories and files with quill-like names.
        fs::create_dir(d.join(format!(".notes.tmp-{GONE}"))).unwrap();
        fs::write(d.join(format!(".notes.tmp-{GONE}/draft.txt")), "draft").unwrap();
        fs::create_dir(d.join(format!(".photos.old-{GONE}"))).unwrap();
        fs::write(d.join(format!(".photos.old-{GONE}/cat.jpg")), "cat").unwrap();
        fs::create_dir(d.join(format!(".last.tmp-{GONE}"))).unwrap();
        fs::write(d.join(format!(".last.tmp-{GONE}/thesis.txt")), "thesis").unwrap();
        fs::write(d.join(".report.2024.tmp"), "report").unwrap();
        // quill's own, but its writer still runs (the process that started the tests).
        checkpoint(&d.join(format!(".best.old-{running}")), "theirs");
        fs::write(d.join(format!(".metrics.jsonl.{running}.tmp")), "{").unwrap();
        let before = names(d);
        let mut notes = Vec::new();
        for name in ["notes", "photos", "last", "best"] {
            notes.extend(recover_dir(&d.join(name), &MARK).unwrap());
        }
        notes.extend(recover_files(d, &["metrics.jsonl", "steps.jsonl"]).unwrap());
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(names(d), before);
        let read = |p: String| fs::read_to_string(d.join(p)).unwrap();
        assert_eq!(read(format!(".notes.tmp-{GONE}/draft.txt")), "draft");
        assert_eq!(read(format!(".photos.old-{GONE}/cat.jpg")), "cat");
        assert_eq!(read(format!(".last.tmp-{GONE}/thesis.txt")), "thesis");
    }

    #[test]
    fn a_failed_fill_leaves_the_old_directory_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("last");
        let write = |text: &'static str, ok: bool| {
            replace_dir(&dest, &MARK, |tmp| -> Result<(), DataError> {
                let state = serde_json::json!({"format": MARK.format, "text": text});
                write_file(&tmp.join("state.json"), state.to_string().as_bytes())?;
                match ok {
                    true => Ok(()),
                    false => Err(DataError::Empty(tmp.to_path_buf())),
                }
            })
        };
        write("one", true).unwrap();
        write("two", false).unwrap_err();
        assert_eq!(text_of(&dest), "one");
        write("three", true).unwrap();
        assert_eq!(text_of(&dest), "three");
        assert_eq!(names(dir.path()), ["last"]);
        assert_eq!(names(&dest), ["state.json"]);
    }
}
