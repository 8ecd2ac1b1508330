//! `slotctl import pm2 <file>`: translate a PM2 ecosystem file or PM2's
//! saved process list (`~/.pm2/dump.pm2`) with pm2-compat and add the apps
//! as `[[apps]]` tables to the config file. Shows the diagnostics and a diff
//! first, applies with `--yes` (or after a yes at the prompt), refuses names
//! the config already has, validates the whole new file before writing it,
//! and writes through a temp file and a rename: never half-applied.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use pm2_compat::{Format, Options};
use slotapi::config::ConfigFile;

use super::{print_json, Ctx};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum What {
    /// A PM2 ecosystem file (.config.js/.cjs/.mjs, .json, .yaml) or dump.pm2.
    Pm2 {
        file: PathBuf,
        /// Apply without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Show the diagnostics and the diff, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Merge `env_<name>` over `env` (PM2's --env).
        #[arg(long)]
        env: Option<String>,
        /// Only these apps (comma-separated).
        #[arg(long)]
        only: Option<String>,
    },
}

/// A minimal line diff (longest common subsequence); config files are small.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(text.as_bytes())?;
    tmp.1.sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp.0, meta.permissions());
    }
    std::fs::rename(&tmp.0, path).with_context(|| format!("replacing {}", path.display()))
}

fn tempfile_in(dir: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let p = dir.join(format!(".slotgate.toml.import-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&p)
        .with_context(|| format!("creating {}", p.display()))?;
    Ok((p, f))
}

pub async fn run(ctx: &Ctx, what: What) -> anyhow::Result<ExitCode> {
    let What::Pm2 {
        file,
        yes,
        dry_run,
        env,
        only,
    } = what;
    let t = if Format::from_path(&file) == Some(Format::Dump) {
        pm2_compat::load_dump(&file)?
    } else {
        let opts = Options {
            env_profile: env,
            only: only.into_iter().collect(),
            ..Options::default()
        };
        pm2_compat::load(&file, &opts)?
    };
    for d in &t.diagnostics {
        eprintln!("{d}");
    }
    if t.apps.is_empty() {
        bail!("{}: no app can be imported", file.display());
    }
    let clash: Vec<&str> = t
        .apps
        .iter()
        .filter(|a| ctx.cfg.apps.iter().any(|c| c.name.as_str() == a.name))
        .map(|a| a.name.as_str())
        .collect();
    if !clash.is_empty() {
        bail!(
            "the config already has app(s) named {}; remove their [[apps]] tables first (or import with --only)",
            clash.join(", ")
        );
    }
    let target = ctx
        .config_arg
        .clone()
        .unwrap_or_else(|| PathBuf::from("slotgate.toml"));
    let old = match std::fs::read_to_string(&target) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    let mut new = old.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    if !new.is_empty() {
        new.push('\n');
    }
    new.push_str(&format!(
        "# Imported from {} by `slotctl import pm2` on {}.\n",
        std::path::absolute(&file).unwrap_or(file.clone()).display(),
        crate::clock::rfc3339_now()
    ));
    new.push_str(&pm2_compat::to_toml(&t.apps));
    // The whole new file must load before anything is written.
    let cf = ConfigFile::parse(&target, &new)
        .map_err(|e| anyhow::anyhow!("the result would not load: {e}"))?;
    Config::from_file(&cf)
        .map_err(|e| anyhow::anyhow!("the result would not load: {e}; nothing was written"))?;
    let d = diff(&old, &new);
    if ctx.json {
        print_json(&serde_json::json!({
            "config": target.display().to_string(),
            "apps": t.apps.iter().map(|a| &a.name).collect::<Vec<_>>(),
            "diagnostics": t.diagnostics,
            "diff": d,
            "applied": yes && !dry_run,
        }));
    } else {
        println!("--- {}", target.display());
        println!(
            "+++ {} (with {} imported app(s))",
            target.display(),
            t.apps.len()
        );
        print!("{d}");
    }
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "[slotctl] not applied: re-run with --yes to write {}",
                target.display()
            );
            return Ok(ExitCode::from(1));
        }
        eprint!("Apply to {}? [y/N] ", target.display());
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("[slotctl] nothing changed");
            return Ok(ExitCode::from(1));
        }
    }
    write_atomic(&target, &new)?;
    eprintln!(
        "[slotctl] wrote {} app(s) to {}; restart the daemon to run them (running apps and slots are re-adopted, nothing stops)",
        t.apps.len(),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_marks_added_and_removed_lines() {
        assert_eq!(diff("a\nb\n", "a\nb\nc\n"), "+c\n");
        assert_eq!(diff("a\nb\nc\n", "a\nc\n"), "-b\n");
        assert_eq!(diff("", "x\n"), "+x\n");
    }
}
