//! `slotctl user add|passwd|disable|enable|role|logout|list`: local accounts
//! in `<data_dir>/identity.db`, the same store slotgate signs people in
//! with. Works without the daemon. Generated passwords are printed once on
//! stdout and must be changed at first sign-in; `--password-stdin` reads one
//! instead (never from the command line, where `ps` would show it).

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;
use identity::access::Role;
use identity::store::Store;

use super::{human_ms, print_json, table, Ctx, Usage};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a local account.
    Add {
        name: String,
        /// admin, user or viewer.
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (generated and printed once unless --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and end all of its sessions (open terminals close).
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Change an account's role (admin, user, viewer). The choice is kept
    /// when the user signs in through an identity provider again, until
    /// `--from-provider` hands the role back to the provider's groups.
    Role {
        name: String,
        #[arg(required_unless_present = "from_provider")]
        role: Option<String>,
        /// Let the provider's group mapping decide from the next sign-in.
        #[arg(long, conflicts_with = "role")]
        from_provider: bool,
    },
    /// End every session of an account ("log out everywhere").
    Logout { name: String },
    /// List accounts.
    List,
    /// Create an API token for an account (printed once; stored hashed).
    TokenAdd {
        name: String,
        /// What the token is for (shown in `tokens`).
        #[arg(long, default_value = "api")]
        label: String,
        /// Scopes, e.g. `embed` for a host app's backend that mints embed tokens.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime such as 30d or 12h [default: no expiry].
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List API tokens (all, or one account's).
    Tokens { name: Option<String> },
    /// Revoke an API token by id.
    TokenRevoke { id: String },
}

fn role(s: &str) -> Result<Role, Usage> {
    Role::parse(s).ok_or_else(|| Usage(format!("{s:?} is not a role; use admin, user or viewer")))
}

fn read_password() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

pub fn run(ctx: &Ctx, cmd: UserCmd) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&ctx.cfg.paths.data_dir)?;
    let store = Store::open(&ctx.cfg.paths.data_dir.join("identity.db"))?;
    match cmd {
        UserCmd::Add {
            name,
            role: r,
            email,
            password_stdin,
        } => {
            let r = role(&r)?;
            let (password, generated) = if password_stdin {
                (read_password()?, false)
            } else {
                (identity::session::random_token(15), true)
            };
            store.add_user(&name, r, Some(&password), email.as_deref())?;
            if generated {
                store.set_password(&name, &password, true)?;
                println!(
                    "created {name} ({}); one-time password: {password}",
                    r.as_str()
                );
                eprintln!("they must choose a new password at first sign-in");
            } else {
                println!("created {name} ({})", r.as_str());
            }
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            if password_stdin {
                store.set_password(&name, &read_password()?, false)?;
                println!("password of {name} changed");
            } else {
                let password = identity::session::random_token(15);
                store.set_password(&name, &password, true)?;
                println!("new one-time password for {name}: {password}");
            }
        }
        UserCmd::Disable { name } => {
            store.set_disabled(&name, true)?;
            println!("{name} disabled; their sessions are revoked");
        }
        UserCmd::Enable { name } => {
            store.set_disabled(&name, false)?;
            println!("{name} enabled");
        }
        UserCmd::Role {
            name,
            role: Some(r),
            ..
        } => {
            let r = role(&r)?;
            store.set_role(&name, r)?;
            println!(
                "{name} is now {} (kept across provider sign-ins)",
                r.as_str()
            );
        }
        UserCmd::Role { name, .. } => {
            store.unpin_role(&name)?;
            println!("{name}'s role follows the identity provider's groups from the next sign-in");
        }
        UserCmd::Logout { name } => {
            if store.user(&name)?.is_none() {
                anyhow::bail!("no user named {name}");
            }
            let n = store.revoke_user_sessions(&name)?;
            println!("{n} session(s) of {name} revoked");
        }
        UserCmd::List => {
            let users = store.users()?;
            if ctx.json {
                print_json(&users);
            } else {
                let now = crate::clock::now_ms();
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.as_str().to_string(),
                            if u.disabled { "disabled" } else { "active" }.to_string(),
                            u.email.clone().unwrap_or_else(|| "-".into()),
                            if u.has_password { "local" } else { "external" }.to_string(),
                            human_ms(now.saturating_sub(u.created_ms)),
                        ]
                    })
                    .collect();
                table(&["NAME", "ROLE", "STATE", "EMAIL", "SIGN-IN", "AGE"], &rows);
            }
        }
        UserCmd::TokenAdd {
            name,
            label,
            scopes,
            ttl,
        } => {
            let ttl_ms = ttl
                .map(|t| slotapi::config::parse_duration(&t).map_err(Usage))
                .transpose()?
                .map(|d| d.as_millis() as u64);
            let (info, token) = store.create_api_token(&name, &label, &scopes, ttl_ms)?;
            println!("{token}");
            eprintln!(
                "token {} for {name} (scopes: {}); shown once, store it now",
                info.id,
                scopes.join(" ")
            );
        }
        UserCmd::Tokens { name } => {
            let tokens = store.api_tokens(name.as_deref())?;
            if ctx.json {
                print_json(&tokens);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.user.clone(),
                            t.name.clone(),
                            t.scopes.join(" "),
                            if t.revoked { "revoked" } else { "active" }.to_string(),
                            t.expires_ms.map_or("never".into(), crate::clock::rfc3339),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "USER", "LABEL", "SCOPES", "STATE", "EXPIRES"],
                    &rows,
                );
            }
        }
        UserCmd::TokenRevoke { id } => {
            if !store.revoke_api_token(&id)? {
                anyhow::bail!("no API token with id {id}");
            }
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
