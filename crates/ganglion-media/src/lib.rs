//! The `media` role: the content repository. Uploads (`/upload`, and `/create` with a later
//! `PUT /upload/{serverName}/{mediaId}`), downloads and thumbnails through the authenticated
//! client endpoints and, unless frozen, the legacy unauthenticated ones, and the upload limit in
//! `config`.
//!
//! Media is not a stream: a media worker writes the metadata (`ganglion_storage::media`) itself
//! and keeps the bytes in the [`MediaStore`], which every media worker of a cluster shares, so
//! any of them serves any file.

mod content_scanner;
mod download;
mod federation;
mod outbound;
mod preview;
pub mod scan;
mod store;
mod thumbnail;
mod upload;

use std::sync::Arc;

use axum::extract::FromRef;
use ganglion_config::Config;
use ganglion_http::{Authenticator, MatrixError, Route};
use ganglion_storage::Db;
use ganglion_types::{EndpointClass, ErrorClass};

pub use store::{MediaStore, StoreError};

#[derive(Clone)]
pub struct MediaState {
    pub db: Db,
    pub authenticator: Arc<dyn Authenticator>,
    pub config: Arc<Config>,
    pub store: Arc<MediaStore>,
    /// Permits to render thumbnails (`media.thumbnail_concurrency`).
    pub thumbnailers: Arc<tokio::sync::Semaphore>,
    /// The antivirus scanner (`media.clamd`), if files are scanned.
    pub scanner: Option<Arc<scan::Clamd>>,
    /// The content scanner API's key pair, loaded (or made) on first use.
    pub scanner_key: Arc<tokio::sync::OnceCell<vodozemac::pk_encryption::PkDecryption>>,
    /// Bytes in and out, scan verdicts.
    pub metrics: Arc<ganglion_metrics::MediaMetrics>,
    /// Other servers: their signed requests for our media, and their media for our users.
    pub federation: Option<ganglion_federation::Federation>,
}

impl FromRef<MediaState> for Arc<dyn Authenticator> {
    fn from_ref(state: &MediaState) -> Self {
        state.authenticator.clone()
    }
}

pub fn routes() -> Vec<Route<MediaState>> {
    use EndpointClass::Media;
    let mut routes = vec![
        Route::post("/_matrix/media/v1/create", Media, upload::create),
        Route::get("/_matrix/client/v1/media/config", Media, download::config),
        Route::get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", Media, download::download),
        Route::get(
            "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}",
            Media,
            download::download_named,
        ),
        Route::get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", Media, thumbnail::thumbnail),
        Route::get("/_matrix/client/v1/media/preview_url", Media, preview::preview_url),
    ];
    // The legacy paths, `r0` as well as `v3`: older clients, bots and bridges still use them.
    routes.extend([
        Route::post("/_matrix/media/v3/upload", Media, upload::upload).streaming_body(),
        Route::post("/_matrix/media/r0/upload", Media, upload::upload).streaming_body(),
        Route::put("/_matrix/media/v3/upload/{serverName}/{mediaId}", Media, upload::upload_to)
            .streaming_body(),
        Route::put("/_matrix/media/r0/upload/{serverName}/{mediaId}", Media, upload::upload_to)
            .streaming_body(),
        Route::get("/_matrix/media/v3/thumbnail/{serverName}/{mediaId}", Media, thumbnail::legacy_thumbnail),
        Route::get("/_matrix/media/r0/thumbnail/{serverName}/{mediaId}", Media, thumbnail::legacy_thumbnail),
        Route::get("/_matrix/media/v3/preview_url", Media, preview::preview_url),
        Route::get("/_matrix/media/r0/preview_url", Media, preview::preview_url),
        Route::get("/_matrix/media/v3/config", Media, download::config),
        Route::get("/_matrix/media/r0/config", Media, download::config),
        Route::get("/_matrix/media/v3/download/{serverName}/{mediaId}", Media, download::legacy_download),
        Route::get("/_matrix/media/r0/download/{serverName}/{mediaId}", Media, download::legacy_download),
        Route::get(
            "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
            Media,
            download::legacy_download_named,
        ),
        Route::get(
            "/_matrix/media/r0/download/{serverName}/{mediaId}/{fileName}",
            Media,
            download::legacy_download_named,
        ),
    ]);
    // The content scanner API, for clients that scan attachments before showing them.
    // Other servers' requests for our media (signed; answered `multipart/mixed`).
    routes.extend([
        Route::get(
            "/_matrix/federation/v1/media/download/{mediaId}",
            EndpointClass::FederationMedia,
            federation::download,
        ),
        Route::get(
            "/_matrix/federation/v1/media/thumbnail/{mediaId}",
            EndpointClass::FederationMedia,
            federation::thumbnail,
        ),
    ]);
    routes.extend([
        Route::get("/_matrix/media_proxy/unstable/public_key", Media, content_scanner::public_key),
        Route::get("/_matrix/media_proxy/unstable/scan/{serverName}/{mediaId}", Media, content_scanner::scan),
        Route::get(
            "/_matrix/media_proxy/unstable/download/{serverName}/{mediaId}",
            Media,
            content_scanner::download,
        ),
        Route::get(
            "/_matrix/media_proxy/unstable/thumbnail/{serverName}/{mediaId}",
            Media,
            content_scanner::thumbnail,
        ),
        Route::post("/_matrix/media_proxy/unstable/scan_encrypted", Media, content_scanner::scan_encrypted),
        Route::post(
            "/_matrix/media_proxy/unstable/download_encrypted",
            Media,
            content_scanner::download_encrypted,
        ),
    ]);
    routes
}

/// What uploads cut off by a crash left in the store is deleted once it is this old.
const ORPHANED_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(6 * 60 * 60);

/// Every ten minutes: drops media ids from `/create` whose upload never came, and deletes files
/// that uploads cut off by a crash left under `uploads/`. Every media process runs it; deleting
/// what another already deleted is harmless.
pub async fn housekeeping(db: Db, store: Arc<MediaStore>) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let expired = async {
            let mut conn = db.conn().await?;
            ganglion_storage::media::delete_expired_pending_media(&mut conn, ganglion_storage::now_ms()).await
        };
        match expired.await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "dropped media ids whose upload never came"),
            Err(error) => tracing::warn!(%error, "dropping expired media ids failed"),
        }
        match store.sweep_uploads(ORPHANED_UPLOAD_AGE).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "deleted files that cut-off uploads left"),
            Err(error) => tracing::warn!(%error, "sweeping cut-off uploads failed"),
        }
    }
}

/// Why a media request failed, mapped once to its Matrix error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MediaError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("storage: {0}")]
    Storage(#[from] ganglion_storage::StorageError),
}

impl From<MediaError> for MatrixError {
    fn from(error: MediaError) -> MatrixError {
        match error {
            MediaError::Store(StoreError::TooLarge { limit }) => MatrixError::new(
                ErrorClass::TooLarge,
                format!("The file is larger than the upload limit of {limit} bytes"),
            ),
            MediaError::Store(StoreError::Body(message)) => {
                MatrixError::new(ErrorClass::Unknown, format!("The upload was cut short: {message}"))
            }
            MediaError::Store(error) => {
                tracing::error!(%error, "media store failed");
                MatrixError::new(ErrorClass::Unavailable, "The media store is unavailable")
            }
            MediaError::Storage(error) => error.into(),
        }
    }
}

/// A media id: only `A-Za-z0-9`, `_` and `-` (the spec's rule, which also keeps ids out of paths).
pub(crate) fn valid_media_id(media_id: &str) -> bool {
    (1..=255).contains(&media_id.len())
        && media_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

pub(crate) fn new_media_id() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..24).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

pub(crate) fn mxc(config: &Config, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", config.server_name)
}
