//! Identities: password hashing (Argon2id), sign-in with throttling, API tokens, and turning a
//! session or a token into a [`policy::Principal`].
//!
//! Storage is `records`; rules about who may do what are `policy`. This crate holds the secrets
//! handling in between, so that the web layer never touches a password hash or a token secret.
#![forbid(unsafe_code)]

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use password_hash::rand_core::{OsRng, RngCore};
use password_hash::SaltString;
use policy::{Principal, Role, Scope};
use records::{Db, DbError, UserRow};
use sha2::{Digest, Sha256};

/// Failed sign-ins per username before that account is locked out for [`THROTTLE_WINDOW_SECS`]:
/// five leaves room for typos while making online guessing hopeless.
pub const MAX_FAILURES_PER_USER: u32 = 5;
/// Sign-in fields longer than this (bytes) are refused unread: usernames are at most 64
/// characters and passwords at most 1,024 (see `validate_name`, `validate_password`).
pub const MAX_SIGN_IN_FIELD_BYTES: usize = 4096;
/// Failed sign-ins per client address (any usernames) before it is locked out: stops one client
/// from spraying a common password across many accounts.
pub const MAX_FAILURES_PER_ADDR: u32 = 20;
/// The window both limits count over, in seconds (15 minutes, as OWASP suggests).
pub const THROTTLE_WINDOW_SECS: u32 = 15 * 60;
/// Shortest password accepted (NIST SP 800-63B's minimum for user-chosen secrets).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted: bounds the hashing work one request can cause.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Prefix of API token secrets, so leaked tokens are recognisable (and greppable) as Hangar's.
pub const TOKEN_PREFIX: &str = "hgr_";

/// What can go wrong in this layer. Messages are shown to users as they are.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Wrong username or password (deliberately not saying which).
    #[error("The username or password is incorrect.")]
    BadCredentials,
    #[error("This account is disabled. Ask an administrator to enable it.")]
    Disabled,
    #[error("Too many failed sign-ins. Wait {minutes} minutes and try again.")]
    Throttled { minutes: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} is already taken.")]
    Taken(String),
    #[error("{0} does not exist.")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

// ---- passwords ---------------------------------------------------------------------------------

/// Checks a new password against the length rules.
pub fn validate_password(password: &str) -> Result<(), AccountError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(AccountError::Invalid(format!("Passwords need at least {MIN_PASSWORD_LEN} characters.")));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AccountError::Invalid(format!("Passwords can have at most {MAX_PASSWORD_LEN} bytes.")));
    }
    Ok(())
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane — OWASP's
/// recommended minimum) and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| AccountError::Hash(e.to_string()))
}

/// Verifies a password against a stored PHC string; any malformed hash verifies as false.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A valid hash of a random password, verified against when the username does not exist so that
/// the response time does not tell whether an account exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token_body()).unwrap_or_default())
}

// ---- usernames and project names ---------------------------------------------------------------

/// Usernames and project names: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), AccountError> {
    let ok_len = (1..=64).contains(&name.chars().count());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!("{kind} must be 1 to 64 characters: letters, digits, '.', '_', '-' or '@'.")))
    }
}

// ---- users -------------------------------------------------------------------------------------

/// Creates a user after validating the name and password.
pub async fn create_user(db: &Db, username: &str, password: &str, is_admin: bool) -> Result<UserRow, AccountError> {
    let username = username.trim();
    validate_name("A username", username)?;
    validate_password(password)?;
    let hash = hash_password(password)?;
    db.create_user(username, "", "", &hash, is_admin).await.map_err(|e| {
        if e.is_unique_violation() {
            AccountError::Taken(format!("The username '{username}'"))
        } else {
            e.into()
        }
    })
}

/// Sets a new password (ending the user's sessions).
pub async fn reset_password(db: &Db, user_id: &str, password: &str) -> Result<(), AccountError> {
    validate_password(password)?;
    let hash = hash_password(password)?;
    if db.set_password_hash(user_id, &hash).await? {
        Ok(())
    } else {
        Err(AccountError::NotFound("That user".into()))
    }
}

/// Creates the first administrator if there are no users yet. Returns whether it did.
pub async fn bootstrap_admin(db: &Db, username: &str, password: &str) -> Result<bool, AccountError> {
    if db.count_users().await? > 0 {
        return Ok(false);
    }
    create_user(db, username, password, true).await?;
    Ok(true)
}

/// Signs a user in: throttling first, then the password, then the disabled flag (only revealed
/// to someone who knows the password). Failures are recorded for throttling.
pub async fn sign_in(db: &Db, username: &str, password: &str, remote_addr: &str) -> Result<UserRow, AccountError> {
    let username = username.trim();
    // No account has a longer name or password: refuse without storing or hashing anything
    // (a megabyte of "username" must not become a megabyte of throttle rows or Argon2 input).
    if username.len() > MAX_SIGN_IN_FIELD_BYTES || password.len() > MAX_SIGN_IN_FIELD_BYTES {
        return Err(AccountError::BadCredentials);
    }
    // The attempt counts as a failure from the start, so parallel attempts see each other; a
    // right password takes it back.
    let source = throttle_source(remote_addr);
    let Some(attempt) =
        db.begin_sign_in_attempt(username, &source, THROTTLE_WINDOW_SECS, MAX_FAILURES_PER_USER, MAX_FAILURES_PER_ADDR).await?
    else {
        return Err(AccountError::Throttled { minutes: THROTTLE_WINDOW_SECS / 60 });
    };
    let user = db.user_by_name(username).await?;
    let ok = match &user {
        Some(u) => verify_password(password, &u.password_hash),
        None => {
            let _ = verify_password(password, decoy_hash());
            false
        }
    };
    match user {
        Some(user) if ok => {
            if user.disabled {
                return Err(AccountError::Disabled);
            }
            db.sign_in_succeeded(attempt, username).await?;
            Ok(user)
        }
        _ => Err(AccountError::BadCredentials),
    }
}

/// What the per-address sign-in limit counts by: the address, except that IPv6 clients are
/// counted by their /64 (one subscriber's network: its addresses are free to rotate through).
pub fn throttle_source(remote_addr: &str) -> String {
    match remote_addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| remote_addr.to_owned(), |v4| v4.to_string()),
        _ => remote_addr.to_owned(),
    }
}

// ---- per-request authentication ---------------------------------------------------------------

/// Session keys under which a signed-in browser's identity is kept.
pub mod session_keys {
    /// The user's id.
    pub const USER_ID: &str = "auth.user_id";
    /// The user's `session_epoch` at sign-in; a different current epoch ends the session.
    pub const EPOCH: &str = "auth.epoch";
    /// The project chosen in the UI.
    pub const PROJECT: &str = "auth.project";
}

/// Who made the current request, resolved once by the server's authentication middleware and
/// put into the request's extensions for handlers and server functions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authn {
    /// None for anonymous requests.
    pub principal: Option<Principal>,
    /// Projects the user may switch to (session sign-ins only).
    pub scopes: Vec<Scope>,
    /// The client's address, for the audit log and throttling.
    pub remote_addr: String,
    /// True when authenticated by `X-Auth-Token` rather than a session cookie.
    pub via_token: bool,
}

// ---- principals --------------------------------------------------------------------------------

/// The principal for a signed-in session: the user must still exist, be enabled and be in the
/// same session epoch; the scope is `preferred_project` if the user has a role there, else their
/// first project. Returns None when the session is no longer valid.
pub async fn principal_for_session(
    db: &Db,
    user_id: &str,
    epoch: i64,
    preferred_project: Option<&str>,
) -> Result<Option<(Principal, Vec<Scope>)>, AccountError> {
    let Some(user) = db.user_by_id(user_id).await? else { return Ok(None) };
    if user.disabled || user.session_epoch != epoch {
        return Ok(None);
    }
    let scopes = scopes_of(db, &user).await?;
    let scope = preferred_project.and_then(|p| scopes.iter().find(|s| s.project_id == p)).or_else(|| scopes.first()).cloned();
    Ok(Some((Principal { user_id: user.id, username: user.username, is_admin: user.is_admin, scope, via_token: false }, scopes)))
}

/// Every project the user can act in. Admins can act in every project (as member).
pub async fn scopes_of(db: &Db, user: &UserRow) -> Result<Vec<Scope>, AccountError> {
    if user.is_admin {
        let roles = db.roles_of_user(&user.id).await?;
        return Ok(db
            .list_projects()
            .await?
            .into_iter()
            .map(|p| {
                let role = roles.iter().find(|r| r.project_id == p.id).and_then(|r| Role::parse(&r.role)).unwrap_or(Role::Member);
                Scope { project_id: p.id, project_name: p.name, role }
            })
            .collect());
    }
    Ok(db
        .roles_of_user(&user.id)
        .await?
        .into_iter()
        .filter_map(|r| Role::parse(&r.role).map(|role| Scope { project_id: r.project_id, project_name: r.project_name, role }))
        .collect())
}

// ---- API tokens --------------------------------------------------------------------------------

fn random_token_body() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    digests::hex(&bytes)
}

/// SHA-256 of a token secret, as stored. Tokens are 256 random bits, so a fast hash is enough
/// (there is nothing to brute-force), and lookups stay a single indexed query.
pub fn token_hash(secret: &str) -> String {
    digests::hex(&Sha256::digest(secret.as_bytes()))
}

/// A freshly issued token: the secret is shown once and never stored.
#[derive(Debug)]
pub struct IssuedToken {
    pub secret: String,
    pub row: records::TokenRow,
}

/// Issues a token for `user` scoped to `project_id`; the user needs a role there (or be admin).
pub async fn issue_token(db: &Db, user: &UserRow, project_id: &str, name: &str) -> Result<IssuedToken, AccountError> {
    issue_expiring_token(db, user, project_id, name, None).await
}

/// The longest lifetime a token may be given, in days (a year plus a leap day).
pub const MAX_TOKEN_DAYS: u32 = 366;

/// As [`issue_token`], for a token that stops working `expires_in_days` days from now.
pub async fn issue_expiring_token(
    db: &Db,
    user: &UserRow,
    project_id: &str,
    name: &str,
    expires_in_days: Option<u32>,
) -> Result<IssuedToken, AccountError> {
    if let Some(days) = expires_in_days {
        if !(1..=MAX_TOKEN_DAYS).contains(&days) {
            return Err(AccountError::Invalid(format!("A token can last 1 to {MAX_TOKEN_DAYS} days, or until revoked.")));
        }
    }
    let scopes = scopes_of(db, user).await?;
    if !scopes.iter().any(|s| s.project_id == project_id) {
        return Err(AccountError::Invalid("You can only create tokens for a project you have a role in.".into()));
    }
    let name = name.trim();
    if name.chars().count() > 100 {
        return Err(AccountError::Invalid("Token names can have at most 100 characters.".into()));
    }
    let secret = format!("{TOKEN_PREFIX}{}", random_token_body());
    let row = db.create_expiring_token(&user.id, project_id, name, &token_hash(&secret), expires_in_days).await?;
    Ok(IssuedToken { secret, row })
}

/// The principal an `X-Auth-Token` stands for: scoped to the token's project, with the user's
/// current role there (revoking the role or disabling the user takes effect at once).
pub async fn principal_for_token(db: &Db, secret: &str) -> Result<Option<Principal>, AccountError> {
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let Some(token) = db.use_token(&token_hash(secret)).await? else { return Ok(None) };
    let Some(user) = db.user_by_id(&token.user_id).await? else { return Ok(None) };
    if user.disabled {
        return Ok(None);
    }
    let scopes = scopes_of(db, &user).await?;
    let Some(scope) = scopes.into_iter().find(|s| s.project_id == token.project_id) else { return Ok(None) };
    Ok(Some(Principal { user_id: user.id, username: user.username, is_admin: user.is_admin, scope: Some(scope), via_token: true }))
}

#[cfg(test)]
mod tests;
