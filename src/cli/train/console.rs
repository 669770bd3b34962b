//! What `tpri train` shows while it runs: progress on stdout that survives a closed pipe,
//! warnings on stderr, and the sink that forwards records to the run directory.

use std::cell::Cell;
use std::io::{IsTerminal, Write};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use tpri::run_dir::RunDir;
use tpri::train::{Perplexity, Record, RunConfig, RunSink, TrainState};

/// One line describing a record; with `perplexity` (a language model) the perplexities
/// of its losses too.
pub(super) fn describe(r: &Record, perplexity: bool) -> String {
    let mut line = String::new();
    let ppl = Perplexity::of(r);
    if let Some(l) = r.train_loss {
        line += &format!("train loss {l:.5}");
    }
    if let (true, Some(p)) = (perplexity, ppl.train) {
        line += &format!("  train ppl {p:.2}");
    }
    if let Some(e) = r.eval {
        line += &format!("  eval loss {:.5}  eval acc {:.4}", e.loss, e.accuracy);
    }
    if let (true, Some(p)) = (perplexity, ppl.eval) {
        line += &format!("  eval ppl {p:.2}");
    }
    if let Some(cg) = r.cg {
        line += &format!("  cg {} it", cg.iterations);
        // Several solves (a per-step sweep, the three P_g): what they cost together.
        if cg.solves > 1 {
            line += &format!(" ({} solves, {} in all)", cg.solves, cg.total_iterations);
        }
    }
    if let Some(c) = r.alignment.as_ref().and_then(|a| a.cosine) {
        line += &format!("  cos {c:.3}");
    }
    line
}

/// Standard output for progress, written with `writeln!` rather than `println!` (which
/// panics when stdout is a closed pipe): the first failed write, such as a broken pipe
/// under `tpri train … | head -1`, ends the printing, not the run.
#[derive(Debug, Default)]
pub(crate) struct Out {
    closed: Cell<bool>,
}

impl Out {
    /// Prints `text` and a newline, unless stdout has failed before.
    pub(crate) fn line(&self, text: &str) {
        if self.closed.get() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            self.closed.set(true);
        }
    }
}

/// Prints a warning on stderr (ignoring a closed stderr).
pub(crate) fn warn(text: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {text}");
}

/// Forwards records to the run directory and shows progress: a bar on a terminal, a
/// plain line per evaluation otherwise (CI, pipes).
pub(super) struct Console<'a> {
    out: &'a Out,
    dir: &'a mut RunDir,
    bar: Option<ProgressBar>,
    last_eval: String,
    /// Show perplexities (a language model).
    perplexity: bool,
}

impl<'a> Console<'a> {
    pub(super) fn new(out: &'a Out, dir: &'a mut RunDir, cfg: &RunConfig, start: u64) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(cfg.iterations);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}")
                    .expect("the progress template is valid"),
            );
            bar.set_position(start);
            bar
        });
        Self {
            out,
            dir,
            bar,
            last_eval: String::new(),
            perplexity: cfg.hyper.loss.every_step(),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl RunSink for Console<'_> {
    fn record(&mut self, r: &Record) -> Result<()> {
        self.dir.record(r)?;
        if let Some(e) = r.eval {
            self.last_eval = format!("eval loss {:.4} acc {:.3}", e.loss, e.accuracy);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.iteration);
                let train = r
                    .train_loss
                    .map(|l| format!("train loss {l:.4}  "))
                    .unwrap_or_default();
                bar.set_message(format!("{train}{}", self.last_eval));
                if r.eval.is_some() {
                    bar.println(format!(
                        "iter {:>7}  {}",
                        r.iteration,
                        describe(r, self.perplexity)
                    ));
                }
            }
            None if r.eval.is_some() => self.out.line(&format!(
                "iter {:>7}  {:>8.1}s  {}",
                r.iteration,
                r.elapsed,
                describe(r, self.perplexity)
            )),
            None => {}
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &TrainState) -> Result<()> {
        self.dir.checkpoint(state)
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| warn(message)),
            None => warn(message),
        }
    }
}
