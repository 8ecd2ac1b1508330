//! [`Pm2Error`]: why a whole PM2 file could not be read. Problems with one
//! app or one key are not errors of this kind but
//! [`Diagnostic`](crate::Diagnostic)s; this module must not grow variants for
//! them.

use std::path::PathBuf;
use std::time::Duration;

/// A file-level failure. Every variant names the file (`<input>` for text
/// given to [`parse_str`](crate::parse_str)).
#[derive(Debug, thiserror::Error)]
pub enum Pm2Error {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: not a PM2 file name; expected *.json, *.json5, *.yaml, *.yml, *.js, *.cjs, *.mjs or dump.pm2",
        file.display()
    )]
    UnknownFormat { file: PathBuf },

    /// The text does not parse as its format. `line`/`column` are 1-based
    /// when the parser reported them.
    #[error("{}{}: {format} syntax error: {message}", file.display(), location(*line, *column))]
    Syntax {
        file: PathBuf,
        format: &'static str,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// It parsed, but is not an app, a list of apps or `{ apps: [...] }`.
    #[error("{}: {message}", file.display())]
    Shape { file: PathBuf, message: String },

    #[error(
        "{}: JavaScript ecosystem files are evaluated by Node.js, and `node` was not found on PATH; install Node.js, or convert the file to JSON or YAML",
        file.display()
    )]
    NodeMissing { file: PathBuf },

    #[error("{}: cannot run {}: {source}", file.display(), node.display())]
    NodeSpawn {
        file: PathBuf,
        node: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: node did not finish evaluating the file within {timeout:?} (is it waiting on something?); it was killed",
        file.display()
    )]
    NodeTimeout { file: PathBuf, timeout: Duration },

    /// node exited non-zero (the file threw, or a `require` failed).
    #[error("{}: node could not evaluate the file ({status}):\n{stderr}", file.display())]
    NodeFailed {
        file: PathBuf,
        status: String,
        stderr: String,
    },

    /// node ran, but what it printed is not the exported configuration.
    #[error("{}: unexpected output from node: {message}", file.display())]
    NodeOutput { file: PathBuf, message: String },

    #[error(
        "{}: a JavaScript ecosystem file can only be loaded from disk (its require() calls resolve against its location); use load()",
        file.display()
    )]
    JavaScriptNeedsFile { file: PathBuf },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}
