//! The local engine: `tpri train` processes, N at a time, each told which cores or which
//! GPU adapter to use.
//!
//! The CPU backend splits its work over `std::thread::available_parallelism()` cores,
//! which on Linux counts the cores the process may run on. So with `--jobs N` and the
//! CPU backend, each run is started under `taskset` on its own share of the cores (when
//! `taskset` and /proc/self/status exist); its results do not depend on how many it gets.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::figures::read_log;

use super::collect::outcome;
use super::manifest::{
    config_path, exit_path, log_path, run_dir, run_status, Manifest, Status, ATTEMPT_MARK,
};

/// How the local engine runs.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The `tpri` binary the runs use.
    pub tpri: PathBuf,
    /// How many runs at once.
    pub jobs: usize,
    /// GPU adapters (names or indices, `tpri devices`), handed out round-robin over the
    /// workers; none: `tpri train` picks.
    pub adapters: Vec<String>,
}

/// DIR/sweep.lock, held while the local engine runs the sweep in DIR: a second `tpri
/// sweep` there would start the same runs twice. It holds `PID HOST`; a lock whose process
/// is gone (on this host) is taken over.
pub struct SweepLock {
    path: PathBuf,
}

impl SweepLock {
    /// Takes the lock of DIR, or says who holds it.
    pub fn take(dir: &Path) -> Result<Self> {
        let path = dir.join("sweep.lock");
        let me = format!("{} {}", std::process::id(), host());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{me}")?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut parts = held.split_whitespace();
                    let (pid, at) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let gone = at == host()
                        && Path::new("/proc/self").exists()
                        && !Path::new("/proc").join(pid).exists();
                    if !gone {
                        anyhow::bail!(
                            "another tpri sweep (pid {pid} on {at}) is running the sweep in {}; if it is not, remove {}",
                            dir.display(),
                            path.display()
                        );
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        anyhow::bail!("cannot take {}", path.display())
    }
}

impl Drop for SweepLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This machine's name (for the lock), or "" when unknown.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// What a worker reports back.
enum Event {
    Started(usize),
    Done(usize, Status, Option<String>, f64),
}

/// Runs the manifest's runs `todo` (indices), `opts.jobs` at a time, updating and saving
/// the manifest as they end. A failed run does not stop the others.
pub fn run_local(
    dir: &Path,
    manifest: &mut Manifest,
    todo: &[usize],
    opts: &LocalOptions,
) -> Result<()> {
    let jobs = opts.jobs.clamp(1, todo.len().max(1));
    let cores = core_shares(jobs, manifest.backend.as_deref());
    match (&cores, jobs) {
        (_, 1) => {}
        (Some(shares), _) => {
            let n = shares[0].split(',').count();
            println!(
                "{} runs, {jobs} at a time, each on {n} core{} (taskset -c {})",
                todo.len(),
                if n == 1 { "" } else { "s" },
                shares.join(" | ")
            )
        }
        (None, _) if manifest.backend.as_deref() == Some("gpu") => {}
        (None, _) => println!(
            "note: each run may use every core (no taskset, or fewer cores than --jobs); with the CPU backend, --jobs 1 is about as fast"
        ),
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let manifest_ro = manifest.clone();
    let (done, total) = (std::cell::Cell::new(0usize), todo.len());
    std::thread::scope(|s| -> Result<()> {
        for worker in 0..jobs {
            let tx = tx.clone();
            let (next, m, cores) = (&next, &manifest_ro, &cores);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = todo.get(k) else { break };
                let _ = tx.send(Event::Started(index));
                let adapter = (!opts.adapters.is_empty())
                    .then(|| opts.adapters[worker % opts.adapters.len()].as_str());
                let cpus = cores.as_ref().map(|c| c[worker].as_str());
                let t0 = Instant::now();
                let (status, error) = match attempt(dir, m, index, opts, adapter, cpus, worker) {
                    Ok(()) => {
                        let run = &m.runs[index];
                        run_status(dir, &run.name, run.iterations)
                    }
                    Err(e) => (Status::Failed, Some(format!("error: {e:#}"))),
                };
                let _ = tx.send(Event::Done(
                    index,
                    status,
                    error,
                    t0.elapsed().as_secs_f64(),
                ));
            });
        }
        drop(tx);
        let mut last_save = Instant::now();
        for event in rx {
            match event {
                Event::Started(i) => manifest.runs[i].attempts += 1,
                Event::Done(i, status, error, secs) => {
                    done.set(done.get() + 1);
                    let run = &mut manifest.runs[i];
                    run.status = status;
                    run.error = error;
                    let run = &manifest.runs[i];
                    let what = match (&run.status, &run.error) {
                        (Status::Failed, Some(e)) => format!("FAILED: {e}"),
                        (Status::Finished, _) => {
                            let log = read_log(&run_dir(dir, &run.name)).ok();
                            let o = outcome(dir, run, log.as_ref(), manifest.reach);
                            format!("finished ({secs:.1} s){}", o.brief(manifest.reach))
                        }
                        (s, _) => format!("{} ({secs:.1} s)", s.name()),
                    };
                    println!("[{}/{total}] {} {what}", done.get(), run.name);
                    if last_save.elapsed().as_secs_f64() > 2.0 {
                        manifest.save(dir)?;
                        last_save = Instant::now();
                    }
                }
            }
        }
        Ok(())
    })?;
    manifest.save(dir)
}

/// One attempt at run `index`: `tpri train` fresh, or `--resume` when its directory
/// holds a run, its output appended to DIR/logs/NAME.log and its exit status written to
/// DIR/status/NAME.exit (not when it was interrupted by SIGINT, SIGTERM or SIGHUP: the
/// run stays incomplete and is resumed next time).
fn attempt(
    dir: &Path,
    manifest: &Manifest,
    index: usize,
    opts: &LocalOptions,
    adapter: Option<&str>,
    cpus: Option<&str>,
    worker: usize,
) -> Result<()> {
    let run = &manifest.runs[index];
    let exit = exit_path(dir, &run.name);
    let _ = std::fs::remove_file(&exit);
    let mut args: Vec<String> = vec!["train".into()];
    let rd = run_dir(dir, &run.name);
    if rd.join("config.toml").exists() {
        args.extend(["--resume".into(), path(&rd), "--iterations".into()]);
        args.push(run.iterations.to_string());
    } else {
        args.extend(["--config".into(), path(&config_path(dir, &run.name))]);
        args.extend(["--run-dir".into(), path(&rd)]);
    }
    let flags = [
        ("--backend", manifest.backend.as_deref()),
        ("--storage", manifest.storage.as_deref()),
        ("--adapter", adapter),
    ];
    for (flag, value) in flags {
        if let Some(v) = value {
            args.extend([flag.to_string(), v.to_string()]);
        }
    }
    let log_file = log_path(dir, &run.name);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("cannot open {}", log_file.display()))?;
    let pin = cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default();
    writeln!(
        log,
        "{ATTEMPT_MARK}: local worker {worker}: {pin}tpri {}",
        args.join(" ")
    )?;
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c]).arg(&opts.tpri);
            cmd
        }
        None => Command::new(&opts.tpri),
    };
    let status = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot start {}", opts.tpri.display()))?;
    let code = match status.code() {
        Some(code) => code,
        None => match signal(&status) {
            Some(1 | 2 | 15) => return Ok(()),
            Some(s) => 128 + s,
            None => 128,
        },
    };
    std::fs::write(&exit, format!("{code}\n"))
        .with_context(|| format!("cannot write {}", exit.display()))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(unix)]
fn signal(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status)
}

#[cfg(not(unix))]
fn signal(_: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// Each worker's cores as a `taskset -c` list, when runs are on the CPU (not `gpu`),
/// there are at least as many cores as workers and `taskset` runs; else `None`.
fn core_shares(jobs: usize, backend: Option<&str>) -> Option<Vec<String>> {
    if jobs < 2 || backend == Some("gpu") {
        return None;
    }
    let cpus = allowed_cpus()?;
    if cpus.len() < jobs {
        return None;
    }
    let per = cpus.len() / jobs;
    let shares: Vec<String> = (0..jobs)
        .map(|w| {
            let share: Vec<String> = cpus[w * per..(w + 1) * per]
                .iter()
                .map(|c| c.to_string())
                .collect();
            share.join(",")
        })
        .collect();
    // taskset exists and may set the affinity here (some containers forbid it).
    let works = Command::new("taskset")
        .args(["-c", &shares[0], "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(shares)
}

/// The cores this process may run on (`Cpus_allowed_list` of /proc/self/status).
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}
