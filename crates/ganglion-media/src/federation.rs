//! Media across servers. Other servers fetch ours with `GET /_matrix/federation/v1/media/download`
//! and `/thumbnail` (signed requests, answered `multipart/mixed`: a JSON part, then the file);
//! our users' requests for another server's media fetch it from that server the same way the
//! first time, keep it in the media store and `remote_media`, scan it like an upload, and serve
//! it (thumbnails of it are made here).

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    response::Response,
};
use bytes::Bytes;
use ganglion_federation::{FederationError, request_auth::RequestAuthError};
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_storage::media::{self as media_store, MediaRow, RemoteMediaRow};
use ganglion_types::ErrorClass;
use http::{HeaderValue, StatusCode, header};
use ruma::ServerName;

use crate::{
    MediaError, MediaState,
    download::{Access, DownloadQuery},
    thumbnail::ThumbnailQuery,
    valid_media_id,
};

/// The boundary of our `multipart/mixed` answers: random enough that no file holds it by chance
/// right after a line break.
const BOUNDARY: &str = "ganglion-7c2f0e1b9a4d4e8f8d3b5a6c1e0f9a2b";

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
pub(crate) async fn download(
    State(state): State<MediaState>,
    Path(media_id): Path<String>,
    Query(query): Query<DownloadQuery>,
    request: Request,
) -> MatrixResult<Response> {
    authenticate(&state, request).await?;
    let response = crate::download::serve(
        &state,
        &state.config.server_name,
        &media_id,
        None,
        &query,
        Access::Authenticated,
    )
    .await?;
    Ok(multipart(response).await)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<MediaState>,
    Path(media_id): Path<String>,
    Query(query): Query<ThumbnailQuery>,
    request: Request,
) -> MatrixResult<Response> {
    authenticate(&state, request).await?;
    let response = crate::thumbnail::serve_thumbnail(
        &state,
        &state.config.server_name,
        &media_id,
        &query,
        Access::Authenticated,
    )
    .await?;
    Ok(multipart(response).await)
}

/// The request's X-Matrix signature verifies (401 `M_UNAUTHORIZED` if not; 403 for a server
/// this one does not federate with).
async fn authenticate(state: &MediaState, request: Request) -> MatrixResult<()> {
    let Some(federation) = &state.federation else {
        return Err(MatrixError::not_found("This server does not federate"));
    };
    let (parts, _) = request.into_parts();
    let own_name = ServerName::parse(&state.config.server_name)
        .map_err(|_| MatrixError::internal("the server name is not a server name"))?;
    ganglion_federation::request_auth::authenticate(
        &federation.keyring,
        &federation.policy,
        &own_name,
        &parts,
        &[],
    )
    .await
    .map_err(|error: RequestAuthError| {
        let class = match error {
            RequestAuthError::NotFederating { .. } => ErrorClass::Forbidden,
            _ => ErrorClass::Unauthorized,
        };
        MatrixError::new(class, error.to_string())
    })?;
    Ok(())
}

/// A file answer as the federation API's `multipart/mixed`: empty metadata, then the file with
/// its type and disposition.
async fn multipart(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let mut head = format!("--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{BOUNDARY}\r\n");
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(value) = parts.headers.get(&name).and_then(|value| value.to_str().ok()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    use futures_util::StreamExt as _;
    let stream = futures_util::stream::once(async move { Ok::<_, axum::Error>(Bytes::from(head)) })
        .chain(body.into_data_stream())
        .chain(futures_util::stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={BOUNDARY}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Another server's media as our users see it: fetched from `origin` the first time.
pub(crate) async fn remote_row(state: &MediaState, origin: &str, media_id: &str) -> MatrixResult<MediaRow> {
    if !valid_media_id(media_id) {
        return Err(MatrixError::invalid_param("Media ids are made of A-Z, a-z, 0-9, '_' and '-'"));
    }
    let known = {
        let mut conn = state.db.conn().await?;
        media_store::remote_media(&mut conn, origin, media_id).await?
    };
    let row = match known {
        Some(row) => row,
        None => fetch(state, origin, media_id).await?,
    };
    Ok(MediaRow {
        media_id: media_id.to_owned(),
        uploader: String::new(),
        created_ts: 0,
        unused_expires_ts: None,
        content_sha256: Some(row.content_sha256),
        content_type: Some(row.content_type),
        filename: row.filename,
        size_bytes: row.size_bytes,
        authenticated_only: false,
        quarantined: false,
    })
}

/// Fetches `origin`'s media into the store and `remote_media`.
async fn fetch(state: &MediaState, origin: &str, media_id: &str) -> MatrixResult<RemoteMediaRow> {
    let Some(federation) = &state.federation else {
        return Err(MatrixError::not_found("Remote media is not available on this server"));
    };
    let server = ServerName::parse(origin).map_err(|_| MatrixError::invalid_param("Not a server name"))?;
    let limit = state.config.media.max_upload_bytes;
    let path = format!("/_matrix/federation/v1/media/download/{}?timeout_ms=20000", encode(media_id));
    let fetched = federation.client.get_raw(&server, &path, (limit as usize).saturating_add(64 * 1024)).await;
    let (content_type, body) = match fetched {
        Ok(answer) => answer,
        Err(FederationError::Remote { status: 404, errcode, .. }) if errcode != "M_UNRECOGNIZED" => {
            return Err(MatrixError::not_found("Media not found"));
        }
        Err(FederationError::Refused { reason, .. }) => {
            return Err(MatrixError::new(ErrorClass::Forbidden, reason));
        }
        // No such server (or none that answers): for the user, media that is not there.
        Err(error @ FederationError::Unreachable { .. }) => {
            tracing::info!(%origin, media_id, %error, "remote media: its server cannot be reached");
            return Err(MatrixError::not_found(format!("Media not found: {origin} cannot be reached")));
        }
        Err(error) => {
            tracing::info!(%origin, media_id, %error, "fetching remote media failed");
            return Err(MatrixError::new(
                ErrorClass::BadGateway,
                format!("The media could not be fetched from {origin}"),
            ));
        }
    };
    let (file_type, disposition, bytes) = match content_type.as_deref().and_then(|ct| file_part(ct, &body)) {
        Some(FilePart::Bytes { content_type, disposition, bytes }) => (content_type, disposition, bytes),
        Some(FilePart::Location(location)) => follow(state, origin, &location).await?,
        None => {
            tracing::info!(%origin, media_id, "remote media answer is not the multipart the spec says");
            return Err(MatrixError::new(ErrorClass::BadGateway, format!("{origin} answered with no file")));
        }
    };
    let stored = state
        .store
        .put(futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) }), limit)
        .await
        .map_err(MediaError::from)?;
    state.metrics.received(stored.size);
    let row = RemoteMediaRow {
        content_sha256: stored.sha256,
        content_type: file_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
        filename: disposition.as_deref().and_then(filename_of),
        size_bytes: stored.size as i64,
    };
    let mut conn = state.db.conn().await?;
    media_store::insert_remote_media(&mut conn, origin, media_id, &row, ganglion_storage::now_ms()).await?;
    Ok(row)
}

/// The file part of a `multipart/mixed` media answer.
#[derive(Debug, PartialEq)]
enum FilePart {
    Bytes {
        content_type: Option<String>,
        disposition: Option<String>,
        bytes: Bytes,
    },
    /// The file is at this URL instead (a plain `GET`, no signature).
    Location(String),
}

/// The file part of a `multipart/mixed` answer, `None` when the body is not such an answer.
fn file_part(content_type: &str, body: &Bytes) -> Option<FilePart> {
    let mut parameters = content_type.split(';').map(str::trim);
    if !parameters.next()?.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    let boundary = parameters.find_map(|parameter| parameter.strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let starts = find_all(body, delimiter.as_bytes());
    // Two parts: metadata, then the file, then the closing delimiter.
    let (&second, &end) = (starts.get(1)?, starts.get(2)?);
    let mut start = second + delimiter.len();
    if body[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let part = body.slice(start..end.max(start));
    // A part of headers only (a `Location`) may end right after them.
    let split = find_all(&part, b"\r\n\r\n").first().copied().unwrap_or(part.len());
    let headers = std::str::from_utf8(&part[..split]).ok()?;
    let mut file_type = None;
    let mut disposition = None;
    for line in headers.split("\r\n").filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => file_type = Some(value.trim().to_owned()),
            "content-disposition" => disposition = Some(value.trim().to_owned()),
            "location" => return Some(FilePart::Location(value.trim().to_owned())),
            _ => {}
        }
    }
    if split + 4 > part.len() {
        return None;
    }
    // The line break before the next delimiter belongs to it.
    let content_end = part.len().saturating_sub(2).max(split + 4);
    Some(FilePart::Bytes { content_type: file_type, disposition, bytes: part.slice(split + 4..content_end) })
}

/// The file a media answer of `origin` names by `Location`: fetched with a plain `GET` (from
/// addresses `federation.allowed_address_ranges` lets through, within
/// `media.max_upload_bytes`), its type and disposition from that answer.
async fn follow(
    state: &MediaState,
    origin: &str,
    location: &str,
) -> MatrixResult<(Option<String>, Option<String>, Bytes)> {
    let Ok(url) = reqwest::Url::parse(location) else {
        tracing::info!(%origin, location, "remote media answer names its file by an unusable Location");
        return Err(MatrixError::new(ErrorClass::BadGateway, format!("{origin} answered with no file")));
    };
    let federation = &state.config.federation;
    let limits = crate::outbound::Limits {
        allowed: &federation.allowed_address_ranges,
        max_bytes: state.config.media.max_upload_bytes,
        verify_certificates: federation.verify_certificates,
        user_agent: concat!("Ganglion/", env!("CARGO_PKG_VERSION")),
    };
    let fetched = crate::outbound::get(url, &limits).await.map_err(|error| {
        tracing::info!(%origin, location, %error, "the file a remote media answer points at");
        error.into_matrix("file")
    })?;
    let header = |name: http::HeaderName| {
        fetched.headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    Ok((header(header::CONTENT_TYPE), header(header::CONTENT_DISPOSITION), fetched.body))
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return Vec::new();
    }
    (0..=haystack.len() - needle.len()).filter(|&at| &haystack[at..at + needle.len()] == needle).collect()
}

/// The file name of a `Content-Disposition` value (`filename*=utf-8''…` or `filename="…"`).
fn filename_of(disposition: &str) -> Option<String> {
    for parameter in disposition.split(';').map(str::trim) {
        if let Some(encoded) =
            parameter.strip_prefix("filename*=utf-8''").or(parameter.strip_prefix("filename*=UTF-8''"))
        {
            return percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .ok()
                .map(|name| name.into_owned());
        }
    }
    disposition
        .split(';')
        .map(str::trim)
        .find_map(|parameter| parameter.strip_prefix("filename="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| crate::upload::valid_filename(name))
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_part_of_a_multipart_answer() {
        let body = Bytes::from_static(
            b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nContent-Type: image/png\r\n\
              Content-Disposition: inline; filename=\"cat.png\"\r\n\r\n\x89PNG\r\n--x\r\n--xyz--\r\n",
        );
        let Some(FilePart::Bytes { content_type: kind, disposition, bytes }) =
            file_part("multipart/mixed; boundary=xyz", &body)
        else {
            panic!("no file part")
        };
        assert_eq!(kind.as_deref(), Some("image/png"));
        assert_eq!(disposition.as_deref().and_then(filename_of).as_deref(), Some("cat.png"));
        assert_eq!(&bytes[..], b"\x89PNG\r\n--x");
        assert!(file_part("application/json", &body).is_none());
        let redirect = Bytes::from_static(
            b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://x/y\r\n\r\n\r\n--b--\r\n",
        );
        assert_eq!(
            file_part("multipart/mixed; boundary=b", &redirect),
            Some(FilePart::Location("https://x/y".to_owned()))
        );
        // Headers only, the part ending right after them.
        let redirect = Bytes::from_static(
            b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://x/z\r\n--b--\r\n",
        );
        assert_eq!(
            file_part("multipart/mixed; boundary=b", &redirect),
            Some(FilePart::Location("https://x/z".to_owned()))
        );
        assert_eq!(
            filename_of("attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf").as_deref(),
            Some("Résumé.pdf")
        );
    }
}
