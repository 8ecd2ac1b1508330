//! Claude Code's transcript lines (`<config dir>/projects/<project>/<session>.jsonl`)
//! turned into the few facts slotgate accounts for. Pure: one line in, at
//! most one [`Record`] out, so it is tested on fixtures without a daemon.
//!
//! The format is Claude Code's, not ours, and it grows: every line is a JSON
//! object with a `type`. We read three shapes and skip every other type
//! (`summary`, `system`, `file-history-snapshot`, `queue-operation`, …):
//!
//! - `user` lines whose `message.content` is the person's text (a string, or
//!   an array holding `text` blocks) are prompts. User lines that only carry
//!   `tool_result` blocks, and `isMeta` lines Claude Code writes itself, are
//!   not prompts.
//! - `assistant` lines carry `message.id`, `message.model`, `message.usage`
//!   and content blocks; Claude Code writes one line per content block, each
//!   repeating the message's id and usage, so the store keys messages by id.
//! - `tool_use` blocks inside assistant content are tool calls (`name`, and
//!   the file for the file tools).

use serde_json::Value;

/// Token counts of one assistant message, as the API reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    /// Each count the larger of the two (lines of one message repeat its
    /// usage; a streamed message's later lines may carry more output).
    pub fn max(self, o: Tokens) -> Tokens {
        Tokens {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cache_read: self.cache_read.max(o.cache_read),
            cache_write: self.cache_write.max(o.cache_write),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The `tool_use` block's id (`toolu_…`): unique, so calls count once.
    pub id: String,
    pub name: String,
    /// The file an Edit/Write/MultiEdit/NotebookEdit/Read call touches.
    pub file: Option<String>,
}

/// Facts every record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// The line's `uuid` (Claude Code's own unique id per line).
    pub uuid: String,
    pub session: String,
    pub ts_ms: i64,
    /// `cwd`: the project directory Claude Code ran in.
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Prompt {
        meta: Meta,
        /// The sanitised summary: secrets redacted, cut to the configured length.
        summary: String,
    },
    Assistant {
        meta: Meta,
        /// `message.id` (`msg_…`).
        message_id: String,
        model: String,
        tokens: Tokens,
        tools: Vec<ToolCall>,
    },
}

/// Why a line yielded nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, or not an object: counted as malformed.
    Malformed(String),
    /// A valid line of a kind we do not account for (unknown `type`, tool
    /// results, meta lines): ignored silently.
    Ignored,
}

/// Tools whose input names a file, and the key that holds it.
fn file_key(tool: &str) -> Option<&'static str> {
    match tool {
        "Edit" | "Write" | "MultiEdit" | "Read" => Some("file_path"),
        "NotebookEdit" => Some("notebook_path"),
        _ => None,
    }
}

fn parse_ts(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn meta(v: &Value) -> Option<Meta> {
    Some(Meta {
        uuid: v.get("uuid")?.as_str()?.to_string(),
        session: v
            .get("sessionId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        ts_ms: parse_ts(v.get("timestamp"))?,
        cwd: v.get("cwd").and_then(Value::as_str).map(str::to_string),
    })
}

/// The person's text in a user message, if it is a prompt.
fn prompt_text(content: &Value) -> Option<String> {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            if blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            {
                return None;
            }
            let parts: Vec<&str> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            if parts.is_empty() {
                return None;
            }
            parts.join("\n")
        }
        _ => return None,
    };
    let t = text.trim();
    // Claude Code's own notes in the user role (command output, caveats,
    // interruptions) are not what the person asked.
    if t.is_empty()
        || t.starts_with("<local-command-stdout>")
        || t.starts_with("<local-command-caveat>")
        || t.starts_with("[Request interrupted")
    {
        return None;
    }
    Some(t.to_string())
}

fn count(u: &Value, key: &str) -> u64 {
    u.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Parse one complete line.
pub fn parse_line(line: &str, prompt_chars: usize) -> Result<Record, Skip> {
    let v: Value = serde_json::from_str(line).map_err(|e| Skip::Malformed(e.to_string()))?;
    if !v.is_object() {
        return Err(Skip::Malformed("not a JSON object".into()));
    }
    match v.get("type").and_then(Value::as_str) {
        Some("user") => {
            if v.get("isMeta").and_then(Value::as_bool) == Some(true) {
                return Err(Skip::Ignored);
            }
            let meta = meta(&v).ok_or(Skip::Ignored)?;
            let text = v
                .pointer("/message/content")
                .and_then(prompt_text)
                .ok_or(Skip::Ignored)?;
            Ok(Record::Prompt {
                meta,
                summary: summarise(&text, prompt_chars),
            })
        }
        Some("assistant") => {
            let meta = meta(&v).ok_or(Skip::Ignored)?;
            let msg = v.get("message").ok_or(Skip::Ignored)?;
            let message_id = msg
                .get("id")
                .and_then(Value::as_str)
                .ok_or(Skip::Ignored)?
                .to_string();
            let model = msg
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            let tokens = msg
                .get("usage")
                .map(|u| Tokens {
                    input: count(u, "input_tokens"),
                    output: count(u, "output_tokens"),
                    cache_read: count(u, "cache_read_input_tokens"),
                    cache_write: count(u, "cache_creation_input_tokens"),
                })
                .unwrap_or_default();
            let tools = msg
                .get("content")
                .and_then(Value::as_array)
                .map(|blocks| {
                    blocks
                        .iter()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                        .filter_map(|b| {
                            let name = b.get("name")?.as_str()?.to_string();
                            let file = file_key(&name)
                                .and_then(|k| b.pointer(&format!("/input/{k}")))
                                .and_then(Value::as_str)
                                .map(str::to_string);
                            Some(ToolCall {
                                id: b.get("id")?.as_str()?.to_string(),
                                name,
                                file,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Record::Assistant {
                meta,
                message_id,
                model,
                tokens,
                tools,
            })
        }
        _ => Err(Skip::Ignored),
    }
}

/// Secrets that must never reach the store: Anthropic and OpenAI-style API
/// keys, AWS access key ids, GitHub tokens, bearer tokens, private-key
/// blocks. Each match becomes `[redacted]`.
pub fn redact(s: &str) -> String {
    const PREFIXES: &[&str] = &[
        "sk-ant-", "sk-proj-", "sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghs_", "ghu_", "xoxb-",
        "xoxp-",
    ];
    let mut out = String::with_capacity(s.len());
    if let Some(start) = s.find("-----BEGIN") {
        if s[start..].contains("PRIVATE KEY-----") {
            out.push_str(&redact(&s[..start]));
            out.push_str("[redacted]");
            let rest = &s[start..];
            let end = rest
                .find("-----END")
                .and_then(|e| rest[e + 8..].find("-----").map(|x| e + 8 + x + 5))
                .unwrap_or(rest.len());
            out.push_str(&redact(&rest[end..]));
            return out;
        }
    }
    let is_tok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = s;
    let mut bearer = false;
    while !rest.is_empty() {
        let skip = rest.find(|c: char| is_tok(c)).unwrap_or(rest.len());
        out.push_str(&rest[..skip]);
        rest = &rest[skip..];
        let len = rest.find(|c: char| !is_tok(c)).unwrap_or(rest.len());
        let word = &rest[..len];
        let secret = (bearer && len >= 16)
            || PREFIXES
                .iter()
                .any(|p| word.starts_with(p) && len >= p.len() + 16);
        bearer = word.eq_ignore_ascii_case("bearer");
        out.push_str(if secret { "[redacted]" } else { word });
        rest = &rest[len..];
    }
    out
}

/// The stored form of a prompt: whitespace collapsed, secrets redacted,
/// at most `chars` characters (an ellipsis marks a cut).
pub fn summarise(text: &str, chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let clean = redact(&flat);
    if clean.chars().count() <= chars {
        return clean;
    }
    let mut cut: String = clean.chars().take(chars).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/claude")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn prompts_tools_and_usage_from_a_real_shaped_session() {
        let text = fixture("alice/-work-shop/6f1c2a9e-3b1d-4c55-9a0e-1d2f3c4b5a60.jsonl");
        let mut prompts = Vec::new();
        let mut msgs = std::collections::BTreeMap::new();
        let mut tools = Vec::new();
        let mut malformed = 0;
        for line in text.lines() {
            match parse_line(line, 200) {
                Ok(Record::Prompt { summary, meta }) => {
                    assert_eq!(meta.session, "6f1c2a9e-3b1d-4c55-9a0e-1d2f3c4b5a60");
                    prompts.push(summary)
                }
                Ok(Record::Assistant {
                    message_id,
                    model,
                    tokens,
                    tools: t,
                    ..
                }) => {
                    let e = msgs.entry(message_id).or_insert((model, Tokens::default()));
                    e.1 = e.1.max(tokens);
                    tools.extend(t);
                }
                Err(Skip::Malformed(_)) => malformed += 1,
                Err(Skip::Ignored) => {}
            }
        }
        assert_eq!(prompts.len(), 2, "{prompts:?}");
        assert!(prompts[0].starts_with("Add a price filter"), "{prompts:?}");
        assert!(
            prompts[1].contains("[redacted]") && !prompts[1].contains("sk-ant-"),
            "{prompts:?}"
        );
        // Three messages, the first written as three lines (one per block).
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        let total: u64 = msgs.values().map(|(_, t)| t.output).sum();
        assert_eq!(total, 412 + 96 + 58);
        assert_eq!(malformed, 1);
        let names: Vec<(&str, Option<&str>)> = tools
            .iter()
            .map(|t| (t.name.as_str(), t.file.as_deref()))
            .collect();
        assert!(names.contains(&("Read", Some("/work/shop/src/filters.ts"))));
        assert!(names.contains(&("Edit", Some("/work/shop/src/filters.ts"))));
        assert!(names.contains(&("Bash", None)));
    }

    #[test]
    fn tool_results_meta_and_unknown_types_are_not_prompts() {
        let lines = [
            r#"{"type":"user","uuid":"u1","sessionId":"s","timestamp":"2026-11-20T10:00:00Z","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok"}]}}"#,
            r#"{"type":"user","isMeta":true,"uuid":"u2","sessionId":"s","timestamp":"2026-11-20T10:00:00Z","message":{"role":"user","content":"Caveat: ..."}}"#,
            r#"{"type":"file-history-snapshot","messageId":"m","snapshot":{}}"#,
            r#"{"type":"summary","summary":"Shop filters","leafUuid":"x"}"#,
            r#"{"type":"brand-new-kind","uuid":"z"}"#,
        ];
        for l in lines {
            assert_eq!(parse_line(l, 100), Err(Skip::Ignored), "{l}");
        }
        assert!(matches!(
            parse_line("{\"type\":", 100),
            Err(Skip::Malformed(_))
        ));
        assert!(matches!(parse_line("[1,2]", 100), Err(Skip::Malformed(_))));
    }

    #[test]
    fn redaction_and_summaries() {
        let key = format!("sk-ant-api03-{}", "A".repeat(40));
        let s = summarise(&format!("use   {key}\nplease"), 200);
        assert_eq!(s, "use [redacted] please");
        assert_eq!(
            redact("Authorization: Bearer abcdefghijklmnopqrstuvwxyz"),
            "Authorization: Bearer [redacted]"
        );
        assert_eq!(redact("id AKIAABCDEFGHIJKLMNOP."), "id [redacted].");
        assert_eq!(
            redact("k: -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- done"),
            "k: [redacted] done"
        );
        assert_eq!(redact("sk-short stays"), "sk-short stays");
        assert_eq!(summarise("héllo wörld", 5), "héllo…");
    }
}
