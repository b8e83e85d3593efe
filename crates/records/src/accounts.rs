//! Users, projects, role assignments, quotas, API tokens, sign-in failures and the audit log.
//!
//! Only storage lives here; hashing, throttling rules and policy live in `accounts` and `policy`.

use sqlx::FromRow;

use crate::{Db, DbError};

/// A user account as stored.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub session_epoch: i64,
    pub created_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
}

/// One role grant, with the names a screen shows.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct RoleRow {
    pub user_id: String,
    pub username: String,
    pub project_id: String,
    pub project_name: String,
    pub role: String,
    pub granted_at: String,
}

/// A project's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromRow)]
pub struct QuotaRow {
    pub max_images: Option<i64>,
    pub max_bytes: Option<i64>,
    pub max_concurrent_uploads: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    pub project_name: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// When the token stops working by itself; None: when revoked.
    pub expires_at: Option<String>,
}

/// Audit fields other than `detail` keep at most this many characters (usernames, project
/// names and ids are at most 255 when valid; anything longer was hostile and is cut).
pub const AUDIT_FIELD_CHARS: usize = 255;
/// `detail` keeps at most this many characters.
pub const AUDIT_DETAIL_CHARS: usize = 1000;

/// `s` cut to `max` characters, with "…" marking the cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// `s` cut to `max` characters without marking (a borrowed prefix).
fn clip_str(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        None => s,
        Some((at, _)) => &s[..at],
    }
}

/// One audit entry to append.
#[derive(Clone, Debug, Default)]
pub struct NewAudit<'a> {
    pub actor_id: Option<&'a str>,
    pub actor_name: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub detail: &'a str,
    pub remote_addr: &'a str,
    /// `ok`, `denied` or `failed`.
    pub outcome: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor_name: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub detail: String,
    pub remote_addr: String,
    pub outcome: String,
}

/// Filters of the audit screen; empty strings mean "any".
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: String,
    pub action: String,
    pub outcome: String,
    /// Entries strictly older than this id (paging backwards); None = newest.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The most audit rows one page returns.
pub const MAX_AUDIT_PAGE: u32 = 500;

const USER_COLUMNS: &str = "id, username, display_name, email, password_hash, is_admin, disabled, session_epoch, created_at";

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Db {
    // ---- users -------------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        email: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<UserRow, DbError> {
        let sql = format!(
            "INSERT INTO users (id, username, display_name, email, password_hash, is_admin) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
        );
        Ok(sqlx::query_as(&sql)
            .bind(new_id())
            .bind(username)
            .bind(display_name)
            .bind(email)
            .bind(password_hash)
            .bind(is_admin)
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?");
        Ok(sqlx::query_as(&sql).bind(username).fetch_optional(self.pool()).await?)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, DbError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        Ok(sqlx::query_as(&sql).fetch_all(self.pool()).await?)
    }

    pub async fn count_users(&self) -> Result<u64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(self.pool()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Enables or disables a user. Disabling also ends their sessions (the epoch moves on).
    /// Returns false if there is no such user.
    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE users SET disabled = ?, session_epoch = session_epoch + ?, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
        )
        .bind(disabled)
        .bind(i64::from(disabled))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a password hash and ends the user's other sessions.
    pub async fn set_password_hash(&self, id: &str, password_hash: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
        )
        .bind(password_hash)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_user_admin(&self, id: &str, is_admin: bool) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE users SET is_admin = ? WHERE id = ?").bind(is_admin).bind(id).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- projects ----------------------------------------------------------------------------

    pub async fn create_project(&self, name: &str, description: &str) -> Result<ProjectRow, DbError> {
        Ok(sqlx::query_as(
            "INSERT INTO projects (id, name, description) VALUES (?, ?, ?) \
             RETURNING id, name, description, created_at",
        )
        .bind(new_id())
        .bind(name)
        .bind(description)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn rename_project(&self, id: &str, name: &str, description: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE projects SET name = ?, description = ? WHERE id = ?")
            .bind(name)
            .bind(description)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn project_by_id(&self, id: &str) -> Result<Option<ProjectRow>, DbError> {
        Ok(sqlx::query_as("SELECT id, name, description, created_at FROM projects WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn project_by_name(&self, name: &str) -> Result<Option<ProjectRow>, DbError> {
        Ok(sqlx::query_as("SELECT id, name, description, created_at FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>, DbError> {
        Ok(sqlx::query_as("SELECT id, name, description, created_at FROM projects ORDER BY name").fetch_all(self.pool()).await?)
    }

    // ---- roles -------------------------------------------------------------------------------

    /// Grants `role` in `project_id`, replacing any role the user had there.
    pub async fn grant_role(&self, user_id: &str, project_id: &str, role: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO role_assignments (user_id, project_id, role) VALUES (?, ?, ?) \
             ON CONFLICT (user_id, project_id) DO UPDATE SET role = excluded.role, \
             granted_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(role)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn revoke_role(&self, user_id: &str, project_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM role_assignments WHERE user_id = ? AND project_id = ?")
            .bind(user_id)
            .bind(project_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    const ROLE_SELECT: &'static str = "SELECT r.user_id, u.username, r.project_id, p.name AS project_name, r.role, r.granted_at \
         FROM role_assignments r JOIN users u ON u.id = r.user_id JOIN projects p ON p.id = r.project_id";

    pub async fn roles_of_user(&self, user_id: &str) -> Result<Vec<RoleRow>, DbError> {
        let sql = format!("{} WHERE r.user_id = ? ORDER BY p.name", Self::ROLE_SELECT);
        Ok(sqlx::query_as(&sql).bind(user_id).fetch_all(self.pool()).await?)
    }

    pub async fn members_of_project(&self, project_id: &str) -> Result<Vec<RoleRow>, DbError> {
        let sql = format!("{} WHERE r.project_id = ? ORDER BY u.username", Self::ROLE_SELECT);
        Ok(sqlx::query_as(&sql).bind(project_id).fetch_all(self.pool()).await?)
    }

    pub async fn all_roles(&self) -> Result<Vec<RoleRow>, DbError> {
        let sql = format!("{} ORDER BY u.username, p.name", Self::ROLE_SELECT);
        Ok(sqlx::query_as(&sql).fetch_all(self.pool()).await?)
    }

    // ---- quotas ------------------------------------------------------------------------------

    pub async fn quota(&self, project_id: &str) -> Result<QuotaRow, DbError> {
        Ok(sqlx::query_as("SELECT max_images, max_bytes, max_concurrent_uploads FROM quotas WHERE project_id = ?")
            .bind(project_id)
            .fetch_optional(self.pool())
            .await?
            .unwrap_or_default())
    }

    pub async fn set_quota(&self, project_id: &str, quota: QuotaRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO quotas (project_id, max_images, max_bytes, max_concurrent_uploads) VALUES (?, ?, ?, ?) \
             ON CONFLICT (project_id) DO UPDATE SET max_images = excluded.max_images, \
             max_bytes = excluded.max_bytes, max_concurrent_uploads = excluded.max_concurrent_uploads",
        )
        .bind(project_id)
        .bind(quota.max_images)
        .bind(quota.max_bytes)
        .bind(quota.max_concurrent_uploads)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Images a project holds now, and the bytes its quota is checked against: every stored
    /// copy plus what is on its way in (see `quota.rs`). For the admin screens and messages.
    pub async fn project_usage(&self, project_id: &str) -> Result<(u64, u64), DbError> {
        let usage = self.quota_usage(project_id).await?;
        Ok((usage.images, usage.bytes()))
    }

    // ---- API tokens --------------------------------------------------------------------------

    const TOKEN_SELECT: &'static str = "SELECT t.id, t.user_id, t.project_id, p.name AS project_name, t.name, \
         t.created_at, t.last_used_at, t.revoked_at, t.expires_at FROM api_tokens t JOIN projects p ON p.id = t.project_id";

    pub async fn create_token(&self, user_id: &str, project_id: &str, name: &str, secret_hash: &str) -> Result<TokenRow, DbError> {
        self.create_expiring_token(user_id, project_id, name, secret_hash, None).await
    }

    /// Creates a token that stops working `expires_in_days` days from now (None: never).
    pub async fn create_expiring_token(
        &self,
        user_id: &str,
        project_id: &str,
        name: &str,
        secret_hash: &str,
        expires_in_days: Option<u32>,
    ) -> Result<TokenRow, DbError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, project_id, name, secret_hash, expires_at) \
             VALUES (?, ?, ?, ?, ?, CASE WHEN ?6 IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+' || ?6 || ' days') END)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(project_id)
        .bind(name)
        .bind(secret_hash)
        .bind(expires_in_days)
        .execute(self.pool())
        .await?;
        let sql = format!("{} WHERE t.id = ?", Self::TOKEN_SELECT);
        Ok(sqlx::query_as(&sql).bind(&id).fetch_one(self.pool()).await?)
    }

    pub async fn tokens_of_user(&self, user_id: &str) -> Result<Vec<TokenRow>, DbError> {
        let sql = format!("{} WHERE t.user_id = ? ORDER BY t.created_at DESC", Self::TOKEN_SELECT);
        Ok(sqlx::query_as(&sql).bind(user_id).fetch_all(self.pool()).await?)
    }

    /// Revokes one of `user_id`'s tokens; false if it is not theirs or already revoked.
    pub async fn revoke_token(&self, user_id: &str, token_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
             WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        )
        .bind(token_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The live (not revoked, not expired) token with this secret hash, marking it used.
    ///
    /// The use time is written at most once a minute per token, and a failure to write it (a
    /// full disk, a busy database) does not refuse the request: authentication only reads.
    pub async fn use_token(&self, secret_hash: &str) -> Result<Option<TokenRow>, DbError> {
        let sql = format!(
            "{} WHERE t.secret_hash = ? AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
            Self::TOKEN_SELECT
        );
        let row: Option<TokenRow> = sqlx::query_as(&sql).bind(secret_hash).fetch_optional(self.pool()).await?;
        if let Some(row) = &row {
            let stamped = sqlx::query(
                "UPDATE api_tokens SET last_used_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
                 WHERE id = ? AND (last_used_at IS NULL OR last_used_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-60 seconds'))",
            )
            .bind(&row.id)
            .execute(self.pool())
            .await;
            if let Err(err) = stamped {
                tracing::warn!(token = %row.id, error = %err, "cannot record the token's use; accepting it anyway");
            }
        }
        Ok(row)
    }

    // ---- sign-in failures --------------------------------------------------------------------

    pub async fn record_sign_in_failure(&self, username: &str, remote_addr: &str) -> Result<(), DbError> {
        sqlx::query("INSERT INTO sign_in_failures (username, remote_addr) VALUES (?, ?)")
            .bind(username)
            .bind(remote_addr)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Starts a sign-in attempt if the throttle allows one: records it as a failure (so parallel
    /// attempts count against each other at once) unless this username already has `max_user`
    /// or this address `max_addr` failures in the last `window_secs`. Returns the attempt's row
    /// id, which [`Db::sign_in_succeeded`] removes; `None` when throttled. One statement, so
    /// SQLite's write lock makes the check and the insert atomic (30 parallel guesses get
    /// exactly `max_user` tries, not 25 more).
    pub async fn begin_sign_in_attempt(
        &self,
        username: &str,
        remote_addr: &str,
        window_secs: u32,
        max_user: u32,
        max_addr: u32,
    ) -> Result<Option<i64>, DbError> {
        let since = format!("-{window_secs} seconds");
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO sign_in_failures (username, remote_addr) SELECT ?1, ?2 \
             WHERE (SELECT COUNT(*) FROM sign_in_failures WHERE username = ?1 AND at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)) < ?4 \
               AND (SELECT COUNT(*) FROM sign_in_failures WHERE remote_addr = ?2 AND at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)) < ?5 \
             RETURNING rowid",
        )
        .bind(username)
        .bind(remote_addr)
        .bind(&since)
        .bind(max_user)
        .bind(max_addr)
        .fetch_optional(self.pool())
        .await?;
        Ok(id)
    }

    /// A sign-in attempt proved the password: forget its row and the user's earlier failures.
    pub async fn sign_in_succeeded(&self, attempt: i64, username: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sign_in_failures WHERE rowid = ?").bind(attempt).execute(self.pool()).await?;
        self.clear_sign_in_failures(username).await
    }

    /// Failures in the last `window_secs` for this username and for this address.
    pub async fn recent_sign_in_failures(&self, username: &str, remote_addr: &str, window_secs: u32) -> Result<(u32, u32), DbError> {
        let since = format!("-{window_secs} seconds");
        let (by_user, by_addr): (i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM sign_in_failures WHERE username = ?1 AND at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)), \
               (SELECT COUNT(*) FROM sign_in_failures WHERE remote_addr = ?2 AND at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3))",
        )
        .bind(username)
        .bind(remote_addr)
        .bind(&since)
        .fetch_one(self.pool())
        .await?;
        Ok((u32::try_from(by_user).unwrap_or(u32::MAX), u32::try_from(by_addr).unwrap_or(u32::MAX)))
    }

    /// Forgets a user's failures after a successful sign-in, and rows older than a day.
    pub async fn clear_sign_in_failures(&self, username: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sign_in_failures WHERE username = ? OR at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')")
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- audit log ---------------------------------------------------------------------------

    /// Appends an audit entry. Every field is cut to a bounded length first (a hostile 1 MB
    /// username must not make a 1 MB row): see [`AUDIT_FIELD_CHARS`] and [`AUDIT_DETAIL_CHARS`].
    pub async fn append_audit(&self, entry: &NewAudit<'_>) -> Result<(), DbError> {
        let short = |s: &str| clip(s, AUDIT_FIELD_CHARS);
        let entry = NewAudit {
            actor_id: entry.actor_id.map(|a| clip_str(a, AUDIT_FIELD_CHARS)),
            actor_name: clip_str(entry.actor_name, AUDIT_FIELD_CHARS),
            action: clip_str(entry.action, AUDIT_FIELD_CHARS),
            target_type: clip_str(entry.target_type, AUDIT_FIELD_CHARS),
            target_id: clip_str(entry.target_id, AUDIT_FIELD_CHARS),
            detail: &clip(entry.detail, AUDIT_DETAIL_CHARS),
            remote_addr: &short(entry.remote_addr),
            outcome: entry.outcome,
        };
        let entry = &entry;
        sqlx::query(
            "INSERT INTO audit_log (actor_id, actor_name, action, target_type, target_id, detail, remote_addr, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.actor_id)
        .bind(entry.actor_name)
        .bind(entry.action)
        .bind(entry.target_type)
        .bind(entry.target_id)
        .bind(entry.detail)
        .bind(entry.remote_addr)
        .bind(if entry.outcome.is_empty() { "ok" } else { entry.outcome })
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, DbError> {
        let limit = i64::from(filter.limit.clamp(1, MAX_AUDIT_PAGE));
        Ok(sqlx::query_as(
            "SELECT id, at, actor_name, action, target_type, target_id, detail, remote_addr, outcome FROM audit_log \
             WHERE (?1 = '' OR actor_name = ?1 COLLATE NOCASE) AND (?2 = '' OR action LIKE ?2 || '%') \
               AND (?3 = '' OR outcome = ?3) AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(&filter.outcome)
        .bind(filter.before_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_db::temp_db;

    #[tokio::test]
    async fn usernames_are_unique_regardless_of_case() {
        let (_d, db) = temp_db().await;
        db.create_user("alice", "", "", "h", false).await.unwrap();
        let err = db.create_user("ALICE", "", "", "h", false).await.unwrap_err();
        assert!(err.is_unique_violation(), "{err}");
        assert_eq!(db.user_by_name("Alice").await.unwrap().unwrap().username, "alice");
    }

    #[tokio::test]
    async fn disabling_and_password_resets_move_the_session_epoch() {
        let (_d, db) = temp_db().await;
        let u = db.create_user("bob", "", "", "h", false).await.unwrap();
        assert_eq!(u.session_epoch, 0);
        assert!(db.set_user_disabled(&u.id, true).await.unwrap());
        let u2 = db.user_by_id(&u.id).await.unwrap().unwrap();
        assert!(u2.disabled);
        assert_eq!(u2.session_epoch, 1);
        assert!(db.set_password_hash(&u.id, "h2").await.unwrap());
        assert_eq!(db.user_by_id(&u.id).await.unwrap().unwrap().session_epoch, 2);
        assert!(!db.set_user_disabled("nobody", true).await.unwrap());
    }

    #[tokio::test]
    async fn roles_are_one_per_user_and_project() {
        let (_d, db) = temp_db().await;
        let u = db.create_user("carol", "", "", "h", false).await.unwrap();
        let p = db.create_project("web", "").await.unwrap();
        db.grant_role(&u.id, &p.id, "reader").await.unwrap();
        db.grant_role(&u.id, &p.id, "member").await.unwrap();
        let roles = db.roles_of_user(&u.id).await.unwrap();
        assert_eq!(roles.len(), 1);
        assert_eq!((roles[0].role.as_str(), roles[0].project_name.as_str()), ("member", "web"));
        assert!(db.grant_role(&u.id, &p.id, "admin").await.is_err(), "admin is not a project role");
        assert!(db.revoke_role(&u.id, &p.id).await.unwrap());
        assert!(db.members_of_project(&p.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn tokens_are_found_by_hash_until_revoked() {
        let (_d, db) = temp_db().await;
        let u = db.create_user("dave", "", "", "h", false).await.unwrap();
        let p = db.create_project("ops", "").await.unwrap();
        let t = db.create_token(&u.id, &p.id, "ci", "hash1").await.unwrap();
        assert_eq!(t.project_name, "ops");
        let used = db.use_token("hash1").await.unwrap().unwrap();
        assert_eq!(used.id, t.id);
        assert!(db.tokens_of_user(&u.id).await.unwrap()[0].last_used_at.is_some());
        assert!(!db.revoke_token("someone-else", &t.id).await.unwrap());
        assert!(db.revoke_token(&u.id, &t.id).await.unwrap());
        assert!(db.use_token("hash1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sign_in_failures_count_by_user_and_address() {
        let (_d, db) = temp_db().await;
        for _ in 0..3 {
            db.record_sign_in_failure("eve", "10.0.0.1").await.unwrap();
        }
        db.record_sign_in_failure("mallory", "10.0.0.1").await.unwrap();
        assert_eq!(db.recent_sign_in_failures("eve", "10.0.0.1", 900).await.unwrap(), (3, 4));
        db.clear_sign_in_failures("eve").await.unwrap();
        assert_eq!(db.recent_sign_in_failures("eve", "10.0.0.2", 900).await.unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn parallel_sign_in_attempts_cannot_pass_the_limits() {
        let (_d, db) = temp_db().await;
        // 30 attempts at once against a limit of 5 per user: exactly 5 may proceed.
        let tries = (0..30).map(|_| db.begin_sign_in_attempt("eve", "10.0.0.1", 900, 5, 20));
        let allowed = futures::future::join_all(tries).await.into_iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert_eq!(allowed, 5);
        // 40 from one address over many usernames against a limit of 20: exactly 20.
        let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
        let tries = names.iter().map(|n| db.begin_sign_in_attempt(n, "10.0.0.2", 900, 5, 20));
        let allowed = futures::future::join_all(tries).await.into_iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert_eq!(allowed, 20);
        // A success takes its attempt back and clears the user's failures.
        let a = db.begin_sign_in_attempt("bob", "10.0.0.3", 900, 5, 20).await.unwrap().unwrap();
        db.sign_in_succeeded(a, "bob").await.unwrap();
        assert_eq!(db.recent_sign_in_failures("bob", "10.0.0.3", 900).await.unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn tokens_can_expire() {
        let (_d, db) = temp_db().await;
        let u = db.create_user("erin", "", "", "h", false).await.unwrap();
        let p = db.create_project("ops", "").await.unwrap();
        let t = db.create_expiring_token(&u.id, &p.id, "short", "hash2", Some(1)).await.unwrap();
        assert!(t.expires_at.is_some());
        assert!(db.use_token("hash2").await.unwrap().is_some(), "valid for a day");
        sqlx::query("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?").bind(&t.id).execute(db.pool()).await.unwrap();
        assert!(db.use_token("hash2").await.unwrap().is_none(), "expired");
    }

    #[tokio::test]
    async fn audit_fields_are_bounded() {
        let (_d, db) = temp_db().await;
        let huge = "u".repeat(1_000_000);
        db.append_audit(&NewAudit {
            actor_name: &huge,
            action: "user.create",
            target_id: &huge,
            detail: &huge,
            remote_addr: &huge,
            ..Default::default()
        })
        .await
        .unwrap();
        let row = db.list_audit(&AuditFilter { limit: 1, ..Default::default() }).await.unwrap().remove(0);
        assert_eq!(row.actor_name.chars().count(), AUDIT_FIELD_CHARS);
        assert_eq!(row.target_id.chars().count(), AUDIT_FIELD_CHARS);
        assert_eq!(row.detail.chars().count(), AUDIT_DETAIL_CHARS + 1, "cut, with an ellipsis");
        assert!(row.remote_addr.len() < 1000);
    }

    #[tokio::test]
    async fn audit_filters_and_pages() {
        let (_d, db) = temp_db().await;
        for (actor, action) in [("root", "user.create"), ("root", "project.create"), ("ann", "user.disable")] {
            db.append_audit(&NewAudit { actor_name: actor, action, remote_addr: "127.0.0.1", ..Default::default() }).await.unwrap();
        }
        let all = db.list_audit(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["user.disable", "project.create", "user.create"]);
        let by_root = db.list_audit(&AuditFilter { actor: "ROOT".into(), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(by_root.len(), 2);
        let users = db.list_audit(&AuditFilter { action: "user.".into(), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(users.len(), 2);
        let older = db.list_audit(&AuditFilter { before_id: Some(all[0].id), limit: 1, ..Default::default() }).await.unwrap();
        assert_eq!(older[0].action, "project.create");
    }

    #[tokio::test]
    async fn quotas_default_to_unlimited_and_usage_counts_live_images() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("q", "").await.unwrap();
        assert_eq!(db.quota(&p.id).await.unwrap(), QuotaRow::default());
        let q = QuotaRow { max_images: Some(3), max_bytes: Some(1 << 30), max_concurrent_uploads: None };
        db.set_quota(&p.id, q).await.unwrap();
        assert_eq!(db.quota(&p.id).await.unwrap(), q);
        assert_eq!(db.project_usage(&p.id).await.unwrap(), (0, 0));
    }
}
