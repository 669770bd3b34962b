//! One owner per run directory: `run.lock` (docs/ALGORITHM.md §10).
//!
//! The lock file is created with `create_new` (O_EXCL) and holds its owner: process id,
//! host, the process's start time and when it took the lock. The owner also holds an
//! exclusive advisory lock (`flock`) on the file for as long as it lives, which the
//! operating system releases when the process dies, even by `kill -9`. A lock file whose
//! advisory lock is free and whose process is not running on this host is stale: the
//! next run takes it over and says so, naming the stale process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Who owns a run directory: the contents of `run.lock`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The process's start time in clock ticks since boot (Linux), which tells a live
    /// owner from another process that was given the same id later.
    pub process_start: Option<u64>,
    /// When it took the lock, in seconds since the Unix epoch.
    pub since: u64,
}

impl Owner {
    /// This process.
    fn me() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            host: host_name(),
            process_start: process_start(pid),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// "process 123 on host h, which took the lock 5 s ago".
    pub fn describe(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!(
            "process {} on host {}, which took the lock {} s ago",
            self.pid,
            self.host,
            now.saturating_sub(self.since)
        )
    }

    /// Whether this owner is a process running now on this host: `Some(true)` or
    /// `Some(false)` where `/proc` tells, `None` where it cannot.
    pub(crate) fn running_here(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        if !Path::new("/proc/self/stat").exists() {
            return None;
        }
        match process_start(self.pid) {
            None => Some(false),
            Some(start) => Some(self.process_start.is_none_or(|s| s == start)),
        }
    }
}

/// The held lock of a run directory; dropping it removes `run.lock` and releases it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes `dir`'s lock, which must exist as a directory. Returns the lock and, when a
    /// stale lock was taken over, a warning naming its process.
    pub fn acquire(dir: &Path) -> Result<(Self, Option<String>)> {
        let path = dir.join(LOCK_FILE);
        let me = Owner::me();
        // A handful of rounds: each either takes the lock, refuses, or saw the file change
        // under it (created, released or removed by another process) and looks again.
        for round in 0..100 {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    match file.try_lock() {
                        Ok(()) => {}
                        // Another process opened the new file and locked it first: it
                        // will find it empty and wait for us; give it a moment.
                        Err(TryLockError::WouldBlock) => continue,
                        // No advisory locks on this file system: the file alone decides.
                        Err(TryLockError::Error(_)) => {}
                    }
                    let mut lock = Self { file, path };
                    lock.write_owner(&me)?;
                    return Ok((lock, None));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create the lock file {}", path.display()))
                }
            }
            let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot open the lock file {}", path.display()))
                }
            };
            let advisory = match file.try_lock() {
                Ok(()) => true,
                Err(TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| toml::from_str::<Owner>(&t).ok());
                    match owner {
                        Some(owner) => bail!(busy(dir, &owner)),
                        // Locked but not yet written: its owner is writing it now.
                        None if round < 50 => continue,
                        None => bail!(
                            "{} is in use by another process (its lock file {} is held)",
                            dir.display(),
                            path.display()
                        ),
                    }
                }
                Err(TryLockError::Error(_)) => false,
            };
            if !same_file(&file, &path) {
                // Released and removed (or replaced) since we opened it.
                continue;
            }
            let mut text = String::new();
            file.read_to_string(&mut text)
                .with_context(|| format!("cannot read the lock file {}", path.display()))?;
            let warning = match toml::from_str::<Owner>(&text) {
                Ok(owner) => {
                    match owner.running_here() {
                        Some(true) => bail!(busy(dir, &owner)),
                        None if owner.host != me.host => bail!(
                            "{} is locked by process {} on host {} ({}); if that run has ended, \
                             delete the lock file",
                            dir.display(),
                            owner.pid,
                            owner.host,
                            path.display()
                        ),
                        None if !advisory => bail!(busy(dir, &owner)),
                        _ => {}
                    }
                    format!(
                        "{} was left by process {} on host {}, which is no longer running \
                         (killed?); taking it over",
                        path.display(),
                        owner.pid,
                        owner.host
                    )
                }
                // Created but never written: its creator died at once, or is writing it.
                Err(_) if text.trim().is_empty() && round < 50 => continue,
                Err(_) => format!(
                    "{} was left unreadable by a process that is no longer running; taking it over",
                    path.display()
                ),
            };
            let mut lock = Self { file, path };
            lock.write_owner(&me)?;
            return Ok((lock, Some(warning)));
        }
        bail!(
            "cannot take the lock {}: it keeps changing (another process is starting a run there)",
            path.display()
        )
    }

    fn write_owner(&mut self, owner: &Owner) -> Result<()> {
        let text = toml::to_string(owner)?;
        let result = (|| {
            self.file.set_len(0)?;
            self.file.rewind()?;
            self.file.write_all(text.as_bytes())?;
            self.file.sync_all()
        })();
        result.with_context(|| format!("cannot write the lock file {}", self.path.display()))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove the file while still holding it, so no one else takes a lock on a file
        // that is about to disappear (they would see it was removed and look again).
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The refusal when `owner` holds `dir`.
pub(crate) fn busy(dir: &Path, owner: &Owner) -> String {
    format!(
        "{} is in use by {}: a run directory has one owner at a time; wait for that run to \
         end or stop it (if it is gone, {} is stale and the next run takes it over)",
        dir.display(),
        owner.describe(),
        dir.join(LOCK_FILE).display()
    )
}

/// Whether the open `file` is the file at `path` now.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// This host's name (Linux: the kernel's; elsewhere `$HOSTNAME`, or `unknown`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Start time of process `pid` in clock ticks since boot (Linux `/proc/PID/stat`, field
/// 22); `None` where there is no such process (or only its zombie) or no `/proc`.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; field 3 is the
    // state, 'Z' for a process that has ended but was not reaped yet.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}
