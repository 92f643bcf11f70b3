//! The library's error type: every variant says which file, field or step went wrong and why.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library, structured so that the command line can print a
/// message a user can act on (the file, the field, what was expected).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching `path` (its message once: not also chained as
    /// a source, so that a printed error chain does not repeat it).
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file whose contents are not what its format requires.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A data specification that cannot be resolved.
    #[error("data spec '{spec}': {msg}")]
    DataSpec { spec: String, msg: String },
    /// A configuration value that is missing, unknown or out of range.
    #[error("config: {0}")]
    Config(String),
    /// Tensor or data shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Training produced a NaN or infinite loss; the checkpoint at `checkpoint` is intact.
    #[error(
        "training stopped at step {step}: the loss or its gradient is {value} (not finite); the \
         run keeps its checkpoint of step {checkpoint} (resume from it with --resume, perhaps with \
         a smaller --set optim.lr=…)"
    )]
    NonFinite {
        step: u64,
        value: f64,
        checkpoint: u64,
    },
    /// A run directory or checkpoint that cannot be used.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// A request that makes no sense (bad argument values and the like).
    #[error("{0}")]
    Invalid(String),
    /// A request beyond a documented limit of `limits` (its cost in the message).
    #[error("{0}; that is beyond elbo's limit (see `elbo --help`): pass --force to run it anyway")]
    Limit(String),
    /// Training was interrupted by the user; the checkpoint at `step` is complete.
    #[error("interrupted at step {step}; checkpoint saved, continue with --resume")]
    Interrupted { step: u64 },
}

impl Error {
    /// An I/O error tied to a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A format error tied to a path.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
