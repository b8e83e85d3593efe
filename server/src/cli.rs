//! Administrative subcommands of the `hangar` binary, for scripts and first set-up:
//!
//! ```text
//! hangar user create NAME [--admin]          password from HANGAR_PASSWORD or one line of stdin
//! hangar user password NAME                  likewise
//! hangar user disable|enable NAME
//! hangar project create NAME [DESCRIPTION]
//! hangar role grant USER PROJECT reader|member
//! hangar role revoke USER PROJECT
//! hangar token create USER PROJECT [NAME]    prints the token secret (shown only this once)
//! ```
//!
//! They act on the database in the configured data directory (`--data-dir`, `--config`, env),
//! record what they did in the audit log as actor `cli`, and can run while the server runs.

use std::io::BufRead;

use records::{Db, NewAudit};

use crate::Config;

/// The words that start an administrative subcommand.
pub const COMMANDS: &[&str] = &["user", "project", "role", "token"];

pub const USAGE: &str = "\
Administrative commands (act on the data directory's database):
  hangar user create NAME [--admin]        password from HANGAR_PASSWORD or stdin
  hangar user password NAME                set a new password (HANGAR_PASSWORD or stdin)
  hangar user disable|enable NAME
  hangar project create NAME [DESCRIPTION]
  hangar role grant USER PROJECT reader|member
  hangar role revoke USER PROJECT
  hangar token create USER PROJECT [NAME]  prints a new API token for X-Auth-Token
";

/// A failed subcommand: the message for stderr and the exit status.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub status: u8,
}

fn usage(msg: &str) -> CliError {
    CliError { message: format!("{msg}\n\n{USAGE}"), status: 2 }
}

fn failed(msg: impl std::fmt::Display) -> CliError {
    CliError { message: msg.to_string(), status: 1 }
}

fn password() -> Result<String, CliError> {
    if let Ok(p) = std::env::var("HANGAR_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| failed(format!("cannot read the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn audit(db: &Db, action: &str, target_type: &str, target: &str, detail: &str) -> Result<(), CliError> {
    db.append_audit(&NewAudit {
        actor_name: "cli",
        action,
        target_type,
        target_id: target,
        detail,
        remote_addr: "local",
        outcome: "ok",
        ..Default::default()
    })
    .await
    .map_err(failed)
}

async fn user(db: &Db, name: &str) -> Result<records::UserRow, CliError> {
    db.user_by_name(name).await.map_err(failed)?.ok_or_else(|| failed(format!("there is no user '{name}'")))
}

async fn project(db: &Db, name: &str) -> Result<records::ProjectRow, CliError> {
    db.project_by_name(name).await.map_err(failed)?.ok_or_else(|| failed(format!("there is no project '{name}'")))
}

/// Runs one subcommand; `args` starts with its first word. Returns what to print on stdout.
pub async fn run(config: &Config, args: &[String]) -> Result<String, CliError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| failed(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let db = Db::open_sqlite(&config.database_path()).await.map_err(failed)?;
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match words.as_slice() {
        ["user", "create", name, rest @ ..] => {
            let admin = match rest {
                [] => false,
                ["--admin"] => true,
                _ => return Err(usage("unexpected arguments after the user name")),
            };
            let pw = password()?;
            let u = accounts::create_user(&db, name, &pw, admin).await.map_err(failed)?;
            audit(&db, "user.create", "user", &u.username, if admin { "admin" } else { "" }).await?;
            format!("created user {}{}", u.username, if admin { " (admin)" } else { "" })
        }
        ["user", "password", name] => {
            let u = user(&db, name).await?;
            accounts::reset_password(&db, &u.id, &password()?).await.map_err(failed)?;
            audit(&db, "user.reset_password", "user", &u.username, "").await?;
            format!("password of {} changed; their sessions have ended", u.username)
        }
        ["user", verb @ ("disable" | "enable"), name] => {
            let u = user(&db, name).await?;
            let disable = *verb == "disable";
            db.set_user_disabled(&u.id, disable).await.map_err(failed)?;
            audit(&db, if disable { "user.disable" } else { "user.enable" }, "user", &u.username, "").await?;
            format!("{} {}d", u.username, verb)
        }
        ["project", "create", name, rest @ ..] => {
            accounts::validate_name("A project name", name).map_err(failed)?;
            let description = rest.join(" ");
            let p = db.create_project(name, &description).await.map_err(|e| {
                if e.is_unique_violation() {
                    failed(format!("a project named '{name}' exists already"))
                } else {
                    failed(e)
                }
            })?;
            audit(&db, "project.create", "project", &p.name, "").await?;
            format!("created project {} ({})", p.name, p.id)
        }
        ["role", "grant", user_name, project_name, role] => {
            let role = policy::Role::parse(role).ok_or_else(|| usage("the role must be reader or member"))?;
            let (u, p) = (user(&db, user_name).await?, project(&db, project_name).await?);
            db.grant_role(&u.id, &p.id, role.as_str()).await.map_err(failed)?;
            audit(&db, "role.grant", "user", &u.username, &format!("{} in {}", role.as_str(), p.name)).await?;
            format!("{} is now {} in {}", u.username, role.as_str(), p.name)
        }
        ["role", "revoke", user_name, project_name] => {
            let (u, p) = (user(&db, user_name).await?, project(&db, project_name).await?);
            if !db.revoke_role(&u.id, &p.id).await.map_err(failed)? {
                return Err(failed(format!("{} has no role in {}", u.username, p.name)));
            }
            audit(&db, "role.revoke", "user", &u.username, &format!("in {}", p.name)).await?;
            format!("{} has no role in {} any more", u.username, p.name)
        }
        ["token", "create", user_name, project_name, rest @ ..] => {
            let (u, p) = (user(&db, user_name).await?, project(&db, project_name).await?);
            let issued = accounts::issue_token(&db, &u, &p.id, &rest.join(" ")).await.map_err(failed)?;
            audit(&db, "token.create", "token", &issued.row.id, &format!("for {} in {}", u.username, p.name)).await?;
            issued.secret
        }
        _ => return Err(usage("unknown or incomplete command")),
    };
    db.close().await;
    Ok(out)
}

/// First start: with `HANGAR_BOOTSTRAP_ADMIN` (and `HANGAR_BOOTSTRAP_PASSWORD`) set and no users
/// yet, creates that administrator and a project named `default` where they are a member.
pub async fn bootstrap(db: &Db, env: impl Fn(&str) -> Option<String>) -> Result<(), CliError> {
    let Some(name) = env("HANGAR_BOOTSTRAP_ADMIN").filter(|n| !n.trim().is_empty()) else { return Ok(()) };
    let Some(pw) = env("HANGAR_BOOTSTRAP_PASSWORD") else {
        return Err(failed("HANGAR_BOOTSTRAP_ADMIN is set but HANGAR_BOOTSTRAP_PASSWORD is not"));
    };
    if !accounts::bootstrap_admin(db, name.trim(), &pw).await.map_err(failed)? {
        return Ok(());
    }
    let user = user(db, name.trim()).await?;
    let project = match db.project_by_name("default").await.map_err(failed)? {
        Some(p) => p,
        None => db.create_project("default", "Created at first start").await.map_err(failed)?,
    };
    db.grant_role(&user.id, &project.id, "member").await.map_err(failed)?;
    audit(db, "user.create", "user", &user.username, "admin (bootstrap)").await?;
    tracing::info!(user = %user.username, "created the first administrator and the project 'default'");
    Ok(())
}
