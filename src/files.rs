//! Opening the files the library reads: a path must be a regular file (or a symbolic
//! link to one). Anything else is named for what it is — missing, a directory, a FIFO, a
//! device such as `/dev/zero`, a dangling symbolic link, a loop of links — instead of
//! being read (which for a FIFO or a device could block or never end).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::error::Error;

/// What is at `path` when it is not a regular file (following symbolic links): `None`
/// for a regular file, else a description such as `a directory` or `missing`.
pub fn not_a_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(meta) => describe_type(&meta.file_type()),
        Err(e) => Some(match std::fs::symlink_metadata(path) {
            Ok(link) if link.file_type().is_symlink() => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    "a dangling symbolic link (its target does not exist)".into()
                } else if is_loop(&e) {
                    "a loop of symbolic links".into()
                } else {
                    format!("a symbolic link that cannot be followed ({e})")
                }
            }
            _ if e.kind() == std::io::ErrorKind::NotFound => "missing".into(),
            _ => format!("not accessible ({e})"),
        }),
    }
}

/// Whether `e` is the operating system's "too many levels of symbolic links".
fn is_loop(e: &std::io::Error) -> bool {
    // ELOOP: 40 on Linux, 62 on macOS and the BSDs.
    let eloop = if cfg!(target_os = "linux") { 40 } else { 62 };
    cfg!(unix) && e.raw_os_error() == Some(eloop)
}

fn describe_type(t: &std::fs::FileType) -> Option<String> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)".into());
        }
        if t.is_char_device() {
            return Some("a character device".into());
        }
        if t.is_block_device() {
            return Some("a block device".into());
        }
        if t.is_socket() {
            return Some("a socket".into());
        }
    }
    Some("not a regular file".into())
}

/// Opens `path` for reading after checking it is a regular file; `what` names it in the
/// errors (`IDX file`, `tensor file`).
///
/// A missing file is an [`Error::Io`] with the operating system's reason; anything else
/// that is not a regular file an [`Error::Format`] naming what it is.
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    if let Some(kind) = not_a_file(path).filter(|k| k != "missing") {
        return Err(Error::format(
            path,
            format!("cannot read the {what}: it is {kind}, not a regular file"),
        )
        .into());
    }
    File::open(path).map_err(|e| Error::io(path, format!("cannot read the {what}"), e).into())
}

/// Caps the up-front allocation of [`read_up_to`]: a length read from a header or a
/// file's size can ask for any amount, while what is there is read in one go all the same.
const MAX_RESERVE: usize = 1 << 26;

/// Up to `len` bytes of `reader`; fewer only at the end of the input. Memory grows with
/// what is read, never with `len` alone, so a length taken from an untrusted header
/// allocates nothing the input does not hold.
pub fn read_up_to(reader: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len.min(MAX_RESERVE));
    reader.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole of the regular file `path` (see `open_regular`).
pub fn read_regular(path: &Path, what: &str) -> Result<Vec<u8>> {
    let mut file = open_regular(path, what)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, format!("cannot read the {what}"), e))?;
    Ok(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_there() {
        let dir = std::env::temp_dir().join(format!("tpri-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
        std::os::unix::fs::symlink(dir.join("loop2"), dir.join("loop1")).unwrap();
        std::os::unix::fs::symlink(dir.join("loop1"), dir.join("loop2")).unwrap();
        std::os::unix::fs::symlink(&file, dir.join("good")).unwrap();
        assert_eq!(not_a_file(&file), None);
        assert_eq!(not_a_file(&dir.join("good")), None);
        assert_eq!(not_a_file(&dir).as_deref(), Some("a directory"));
        assert_eq!(not_a_file(&dir.join("none")).as_deref(), Some("missing"));
        assert!(not_a_file(&dir.join("dangling"))
            .unwrap()
            .contains("dangling"));
        assert!(not_a_file(&dir.join("loop1")).unwrap().contains("loop"));
        assert_eq!(
            not_a_file(Path::new("/dev/zero")).as_deref(),
            Some("a character device")
        );
        let msg = read_regular(Path::new("/dev/zero"), "tensor file")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("character device"), "{msg}");
        assert_eq!(read_regular(&file, "file").unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
