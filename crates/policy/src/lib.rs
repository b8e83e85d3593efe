//! Hangar's authorization policy: one pure function, [`authorize`], that every server function
//! and API route calls before doing anything.
//!
//! The rules follow Glance's defaults (see `docs/glance-api.md` §1.11): `reader` sees a
//! project's images, `member` also uploads, edits, deletes and shares them, and the cloud-wide
//! `admin` may do everything, including publicizing images and managing accounts. A principal acts
//! in one project at a time (its *scope*: the project chosen in the UI, or the project an API
//! token was issued for), as with a project-scoped Keystone token.
//!
//! This crate knows no database: callers gather the facts ([`Principal`], [`ImageFacts`]) and ask.
#![forbid(unsafe_code)]

pub mod metadata;

use serde::{Deserialize, Serialize};

/// A project role (Glance's default roles). `admin` is not a project role but a user flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reader" => Some(Role::Reader),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// The project a principal acts in, with its role there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub project_id: String,
    pub project_name: String,
    pub role: Role,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub is_admin: bool,
    /// None when the user has no role anywhere (or has not chosen a project yet).
    pub scope: Option<Scope>,
    /// True when the caller presented an API token (`X-Auth-Token`) rather than a signed-in
    /// session. Tokens act on images only: see [`Action::needs_session`].
    #[serde(default)]
    pub via_token: bool,
}

impl Principal {
    fn role_in(&self, project_id: &str) -> Option<Role> {
        self.scope.as_ref().filter(|s| s.project_id == project_id).map(|s| s.role)
    }
}

pub use domain::{MemberStatus, Visibility};

/// What the policy needs to know about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// The owning project; None for records from before accounts existed (admins only).
    pub owner: Option<String>,
    pub visibility: Visibility,
    pub protected: bool,
    /// The principal's scoped project's membership of this image, if it is a member.
    pub membership: Option<MemberStatus>,
}

/// Everything that can be asked. Each server function and route maps to one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// See the catalogue at all (the list is then filtered by visibility).
    ListImages,
    /// See one image and download its data.
    ViewImage(&'a ImageFacts),
    /// Create or upload an image owned by `project`.
    CreateImage { project: &'a str },
    /// Edit metadata, tags, deactivate/reactivate.
    ModifyImage(&'a ImageFacts),
    /// Delete an image (refused while protected, whoever asks).
    DeleteImage(&'a ImageFacts),
    /// Set an image's visibility to `to` (public needs admin, as Glance's `publicize_image`).
    SetVisibility { image: &'a ImageFacts, to: Visibility },
    /// Add or remove member projects of a shared image.
    ShareImage(&'a ImageFacts),
    /// Accept or reject an image shared with `project`.
    AnswerShare { project: &'a str },
    /// Create an API token of one's own for `project`.
    ManageOwnTokens { project: &'a str },
    /// List or revoke one's own API tokens.
    ViewOwnTokens,
    /// Users, projects, role grants, quotas.
    ManageAccounts,
    /// Read the audit log.
    ViewAudit,
    /// Edit the storage-compatibility matrix.
    EditStorageMatrix,
}

impl Action<'_> {
    /// Actions an API token may not take, whoever holds it: a leaked token must not mint tokens
    /// that outlive its own revocation, revoke its owner's other tokens, or administer accounts,
    /// the audit log or the storage matrix through the dashboard's functions. Signing in (with
    /// the password) is what proves these.
    pub fn needs_session(&self) -> bool {
        matches!(
            self,
            Action::ManageOwnTokens { .. } | Action::ViewOwnTokens | Action::ManageAccounts | Action::ViewAudit | Action::EditStorageMatrix
        )
    }

    /// Actions whose refusals the audit log records (administrative ones, and token and account
    /// management), so that probing shows up there.
    pub fn is_privileged(&self) -> bool {
        self.needs_session() || matches!(self, Action::SetVisibility { to: Visibility::Public, .. })
    }
}

/// Why a request was refused. `NotSignedIn` becomes 401 (or a sign-in redirect), `Forbidden` 403.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Denial {
    NotSignedIn,
    Forbidden(String),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::NotSignedIn => f.write_str("Sign in to do this."),
            Denial::Forbidden(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Denial {}

fn forbid(why: &str) -> Result<(), Denial> {
    Err(Denial::Forbidden(why.to_owned()))
}

/// Decides whether `who` may do `action`. Anonymous callers may do nothing.
pub fn authorize(who: Option<&Principal>, action: &Action<'_>) -> Result<(), Denial> {
    let Some(p) = who else { return Err(Denial::NotSignedIn) };
    // Protection guards against accidents, so it binds admins too.
    if let Action::DeleteImage(image) = action {
        if image.protected {
            return forbid("This image is protected. Turn protection off before deleting it.");
        }
    }
    if p.via_token && action.needs_session() {
        return forbid(
            "API tokens cannot manage tokens, accounts, the audit log or the storage matrix; sign in to the dashboard to do this.",
        );
    }
    if p.is_admin {
        return Ok(());
    }
    match action {
        Action::ListImages => Ok(()),
        Action::ViewImage(image) => {
            if can_see(p, image) {
                Ok(())
            } else {
                forbid("You do not have access to this image.")
            }
        }
        Action::CreateImage { project } => match p.role_in(project) {
            Some(Role::Member) => Ok(()),
            Some(Role::Reader) => forbid("Readers cannot upload images; ask a project administrator for the member role."),
            None => forbid("You can only create images in your current project."),
        },
        Action::ModifyImage(image) | Action::DeleteImage(image) | Action::ShareImage(image) => {
            let owner_role = image.owner.as_deref().and_then(|o| p.role_in(o));
            match owner_role {
                Some(Role::Member) => {
                    if matches!(action, Action::ShareImage(_)) && image.visibility != Visibility::Shared {
                        forbid("Only images with visibility 'shared' can have member projects.")
                    } else {
                        Ok(())
                    }
                }
                Some(Role::Reader) => forbid("Readers cannot change images; ask for the member role."),
                None => forbid("Only members of the image's project can change it."),
            }
        }
        Action::SetVisibility { image, to } => {
            let owner_role = image.owner.as_deref().and_then(|o| p.role_in(o));
            if owner_role != Some(Role::Member) {
                forbid("Only members of the image's project can change its visibility.")
            } else if *to == Visibility::Public {
                forbid("Only administrators can make an image public.")
            } else {
                Ok(())
            }
        }
        Action::AnswerShare { project } => match p.role_in(project) {
            Some(Role::Member) => Ok(()),
            _ => forbid("Only members of the project an image was shared with can accept or reject it."),
        },
        Action::ManageOwnTokens { project } => match p.role_in(project) {
            Some(_) => Ok(()),
            None => forbid("You can only create tokens for a project you have a role in."),
        },
        Action::ViewOwnTokens => Ok(()),
        Action::ManageAccounts | Action::ViewAudit | Action::EditStorageMatrix => forbid("Only administrators can do this."),
    }
}

/// Glance's visibility rules for reading one image.
fn can_see(p: &Principal, image: &ImageFacts) -> bool {
    let own = image.owner.as_deref().and_then(|o| p.role_in(o)).is_some();
    match image.visibility {
        Visibility::Public | Visibility::Community => true,
        Visibility::Shared => own || image.membership.is_some(),
        Visibility::Private => own,
    }
}

/// Whether `who` can see an image at all; used to filter lists (and to answer 404 rather than
/// 403 for images a caller may not know exist).
pub fn can_view(who: Option<&Principal>, image: &ImageFacts) -> bool {
    authorize(who, &Action::ViewImage(image)).is_ok()
}

#[cfg(test)]
mod tests;
