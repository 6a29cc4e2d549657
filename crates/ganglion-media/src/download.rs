//! Downloads: the authenticated `/_matrix/client/v1/media/download` (and `config`), and the
//! legacy unauthenticated `/_matrix/media/v3/download`, which serves only media uploaded while
//! unauthenticated media was not frozen (`media.enable_authenticated_media`).

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    response::Response,
};
use ganglion_http::{Auth, MatrixError, MatrixResult};
use ganglion_storage::media::{self as media_store, MediaRow};
use ganglion_types::ErrorClass;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{MediaError, MediaState, upload::valid_filename, valid_media_id};

/// The longest a download waits for the content of a created id (the spec's default is 20 s).
const MAX_WAIT: Duration = Duration::from_secs(120);
const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting download looks for the content of a created id.
const WAIT_STEP: Duration = Duration::from_millis(250);

/// Types a browser may show inline (the spec's list): anything else downloads as an attachment,
/// so an uploaded HTML or SVG file never runs in the media origin.
const INLINE_TYPES: [&str; 26] = [
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The spec's recommended policy for served content.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

#[derive(Deserialize, Default)]
pub(crate) struct DownloadQuery {
    timeout_ms: Option<u64>,
}

/// `GET /_matrix/client/v1/media/config` (and the legacy `/_matrix/media/v3/config`).
pub(crate) async fn config(State(state): State<MediaState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": state.config.media.max_upload_bytes }))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub(crate) async fn download(
    State(state): State<MediaState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> MatrixResult<Response> {
    serve(&state, &server_name, &media_id, None, &query, Access::Authenticated).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub(crate) async fn download_named(
    State(state): State<MediaState>,
    Auth(_): Auth,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> MatrixResult<Response> {
    serve(&state, &server_name, &media_id, Some(&file_name), &query, Access::Authenticated).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
pub(crate) async fn legacy_download(
    State(state): State<MediaState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> MatrixResult<Response> {
    serve(&state, &server_name, &media_id, None, &query, Access::Legacy).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
pub(crate) async fn legacy_download_named(
    State(state): State<MediaState>,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> MatrixResult<Response> {
    serve(&state, &server_name, &media_id, Some(&file_name), &query, Access::Legacy).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Authenticated,
    Legacy,
}

pub(crate) async fn serve(
    state: &MediaState,
    server_name: &str,
    media_id: &str,
    file_name: Option<&str>,
    query: &DownloadQuery,
    access: Access,
) -> MatrixResult<Response> {
    if let Some(name) = file_name
        && !valid_filename(name)
    {
        return Err(MatrixError::invalid_param("Invalid file name"));
    }
    let row = uploaded_row(state, server_name, media_id, query.timeout_ms, access).await?;
    let (Some(sha256), Some(content_type)) = (row.content_sha256.as_deref(), row.content_type.as_deref())
    else {
        return Err(MatrixError::not_found("Media not found"));
    };
    crate::scan::ensure_clean(state, sha256).await?;
    serve_content(state, sha256, content_type, file_name.or(row.filename.as_deref())).await
}

/// The media row of a local media id this request may read, once its content is there.
pub(crate) async fn uploaded_row(
    state: &MediaState,
    server_name: &str,
    media_id: &str,
    timeout_ms: Option<u64>,
    access: Access,
) -> MatrixResult<MediaRow> {
    if !valid_media_id(media_id) {
        return Err(MatrixError::invalid_param("Media ids are made of A-Z, a-z, 0-9, '_' and '-'"));
    }
    if server_name != state.config.server_name {
        return crate::federation::remote_row(state, server_name, media_id).await;
    }
    let row = uploaded(state, media_id, timeout_ms).await?;
    if row.quarantined || (access == Access::Legacy && row.authenticated_only) {
        return Err(MatrixError::not_found("Media not found"));
    }
    Ok(row)
}

/// A stored file as the answer, with the headers that keep it from running in a browser.
pub(crate) async fn serve_content(
    state: &MediaState,
    sha256: &str,
    content_type: &str,
    file_name: Option<&str>,
) -> MatrixResult<Response> {
    let Some(file) = state.store.get(sha256).await.map_err(MediaError::from)? else {
        tracing::error!(sha256, "media metadata names content the store does not have");
        return Err(MatrixError::not_found("Media not found"));
    };
    state.metrics.served(file.size);
    let mut response = Response::new(Body::from_stream(file.body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let header_value = |value: &str| {
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    };
    headers.insert(header::CONTENT_TYPE, header_value(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(content_type, file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    // A media id's content never changes; access checks happen before caching clients see it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// The media row once its content is there, waiting up to the request's `timeout_ms` for a
/// created id's upload.
async fn uploaded(state: &MediaState, media_id: &str, timeout_ms: Option<u64>) -> MatrixResult<MediaRow> {
    let wait = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let row = {
            let mut conn = state.db.conn().await?;
            media_store::media_by_id(&mut conn, media_id).await?
        };
        let Some(row) = row else { return Err(MatrixError::not_found("Media not found")) };
        if row.content_sha256.is_some() {
            return Ok(row);
        }
        let now = ganglion_storage::now_ms();
        if row.unused_expires_ts.is_none_or(|expires| expires <= now) {
            return Err(MatrixError::not_found("Media not found"));
        }
        if tokio::time::Instant::now() + WAIT_STEP > deadline {
            return Err(MatrixError::new(ErrorClass::NotYetUploaded, "The media has not been uploaded yet"));
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

/// `inline` for the spec's safe types, `attachment` otherwise, with the file name (RFC 6266:
/// `filename*` in UTF-8 whenever it is not a plain ASCII token).
fn content_disposition(content_type: &str, file_name: Option<&str>) -> String {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    match file_name {
        None => kind.to_owned(),
        Some(name) if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._- ()+".contains(&b)) => {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            format!("{kind}; filename*=utf-8''{encoded}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn only_safe_types_are_inline_and_names_are_encoded() {
        assert_eq!(content_disposition("image/png", Some("cat.png")), "inline; filename=\"cat.png\"");
        assert_eq!(content_disposition("text/plain; charset=utf-8", None), "inline");
        assert_eq!(content_disposition("text/html", Some("page.html")), "attachment; filename=\"page.html\"");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            content_disposition("application/pdf", Some("Résumé \"2026\".pdf")),
            "attachment; filename*=utf-8''R%C3%A9sum%C3%A9%20%222026%22%2Epdf"
        );
    }
}
