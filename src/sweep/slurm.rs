//! The Slurm engine: the unfinished runs submitted as job arrays, one array task per run.
//!
//! DIR/slurm/job.sh takes a task list (line i + 1: `NAME ITERATIONS` of array task i) and
//! runs `tpri train` into DIR/runs/NAME, fresh or `--resume` as the run directory says
//! when the task starts, writing the same log and exit files as the local engine; so
//! `tpri sweep --collect DIR` reads both alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::tensor_file::write_atomic;

use super::manifest::{Manifest, Submission};
use super::spec::SlurmSpec;

/// How the Slurm engine submits.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// The `tpri` binary the array tasks run (a path the compute nodes see).
    pub tpri: PathBuf,
    /// Resources over the spec's `[slurm]`; `sbatch_args` are appended to the spec's.
    pub resources: SlurmSpec,
    /// Print what would be submitted; submit and write nothing.
    pub dry_run: bool,
}

/// Submits the manifest's runs `todo` (indices) as job arrays of at most
/// `max_array_size` tasks; returns the job ids and records them in the manifest.
/// Refuses while an earlier submission of this sweep is still queued or running.
pub fn submit(
    dir: &Path,
    manifest: &mut Manifest,
    todo: &[usize],
    opts: &SlurmOptions,
) -> Result<Vec<String>> {
    let res = merged(&manifest.slurm, &opts.resources);
    ensure_idle(manifest)?;
    let abs = std::path::absolute(dir)?;
    let script = abs.join("slurm").join("job.sh");
    let text = job_script(&abs, &opts.tpri, manifest, &res);
    let chunk = res.max_array_size.unwrap_or(1000).max(1);
    let first = manifest.submissions.len() + 1;
    let mut jobs = Vec::new();
    for (k, runs) in todo.chunks(chunk).enumerate() {
        let rel = format!("slurm/tasks-{}.txt", first + k);
        let tasks = abs.join(&rel);
        let list: String = runs
            .iter()
            .map(|&i| {
                let r = &manifest.runs[i];
                format!("{} {}\n", r.name, r.iterations)
            })
            .collect();
        let mut array = format!("--array=0-{}", runs.len() - 1);
        if let Some(p) = res.max_parallel {
            array += &format!("%{p}");
        }
        let mut args = vec!["--parsable".to_string(), array];
        args.extend(res.sbatch_args.iter().cloned());
        args.extend([script.display().to_string(), tasks.display().to_string()]);
        if opts.dry_run {
            println!("would submit: sbatch {}", args.join(" "));
            continue;
        }
        std::fs::create_dir_all(abs.join("slurm"))?;
        write_atomic(&script, text.as_bytes())?;
        write_atomic(&tasks, list.as_bytes())?;
        let out = Command::new("sbatch")
            .args(&args)
            .output()
            .context("cannot run sbatch: is Slurm installed and on PATH?")?;
        if !out.status.success() {
            bail!(
                "sbatch {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout
            .lines()
            .last()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .with_context(|| format!("sbatch printed no job id: {stdout:?}"))?
            .to_owned();
        for &i in runs {
            manifest.runs[i].attempts += 1;
        }
        manifest.submissions.push(Submission {
            job_id: id.clone(),
            tasks: rel,
            runs: runs.len(),
            submitted: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        manifest.save(dir)?;
        jobs.push(id);
    }
    Ok(jobs)
}

/// The spec's resources with the flags' over them.
fn merged(spec: &SlurmSpec, flags: &SlurmSpec) -> SlurmSpec {
    SlurmSpec {
        cpus_per_task: flags.cpus_per_task.or(spec.cpus_per_task),
        mem: flags.mem.clone().or_else(|| spec.mem.clone()),
        time: flags.time.clone().or_else(|| spec.time.clone()),
        partition: flags.partition.clone().or_else(|| spec.partition.clone()),
        gpus: flags.gpus.or(spec.gpus),
        max_parallel: flags.max_parallel.or(spec.max_parallel),
        max_array_size: flags.max_array_size.or(spec.max_array_size),
        sbatch_args: spec
            .sbatch_args
            .iter()
            .chain(&flags.sbatch_args)
            .cloned()
            .collect(),
    }
}

/// Fails while a job of an earlier submission of the sweep is still in squeue: its tasks
/// may still write into the run directories.
pub fn ensure_idle(manifest: &Manifest) -> Result<()> {
    let ids: Vec<&str> = manifest
        .submissions
        .iter()
        .map(|s| s.job_id.as_str())
        .collect();
    let active = active_jobs(&ids)?;
    if !active.is_empty() {
        bail!(
            "job {} of an earlier submission of this sweep is still queued or running (squeue): wait for it, or scancel it, then run or submit again",
            active.join(", ")
        );
    }
    Ok(())
}

/// The jobs among `ids` that squeue still lists. A job squeue no longer knows is done.
fn active_jobs(ids: &[&str]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = match Command::new("squeue")
        .args(["-h", "-o", "%F", "-j", &ids.join(",")])
        .output()
    {
        Ok(out) => out,
        Err(_) => return Ok(Vec::new()),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("Invalid job id") {
        bail!("squeue failed: {}", stderr.trim());
    }
    let mut active: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    active.sort();
    active.dedup();
    Ok(active)
}

/// `text` quoted for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// DIR/slurm/job.sh: runs the run on line SLURM_ARRAY_TASK_ID + 1 of the task list $1.
fn job_script(dir: &Path, tpri: &Path, manifest: &Manifest, res: &SlurmSpec) -> String {
    let mut s = String::from(
        "#!/bin/bash\n\
         # Written by `tpri sweep --engine slurm`: one array task per run. Submitted as\n\
         #   sbatch --array=0-(N-1) job.sh TASKS\n\
         # where line i + 1 of TASKS is `NAME ITERATIONS` of array task i.\n",
    );
    let mut directive = |d: String| s.push_str(&format!("#SBATCH {d}\n"));
    directive("--job-name=tpri-sweep".into());
    directive(format!(
        "--output={}",
        dir.join("slurm").join("%A_%a.out").display()
    ));
    if let Some(c) = res.cpus_per_task {
        directive(format!("--cpus-per-task={c}"));
    }
    for (flag, value) in [
        ("mem", &res.mem),
        ("time", &res.time),
        ("partition", &res.partition),
    ] {
        if let Some(v) = value {
            directive(format!("--{flag}={v}"));
        }
    }
    if let Some(g) = res.gpus {
        directive(format!("--gres=gpu:{g}"));
    }
    let mut flags = String::new();
    for (flag, value) in [
        ("--backend", &manifest.backend),
        ("--storage", &manifest.storage),
    ] {
        if let Some(v) = value {
            flags += &format!(" {flag} {}", quote(v));
        }
    }
    s.push_str(&format!(
        r#"set -u
tpri={tpri}
dir={dir}
read -r name iterations < <(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$1")
if [ -z "${{name:-}}" ]; then
    echo "tpri sweep: no run for array task $SLURM_ARRAY_TASK_ID in $1" >&2
    exit 2
fi
run="$dir/runs/$name"
log="$dir/logs/$name.log"
mkdir -p "$dir/logs" "$dir/status"
rm -f "$dir/status/$name.exit"
if [ -f "$run/config.toml" ]; then
    args=(train --resume "$run" --iterations "$iterations")
else
    args=(train --config "$dir/configs/$name.toml" --run-dir "$run")
fi
args+=({flags} )
echo "=== attempt: slurm job ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname): tpri ${{args[*]}}" >> "$log"
"$tpri" "${{args[@]}}" >> "$log" 2>&1 < /dev/null
status=$?
case $status in
    129|130|143) ;; # SIGHUP, SIGINT, SIGTERM (time limit, scancel): left incomplete, resumed next time
    *) echo "$status" > "$dir/status/$name.exit" ;;
esac
exit $status
"#,
        tpri = quote(&tpri.display().to_string()),
        dir = quote(&dir.display().to_string()),
        flags = flags.trim_start(),
    ));
    s
}
