//! Errors that end a run.

/// Errors that end a run, each one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Port(#[from] pipeline::PortError),
    #[error("buffer pool: {0}")]
    Pool(#[from] pipeline::PoolError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            // Wrong, missing or unbound device, bad wire: the user's to fix.
            RunError::Port(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}
