//! The library's errors in the words of the command line: the API fields and values its
//! messages name (`Hyper::tp.reg`, `Solver::Cg`, `Batch::x`) become the flags and file
//! tensors that set them (`--reg`, `--solver cg`, `tensor x`).

use tpri::dtp::{REVERSE_FIELDS, REVERSE_NAMES};
use tpri::model::{CellKind, EMBEDDING_FIELD, EMBEDDING_NAME};

/// API names every subcommand rewrites, and what they become.
const COMMON: &[(&str, &str)] = &[
    ("Hyper::opt.lr_head", "--lr-head"),
    ("Hyper::opt.clip_norm", "--clip-norm"),
    ("Hyper::opt.lr", "--lr"),
    ("Hyper::opt.momentum", "--momentum"),
    ("Hyper::tp.reg", "--reg"),
    ("Hyper::tp.lr_target", "--lr-target"),
    ("Hyper::tp.cg_tol", "--cg-tol"),
    ("Hyper::tp.cg_max_iter", "--cg-max-iter"),
    ("Hyper::tp.target_mode", "--target-mode"),
    ("Hyper::tp.solver", "--solver"),
    ("Hyper::tp.inversion", "--inversion"),
    ("Hyper::loss", "--loss"),
    ("Hyper::dtp.lr_reverse", "--lr-reverse"),
    ("Hyper::dtp.noise", "--noise"),
    ("Hyper::method", "--method"),
    ("Method::Dtp", "--method dtp"),
    ("Method::Tp", "--method tp"),
    ("Method::Bp", "--method bp"),
    (
        "Inversion::Jacobian (which Hyper::for_cell(CellKind::Gru) picks)",
        "--inversion jacobian (the GRU's default)",
    ),
    ("Inversion::Jacobian", "--inversion jacobian"),
    ("Inversion::PerGate", "--inversion per-gate"),
    ("Inversion::Analytic", "--inversion analytic"),
    ("Solver::Cg", "--solver cg"),
    ("Solver::Cholesky", "--solver cholesky"),
    ("Solver::PerStep", "--solver per-step"),
    ("Solver::Auto", "--solver auto"),
    ("Storage::F32", "--storage f32"),
    ("AdapterChoice::Name", "--adapter"),
    ("list_adapters()", "`tpri devices`"),
];

/// The names of a training run's settings (`limits::RUN_CONFIG_NAMES`).
pub const TRAIN: &[(&str, &str)] = &[
    ("RunConfig::hidden", "--hidden"),
    ("RunConfig::batch_size", "--batch-size"),
    ("RunConfig::eval_size", "--eval-size"),
    ("TaskSpec::seq_len", "--seq-len"),
    ("TaskSpec::Pixel::chunk", "--chunk"),
    ("TaskSpec::Pixel::mean_std", "--mean-std"),
    ("TaskSpec::Lm::seq_len", "--seq-len"),
    ("TaskSpec::Lm::vocab", "--vocab"),
    ("TaskSpec::Lm::embedding_dim", "--embedding-dim"),
    ("TaskSpec::Lm::train_embedding", "--train-embedding"),
    ("Dims::hidden", "--hidden"),
];

/// The names of `tpri bench`'s sizes (`bench::Size`).
pub const BENCH: &[(&str, &str)] = &[
    ("Size::steps", "--steps"),
    ("Size::hidden", "--hidden"),
    ("Size::batch", "--batch"),
    ("Size::input", "--input"),
    ("Size::output", "--output"),
];

/// `err` as one message with the API names of `COMMON` and `extra` replaced; `err`
/// itself, with its types (an I/O error stays one), when it names none of them.
pub fn for_cli(err: anyhow::Error, extra: &[(&str, &str)]) -> anyhow::Error {
    let text = format!("{err:#}");
    let rewritten = rewrite(&text, extra);
    if rewritten == text {
        err
    } else {
        anyhow::anyhow!("{rewritten}")
    }
}

/// `text` with the API names of `COMMON` and `extra` replaced, longest first.
pub fn rewrite(text: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = COMMON.iter().chain(extra).copied().collect();
    pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    pairs
        .iter()
        .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
}

/// `tpri trace`'s names: the fields of parameters and batches become the tensors of its
/// files (`Params::w_hh (rnn.w_hh)` → `tensor rnn.w_hh`).
pub fn trace_names() -> Vec<(String, String)> {
    let mut names = vec![
        ("Batch::x".to_string(), "tensor x".to_string()),
        ("Batch::y".to_string(), "tensor y".to_string()),
        ("Batch::tokens".to_string(), "tensor tokens".to_string()),
        (
            format!("{EMBEDDING_FIELD} ({EMBEDDING_NAME})"),
            format!("tensor {EMBEDDING_NAME}"),
        ),
    ];
    for cell in [CellKind::Tanh, CellKind::Gru] {
        for (field, name) in cell.param_fields().iter().zip(cell.param_names()) {
            names.push((format!("{field} ({name})"), format!("tensor {name}")));
        }
    }
    for (field, name) in REVERSE_FIELDS.iter().zip(REVERSE_NAMES) {
        names.push((format!("{field} ({name})"), format!("tensor {name}")));
    }
    names.push((
        "(Params::init_dtp draws them)".into(),
        "(`tpri train --method dtp` writes them in its checkpoints)".into(),
    ));
    names.push(("Params::dtp".into(), "tensors dtp.*".into()));
    // Named alone (the longer forms above go first).
    names.push(("Params::head_w".into(), "head.w".into()));
    names.push(("Params::w_ih".into(), "the input weights w_ih".into()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_become_flags() {
        assert_eq!(
            rewrite(
                "Hyper::tp.reg: the regularization r must be positive; raise \
                 Hyper::tp.cg_max_iter or use Solver::PerStep",
                &[]
            ),
            "--reg: the regularization r must be positive; raise --cg-max-iter or use \
             --solver per-step"
        );
        assert_eq!(
            rewrite("Size::batch: the batch size B must be at least 1", BENCH),
            "--batch: the batch size B must be at least 1"
        );
        let names = trace_names();
        let pairs: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            rewrite(
                "Params::head_w (head.w) holds inf at row 0, column 1",
                &pairs
            ),
            "tensor head.w holds inf at row 0, column 1"
        );
    }
}
