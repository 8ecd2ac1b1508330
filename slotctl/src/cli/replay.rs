//! `slotctl replay <session-id | --file path.cast> [--speed X] [--max-idle S]
//! [--dump]`: play an asciicast v2 recording in this terminal at its real
//! pace, or (`--dump`) print the screen it ends on, rendered by a terminal
//! emulator (`vt100`), and exit. A session id is fetched from the control
//! API (`GET /v1/recordings/{id}/cast`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{Ctx, Usage};

pub struct Args {
    pub session: Option<String>,
    pub file: Option<PathBuf>,
    pub speed: f64,
    pub max_idle: Option<f64>,
    pub dump: bool,
}

/// One parsed recording.
#[derive(Debug)]
pub struct Cast {
    pub width: u16,
    pub height: u16,
    pub title: Option<String>,
    /// (time, code, data) in file order.
    pub events: Vec<(f64, String, String)>,
}

/// Parse asciicast v2 text; errors name `source`, the line and the reason.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Cast> {
    let mut lines = text.lines().enumerate();
    let (_, first) = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("{source}: empty file, not an asciicast recording"))?;
    let header: Value = serde_json::from_str(first)
        .with_context(|| format!("{source}: line 1: the header is not JSON"))?;
    if header["version"] != 2 {
        bail!(
            "{source}: line 1: asciicast version {} is not supported (only 2)",
            header["version"]
        );
    }
    let dim = |k: &str| -> anyhow::Result<u16> {
        header[k]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("{source}: line 1: header `{k}` is missing or not a size")
            })
    };
    let (width, height) = (dim("width")?, dim("height")?);
    let mut events = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("{source}: line {}: not an event [time, code, data]", i + 1);
        let v: Value = serde_json::from_str(line).with_context(bad)?;
        let (Some(t), Some(code), Some(data)) = (v[0].as_f64(), v[1].as_str(), v[2].as_str())
        else {
            bail!(bad());
        };
        events.push((t, code.to_string(), data.to_string()));
    }
    Ok(Cast {
        width,
        height,
        title: header["title"].as_str().map(str::to_string),
        events,
    })
}

/// The screen the recording ends on: its text, one line per row, trailing
/// blanks trimmed.
pub fn final_screen(cast: &Cast) -> String {
    let mut p = vt100::Parser::new(cast.height, cast.width, 0);
    for (_, code, data) in &cast.events {
        match code.as_str() {
            "o" => p.process(data.as_bytes()),
            "r" => {
                if let Some((c, r)) = parse_size(data) {
                    p.screen_mut().set_size(r, c);
                }
            }
            _ => {}
        }
    }
    let text = p.screen().contents();
    let mut out: Vec<&str> = text.lines().map(str::trim_end).collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (c, r) = s.split_once('x')?;
    Some((c.trim().parse().ok()?, r.trim().parse().ok()?))
}

async fn fetch(ctx: &Ctx, id: &str) -> anyhow::Result<String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Usage(format!("{id:?} is not a session id")).into());
    }
    let socket = ctx.cfg.paths.control_socket();
    let (status, body) = slotapi::get_unix(
        &socket,
        &format!("/v1/recordings/{id}/cast"),
        &[],
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| ctx.explain(e))?;
    if status != 200 {
        let msg = serde_json::from_slice::<slotapi::ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("recording {id}: the daemon answered {status}: {msg}");
    }
    String::from_utf8(body.to_vec()).with_context(|| format!("recording {id} is not UTF-8"))
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        return Err(Usage("--speed must be a number above 0".into()).into());
    }
    if args.max_idle.is_some_and(|m| !(m >= 0.0 && m.is_finite())) {
        return Err(Usage("--max-idle must be a number of seconds, 0 or more".into()).into());
    }
    let (source, text) = match (&args.session, &args.file) {
        (Some(_), Some(_)) => {
            return Err(Usage("give a session id or --file, not both".into()).into())
        }
        (None, None) => return Err(Usage("give a session id or --file <path.cast>".into()).into()),
        (None, Some(f)) => (f.display().to_string(), read(f)?),
        (Some(id), None) => (format!("recording {id}"), fetch(ctx, id).await?),
    };
    let cast = parse(&source, &text)?;
    if args.dump {
        print!("{}", final_screen(&cast));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "replaying {} ({}x{}, {:.1}s at {}x); Ctrl-C stops",
        cast.title.as_deref().unwrap_or("recording"),
        cast.width,
        cast.height,
        cast.events.last().map_or(0.0, |e| e.0),
        args.speed
    );
    play(&cast, args.speed, args.max_idle, &mut std::io::stdout()).await?;
    Ok(ExitCode::SUCCESS)
}

fn read(f: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))
}

/// Write the output events at their pace: gaps divided by `speed`, each
/// capped at `max_idle` seconds (before the speed applies).
async fn play(
    cast: &Cast,
    speed: f64,
    max_idle: Option<f64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut prev = 0.0;
    for (t, code, data) in &cast.events {
        let mut gap = (t - prev).max(0.0);
        prev = *t;
        if let Some(m) = max_idle {
            gap = gap.min(m);
        }
        if gap > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(gap / speed)).await;
        }
        match code.as_str() {
            "o" => {
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
            "m" => eprintln!("\r\n[{data}]"),
            _ => {}
        }
    }
    out.write_all(b"\r\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_the_final_screen_with_resizes() {
        let text = concat!(
            r#"{"version":2,"width":20,"height":4,"timestamp":1,"title":"t"}"#,
            "\n",
            r#"[0.1, "o", "hello\r\nworld"]"#,
            "\n",
            r#"[0.2, "r", "10x3"]"#,
            "\n",
            r#"[0.3, "i", "ignored"]"#,
            "\n",
            r#"[0.4, "o", "\u001b[2J\u001b[Hcleared \u00e9"]"#,
            "\n",
        );
        let cast = parse("x.cast", text).unwrap();
        assert_eq!((cast.width, cast.height), (20, 4));
        assert_eq!(cast.events.len(), 4);
        assert_eq!(final_screen(&cast), "cleared é\n");
    }

    #[tokio::test]
    async fn play_writes_the_output_in_order_and_caps_idle_time() {
        let text = concat!(
            r#"{"version":2,"width":20,"height":4}"#,
            "\n",
            r#"[0.0, "o", "a"]"#,
            "\n",
            r#"[3600.0, "i", "typed"]"#,
            "\n",
            r#"[7200.0, "o", "b\u00e9"]"#,
            "\n",
        );
        let cast = parse("x.cast", text).unwrap();
        let mut out = Vec::new();
        // Two hours of recorded silence, capped at 1 ms each.
        let started = std::time::Instant::now();
        play(&cast, 1.0, Some(0.001), &mut out).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(String::from_utf8(out).unwrap(), "abé\r\n");
    }

    #[test]
    fn bad_files_are_explained() {
        let e = parse("x.cast", "").unwrap_err().to_string();
        assert!(e.contains("x.cast") && e.contains("empty"), "{e}");
        let e = parse("x.cast", r#"{"version":1,"width":1,"height":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 1"), "{e}");
        let e = parse(
            "x.cast",
            "{\"version\":2,\"width\":80,\"height\":24}\n[1, 2]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
