//! How a batch is executed: [`Strategy`], and the [`TaskKind`] hint `Auto` chooses from.

use serde::{Deserialize, Serialize};

/// Environment variable that overrides the strategy of every pool: `serial`, `threads`,
/// `rayon` or `auto`.
pub const STRATEGY_ENV: &str = "FANOUT_STRATEGY";

/// A strategy name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}={value:?} is not a strategy; expected one of: serial, threads, rayon, auto")]
pub struct UnknownStrategy {
    /// Where the value came from (an environment variable, a setting).
    pub source_name: String,
    pub value: String,
}

/// How a batch is executed (ADR-004, Rust-native).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// On the calling thread, one task after another, in input order. For debugging and
    /// determinism.
    Serial,
    /// One blocking OS thread per worker slot. For subprocesses and I/O-bound work.
    Threads,
    /// A rayon pool sized to `max_workers` (never the global pool). For CPU-bound in-process
    /// work.
    Rayon,
    /// Choose from the task kind, the number of tasks and of workers.
    #[default]
    Auto,
}

impl Strategy {
    /// Parse `serial`, `threads`, `rayon` or `auto` (case-insensitive).
    /// `source_name` names where the value came from, for the error message.
    pub fn parse(value: &str, source_name: &str) -> Result<Self, UnknownStrategy> {
        match value.trim().to_ascii_lowercase().as_str() {
            "serial" => Ok(Strategy::Serial),
            "threads" => Ok(Strategy::Threads),
            "rayon" => Ok(Strategy::Rayon),
            "auto" => Ok(Strategy::Auto),
            _ => Err(UnknownStrategy {
                source_name: source_name.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// The strategy set by [`STRATEGY_ENV`], if it is set. An unknown value is an error, never
    /// silently ignored; an empty value counts as unset.
    pub fn from_env() -> Result<Option<Self>, UnknownStrategy> {
        match std::env::var(STRATEGY_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Self::parse(&v, STRATEGY_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(UnknownStrategy {
                source_name: STRATEGY_ENV.to_owned(),
                value: v.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The concrete strategy `Auto` stands for here. One task or one worker is always serial
    /// (no thread to start, so never slower than serial); otherwise the kind decides.
    pub fn resolve(self, kind: TaskKind, tasks: usize, max_workers: usize) -> Strategy {
        match self {
            Strategy::Auto if tasks <= 1 || max_workers == 1 => Strategy::Serial,
            Strategy::Auto => match kind {
                TaskKind::Blocking => Strategy::Threads,
                TaskKind::Cpu => Strategy::Rayon,
            },
            concrete => concrete,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Serial => "serial",
            Strategy::Threads => "threads",
            Strategy::Rayon => "rayon",
            Strategy::Auto => "auto",
        }
    }
}

/// What the tasks mostly do, as a hint for [`Strategy::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskKind {
    /// Wait on subprocesses, the network or disks.
    #[default]
    Blocking,
    /// Compute in-process.
    Cpu,
}
