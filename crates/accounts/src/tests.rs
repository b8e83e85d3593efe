use super::*;

async fn temp_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.expect("open");
    (dir, db)
}

#[test]
fn passwords_hash_with_argon2id_and_verify() {
    let h = hash_password("correct horse").unwrap();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(verify_password("correct horse", &h));
    assert!(!verify_password("wrong horse", &h));
    assert!(!verify_password("correct horse", "not a phc string"));
    assert_ne!(hash_password("correct horse").unwrap(), h, "salted");
}

#[test]
fn password_and_name_rules() {
    assert!(validate_password("short").is_err());
    assert!(validate_password("long enough").is_ok());
    assert!(validate_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    assert!(validate_name("A username", "alice.smith@example").is_ok());
    assert!(validate_name("A username", "").is_err());
    assert!(validate_name("A username", "has space").is_err());
    assert!(validate_name("A username", &"a".repeat(65)).is_err());
}

#[tokio::test]
async fn sign_in_checks_password_then_disabled_and_throttles_guessing() {
    let (_d, db) = temp_db().await;
    let u = create_user(&db, "alice", "s3cret-pass", false).await.unwrap();
    assert_eq!(sign_in(&db, "alice", "s3cret-pass", "127.0.0.1").await.unwrap().id, u.id);
    assert!(matches!(sign_in(&db, "nobody", "x", "127.0.0.1").await, Err(AccountError::BadCredentials)));

    for _ in 0..MAX_FAILURES_PER_USER {
        assert!(matches!(sign_in(&db, "alice", "guess", "10.1.1.1").await, Err(AccountError::BadCredentials)));
    }
    // Locked out now, even with the right password.
    assert!(matches!(sign_in(&db, "alice", "s3cret-pass", "127.0.0.1").await, Err(AccountError::Throttled { minutes: 15 })));

    let (_d2, db2) = temp_db().await;
    let b = create_user(&db2, "bob", "s3cret-pass", false).await.unwrap();
    db2.set_user_disabled(&b.id, true).await.unwrap();
    assert!(matches!(sign_in(&db2, "bob", "s3cret-pass", "127.0.0.1").await, Err(AccountError::Disabled)));
    assert!(matches!(sign_in(&db2, "bob", "wrong-pass", "127.0.0.1").await, Err(AccountError::BadCredentials)));
}

#[tokio::test]
async fn duplicate_usernames_are_refused_clearly() {
    let (_d, db) = temp_db().await;
    create_user(&db, "alice", "s3cret-pass", false).await.unwrap();
    let err = create_user(&db, "Alice", "s3cret-pass", false).await.unwrap_err();
    assert_eq!(err.to_string(), "The username 'Alice' is already taken.");
}

#[tokio::test]
async fn bootstrap_creates_an_admin_only_on_an_empty_install() {
    let (_d, db) = temp_db().await;
    assert!(bootstrap_admin(&db, "root", "s3cret-pass").await.unwrap());
    assert!(db.user_by_name("root").await.unwrap().unwrap().is_admin);
    assert!(!bootstrap_admin(&db, "root2", "s3cret-pass").await.unwrap());
    assert!(db.user_by_name("root2").await.unwrap().is_none());
}

#[tokio::test]
async fn sessions_end_when_the_user_is_disabled_or_the_password_reset() {
    let (_d, db) = temp_db().await;
    let u = create_user(&db, "carol", "s3cret-pass", false).await.unwrap();
    let p = db.create_project("web", "").await.unwrap();
    db.grant_role(&u.id, &p.id, "member").await.unwrap();
    let (principal, scopes) = principal_for_session(&db, &u.id, 0, None).await.unwrap().unwrap();
    assert_eq!(principal.scope.unwrap().role, Role::Member);
    assert_eq!(scopes.len(), 1);

    reset_password(&db, &u.id, "another-pass").await.unwrap();
    assert!(principal_for_session(&db, &u.id, 0, None).await.unwrap().is_none());
    assert!(principal_for_session(&db, &u.id, 1, None).await.unwrap().is_some());
    db.set_user_disabled(&u.id, true).await.unwrap();
    assert!(principal_for_session(&db, &u.id, 1, None).await.unwrap().is_none());
    assert!(principal_for_session(&db, &u.id, 2, None).await.unwrap().is_none());
}

#[tokio::test]
async fn tokens_are_scoped_hashed_and_revocable() {
    let (_d, db) = temp_db().await;
    let u = create_user(&db, "dave", "s3cret-pass", false).await.unwrap();
    let p = db.create_project("ops", "").await.unwrap();
    let other = db.create_project("other", "").await.unwrap();
    assert!(issue_token(&db, &u, &p.id, "ci").await.is_err(), "no role in the project yet");
    db.grant_role(&u.id, &p.id, "reader").await.unwrap();
    assert!(issue_token(&db, &u, &other.id, "ci").await.is_err());
    let t = issue_token(&db, &u, &p.id, "ci").await.unwrap();
    assert!(t.secret.starts_with(TOKEN_PREFIX) && t.secret.len() == TOKEN_PREFIX.len() + 64);

    let principal = principal_for_token(&db, &t.secret).await.unwrap().unwrap();
    assert_eq!(principal.scope.as_ref().unwrap().project_name, "ops");
    assert_eq!(principal.scope.unwrap().role, Role::Reader);
    assert!(principal_for_token(&db, "hgr_wrong").await.unwrap().is_none());
    assert!(principal_for_token(&db, "bearer-something").await.unwrap().is_none());

    // Losing the role in the project makes the token useless at once.
    db.revoke_role(&u.id, &p.id).await.unwrap();
    assert!(principal_for_token(&db, &t.secret).await.unwrap().is_none());
    db.grant_role(&u.id, &p.id, "member").await.unwrap();
    assert!(db.revoke_token(&u.id, &t.row.id).await.unwrap());
    assert!(principal_for_token(&db, &t.secret).await.unwrap().is_none());
}

#[test]
fn ipv6_clients_are_throttled_by_their_64() {
    assert_eq!(throttle_source("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    assert_eq!(throttle_source("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
    assert_ne!(throttle_source("2001:db8:1:3::1"), throttle_source("2001:db8:1:2::1"));
    assert_eq!(throttle_source("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(throttle_source("192.0.2.7"), "192.0.2.7");
    assert_eq!(throttle_source("unknown"), "unknown");
}
