//! `[claude]` in the shared config file: transcript ingestion, the price
//! table and the default quotas. Raw serde structs reject unknown keys;
//! [`ClaudeConfig::from_file`] checks values and names file, key and reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use slotapi::config::{human, ConfigError, ConfigFile};

use super::transcript::Tokens;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cache creation (5-minute cache writes).
    pub cache_write: f64,
    pub cache_read: f64,
}

impl Price {
    const fn new(input: f64, output: f64) -> Price {
        // Anthropic's rule: cache writes cost 1.25x input, cache reads 0.1x.
        Price {
            input,
            output,
            cache_write: input * 1.25,
            cache_read: input / 10.0,
        }
    }

    pub fn cost(&self, t: Tokens) -> f64 {
        (t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_write as f64 * self.cache_write
            + t.cache_read as f64 * self.cache_read)
            / 1_000_000.0
    }
}

/// Built-in prices (USD per million tokens, Anthropic's list prices).
/// Keys are model-name prefixes; the bare family names are the fallback for
/// models newer than this table.
pub const DEFAULT_PRICES: &[(&str, Price)] = &[
    ("claude-opus-4-5", Price::new(5.0, 25.0)),
    ("claude-opus-4", Price::new(15.0, 75.0)),
    ("claude-3-opus", Price::new(15.0, 75.0)),
    ("claude-sonnet-4", Price::new(3.0, 15.0)),
    ("claude-3-7-sonnet", Price::new(3.0, 15.0)),
    ("claude-3-5-sonnet", Price::new(3.0, 15.0)),
    ("claude-haiku-4-5", Price::new(1.0, 5.0)),
    ("claude-3-5-haiku", Price::new(0.8, 4.0)),
    (
        "claude-3-haiku",
        Price {
            input: 0.25,
            output: 1.25,
            cache_write: 0.30,
            cache_read: 0.03,
        },
    ),
    ("opus", Price::new(5.0, 25.0)),
    ("sonnet", Price::new(3.0, 15.0)),
    ("haiku", Price::new(1.0, 5.0)),
];

/// The price table: the built-in entries, overridden and extended by
/// `[claude.prices]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices(BTreeMap<String, Price>);

impl Default for Prices {
    fn default() -> Self {
        Prices(
            DEFAULT_PRICES
                .iter()
                .map(|(k, p)| (k.to_string(), *p))
                .collect(),
        )
    }
}

impl Prices {
    /// The price for `model`: the longest key the model name starts with;
    /// else the longest key that is one of the name's `-`-separated words
    /// (the family: `opus`, `sonnet`, `haiku`); else none (cost 0, and the
    /// model shows as unpriced).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        let by_prefix = self
            .0
            .iter()
            .filter(|(k, _)| model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len());
        if let Some((_, p)) = by_prefix {
            return Some(p);
        }
        self.0
            .iter()
            .filter(|(k, _)| model.split('-').any(|w| w == k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| p)
    }

    pub fn cost(&self, model: &str, t: Tokens) -> f64 {
        self.lookup(model).map(|p| p.cost(t)).unwrap_or(0.0)
    }

    pub fn entries(&self) -> &BTreeMap<String, Price> {
        &self.0
    }
}

/// Limits; `None` is no limit. Tokens count input + output + cache writes
/// (cache reads are left out: Claude Code re-reads its cached context every
/// turn, so they dwarf the rest while costing a tenth; cost limits include
/// them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub daily_cost_usd: Option<f64>,
    pub monthly_cost_usd: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    watch: Option<bool>,
    prompt_chars: Option<usize>,
    #[serde(default, deserialize_with = "human::opt_duration")]
    rescan_interval: Option<Duration>,
    prompt_retention: Option<String>,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    #[serde(default)]
    quotas: Limits,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaudeConfig {
    /// Watch and ingest transcripts (default true).
    pub watch: bool,
    /// Characters of each prompt kept (after redaction); 0 keeps none.
    pub prompt_chars: usize,
    /// Full rescan period, the fallback when inotify misses something.
    pub rescan_interval: Duration,
    /// How long prompt summaries keep their text (`None`: forever). The
    /// rows stay, so prompt counts in usage do not change.
    pub prompt_retention: Option<Duration>,
    pub prices: Prices,
    /// Default quotas for every user.
    pub quotas: Limits,
}

impl Default for ClaudeConfig {
    fn default() -> Self {
        ClaudeConfig {
            watch: true,
            prompt_chars: 200,
            rescan_interval: Duration::from_secs(30),
            prompt_retention: Some(Duration::from_secs(180 * 86_400)),
            prices: Prices::default(),
            quotas: Limits::default(),
        }
    }
}

impl ClaudeConfig {
    pub fn from_file(cf: &ConfigFile) -> Result<ClaudeConfig, ConfigError> {
        let raw: Raw = cf.section("claude")?;
        let err = |key: String, reason: &str| ConfigError::new(&cf.path, key, reason);
        let d = ClaudeConfig::default();
        let prompt_chars = raw.prompt_chars.unwrap_or(d.prompt_chars);
        if prompt_chars > 10_000 {
            return Err(err("claude.prompt_chars".into(), "must be at most 10000"));
        }
        let rescan_interval = raw.rescan_interval.unwrap_or(d.rescan_interval);
        if rescan_interval < Duration::from_millis(100) {
            return Err(err(
                "claude.rescan_interval".into(),
                "must be at least 100ms",
            ));
        }
        let prompt_retention = match raw.prompt_retention.as_deref() {
            None => d.prompt_retention,
            Some("off") | Some("never") | Some("forever") => None,
            Some(s) => match slotapi::config::parse_duration(s) {
                Ok(v) if v >= Duration::from_secs(3600) => Some(v),
                Ok(_) => {
                    return Err(err(
                        "claude.prompt_retention".into(),
                        "must be at least 1h, or \"off\"",
                    ))
                }
                Err(r) => return Err(err("claude.prompt_retention".into(), &r)),
            },
        };
        let mut prices = d.prices;
        for (model, p) in raw.prices {
            for (field, v) in [
                ("input", p.input),
                ("output", p.output),
                ("cache_write", p.cache_write),
                ("cache_read", p.cache_read),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(err(
                        format!("claude.prices.{model}.{field}"),
                        "must be a non-negative number (USD per million tokens)",
                    ));
                }
            }
            if model.is_empty() {
                return Err(err("claude.prices".into(), "a model key is empty"));
            }
            prices.0.insert(model, p);
        }
        check_limits(&raw.quotas).map_err(|(k, r)| err(format!("claude.quotas.{k}"), r))?;
        Ok(ClaudeConfig {
            watch: raw.watch.unwrap_or(true),
            prompt_chars,
            rescan_interval,
            prompt_retention,
            prices,
            quotas: raw.quotas,
        })
    }
}

/// Cost limits must be finite and non-negative.
pub fn check_limits(l: &Limits) -> Result<(), (&'static str, &'static str)> {
    for (k, v) in [
        ("daily_cost_usd", l.daily_cost_usd),
        ("monthly_cost_usd", l.monthly_cost_usd),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                return Err((k, "must be a non-negative number of US dollars"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<ClaudeConfig, ConfigError> {
        ClaudeConfig::from_file(&ConfigFile::parse(Path::new("c.toml"), text).unwrap())
    }

    #[test]
    fn prefix_then_family_matching() {
        let p = Prices::default();
        assert_eq!(p.lookup("claude-opus-4-5-20251101").unwrap().input, 5.0);
        assert_eq!(p.lookup("claude-opus-4-1-20250805").unwrap().input, 15.0);
        assert_eq!(p.lookup("claude-sonnet-4-5-20250929").unwrap().output, 15.0);
        assert_eq!(p.lookup("claude-haiku-4-5-20251001").unwrap().input, 1.0);
        assert_eq!(p.lookup("claude-sonnet-9-20300101").unwrap().input, 3.0);
        assert!(p.lookup("<synthetic>").is_none());
        let t = Tokens {
            input: 1_000_000,
            output: 1_000_000,
            cache_read: 1_000_000,
            cache_write: 1_000_000,
        };
        let c = p.cost("claude-sonnet-4-5", t);
        assert!((c - (3.0 + 15.0 + 3.75 + 0.3)).abs() < 1e-9, "{c}");
    }

    #[test]
    fn config_overrides_and_errors() {
        let c = parse(
            "[claude]\nprompt_chars = 80\n[claude.prices]\n\"claude-sonnet-4\" = { input = 1, output = 2, cache_write = 3, cache_read = 4 }\n\"my-model\" = { input = 1, output = 1, cache_write = 1, cache_read = 1 }\n[claude.quotas]\ndaily_tokens = 1000\n",
        )
        .unwrap();
        assert_eq!(c.prompt_chars, 80);
        assert_eq!(
            c.prices.lookup("claude-sonnet-4-5").unwrap().cache_read,
            4.0
        );
        assert!(c.prices.lookup("my-model-x").is_some());
        assert_eq!(c.prices.lookup("claude-opus-4-5").unwrap().input, 5.0);
        assert_eq!(c.quotas.daily_tokens, Some(1000));
        assert_eq!(c.prompt_retention, Some(Duration::from_secs(180 * 86_400)));
        let c = parse("[claude]\nprompt_retention = \"off\"\n").unwrap();
        assert_eq!(c.prompt_retention, None);
        let e = parse("[claude]\nprompt_retention = \"5m\"\n").unwrap_err();
        assert_eq!(e.key, "claude.prompt_retention");

        let e = parse(
            "[claude.prices]\nx = { input = -1, output = 1, cache_write = 1, cache_read = 1 }\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "claude.prices.x.input");
        let e = parse("[claude.quotas]\ndaily_cost_usd = -2\n").unwrap_err();
        assert_eq!(e.key, "claude.quotas.daily_cost_usd");
        let e = parse("[claude]\nprompt_charz = 3\n").unwrap_err();
        assert_eq!(e.key, "claude");
        assert!(e.reason.contains("prompt_charz"), "{e}");
    }
}
