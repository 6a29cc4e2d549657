//! The content scanner API, `/_matrix/media_proxy/unstable/`, as the Matrix Content Scanner
//! defines it and as clients in scanning deployments call it: `scan`, `download` and `thumbnail`
//! for plain media, and `scan_encrypted` and `download_encrypted` for end-to-end encrypted
//! attachments, whose key the client hands over in the request (in clear, or encrypted to the
//! key from `public_key` with the Olm PkEncryption scheme).
//!
//! An encrypted attachment is decrypted as it streams from the store to clamd: the plaintext is
//! never stored. Its verdict is kept per (ciphertext, key, IV); an infected plaintext also marks
//! the ciphertext infected, so no endpoint serves it again. Requests carry the user's access token
//! as the scanner's do (`Authorization`); without one they read only what the legacy
//! unauthenticated endpoints would serve.

use crate::store::hex;
use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    response::Response,
};
use ganglion_http::{MatrixError, MatrixResult, MaybeAuth};
use ganglion_storage::{media as media_store, secrets};
use ganglion_types::ErrorClass;
use ruma::events::room::{EncryptedFile, EncryptedFileHashAlgorithm, EncryptedFileInfo};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use vodozemac::{
    Curve25519SecretKey,
    pk_encryption::{Message, PkDecryption},
};

use crate::{
    MediaState,
    download::{self, Access, DownloadQuery, serve_content, uploaded_row},
    scan::{self, Clamd},
    thumbnail::{self, ThumbnailQuery},
};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The name of the scanner's Curve25519 secret among the cluster's shared secrets.
const SCANNER_SECRET: &str = "content_scanner_curve25519";

/// The content scanner API's error: a Matrix error that also carries the scanner's `reason`.
fn scanner_error(class: ErrorClass, reason: &str, message: impl Into<String>) -> MatrixError {
    let message = message.into();
    MatrixError::new(class, message.clone())
        .with("reason", Value::String(reason.to_owned()))
        .with("info", Value::String(message))
}

fn malformed(message: impl Into<String>) -> MatrixError {
    scanner_error(ErrorClass::BadJson, "MCS_MALFORMED_JSON", message)
}

fn access(auth: &MaybeAuth) -> Access {
    if auth.0.is_some() { Access::Authenticated } else { Access::Legacy }
}

fn scanner(state: &MediaState) -> MatrixResult<&Clamd> {
    state.scanner.as_deref().ok_or_else(|| {
        MatrixError::new(
            ErrorClass::Unrecognized,
            "Content scanning is not enabled on this server (media.clamd)",
        )
    })
}

/// The scanner's key pair, from the cluster's shared secrets (made by the first process to need it).
async fn decryption(state: &MediaState) -> MatrixResult<&PkDecryption> {
    state
        .scanner_key
        .get_or_try_init(|| async {
            let mut conn = state.db.conn().await?;
            let fresh = vodozemac::base64_encode(PkDecryption::new().secret_key().to_bytes().as_slice());
            let secret = secrets::secret_named_or_insert(
                &mut conn,
                SCANNER_SECRET,
                &fresh,
                ganglion_storage::now_ms(),
            )
            .await?;
            let bytes: [u8; 32] = vodozemac::base64_decode(&secret)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| MatrixError::internal("the stored content scanner key is malformed"))?;
            Ok::<_, MatrixError>(PkDecryption::from_key(Curve25519SecretKey::from_slice(&bytes)))
        })
        .await
}

/// `GET /_matrix/media_proxy/unstable/public_key`
pub(crate) async fn public_key(State(state): State<MediaState>) -> MatrixResult<Json<Value>> {
    scanner(&state)?;
    let key = decryption(&state).await?.public_key().to_base64();
    Ok(Json(json!({ "public_key": key })))
}

/// `GET /_matrix/media_proxy/unstable/scan/{serverName}/{mediaId}`: the verdict, infected or not.
pub(crate) async fn scan(
    State(state): State<MediaState>,
    auth: MaybeAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    let clamd = scanner(&state)?;
    let row = uploaded_row(&state, &server_name, &media_id, Some(0), access(&auth)).await?;
    let Some(sha256) = row.content_sha256.as_deref() else {
        return Err(MatrixError::not_found("Media not found"));
    };
    Ok(verdict_answer(scan::verdict_of(&state, clamd, sha256).await?))
}

/// `GET /_matrix/media_proxy/unstable/download/{serverName}/{mediaId}`
pub(crate) async fn download(
    State(state): State<MediaState>,
    auth: MaybeAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> MatrixResult<Response> {
    scanner(&state)?;
    download::serve(&state, &server_name, &media_id, None, &DownloadQuery::default(), access(&auth)).await
}

/// `GET /_matrix/media_proxy/unstable/thumbnail/{serverName}/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<MediaState>,
    auth: MaybeAuth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> MatrixResult<Response> {
    scanner(&state)?;
    thumbnail::serve_thumbnail(&state, &server_name, &media_id, &query, access(&auth)).await
}

/// `POST /_matrix/media_proxy/unstable/scan_encrypted`
pub(crate) async fn scan_encrypted(
    State(state): State<MediaState>,
    auth: MaybeAuth,
    body: Bytes,
) -> MatrixResult<Json<Value>> {
    let clamd = scanner(&state)?;
    let attachment = attachment(&state, &body, access(&auth)).await?;
    Ok(verdict_answer(attachment_verdict(&state, clamd, &attachment).await?))
}

/// `POST /_matrix/media_proxy/unstable/download_encrypted`: the ciphertext, once its plaintext
/// is found clean.
pub(crate) async fn download_encrypted(
    State(state): State<MediaState>,
    auth: MaybeAuth,
    body: Bytes,
) -> MatrixResult<Response> {
    let clamd = scanner(&state)?;
    let attachment = attachment(&state, &body, access(&auth)).await?;
    scan::refuse_infected(attachment_verdict(&state, clamd, &attachment).await?)?;
    scan::ensure_clean(&state, &attachment.sha256).await?;
    serve_content(&state, &attachment.sha256, &attachment.content_type, attachment.filename.as_deref()).await
}

fn verdict_answer(verdict: media_store::ScanVerdict) -> Json<Value> {
    if verdict.clean {
        return Json(json!({ "clean": true, "info": "File is clean" }));
    }
    Json(json!({ "clean": false, "info": verdict.info.unwrap_or_else(|| "malware".into()) }))
}

/// An encrypted attachment named by a request, found in the store.
struct Attachment {
    /// The stored ciphertext's content hash (hex).
    sha256: String,
    content_type: String,
    filename: Option<String>,
    key: [u8; 32],
    iv: [u8; 16],
}

#[derive(Deserialize)]
struct ScanRequest {
    file: Option<Value>,
    encrypted_body: Option<EncryptedBody>,
}

#[derive(Deserialize)]
struct EncryptedBody {
    ciphertext: String,
    mac: String,
    ephemeral: String,
}

/// The request's `EncryptedFile` (from `encrypted_body` when there is one), checked against the
/// stored ciphertext's hash.
async fn attachment(state: &MediaState, body: &[u8], access: Access) -> MatrixResult<Attachment> {
    let request: ScanRequest = serde_json::from_slice(body)
        .map_err(|error| malformed(format!("The body is not a valid request: {error}")))?;
    let request = match request.encrypted_body {
        None => request,
        Some(encrypted) => {
            let bad = |message: String| scanner_error(ErrorClass::Forbidden, "MCS_BAD_DECRYPTION", message);
            let message = Message::from_base64(&encrypted.ciphertext, &encrypted.mac, &encrypted.ephemeral)
                .map_err(|error| bad(format!("`encrypted_body` is malformed: {error}")))?;
            let plaintext = decryption(state).await?.decrypt(&message).map_err(|error| {
                bad(format!("`encrypted_body` cannot be decrypted with our public key: {error}"))
            })?;
            serde_json::from_slice(&plaintext)
                .map_err(|error| malformed(format!("The decrypted body is not a valid request: {error}")))?
        }
    };
    let file = request.file.ok_or_else(|| malformed("The request has no `file`"))?;
    let file: EncryptedFile = serde_json::from_value(file)
        .map_err(|error| malformed(format!("`file` is not an EncryptedFile: {error}")))?;
    let EncryptedFileInfo::V2(info) = &file.info else {
        return Err(malformed("Only version 2 of attachment encryption (`v: \"v2\"`) is supported"));
    };
    let expected = file
        .hashes
        .get(&EncryptedFileHashAlgorithm::Sha256)
        .ok_or_else(|| malformed("`file.hashes` has no `sha256`"))?;
    let (server_name, media_id) =
        file.url.parts().map_err(|_| malformed("`file.url` is not an mxc:// URI"))?;
    let row = uploaded_row(state, server_name.as_str(), media_id, Some(0), access).await?;
    let (Some(sha256), Some(content_type)) = (row.content_sha256, row.content_type) else {
        return Err(MatrixError::not_found("Media not found"));
    };
    if hex(expected.as_bytes()) != sha256 {
        return Err(scanner_error(
            ErrorClass::InvalidParam,
            "MCS_MEDIA_FAILED_TO_DECRYPT",
            "The file's SHA-256 is not the one `file.hashes.sha256` names",
        ));
    }
    Ok(Attachment {
        sha256,
        content_type,
        filename: row.filename,
        key: *info.k.as_inner(),
        iv: *info.iv.as_inner(),
    })
}

/// The verdict on an attachment's plaintext, scanning it (decrypted as it streams to clamd) if
/// it never was.
async fn attachment_verdict(
    state: &MediaState,
    clamd: &Clamd,
    attachment: &Attachment,
) -> MatrixResult<media_store::ScanVerdict> {
    // Named by what determines the plaintext; a hash, so the key is not stored.
    let subject = {
        let mut hasher = Sha256::new();
        hasher.update(b"attachment\0");
        hasher.update(attachment.sha256.as_bytes());
        hasher.update(attachment.key);
        hasher.update(attachment.iv);
        format!("attachment:{}", hex(&hasher.finalize()))
    };
    let mut cipher = Aes256Ctr::new(&attachment.key.into(), &attachment.iv.into());
    let decrypt = move |chunk: Bytes| {
        let mut chunk = chunk.to_vec();
        cipher.apply_keystream(&mut chunk);
        Bytes::from(chunk)
    };
    let (verdict, fresh) = scan::cached_verdict(state, clamd, &subject, &attachment.sha256, decrypt).await?;
    if fresh && let Some(info) = verdict.info.as_deref().filter(|_| !verdict.clean) {
        let mut conn = state.db.conn().await?;
        media_store::record_infected(&mut conn, &attachment.sha256, info, ganglion_storage::now_ms()).await?;
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_decryption_streams_across_chunks() {
        let (key, iv) = ([7u8; 32], [9u8; 16]);
        let plaintext: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = plaintext.clone();
        Aes256Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut whole);
        let mut cipher = Aes256Ctr::new(&key.into(), &iv.into());
        let mut chunked = Vec::new();
        for chunk in whole.chunks(37) {
            let mut chunk = chunk.to_vec();
            cipher.apply_keystream(&mut chunk);
            chunked.extend(chunk);
        }
        assert_eq!(chunked, plaintext);
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
