//! Flags the resolved settings do not read: `--reg` with BPTT, `--momentum` with plain
//! SGD. They change nothing in the run, so `tpri train` says so. A warning rather than a
//! refusal: `tpri compare` hands the same flags to every run it compares, TP-RI and BPTT
//! alike.

use tpri::config::{Inversion, Method, OptimizerKind};
use tpri::train::RunConfig;

use super::{method_name, TrainArgs};

/// One line for each flag given in `args` that a run with `cfg` does not read.
pub(super) fn unread_flags(args: &TrainArgs, cfg: &RunConfig) -> Vec<String> {
    let method = cfg.hyper.method;
    let tp = method == Method::Tp;
    let bp = method == Method::Bp;
    let dtp = method == Method::Dtp;
    // (given, flag, what it sets, which runs read it)
    let flags = [
        (
            !tp && args.reg.is_some(),
            "--reg",
            "the regularization r",
            "TP-RI",
        ),
        (
            !tp && args.target_mode.is_some(),
            "--target-mode",
            "the target mode",
            "TP-RI",
        ),
        (
            !tp && args.inversion.is_some(),
            "--inversion",
            "the inversion",
            "TP-RI",
        ),
        (
            !tp && args.solver.is_some(),
            "--solver",
            "the solve for P",
            "TP-RI",
        ),
        (
            !tp && args.cg_tol.is_some(),
            "--cg-tol",
            "the CG tolerance",
            "TP-RI",
        ),
        (
            !tp && args.cg_max_iter.is_some(),
            "--cg-max-iter",
            "the CG iteration cap",
            "TP-RI",
        ),
        (
            bp && args.lr_target.is_some(),
            "--lr-target",
            "the target step γ_h",
            "TP-RI and DTP",
        ),
        (
            bp && args.tp_grad.is_some(),
            "--tp-grad",
            "the targets' gradient",
            "TP-RI and DTP",
        ),
        (
            !dtp && args.lr_reverse.is_some(),
            "--lr-reverse",
            "the reverse layer's step",
            "DTP",
        ),
        (
            !dtp && args.noise.is_some(),
            "--noise",
            "the reconstruction noise",
            "DTP",
        ),
    ];
    let mut lines: Vec<String> = flags
        .into_iter()
        .filter(|(given, ..)| *given)
        .map(|(_, flag, what, readers)| {
            format!(
                "{flag} sets {what} of {readers}; this run trains with {}, which does not \
                 read it",
                method_name(method)
            )
        })
        .collect();
    if args.precondition.is_some() && !(tp && cfg.hyper.tp.inversion == Inversion::Jacobian) {
        let how = if tp {
            format!("TP-RI with the {} inversion", cfg.hyper.tp.inversion.name())
        } else {
            method_name(method).to_string()
        };
        lines.push(format!(
            "--precondition sets the preconditioner of the jacobian inversion's per-step CG; \
             this run trains with {how}, which does not read it"
        ));
    }
    if args.momentum.is_some() && cfg.hyper.opt.kind != OptimizerKind::Nesterov {
        lines.push(
            "--momentum sets the momentum of --optimizer nesterov; this run's optimizer \
             does not read it"
                .into(),
        );
    }
    lines
}
