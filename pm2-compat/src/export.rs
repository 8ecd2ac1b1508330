//! Rendering [`AppSpec`]s as the `[[apps]]` tables of the slotctl config,
//! for `slotctl import pm2`. It owns the text layout only; the field names,
//! defaults and duration format come from `spec` through serde, so that what
//! is written here reads back as the same specs. It must not write files.

use serde::Serialize;

use crate::AppSpec;

#[derive(Serialize)]
struct AppsSection<'a> {
    apps: &'a [AppSpec],
}

/// `[[apps]]` tables, one per app, with durations as strings (`"500ms"`)
/// and sizes in bytes. Empty and unset optional fields are left out.
pub fn to_toml(apps: &[AppSpec]) -> String {
    // AppSpec holds only strings, integers, booleans, lists and string-keyed
    // maps, and its paths serialise lossily, so TOML cannot refuse it; the
    // fallback keeps that an invariant rather than a panic.
    toml::to_string(&AppsSection { apps })
        .unwrap_or_else(|e| format!("# pm2-compat could not render the apps: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthCheck;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Back {
        apps: Vec<AppSpec>,
    }

    #[test]
    fn renders_and_reads_back() {
        let mut a = AppSpec::new("api", "/srv/api/server.js");
        a.interpreter = Some("node".into());
        a.env.insert("PORT".into(), "3000".into());
        a.restart_delay_ms = 1500;
        a.exp_backoff_initial_ms = Some(100);
        a.max_memory_bytes = Some(200 << 20);
        a.cron_restart = Some("0 4 * * *".into());
        a.health = Some(HealthCheck {
            url: "http://127.0.0.1:3000/health".into(),
            ..Default::default()
        });
        let b = AppSpec::new("worker", "bin/worker");
        let text = to_toml(&[a.clone(), b.clone()]);
        assert!(text.contains("[[apps]]"), "{text}");
        assert!(text.contains("restart_delay_ms = \"1500ms\""), "{text}");
        assert!(text.contains("kill_timeout_ms = \"1600ms\""), "{text}");
        assert!(text.contains("min_uptime_ms = \"1s\""), "{text}");
        assert!(
            text.contains(&format!("max_memory_bytes = {}", 200 << 20)),
            "{text}"
        );
        let back: Back = toml::from_str(&text).unwrap();
        assert_eq!(back.apps, vec![a, b]);
    }

    #[test]
    fn no_apps_is_an_empty_list() {
        let back: Back = toml::from_str(&to_toml(&[])).unwrap();
        assert!(back.apps.is_empty());
    }
}
