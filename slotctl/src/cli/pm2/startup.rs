//! `pm2 startup`: write a systemd unit that runs the daemon at boot and
//! resurrects the saved apps. Better than PM2's: the daemon runs in the
//! foreground (no PID file), and `KillMode=process` so that restarting the
//! service never kills the apps or slots (they are re-adopted).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Init system; only systemd is supported.
    #[arg(default_value = "systemd")]
    platform: String,
    /// Where to write the unit.
    #[arg(long, default_value = "/etc/systemd/system/slotctl.service")]
    output: PathBuf,
    /// User the daemon runs as.
    #[arg(long, short = 'u')]
    user: Option<String>,
}

pub fn unit(exe: &str, config: Option<&str>, user: &str) -> String {
    let cfg = config.map(|c| format!(" --config {c}")).unwrap_or_default();
    format!(
        "# Written by `slotctl pm2 startup`.\n\
         [Unit]\n\
         Description=slotctl supervisor (slotgate slots and apps)\n\
         After=network.target\n\n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         ExecStart={exe}{cfg} daemon\n\
         ExecStartPost={exe}{cfg} pm2 resurrect\n\
         ExecReload={exe}{cfg} pm2 reload all\n\
         # Apps and slots outlive the daemon; a restart re-adopts them.\n\
         KillMode=process\n\
         Restart=on-failure\n\
         LimitNOFILE=infinity\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    if a.platform != "systemd" {
        return Err(super::Usage(format!(
            "init system {:?} is not supported; use systemd",
            a.platform
        ))
        .into());
    }
    let exe = std::env::current_exe()?.display().to_string();
    let config = ctx
        .config_arg
        .as_ref()
        .map(|c| std::path::absolute(c).map(|p| p.display().to_string()))
        .transpose()?;
    let user = a.user.unwrap_or_else(super::username);
    let text = unit(&exe, config.as_deref(), &user);
    let tmp = a.output.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!("[slotctl] wrote {}", a.output.display());
    println!("[slotctl] enable it with: systemctl daemon-reload && systemctl enable --now slotctl");
    println!("[slotctl] then save the running apps with: slotctl pm2 save");
    Ok(ExitCode::SUCCESS)
}
