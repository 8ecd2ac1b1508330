//! `pm2 jlist` / `prettylist`: PM2's `getMonitorData` array shape and field
//! names (`pm_id`, `name`, `pid`, `monit.memory`, `monit.cpu`,
//! `pm2_env.status`, `pm2_env.restart_time`, `pm2_env.pm_uptime`, …) on
//! stdout and nothing else. Differences, on purpose: `monit` is the whole
//! process tree (cgroup), not the main pid; `pm2_env.env` maps each variable
//! name to `"[redacted]"` and no variable is flattened into `pm2_env` — the
//! daemon never hands out values, so `jlist` cannot leak secrets.

use std::process::ExitCode;

use serde_json::{json, Map, Value};
use slotapi::AppInfo;

use super::super::Ctx;
use super::{all, username};

/// One PM2 process entry.
pub fn entry(a: &AppInfo, user: &str) -> Value {
    let mut env = Map::new();
    for k in &a.env_keys {
        env.insert(k.clone(), Value::String("[redacted]".into()));
    }
    let mut pm2_env = json!({
        "status": a.status.as_str(),
        "pm_id": a.pm_id,
        "name": a.name,
        "namespace": a.namespace,
        "restart_time": a.restarts,
        "unstable_restarts": a.unstable_restarts,
        "pm_uptime": a.started_at_ms.unwrap_or(a.created_at_ms),
        "created_at": a.created_at_ms,
        "exec_mode": "fork_mode",
        "exec_interpreter": a.interpreter.clone().unwrap_or_else(|| "none".into()),
        "pm_exec_path": a.exec_path,
        "pm_cwd": a.cwd,
        "pm_out_log_path": a.out_log.clone().unwrap_or_else(|| "/dev/null".into()),
        "pm_err_log_path": a.err_log.clone().unwrap_or_else(|| "/dev/null".into()),
        "pm_pid_path": a.pid_file,
        "node_args": [],
        "args": a.args,
        "pm_args": a.args,
        "instances": a.instances,
        "merge_logs": true,
        "autorestart": a.autorestart,
        "autostart": true,
        "watch": a.watch,
        "kill_timeout": a.kill_timeout_ms,
        "treekill": true,
        "instance_var": a.instance_var,
        "username": user,
        "version": "N/A",
        "env": Value::Object(env),
        "unique_id": format!("slotctl-{}", a.pm_id),
    });
    let o = pm2_env.as_object_mut().expect("object");
    o.insert(a.instance_var.clone(), json!(a.instance));
    if let Some(m) = a.max_memory_bytes {
        o.insert("max_memory_restart".into(), json!(m));
    }
    if let Some(c) = &a.cron_restart {
        o.insert("cron_restart".into(), json!(c));
    }
    if let Some(c) = a.exit_code {
        o.insert("exit_code".into(), json!(c));
    }
    json!({
        "pid": a.pid.unwrap_or(0),
        "name": a.name,
        "pm_id": a.pm_id,
        "monit": { "memory": a.memory_bytes, "cpu": a.cpu_percent },
        "pm2_env": pm2_env,
    })
}

pub async fn run(ctx: &Ctx, pretty: bool) -> anyhow::Result<ExitCode> {
    let apps = all(ctx).await?;
    let user = username();
    let list: Vec<Value> = apps.iter().map(|a| entry(a, &user)).collect();
    let text = if pretty {
        serde_json::to_string_pretty(&list)?
    } else {
        serde_json::to_string(&list)?
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
