//! pm2-compat reads PM2 configuration — ecosystem files in JSON (JSON5), YAML
//! or JavaScript, and PM2's saved process list `dump.pm2` — and translates it
//! into slotctl [`AppSpec`]s plus [`Diagnostic`]s for everything that does
//! not carry over exactly. It is pure: parse → translate → (specs,
//! diagnostics). Its only I/O is reading the input file and, for JavaScript
//! files, running `node` to evaluate it; it never starts the apps, never
//! writes files, and never panics on odd input — unsupported PM2 keys become
//! warnings, unrunnable apps become errors.
//!
//! ```no_run
//! let opts = pm2_compat::Options { env_profile: Some("production".into()), ..Default::default() };
//! let t = pm2_compat::load("ecosystem.config.js".as_ref(), &opts)?;
//! for d in &t.diagnostics {
//!     eprintln!("{d}");
//! }
//! print!("{}", pm2_compat::to_toml(&t.apps));
//! # Ok::<(), pm2_compat::Pm2Error>(())
//! ```

mod dump;
mod error;
mod export;
mod interpreter;
mod node;
mod spec;
mod translate;
pub mod units;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::Pm2Error;
pub use export::to_toml;
pub use spec::*;

use translate::Source;

/// How to read a PM2 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--env <profile>`: merge `env_<profile>` (and `deploy.<profile>.env`)
    /// into `env`, as `pm2 start --env <profile>` does.
    pub env_profile: Option<String>,
    /// `--only a,b`: keep only these apps (entries may themselves be
    /// comma-separated).
    pub only: Vec<String>,
    /// What `instances: "max"`, `0` and `-N` count from.
    pub cpu_count: u32,
    /// How long node may take to evaluate a JavaScript file.
    pub node_timeout: Duration,
    /// Directory that relative `cwd`s resolve against, and every app's `cwd`
    /// when it has none. `None`: [`load`] uses the file's directory (PM2 uses
    /// the shell's, which is usually the same); [`parse_str`] leaves relative
    /// paths relative.
    pub base_dir: Option<PathBuf>,
    /// `PATH` to find `node` in (and to give it); `None` uses this process's.
    pub search_path: Option<OsString>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env_profile: None,
            only: Vec::new(),
            cpu_count: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            node_timeout: Duration::from_secs(10),
            base_dir: None,
            search_path: None,
        }
    }
}

/// The kinds of PM2 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json`/`.json5`: PM2 evaluates these as a JavaScript object literal,
    /// so they are read as JSON5 (comments, unquoted keys, trailing commas).
    Json,
    /// `.yaml`/`.yml`.
    Yaml,
    /// `.js`/`.cjs`/`.mjs`: evaluated by `node`.
    JavaScript,
    /// `dump.pm2`, PM2's saved process list.
    Dump,
}

impl Format {
    /// The format a file name implies, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".pm2") || name.ends_with(".pm2.bak") {
            return Some(Format::Dump);
        }
        match name.rsplit_once('.')?.1 {
            "json" | "json5" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "js" | "cjs" | "mjs" => Some(Format::JavaScript),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON5",
            Format::Yaml => "YAML",
            Format::JavaScript => "JavaScript",
            Format::Dump => "JSON",
        }
    }
}

/// Load and translate a PM2 file; its format comes from its name
/// ([`Format::from_path`]). `Err` means the file as a whole could not be
/// read; problems with single apps are in [`Translation::diagnostics`].
pub fn load(path: &Path, opts: &Options) -> Result<Translation, Pm2Error> {
    let format = Format::from_path(path).ok_or_else(|| Pm2Error::UnknownFormat {
        file: path.to_path_buf(),
    })?;
    let read_err = |source| Pm2Error::Read {
        file: path.to_path_buf(),
        source,
    };
    // node resolves symlinks for __dirname; resolve them here too so that
    // paths built from __dirname and relative paths agree.
    let abs = std::fs::canonicalize(path).map_err(read_err)?;
    let base_dir = opts
        .base_dir
        .clone()
        .or_else(|| abs.parent().map(Path::to_path_buf));
    let src = Source {
        label: path,
        file: Some(path),
        base_dir: base_dir.as_deref(),
    };
    let doc = match format {
        Format::JavaScript => node::evaluate(&abs, opts)?,
        _ => {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            parse_text(&text, format, path)?
        }
    };
    match format {
        // A dump's paths are absolute already.
        Format::Dump => dump::translate_dump(
            &doc,
            &Source {
                base_dir: None,
                ..src
            },
            opts,
        ),
        _ => translate::translate_document(&doc, &src, opts),
    }
}

/// Translate PM2 configuration given as text. [`Format::JavaScript`] needs
/// a file (use [`load`]). Relative paths resolve against
/// [`Options::base_dir`], or stay relative without one.
pub fn parse_str(text: &str, format: Format, opts: &Options) -> Result<Translation, Pm2Error> {
    let label = Path::new("<input>");
    let src = Source {
        label,
        file: None,
        base_dir: opts.base_dir.as_deref(),
    };
    if format == Format::JavaScript {
        return Err(Pm2Error::JavaScriptNeedsFile {
            file: label.to_path_buf(),
        });
    }
    let doc = parse_text(text, format, label)?;
    match format {
        Format::Dump => dump::translate_dump(&doc, &src, opts),
        _ => translate::translate_document(&doc, &src, opts),
    }
}

/// Load PM2's saved process list (`~/.pm2/dump.pm2`), whatever its name.
pub fn load_dump(path: &Path) -> Result<Translation, Pm2Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Pm2Error::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let doc = parse_text(&text, Format::Dump, path)?;
    let src = Source {
        label: path,
        file: Some(path),
        base_dir: None,
    };
    dump::translate_dump(&doc, &src, &Options::default())
}

/// Text → JSON value, with syntax errors located.
fn parse_text(text: &str, format: Format, label: &Path) -> Result<serde_json::Value, Pm2Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |line: Option<usize>, column: Option<usize>, message: String| Pm2Error::Syntax {
        file: label.to_path_buf(),
        format: format.name(),
        line,
        column,
        message,
    };
    match format {
        Format::Json => json5::from_str(text).map_err(|e| {
            let pos = e.position();
            syntax(
                pos.map(|p| p.line + 1),
                pos.map(|p| p.column + 1),
                format!(
                    "{e} (PM2 reads .json as a JavaScript object literal; if it uses expressions such as process.env, rename it to ecosystem.config.js)"
                ),
            )
        }),
        Format::Yaml => serde_norway::from_str(text).map_err(|e| {
            let loc = e.location();
            syntax(
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
                e.to_string(),
            )
        }),
        Format::Dump => serde_json::from_str(text).map_err(|e| {
            syntax(Some(e.line()), Some(e.column()), e.to_string())
        }),
        Format::JavaScript => Err(Pm2Error::JavaScriptNeedsFile {
            file: label.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        for (name, want) in [
            ("ecosystem.config.js", Some(Format::JavaScript)),
            ("ecosystem.config.cjs", Some(Format::JavaScript)),
            ("ecosystem.config.mjs", Some(Format::JavaScript)),
            ("processes.json", Some(Format::Json)),
            ("processes.JSON5", Some(Format::Json)),
            ("eco.yaml", Some(Format::Yaml)),
            ("eco.yml", Some(Format::Yaml)),
            ("/root/.pm2/dump.pm2", Some(Format::Dump)),
            ("dump.pm2.bak", Some(Format::Dump)),
            ("eco.toml", None),
            ("Makefile", None),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn json_syntax_errors_carry_line_and_column() {
        let err = parse_str(
            "{\n  apps: [\n    { script: 'a.js' ,, }\n  ]\n}",
            Format::Json,
            &Options::default(),
        )
        .unwrap_err();
        match &err {
            Pm2Error::Syntax { line, .. } => assert_eq!(*line, Some(3), "{err}"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("<input>:3:"), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_carry_the_line() {
        let err = parse_str(
            "apps:\n  - script: a.js\n   name: [x\n",
            Format::Yaml,
            &Options::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, Pm2Error::Syntax { line: Some(_), .. }),
            "{err}"
        );
    }

    #[test]
    fn javascript_text_needs_a_file() {
        let err = parse_str(
            "module.exports = {}",
            Format::JavaScript,
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Pm2Error::JavaScriptNeedsFile { .. }));
    }
}
