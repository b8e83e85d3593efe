use super::*;

const P1: &str = "p1";
const P2: &str = "p2";

fn user(role: Option<Role>, project: &str) -> Principal {
    Principal {
        user_id: "u".into(),
        username: "u".into(),
        is_admin: false,
        scope: role.map(|role| Scope { project_id: project.into(), project_name: project.into(), role }),
        via_token: false,
    }
}

fn admin() -> Principal {
    Principal { is_admin: true, ..user(None, P1) }
}

fn image(owner: &str, visibility: Visibility) -> ImageFacts {
    ImageFacts { owner: Some(owner.into()), visibility, protected: false, membership: None }
}

/// The five kinds of caller of the table: anonymous, reader, member, another project's
/// member, admin.
fn callers() -> [(&'static str, Option<Principal>); 5] {
    [
        ("anonymous", None),
        ("reader", Some(user(Some(Role::Reader), P1))),
        ("member", Some(user(Some(Role::Member), P1))),
        ("other-member", Some(user(Some(Role::Member), P2))),
        ("admin", Some(admin())),
    ]
}

/// `expect` lists, in callers() order, whether each may do the action.
fn check(action: Action<'_>, expect: [bool; 5]) {
    for ((name, who), allowed) in callers().iter().zip(expect) {
        let got = authorize(who.as_ref(), &action);
        assert_eq!(got.is_ok(), allowed, "{name} on {action:?}: {got:?}");
        if name == &"anonymous" {
            assert_eq!(got, Err(Denial::NotSignedIn));
        }
    }
}

#[test]
fn image_actions_by_role() {
    let private = image(P1, Visibility::Private);
    let shared = image(P1, Visibility::Shared);
    let public = image(P1, Visibility::Public);
    let community = image(P1, Visibility::Community);
    //                                                        anon   reader member other  admin
    check(Action::ListImages, [false, true, true, true, true]);
    check(Action::ViewImage(&private), [false, true, true, false, true]);
    check(Action::ViewImage(&shared), [false, true, true, false, true]);
    check(Action::ViewImage(&public), [false, true, true, true, true]);
    check(Action::ViewImage(&community), [false, true, true, true, true]);
    check(Action::CreateImage { project: P1 }, [false, false, true, false, true]);
    check(Action::ModifyImage(&private), [false, false, true, false, true]);
    check(Action::ModifyImage(&public), [false, false, true, false, true]);
    check(Action::DeleteImage(&private), [false, false, true, false, true]);
    check(Action::ShareImage(&shared), [false, false, true, false, true]);
    check(Action::ShareImage(&private), [false, false, false, false, true]);
    check(Action::SetVisibility { image: &private, to: Visibility::Community }, [false, false, true, false, true]);
    check(Action::SetVisibility { image: &private, to: Visibility::Public }, [false, false, false, false, true]);
    check(Action::AnswerShare { project: P2 }, [false, false, false, true, true]);
    check(Action::ManageOwnTokens { project: P1 }, [false, true, true, false, true]);
}

#[test]
fn admin_only_actions() {
    for action in [Action::ManageAccounts, Action::ViewAudit, Action::EditStorageMatrix] {
        check(action, [false, false, false, false, true]);
    }
}

#[test]
fn a_shared_image_is_visible_to_member_projects() {
    let mut shared = image(P1, Visibility::Shared);
    let other = user(Some(Role::Member), P2);
    assert!(!can_view(Some(&other), &shared));
    shared.membership = Some(MemberStatus::Pending);
    assert!(can_view(Some(&other), &shared));
    // Membership does not grant changes.
    assert!(authorize(Some(&other), &Action::ModifyImage(&shared)).is_err());
}

#[test]
fn protected_images_cannot_be_deleted_even_by_admins() {
    let mut img = image(P1, Visibility::Private);
    img.protected = true;
    check(Action::DeleteImage(&img), [false, false, false, false, false]);
    check(Action::ModifyImage(&img), [false, false, true, false, true]);
}

#[test]
fn ownerless_images_are_for_admins_only() {
    let img = ImageFacts { owner: None, visibility: Visibility::Private, protected: false, membership: None };
    check(Action::ViewImage(&img), [false, false, false, false, true]);
    check(Action::ModifyImage(&img), [false, false, false, false, true]);
}

#[test]
fn roles_and_visibilities_round_trip_their_names() {
    for r in [Role::Reader, Role::Member] {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("admin"), None, "admin is a user flag, not a project role");
    assert_eq!(Visibility::parse("community"), Some(Visibility::Community));
    assert_eq!(Visibility::parse("everyone"), None);
}

#[test]
fn tokens_cannot_manage_tokens_accounts_audit_or_the_matrix() {
    let member_token = Principal { via_token: true, ..user(Some(Role::Member), P1) };
    let admin_token = Principal { via_token: true, ..admin() };
    for action in [
        Action::ManageOwnTokens { project: P1 },
        Action::ViewOwnTokens,
        Action::ManageAccounts,
        Action::ViewAudit,
        Action::EditStorageMatrix,
    ] {
        assert!(matches!(authorize(Some(&admin_token), &action), Err(Denial::Forbidden(_))), "admin token: {action:?}");
        assert!(matches!(authorize(Some(&member_token), &action), Err(Denial::Forbidden(_))), "member token: {action:?}");
        assert!(action.is_privileged());
    }
    // With a session, the same people may.
    assert_eq!(authorize(Some(&admin()), &Action::ManageAccounts), Ok(()));
    assert_eq!(authorize(Some(&user(Some(Role::Member), P1)), &Action::ManageOwnTokens { project: P1 }), Ok(()));
    assert_eq!(authorize(Some(&user(Some(Role::Reader), P1)), &Action::ViewOwnTokens), Ok(()));
    // Tokens still act on images, admin tokens included.
    let img = image(P1, Visibility::Private);
    assert_eq!(authorize(Some(&member_token), &Action::ModifyImage(&img)), Ok(()));
    assert_eq!(authorize(Some(&admin_token), &Action::SetVisibility { image: &img, to: Visibility::Public }), Ok(()));
}
