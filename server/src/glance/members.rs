//! `/v2/images/{id}/members`: the owner shares a `shared` image with another project (by
//! project id, as Glance's `member`), and that project accepts or rejects it.

use accounts::Authn;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::{empty, Caller, GlanceError, Result};
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
    let doc = body_json(&body)?;
    let member = doc
        .get("member")
        .and_then(Value::as_str)
        .ok_or_else(|| GlanceError::bad_request("The body must be {\"member\": \"<project id>\"}."))?;
    let row = state.images.share_image(&caller.authn, &id, member).await.map_err(|e| no_image(e, &id))?;
    Ok(Json(member_json(&row)).into_response())
}

/// A use-case's "no such image" as Glance words it.
fn no_image(e: imageops::Error, id: &str) -> GlanceError {
    match e {
        imageops::Error::NotFound(m) if m == "No such image." => GlanceError::no_image(id),
        e => e.into(),
    }
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
    let status = match doc.get("status").and_then(Value::as_str).unwrap_or("") {
        "pending" => policy::MemberStatus::Pending,
        "accepted" => policy::MemberStatus::Accepted,
        "rejected" => policy::MemberStatus::Rejected,
        _ => return Err(GlanceError::bad_request("The status must be pending, accepted or rejected.")),
    };
    let row = state.images.answer_share(&caller.authn, &id, &member, status).await.map_err(|e| no_image(e, &id))?;
    Ok(Json(member_json(&row)).into_response())
}

/// `DELETE /v2/images/{id}/members/{member}`: the owner's members only.
pub async fn delete(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let _ = visible_member(&state, &caller, &id, &member).await?;
    state.images.unshare_image(&caller.authn, &id, &member).await.map_err(|e| no_image(e, &id))?;
    Ok(empty(StatusCode::NO_CONTENT))
}
