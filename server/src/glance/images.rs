//! `/v2/images`: create, list, show, PATCH, delete, tags, deactivate/reactivate.

use accounts::Authn;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::patch::{self, Editable, PatchError};
use super::{empty, query, Caller, GlanceError, Result};
use crate::AppState;

/// An image as Glance shows it: every base property (null when unset) plus the custom
/// properties flat beside them.
pub fn image_json(image: &records::ImageDetail, stores: &[String]) -> Value {
    let mut m = Map::new();
    for (k, v) in image.property_map() {
        m.insert(k, Value::String(v));
    }
    let base = json!({
        "id": image.id,
        "name": if image.name.is_empty() { Value::Null } else { Value::from(image.name.clone()) },
        "status": image.status,
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "owner": image.owner,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "container_format": image.container_format,
        "disk_format": image.disk_format,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "tags": image.tag_list(),
        "min_ram": image.min_ram,
        "min_disk": image.min_disk,
        "self": format!("/v2/images/{}", image.id),
        "file": format!("/v2/images/{}/file", image.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(b) = base {
        m.extend(b);
    }
    if !stores.is_empty() {
        m.insert("stores".into(), Value::from(stores.join(",")));
    }
    Value::Object(m)
}

/// True for the 8-4-4-4-12 hex form of a UUID (the schema's `id` pattern).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The image as Glance shows it, with `direct_url` when the operator turned
/// `show_image_direct_url` on and a stored copy has one (an RBD image's
/// `rbd://<fsid>/<pool>/<image>/snap`, which Nova and Cinder clone instead of downloading).
pub async fn render(state: &AppState, image: &records::ImageDetail) -> Result<Value> {
    let locations = state.db.image_locations(&image.id).await?;
    let active: Vec<&records::LocationRow> = locations.iter().filter(|l| l.status == domain::LocationStatus::Active).collect();
    let stores: Vec<String> = active.iter().map(|l| l.backend.clone()).collect();
    let mut doc = image_json(image, &stores);
    if state.config.show_image_direct_url {
        for l in active {
            let Some(backend) = state.stores.get(&l.backend) else { continue };
            match backend.direct_url(&l.key).await {
                Ok(Some(url)) => {
                    doc["direct_url"] = Value::from(url);
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(image = %image.id, backend = %l.backend, error = %e, "cannot read the direct URL"),
            }
        }
    }
    Ok(doc)
}

/// A patch the syntax refuses, as the use-case's error (the door maps it back the same way).
fn patch_into(e: PatchError) -> imageops::Error {
    match e {
        PatchError::BadRequest(m) => imageops::Error::Invalid(m),
        PatchError::Forbidden(m) => imageops::Error::Forbidden(m),
        PatchError::Conflict(m) => imageops::Error::Conflict(m),
        PatchError::TooLarge(m) => imageops::Error::TooLarge(m),
    }
}

fn patch_error(e: PatchError) -> GlanceError {
    match e {
        PatchError::BadRequest(m) => GlanceError::bad_request(m),
        PatchError::Forbidden(m) => GlanceError::forbidden(m),
        PatchError::Conflict(m) => GlanceError::conflict(m),
        PatchError::TooLarge(m) => GlanceError::too_large(m),
    }
}

/// `POST /v2/images`: a `queued` image in the caller's project.
pub async fn create(State(state): State<AppState>, authn: Option<Extension<Authn>>, body: Bytes) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let project = caller
        .project()
        .map(str::to_owned)
        .ok_or_else(|| GlanceError::forbidden("Your token is not scoped to a project; images belong to projects."))?;
    caller.allow(&policy::Action::CreateImage { project: &project })?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| GlanceError::bad_request(format!("The body is not JSON: {e}")))?;
    let obj = doc.as_object().ok_or_else(|| GlanceError::bad_request("The body must be a JSON object."))?;
    let mut ed = Editable {
        name: None,
        visibility: domain::Visibility::Shared,
        protected: false,
        os_hidden: false,
        min_disk: 0,
        min_ram: 0,
        disk_format: None,
        container_format: None,
        owner: Some(project.clone()),
        tags: Vec::new(),
        properties: Default::default(),
    };
    let mut wanted_id: Option<String> = None;
    for (k, v) in obj {
        match k.as_str() {
            "id" => {
                let id = v.as_str().filter(|s| is_uuid(s)).ok_or_else(|| GlanceError::bad_request("'id' must be a UUID."))?;
                // Ids are compared as stored: one spelling only, so `6A1E…` cannot sit beside
                // (or take over the tombstone of) `6a1e…`.
                wanted_id = Some(id.to_ascii_lowercase());
            }
            "owner" => {
                if v.as_str() != Some(project.as_str()) && !v.is_null() {
                    return Err(GlanceError::forbidden("You can only create images owned by your token's project."));
                }
            }
            "name" | "visibility" | "protected" | "os_hidden" | "min_disk" | "min_ram" | "disk_format" | "container_format" | "tags" => {
                patch::set_base(&mut ed, k, v).map_err(patch_error)?
            }
            _ => {
                let s = v
                    .as_str()
                    .ok_or_else(|| GlanceError::bad_request(format!("Invalid value for '{k}': custom properties are strings.")))?;
                ed.properties.insert(k.clone(), s.to_owned());
            }
        }
    }
    // The values were parsed (and their JSON types checked) above; the use-case judges them.
    let req = imageops::NewImageRequest {
        id: wanted_id,
        name: ed.name.clone(),
        disk_format: ed.disk_format.clone(),
        container_format: ed.container_format.clone(),
        visibility: Some(ed.visibility),
        protected: ed.protected,
        os_hidden: ed.os_hidden,
        min_disk: ed.min_disk,
        min_ram: ed.min_ram,
        tags: ed.tags.clone(),
        properties: ed.properties.clone(),
        expected_size: None,
    };
    let id = state.images.create_image(&caller.authn, req).await?;
    let detail = state.db.image_detail(&id).await?.ok_or_else(|| GlanceError::no_image(&id))?;
    let location = format!("/v2/images/{id}");
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::HeaderName::from_static("openstack-image-import-methods"), super::import_methods(&state).join(",")),
        ],
        Json(render(&state, &detail).await?),
    )
        .into_response())
}

/// `GET /v2/images`.
pub async fn list(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    caller.allow(&policy::Action::ListImages)?;
    let q = query::parse(&pairs).map_err(GlanceError::bad_request)?;
    let page = state.db.query_images(&q, caller.visible()).await?;
    let mut images = Vec::with_capacity(page.images.len());
    for i in &page.images {
        images.push(render(&state, i).await?);
    }
    let mut body = json!({ "images": images, "first": "/v2/images", "schema": "/v2/schemas/images" });
    if let Some(m) = &page.next_marker {
        body["next"] = Value::from(query::next_link(&pairs, m));
    }
    Ok(Json(body).into_response())
}

/// `GET /v2/images/{id}`.
pub async fn show(State(state): State<AppState>, authn: Option<Extension<Authn>>, Path(id): Path<String>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, _) = caller.image(&state, &id).await?;
    Ok(Json(render(&state, &image).await?).into_response())
}

/// `PATCH /v2/images/{id}` with the v2.1 (or v2.0) JSON-patch media type.
pub async fn update(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    let v21 = match media {
        patch::MEDIA_TYPE_V21 => true,
        patch::MEDIA_TYPE_V20 => false,
        _ => {
            return Err(GlanceError::unsupported(format!(
                "Unsupported Content-Type {media:?}: send {} (or {}).",
                patch::MEDIA_TYPE_V21,
                patch::MEDIA_TYPE_V20
            ))
            .with_header(
                header::HeaderName::from_static("accept-patch"),
                &format!("{}, {}", patch::MEDIA_TYPE_V21, patch::MEDIA_TYPE_V20),
            ))
        }
    };
    let doc: Value = serde_json::from_slice(&body).map_err(|e| GlanceError::bad_request(format!("The body is not JSON: {e}")))?;
    // The patch's syntax is read here; the change is judged and applied by the use-case.
    let updated = state
        .images
        .update_image(&caller.authn, &id, |fields| patch::apply(fields, &doc, &patch::Rules { v21 }).map_err(patch_into))
        .await
        .map_err(|e| match e {
            imageops::Error::NotFound(_) => GlanceError::no_image(&id),
            e => e.into(),
        })?;
    Ok(Json(render(&state, &updated).await?).into_response())
}

/// `DELETE /v2/images/{id}`: 403 while protected; the bytes go after the record.
pub async fn delete(State(state): State<AppState>, authn: Option<Extension<Authn>>, Path(id): Path<String>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    state.images.delete_image(&caller.authn, &id).await.map_err(|e| match e {
        imageops::Error::NotFound(_) => GlanceError::no_image(&id),
        e => e.into(),
    })?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /v2/images/{id}/actions/{deactivate|reactivate}`.
pub async fn action(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let action = imageops::StatusAction::parse(&action).ok_or_else(|| GlanceError::not_found(format!("No action named {action}.")))?;
    state.images.set_status(&caller.authn, &id, action).await.map_err(|e| match e {
        imageops::Error::NotFound(_) => GlanceError::no_image(&id),
        e => e.into(),
    })?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `PUT /v2/images/{id}/tags/{tag}` (idempotent).
pub async fn add_tag(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    state.images.add_tag(&caller.authn, &id, &tag).await.map_err(|e| no_image(e, &id))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A use-case's "no such image" as Glance words it.
fn no_image(e: imageops::Error, id: &str) -> GlanceError {
    match e {
        imageops::Error::NotFound(m) if m == "No such image." => GlanceError::no_image(id),
        e => e.into(),
    }
}

/// `DELETE /v2/images/{id}/tags/{tag}`: 404 when the image does not have it.
pub async fn remove_tag(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    state.images.remove_tag(&caller.authn, &id, &tag).await.map_err(|e| no_image(e, &id))?;
    Ok(empty(StatusCode::NO_CONTENT))
}
