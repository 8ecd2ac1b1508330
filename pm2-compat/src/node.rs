//! Evaluating `ecosystem.config.{js,cjs,mjs}` with a real `node` in a
//! subprocess, as PM2 itself does with `require()`. This module owns the one
//! child process pm2-compat ever starts: it finds `node`, runs a tiny inline
//! script that prints the module's export as JSON, enforces the timeout and
//! kills the child's whole process group when it runs out. It must not
//! interpret the configuration it gets back.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Options, Pm2Error};

/// Printed before the JSON so that anything the configuration file itself
/// writes to stdout (a `console.log` while loading) is not mistaken for it.
const MARKER: &str = "\n@@slotgate-pm2-compat:export@@\n";

/// Loads the file given as argv[1] the way PM2 does (`require`), falling back
/// to `import()` for ES modules, and prints `module.exports` (or the default
/// export) as JSON. RegExp values (used in `ignore_watch`) would otherwise
/// serialise as `{}`, so they are tagged.
const EVAL_SCRIPT: &str = r#"
const file = process.argv[1];
const { pathToFileURL } = require('url');
const replacer = (_key, value) => {
  if (value instanceof RegExp) return { $regexp: value.source, $flags: value.flags };
  if (typeof value === 'bigint') return value.toString();
  return value;
};
(async () => {
  let mod;
  if (/\.mjs$/i.test(file)) {
    mod = await import(pathToFileURL(file).href);
  } else {
    try {
      mod = require(file);
    } catch (e) {
      if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
        mod = await import(pathToFileURL(file).href);
      } else {
        throw e;
      }
    }
  }
  let conf = mod;
  if (conf && Object.prototype.toString.call(conf) === '[object Module]') {
    conf = 'default' in conf ? conf.default : Object.assign({}, conf);
  } else if (conf && conf.__esModule && 'default' in conf) {
    conf = conf.default;
  }
  conf = await conf;
  process.stdout.write(MARKER + JSON.stringify(conf === undefined ? null : conf, replacer) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
"#;

/// Evaluate `file` with node and return its export as JSON.
pub(crate) fn evaluate(file: &Path, opts: &Options) -> Result<serde_json::Value, Pm2Error> {
    let path_var = opts
        .search_path
        .clone()
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let node = find_program("node", &path_var).ok_or_else(|| Pm2Error::NodeMissing {
        file: file.to_path_buf(),
    })?;
    let script = EVAL_SCRIPT.replace("MARKER", &format!("{MARKER:?}"));

    let mut cmd = Command::new(&node);
    cmd.arg("-e")
        .arg(script)
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout also kills anything the
        // configuration file started.
        .process_group(0);
    if opts.search_path.is_some() {
        cmd.env("PATH", &path_var);
    }
    let mut child = cmd.spawn().map_err(|source| Pm2Error::NodeSpawn {
        file: file.to_path_buf(),
        node: node.clone(),
        source,
    })?;

    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + opts.node_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&child);
                let _ = child.kill();
                let _ = child.wait();
                return Err(Pm2Error::NodeTimeout {
                    file: file.to_path_buf(),
                    timeout: opts.node_timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                kill_group(&child);
                return Err(Pm2Error::NodeSpawn {
                    file: file.to_path_buf(),
                    node,
                    source,
                });
            }
        }
    };
    // Something the file spawned may keep the pipes open after node exits;
    // wait for the output only briefly rather than forever.
    let grace = Duration::from_secs(1);
    let (out, err) = match (stdout.recv_timeout(grace), stderr.recv_timeout(grace)) {
        (Ok(out), Ok(err)) => (out, err),
        (out, err) => {
            // The group still has members holding the pipes; the group id
            // cannot have been reused while they live.
            kill_group(&child);
            (out.unwrap_or_default(), err.unwrap_or_default())
        }
    };

    if !status.success() {
        return Err(Pm2Error::NodeFailed {
            file: file.to_path_buf(),
            status: status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&err), 20),
        });
    }
    let out = String::from_utf8_lossy(&out);
    let Some((_, json)) = out.rsplit_once(MARKER) else {
        return Err(Pm2Error::NodeOutput {
            file: file.to_path_buf(),
            message:
                "the file exited before its export could be printed (does it call process.exit?)"
                    .into(),
        });
    };
    serde_json::from_str(json.trim()).map_err(|e| Pm2Error::NodeOutput {
        file: file.to_path_buf(),
        message: format!("not JSON: {e}"),
    })
}

/// The first executable `name` in a `PATH`-style list.
pub(crate) fn find_program(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn kill_group(child: &std::process::Child) {
    // ESRCH (already gone) is the common, uninteresting case.
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::KILL,
    );
}

/// The last `lines` lines of node's stderr, without the stack frames inside
/// node itself and our loader, which say nothing about the user's file.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .trim_end()
        .lines()
        .filter(|l| !l.contains("(node:internal/") && !l.contains("[eval]"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
