//! `/v2/images/{id}/members`: the owner shares a `shared` image with another project (by
//! project id, as Glance's `member`), and that project accepts or rejects it.

use accounts::Authn;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::{empty, Caller, GlanceError, Result, MAX_MEMBERS};
use crate::AppState;

fn member_json(m: &records::MemberRow) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.project_id,
        "status": m.status,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "schema": "/v2/schemas/member",
    })
}

/// True when the caller acts in the image's owning project (any role) or is an administrator:
/// they see every member. A member project sees only its own membership.
fn sees_all_members(caller: &Caller, facts: &policy::ImageFacts) -> bool {
    caller.me.is_admin || (facts.owner.is_some() && facts.owner.as_deref() == caller.project())
}

fn body_json(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| GlanceError::bad_request(format!("The body is not JSON: {e}")))
}

/// `GET /v2/images/{id}/members`.
pub async fn list(State(state): State<AppState>, authn: Option<Extension<Authn>>, Path(id): Path<String>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (_, facts) = caller.image(&state, &id).await?;
    let all = sees_all_members(&caller, &facts);
    let members: Vec<Value> = state
        .db
        .image_members(&id)
        .await?
        .iter()
        .filter(|m| all || Some(m.project_id.as_str()) == caller.project())
        .map(member_json)
        .collect();
    Ok(Json(json!({ "members": members, "schema": "/v2/schemas/members" })).into_response())
}

/// `POST /v2/images/{id}/members` `{"member": "<project id>"}`: 200 with the new `pending` member.
pub async fn create(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, facts) = caller.image(&state, &id).await?;
    caller.allow(&policy::Action::ShareImage(&facts))?;
    if image.visibility != "shared" {
        return Err(GlanceError::forbidden("Only shared images have members."));
    }
    let doc = body_json(&body)?;
    let member = doc
        .get("member")
        .and_then(Value::as_str)
        .ok_or_else(|| GlanceError::bad_request("The body must be {\"member\": \"<project id>\"}."))?;
    let project =
        state.db.project_by_id(member).await?.ok_or_else(|| GlanceError::bad_request(format!("No project has the id {member}.")))?;
    if image.owner.as_deref() == Some(project.id.as_str()) {
        return Err(GlanceError::bad_request("The image's own project cannot be a member of it."));
    }
    if state.db.image_members(&id).await?.len() >= MAX_MEMBERS {
        return Err(GlanceError::too_large(format!("An image can be shared with at most {MAX_MEMBERS} projects.")));
    }
    if !state.db.add_image_member(&id, &project.id).await? {
        return Err(GlanceError::conflict(format!("Member {} already exists for image {id}.", project.id)));
    }
    caller.audit(&state, "image.share", "image", &id, &project.name).await?;
    let row = state.db.image_member(&id, &project.id).await?.ok_or_else(|| GlanceError::not_found("The member vanished."))?;
    Ok(Json(member_json(&row)).into_response())
}

/// Loads one membership the caller may see, or 404.
async fn visible_member(state: &AppState, caller: &Caller, id: &str, member: &str) -> Result<(records::MemberRow, policy::ImageFacts)> {
    let (_, facts) = caller.image(state, id).await?;
    let not_found = || GlanceError::not_found(format!("{member} is not a member of image {id}."));
    if !sees_all_members(caller, &facts) && caller.project() != Some(member) {
        return Err(not_found());
    }
    let row = state.db.image_member(id, member).await?.ok_or_else(not_found)?;
    Ok((row, facts))
}

/// `GET /v2/images/{id}/members/{member}`.
pub async fn show(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (row, _) = visible_member(&state, &caller, &id, &member).await?;
    Ok(Json(member_json(&row)).into_response())
}

/// `PUT /v2/images/{id}/members/{member}` `{"status": …}`: only the member project answers.
pub async fn update(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, member)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (_, _) = visible_member(&state, &caller, &id, &member).await?;
    let doc = body_json(&body)?;
    let status = doc.get("status").and_then(Value::as_str).unwrap_or("");
    if !matches!(status, "pending" | "accepted" | "rejected") {
        return Err(GlanceError::bad_request("The status must be pending, accepted or rejected."));
    }
    if caller.project() != Some(member.as_str()) {
        return Err(GlanceError::forbidden("Only the member project can accept or reject an image shared with it."));
    }
    caller.allow(&policy::Action::AnswerShare { project: &member })?;
    state.db.set_image_member_status(&id, &member, status).await?;
    caller.audit(&state, &format!("image.share.{status}"), "image", &id, "").await?;
    let row = state.db.image_member(&id, &member).await?.ok_or_else(|| GlanceError::not_found("The member vanished."))?;
    Ok(Json(member_json(&row)).into_response())
}

/// `DELETE /v2/images/{id}/members/{member}`: the owner's members only.
pub async fn delete(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (_, facts) = visible_member(&state, &caller, &id, &member).await?;
    caller.allow(&policy::Action::ShareImage(&facts))?;
    if !state.db.remove_image_member(&id, &member).await? {
        return Err(GlanceError::not_found(format!("{member} is not a member of image {id}.")));
    }
    caller.audit(&state, "image.unshare", "image", &id, &member).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
