//! Uploads: `POST /upload` (a new media id for the body), `POST /create` (an id now, its content
//! later) and `PUT /upload/{serverName}/{mediaId}` (the content of a created id, once).

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
};
use ganglion_config::RateLimitAction;
use ganglion_http::{Auth, MatrixError, MatrixResult};
use ganglion_storage::media::{self as media_store, MediaContent, MediaRow};
use ganglion_types::ErrorClass;
use http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{MediaError, MediaState, mxc, new_media_id, valid_media_id};

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`
pub(crate) async fn upload(
    State(state): State<MediaState>,
    Auth(session): Auth,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> MatrixResult<Json<Value>> {
    let uploader = session.user_id.as_str();
    state.authenticator.rate_limiter().check_user(RateLimitAction::MediaUpload, uploader)?;
    let described = describe(&headers, query.filename)?;
    let content = receive(&state, uploader, &headers, body).await?;
    let media_id = new_media_id();
    let mut conn = state.db.conn().await?;
    media_store::insert_media(
        &mut conn,
        &media_id,
        uploader,
        ganglion_storage::now_ms(),
        &content.with(&described, state.config.media.enable_authenticated_media),
    )
    .await?;
    Ok(Json(json!({ "content_uri": mxc(&state.config, &media_id) })))
}

/// `POST /_matrix/media/v1/create`
pub(crate) async fn create(
    State(state): State<MediaState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    let uploader = session.user_id.as_str();
    state.authenticator.rate_limiter().check_user(RateLimitAction::MediaUpload, uploader)?;
    let now = ganglion_storage::now_ms();
    let mut conn = state.db.conn().await?;
    let pending = media_store::pending_media_count(&mut conn, uploader, now).await?;
    if pending >= i64::from(state.config.media.max_pending_uploads) {
        return Err(MatrixError::new(
            ErrorClass::LimitExceeded { retry_after: std::time::Duration::from_secs(60) },
            "Too many media ids are awaiting their upload",
        ));
    }
    let media_id = new_media_id();
    let expires = now + (state.config.media.unused_expiry_secs as i64).saturating_mul(1000);
    media_store::insert_pending_media(&mut conn, &media_id, uploader, now, expires).await?;
    Ok(Json(json!({ "content_uri": mxc(&state.config, &media_id), "unused_expires_at": expires })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub(crate) async fn upload_to(
    State(state): State<MediaState>,
    Auth(session): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> MatrixResult<Json<Value>> {
    let uploader = session.user_id.as_str();
    if server_name != state.config.server_name || !valid_media_id(&media_id) {
        return Err(MatrixError::not_found("No media id was created with this name"));
    }
    // Refuse before reading the body when the id cannot take it.
    let row = {
        let mut conn = state.db.conn().await?;
        media_store::media_by_id(&mut conn, &media_id).await?
    };
    refuse_upload_to(row.as_ref(), uploader, ganglion_storage::now_ms())?;
    let described = describe(&headers, query.filename)?;
    let content = receive(&state, uploader, &headers, body).await?;
    let now = ganglion_storage::now_ms();
    let mut conn = state.db.conn().await?;
    let content = content.with(&described, state.config.media.enable_authenticated_media);
    if !media_store::complete_pending_media(&mut conn, &media_id, uploader, now, &content).await? {
        // Another upload to the id won, or it expired meanwhile.
        let row = media_store::media_by_id(&mut conn, &media_id).await?;
        refuse_upload_to(row.as_ref(), uploader, now)?;
        return Err(MatrixError::not_found("No media id was created with this name"));
    }
    Ok(Json(json!({})))
}

fn refuse_upload_to(row: Option<&MediaRow>, uploader: &str, now: i64) -> MatrixResult<()> {
    let Some(row) = row else { return Err(MatrixError::not_found("No media id was created with this name")) };
    if row.uploader != uploader {
        return Err(MatrixError::forbidden("This media id was created by another user"));
    }
    if row.content_sha256.is_some() {
        return Err(MatrixError::new(
            ErrorClass::CannotOverwriteMedia,
            "This media id already has its content",
        ));
    }
    if row.unused_expires_ts.is_none_or(|expires| expires <= now) {
        return Err(MatrixError::not_found("This media id expired before its upload"));
    }
    Ok(())
}

/// What the client says about the file: its content type (required, `type/subtype`) and name.
struct Described {
    content_type: String,
    filename: Option<String>,
}

fn describe(headers: &HeaderMap, filename: Option<String>) -> MatrixResult<Described> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(MatrixError::missing_param("The upload has no Content-Type header"));
    };
    let content_type = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|value| valid_content_type(value))
        .ok_or_else(|| MatrixError::invalid_param("The Content-Type header is not a media type"))?;
    if let Some(name) = &filename
        && !valid_filename(name)
    {
        return Err(MatrixError::invalid_param(
            "The file name must be 1 to 255 bytes with no path separators or control characters",
        ));
    }
    Ok(Described { content_type: content_type.to_owned(), filename })
}

/// `type/subtype` with optional parameters, in the characters RFC 9110 allows.
fn valid_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.len() <= 255 && essence.split_once('/').is_some_and(|(kind, sub)| token(kind) && token(sub))
}

pub(crate) fn valid_filename(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && !name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        && name != "."
        && name != ".."
}

struct Received {
    sha256: String,
    size: u64,
}

impl Received {
    fn with<'a>(&'a self, described: &'a Described, authenticated_only: bool) -> MediaContent<'a> {
        MediaContent {
            content_sha256: &self.sha256,
            content_type: &described.content_type,
            filename: described.filename.as_deref(),
            size_bytes: self.size as i64,
            authenticated_only,
        }
    }
}

/// Streams the body into the store within the upload limit and the user's quota.
async fn receive(
    state: &MediaState,
    uploader: &str,
    headers: &HeaderMap,
    body: Body,
) -> MatrixResult<Received> {
    let media = &state.config.media;
    let mut limit = media.max_upload_bytes;
    let mut quota_left = None;
    if let Some(quota) = media.user_quota_bytes {
        let mut conn = state.db.conn().await?;
        let used = media_store::bytes_uploaded_by(&mut conn, uploader).await?.max(0) as u64;
        let left = quota.saturating_sub(used);
        quota_left = Some(left);
        limit = limit.min(left);
    }
    let over_quota = || MatrixError::forbidden("This upload would exceed your media quota");
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = announced.filter(|length| *length > limit) {
        if length <= media.max_upload_bytes {
            // Read the body (within the upload limit) before refusing it: answered mid-body, a
            // proxy passing it through unbuffered (nginx) sees the connection close and answers
            // 502 instead of the refusal.
            let mut body = body.into_data_stream();
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
        }
        return Err(match quota_left {
            Some(left) if length > left && length <= media.max_upload_bytes => over_quota(),
            _ => MediaError::Store(crate::StoreError::TooLarge { limit: media.max_upload_bytes }).into(),
        });
    }
    match state.store.put(body.into_data_stream(), limit).await {
        Ok(stored) => {
            state.metrics.received(stored.size);
            Ok(Received { sha256: stored.sha256, size: stored.size })
        }
        Err(crate::StoreError::TooLarge { .. })
            if quota_left.is_some_and(|left| left < media.max_upload_bytes) =>
        {
            Err(over_quota())
        }
        Err(crate::StoreError::TooLarge { .. }) => {
            Err(MediaError::Store(crate::StoreError::TooLarge { limit: media.max_upload_bytes }).into())
        }
        Err(error) => Err(MediaError::Store(error).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_file_names_are_checked() {
        for good in ["image/png", "text/plain; charset=utf-8", "application/vnd.oasis.opendocument.text"] {
            assert!(valid_content_type(good), "{good}");
        }
        for bad in ["", "png", "image/", "/png", "image/png\u{0}", "ima ge/png"] {
            assert!(!valid_content_type(bad), "{bad:?}");
        }
        for good in ["cat.png", "Résumé 2026.pdf", ".hidden", "a..b"] {
            assert!(valid_filename(good), "{good}");
        }
        for bad in ["", "..", ".", "../../etc/passwd", "a\\b", "line\nbreak", &"x".repeat(256)] {
            assert!(!valid_filename(bad), "{bad:?}");
        }
    }
}
