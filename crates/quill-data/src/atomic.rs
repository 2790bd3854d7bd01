//! Atomic writes of files and directories, and the clean-up after writers that were
//! killed mid-write: a reader sees a path either absent, or complete.
//!
//! | entry | what | left behind when a writer is killed |
//! |---|---|---|
//! | `.FILE.PID.tmp` | a file being written ([`write_file`]) | removed by [`recover`] |
//! | `.NAME.tmp-PID/` | a directory being written ([`replace_dir`]) | removed, or renamed into place when the old one was already moved aside |
//! | `.NAME.old-PID/` | the directory being replaced | removed, or put back |

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::DataError;

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

/// Writes `bytes` to `dest` through a temporary file, `fsync` and a rename, creating
/// parent directories as needed.
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
    let tmp = dir.join(format!(".{}.{}.tmp", file_name(dest), std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        DataError::io(dest, e)
    })
}

/// Replaces the directory `dest` by one that `fill` writes: `fill` gets an empty
/// temporary directory beside `dest`, which is renamed into place only when `fill`
/// succeeds (the old `dest`, if any, is moved aside first and removed last).
pub fn replace_dir<E: From<DataError>>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let dir = parent_of(dest)?;
    let (name, pid) = (file_name(dest), std::process::id());
    let tmp = dir.join(format!(".{name}.tmp-{pid}"));
    let old = dir.join(format!(".{name}.old-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dest.exists() {
        fs::rename(dest, &old).map_err(|e| DataError::io(dest, e))?;
    }
    fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Where a temporary entry came from (see the module table).
enum Leftover {
    /// `.NAME.tmp-PID/`: a directory being written (complete once `.NAME.old-PID` exists).
    DirTmp(String),
    /// `.NAME.old-PID/`: the directory being replaced.
    DirOld(String),
    /// `.FILE.PID.tmp`: a file being written.
    FileTmp,
}

fn classify(entry: &str) -> Option<Leftover> {
    let rest = entry.strip_prefix('.')?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((name, pid)) = rest.rsplit_once(".tmp-")
        && numeric(pid)
    {
        return Some(Leftover::DirTmp(name.to_string()));
    }
    if let Some((name, pid)) = rest.rsplit_once(".old-")
        && numeric(pid)
    {
        return Some(Leftover::DirOld(name.to_string()));
    }
    let stem = rest.strip_suffix(".tmp")?;
    let (_, pid) = stem.rsplit_once('.')?;
    numeric(pid).then_some(Leftover::FileTmp)
}

/// Removes what killed writers left in `dir`, restoring a directory that was caught
/// between its two renames; returns one line per entry handled. Call it only when no
/// writer of `dir` can be alive (e.g. holding the directory's lock).
pub fn recover(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut notes = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // `.last.old-P` sorts before `.last.tmp-P`: restore first, then clean.
    names.sort();
    let mut restored = Vec::new();
    for name in &names {
        if let Some(Leftover::DirOld(target_name)) = classify(name) {
            let target = dir.join(&target_name);
            if target.exists() || restored.contains(&target_name) {
                continue;
            }
            // The writer had moved the old directory aside; its new one (the .tmp beside
            // it, complete by then) was not yet in place. Put the new one there, or the
            // old one if the new one is gone.
            let newer = names
                .iter()
                .find(|n| matches!(classify(n), Some(Leftover::DirTmp(c)) if c == target_name));
            let source = dir.join(newer.unwrap_or(name));
            fs::rename(&source, &target).map_err(|e| DataError::io(&target, e))?;
            notes.push(format!(
                "restored {target_name}/ from {}, left by a writer that was killed",
                file_name(&source)
            ));
            restored.push(target_name);
        }
    }
    for name in &names {
        let path = dir.join(name);
        let removed = match classify(name) {
            Some(Leftover::DirTmp(_) | Leftover::DirOld(_)) if path.is_dir() => {
                fs::remove_dir_all(&path)
            }
            Some(Leftover::FileTmp) if path.is_file() => fs::remove_file(&path),
            _ => continue,
        };
        match removed {
            Ok(()) => notes.push(format!("removed {name}, left by a writer that was killed")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // restored above
            Err(e) => return Err(DataError::io(&path, e)),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_recognised_by_name() {
        assert!(matches!(classify(".last.tmp-42"), Some(Leftover::DirTmp(n)) if n == "last"));
        assert!(matches!(classify(".best.old-7"), Some(Leftover::DirOld(n)) if n == "best"));
        assert!(matches!(
            classify(".metrics.jsonl.123.tmp"),
            Some(Leftover::FileTmp)
        ));
        for keep in [
            "last",
            ".lock",
            "metrics.jsonl",
            ".last.tmp-",
            ".last.tmp-x1",
            "notes.tmp",
            ".x.tmp",
        ] {
            assert!(classify(keep).is_none(), "{keep}");
        }
    }

    #[test]
    fn killed_writers_leftovers_are_removed_or_restored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mkdir = |name: &str, file: &str| {
            fs::create_dir_all(d.join(name)).unwrap();
            fs::write(d.join(name).join("state.json"), file).unwrap();
        };
        // best/ is in place; a killed write left its temporary beside it.
        mkdir("best", "best");
        mkdir(".best.tmp-99999", "half-written");
        // last/ was moved aside and its complete replacement not yet renamed in.
        mkdir(".last.old-99998", "old");
        mkdir(".last.tmp-99998", "new");
        fs::write(d.join(".metrics.jsonl.99997.tmp"), "{").unwrap();
        fs::write(d.join("notes.txt"), "mine").unwrap();
        let notes = recover(d).unwrap();
        let read = |p: &str| fs::read_to_string(d.join(p)).unwrap();
        assert_eq!(read("best/state.json"), "best");
        assert_eq!(read("last/state.json"), "new");
        assert_eq!(read("notes.txt"), "mine");
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["best", "last", "notes.txt"]);
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(notes[0].starts_with("restored last/ from .last.tmp-99998"));
    }

    #[test]
    fn a_failed_fill_leaves_the_old_directory_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("last");
        let write = |text: &'static str, ok: bool| {
            replace_dir(&dest, |tmp| -> Result<(), DataError> {
                write_file(&tmp.join("state.json"), text.as_bytes())?;
                match ok {
                    true => Ok(()),
                    false => Err(DataError::Empty(tmp.to_path_buf())),
                }
            })
        };
        write("one", true).unwrap();
        write("two", false).unwrap_err();
        assert_eq!(fs::read_to_string(dest.join("state.json")).unwrap(), "one");
        write("three", true).unwrap();
        assert_eq!(
            fs::read_to_string(dest.join("state.json")).unwrap(),
            "three"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
