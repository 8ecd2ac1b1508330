//! Which program runs a script, chosen from its extension as PM2 does
//! (`lib/API/interpreter.json`). A table and nothing else: it must not look
//! at the file system (PM2 also sniffs files for binaries; we cannot, and say
//! so through the caller's diagnostics).

use std::path::Path;

/// What the extension says about how to run a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByExtension {
    /// Run with this interpreter.
    Interpreter(&'static str),
    /// No extension: a binary or a script with a shebang; exec it directly.
    Direct,
    /// An extension PM2 has no entry for (PM2 falls back to node unless the
    /// file is a binary).
    Unknown,
}

/// Extension → interpreter. PM2 says `python` for `.py`; Debian and most
/// current systems only ship `python3`.
const TABLE: &[(&str, &str)] = &[
    ("js", "node"),
    ("mjs", "node"),
    ("cjs", "node"),
    ("py", "python3"),
    ("sh", "bash"),
    ("bash", "bash"),
    ("rb", "ruby"),
    ("php", "php"),
    ("pl", "perl"),
    ("coffee", "coffee"),
    ("ls", "lsc"),
    ("ts", "bun"),
    ("tsx", "bun"),
];

pub(crate) fn by_extension(script: &str) -> ByExtension {
    let Some(ext) = Path::new(script).extension().and_then(|e| e.to_str()) else {
        return ByExtension::Direct;
    };
    let ext = ext.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, i)| ByExtension::Interpreter(i))
        .unwrap_or(ByExtension::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use ByExtension::*;
        for (script, want) in [
            ("server.js", Interpreter("node")),
            ("./dist/app.mjs", Interpreter("node")),
            ("app.cjs", Interpreter("node")),
            ("APP.JS", Interpreter("node")),
            ("worker.py", Interpreter("python3")),
            ("run.sh", Interpreter("bash")),
            ("task.rb", Interpreter("ruby")),
            ("index.php", Interpreter("php")),
            ("cron.pl", Interpreter("perl")),
            ("x.coffee", Interpreter("coffee")),
            ("main.ts", Interpreter("bun")),
            ("/usr/bin/ttyd", Direct),
            ("npm", Direct),
            (".hidden", Direct),
            ("data.bin", Unknown),
        ] {
            assert_eq!(by_extension(script), want, "{script}");
        }
    }
}
