//! The library's typed errors: what went wrong, by kind, with the data a program needs to
//! act on it.
//!
//! The library's functions return `anyhow::Result`; the errors they raise themselves are
//! [`Error`] values inside the `anyhow::Error`, so a program matches on the kind with
//! `err.downcast_ref::<tpri::Error>()` (which sees through any `context` added on the
//! way). Errors of the libraries underneath (wgpu, safetensors, serde) arrive as they are.
//!
//! Messages name the API — struct fields such as `Hyper::tp.reg` or `Params::w_hh`, the
//! tensors of a file by their names in it — and never a flag of the `tpri` command line,
//! which rewrites them into its flags where it helps.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cg::CgError;

/// What went wrong in a call of the library, by kind.
///
/// Raised inside `anyhow::Error`:
///
/// ```
/// use tpri::prelude::*;
///
/// let hyper = Hyper { tp: TpConfig { reg: 0.0, ..TpConfig::default() }, ..Hyper::default() };
/// let err = CpuBackend::new()
///     .load(&Params::init(Dims { input: 2, hidden: 4, output: 1 }, 0).unwrap(), None, &hyper)
///     .unwrap_err();
/// match err.downcast_ref::<tpri::Error>() {
///     Some(tpri::Error::InvalidSetting { field, .. }) => assert_eq!(field, "Hyper::tp.reg"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A tensor, or a field holding one, has a shape that does not fit the others (or is
    /// empty where it must not be).
    ShapeMismatch {
        /// Which tensor: an API field (`Params::w_hh`, `Batch::x`) or a tensor of a file
        /// (`tensor x in batch.safetensors`).
        tensor: String,
        /// The shape found, e.g. `[3, 4]`.
        found: String,
        /// The shape expected, with what it follows from.
        expected: String,
    },
    /// A tensor holds a value no computation can take: a NaN or an infinity, a class
    /// label out of range.
    InvalidValue {
        /// Which tensor, named as in `ShapeMismatch`.
        tensor: String,
        /// What is wrong with it, and where.
        problem: String,
    },
    /// A setting no iteration can run with, or a combination no backend runs.
    InvalidSetting {
        /// The field, e.g. `Hyper::tp.reg`, `Dims::hidden`, `Size::batch`.
        field: String,
        /// What is wrong and what to use instead.
        problem: String,
    },
    /// More than the device or the machine allows: a kernel limit, a GPU buffer limit,
    /// the available memory, or sizes whose product overflows the address space.
    DeviceLimit {
        /// The limit, e.g. `MAX_HIDDEN`, `max_buffer_size`, `MemAvailable`.
        limit: String,
        /// What is needed, in the limit's unit (bytes for memory); `None` when it
        /// overflows 64 bits.
        needed: Option<u64>,
        /// What the limit allows.
        allowed: u64,
        /// The whole message: what needs it, the estimate, and what to shrink.
        message: String,
    },
    /// A conjugate-gradient solve that missed its tolerance, with its numbers.
    NotConverged(CgError),
    /// Training diverged: the loss or the parameters stopped being finite, or the loss
    /// grew far beyond its start.
    Diverged {
        /// The iteration at which it was noticed.
        iteration: u64,
        /// What was seen.
        detail: String,
    },
    /// A file could not be opened, read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What was attempted, e.g. `cannot read`.
        action: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file that is not what it should be: not a regular file, not the format, or
    /// holding tensors that do not belong there.
    Format {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch {
                tensor,
                found,
                expected,
            } => write!(f, "{tensor} has shape {found}, expected {expected}"),
            Error::InvalidValue { tensor, problem } => write!(f, "{tensor} {problem}"),
            Error::InvalidSetting { field, problem } => write!(f, "{field}: {problem}"),
            Error::DeviceLimit { message, .. } => f.write_str(message),
            Error::NotConverged(cg) => cg.fmt(f),
            Error::Diverged { iteration, detail } => {
                write!(f, "training diverged at iteration {iteration}: {detail}")
            }
            Error::Io {
                path,
                action,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            Error::Format { file, problem } => write!(f, "{}: {problem}", file.display()),
        }
    }
}

/// The operating system's reason of `Io` is part of its message (so `{:#}` does not
/// repeat it); a program reads it from the variant.
impl std::error::Error for Error {}

impl From<CgError> for Error {
    fn from(e: CgError) -> Self {
        Error::NotConverged(e)
    }
}

impl Error {
    /// A `ShapeMismatch`.
    pub fn shape(
        tensor: impl Into<String>,
        found: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::ShapeMismatch {
            tensor: tensor.into(),
            found: found.to_string(),
            expected: expected.into(),
        }
    }

    /// An `InvalidValue`.
    pub fn value(tensor: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidValue {
            tensor: tensor.into(),
            problem: problem.into(),
        }
    }

    /// An `InvalidSetting`.
    pub fn setting(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidSetting {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// A `Format` error of `file`.
    pub fn format(file: &Path, problem: impl Into<String>) -> Self {
        Error::Format {
            file: file.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// An `Io` error: `action` (e.g. `cannot read`) on `path` failed with `source`.
    pub fn io(path: &Path, action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }

    /// The CG numbers of a `NotConverged`.
    pub fn cg(&self) -> Option<&CgError> {
        match self {
            Error::NotConverged(cg) => Some(cg),
            _ => None,
        }
    }
}

/// The CG failure inside `err`, if it is one (through any `context`).
pub fn cg_error(err: &anyhow::Error) -> Option<&CgError> {
    err.downcast_ref::<Error>().and_then(Error::cg)
}

/// `[a, b, c]`: a shape as messages write it.
pub fn shape_of(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cg::CgReport;

    #[test]
    fn downcasts_through_context() {
        let err = anyhow::Error::from(Error::setting("Hyper::tp.reg", "must be positive"))
            .context("loading")
            .context("outer");
        assert!(matches!(
            err.downcast_ref::<Error>(),
            Some(Error::InvalidSetting { field, .. }) if field == "Hyper::tp.reg"
        ));
        assert_eq!(
            format!("{err:#}"),
            "outer: loading: Hyper::tp.reg: must be positive"
        );
        let cg = CgError {
            report: CgReport::one(3, 0.5),
            tol: 1e-9,
            max_iter: 3,
        };
        let err = anyhow::Error::from(Error::from(cg)).context("step");
        assert_eq!(cg_error(&err), Some(&cg));
    }
}
