//! The media repository's metadata: which content (by SHA-256) each media id names, who uploaded
//! it, and what they said it is. The bytes live in the media store, not here.

use sqlx::Row;

use crate::{Conn, Result};

/// A media id with its content (or none yet: an id from `/create` awaiting its upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub created_ts: i64,
    pub unused_expires_ts: Option<i64>,
    pub content_sha256: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size_bytes: i64,
    pub authenticated_only: bool,
    pub quarantined: bool,
}

/// What an upload stores about its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaContent<'a> {
    pub content_sha256: &'a str,
    pub content_type: &'a str,
    pub filename: Option<&'a str>,
    pub size_bytes: i64,
    pub authenticated_only: bool,
}

const COLUMNS: &str = "media_id, uploader, created_ts, unused_expires_ts, content_sha256, content_type, \
                       filename, size_bytes, authenticated_only, quarantined";

fn media_from_row(row: sqlx::any::AnyRow) -> MediaRow {
    MediaRow {
        media_id: row.get(0),
        uploader: row.get(1),
        created_ts: row.get(2),
        unused_expires_ts: row.get(3),
        content_sha256: row.get(4),
        content_type: row.get(5),
        filename: row.get(6),
        size_bytes: row.get(7),
        authenticated_only: row.get::<i64, _>(8) != 0,
        quarantined: row.get::<i64, _>(9) != 0,
    }
}

pub async fn media_by_id(conn: &mut Conn, media_id: &str) -> Result<Option<MediaRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM media WHERE media_id = $1")))
        .bind(media_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(media_from_row))
}

/// Records an uploaded file under a new media id.
pub async fn insert_media(
    conn: &mut Conn,
    media_id: &str,
    uploader: &str,
    now_ms: i64,
    content: &MediaContent<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO media (media_id, uploader, created_ts, content_sha256, content_type, filename, \
         size_bytes, uploaded_ts, authenticated_only) VALUES ($1, $2, $3, $4, $5, $6, $7, $3, $8)",
    )
    .bind(media_id)
    .bind(uploader)
    .bind(now_ms)
    .bind(content.content_sha256)
    .bind(content.content_type)
    .bind(content.filename)
    .bind(content.size_bytes)
    .bind(i64::from(content.authenticated_only))
    .execute(conn)
    .await?;
    Ok(())
}

/// Reserves a media id for a later upload (`/create`).
pub async fn insert_pending_media(
    conn: &mut Conn,
    media_id: &str,
    uploader: &str,
    now_ms: i64,
    expires_ts: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO media (media_id, uploader, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4)",
    )
    .bind(media_id)
    .bind(uploader)
    .bind(now_ms)
    .bind(expires_ts)
    .execute(conn)
    .await?;
    Ok(())
}

/// The user's reserved media ids still awaiting their upload.
pub async fn pending_media_count(conn: &mut Conn, uploader: &str, now_ms: i64) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM media WHERE uploader = $1 AND content_sha256 IS NULL AND unused_expires_ts > $2",
    )
    .bind(uploader)
    .bind(now_ms)
    .fetch_one(conn)
    .await?;
    Ok(row.get(0))
}

/// Gives a reserved media id its content; false when the id is not the uploader's, has expired,
/// or already has content (the caller tells which from [`media_by_id`]).
pub async fn complete_pending_media(
    conn: &mut Conn,
    media_id: &str,
    uploader: &str,
    now_ms: i64,
    content: &MediaContent<'_>,
) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE media SET content_sha256 = $1, content_type = $2, filename = $3, size_bytes = $4, \
         uploaded_ts = $5, authenticated_only = $6, unused_expires_ts = NULL \
         WHERE media_id = $7 AND uploader = $8 AND content_sha256 IS NULL AND unused_expires_ts > $5",
    )
    .bind(content.content_sha256)
    .bind(content.content_type)
    .bind(content.filename)
    .bind(content.size_bytes)
    .bind(now_ms)
    .bind(i64::from(content.authenticated_only))
    .bind(media_id)
    .bind(uploader)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Bytes the user's uploads take, as their quota counts them (each upload counts, deduplicated
/// or not: what a user may store should not depend on what others uploaded).
pub async fn bytes_uploaded_by(conn: &mut Conn, uploader: &str) -> Result<i64> {
    let row =
        sqlx::query("SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM media WHERE uploader = $1")
            .bind(uploader)
            .fetch_one(conn)
            .await?;
    Ok(row.get(0))
}

/// Drops reserved ids whose upload never came; returns how many.
pub async fn delete_expired_pending_media(conn: &mut Conn, now_ms: i64) -> Result<u64> {
    let result = sqlx::query("DELETE FROM media WHERE content_sha256 IS NULL AND unused_expires_ts <= $1")
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// A rendered thumbnail: its own content in the media store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRow {
    pub content_sha256: String,
    pub content_type: String,
    pub size_bytes: i64,
}

/// The thumbnail of `source_sha256` at this size, method and animation, if rendered.
pub async fn thumbnail_of(
    conn: &mut Conn,
    source_sha256: &str,
    width: u32,
    height: u32,
    method: &str,
    animated: bool,
) -> Result<Option<ThumbnailRow>> {
    let row = sqlx::query(
        "SELECT content_sha256, content_type, size_bytes FROM media_thumbnails \
         WHERE source_sha256 = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5",
    )
    .bind(source_sha256)
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(method)
    .bind(i64::from(animated))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| ThumbnailRow {
        content_sha256: row.get(0),
        content_type: row.get(1),
        size_bytes: row.get(2),
    }))
}

/// Records a rendered thumbnail; a second rendering of the same one (two workers at once) keeps
/// the first.
#[allow(clippy::too_many_arguments)]
pub async fn insert_thumbnail(
    conn: &mut Conn,
    source_sha256: &str,
    width: u32,
    height: u32,
    method: &str,
    animated: bool,
    thumbnail: &ThumbnailRow,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO media_thumbnails (source_sha256, width, height, method, animated, content_sha256, \
         content_type, size_bytes, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (source_sha256, width, height, method, animated) DO NOTHING",
    )
    .bind(source_sha256)
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(method)
    .bind(i64::from(animated))
    .bind(&thumbnail.content_sha256)
    .bind(&thumbnail.content_type)
    .bind(thumbnail.size_bytes)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// An antivirus verdict on one content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanVerdict {
    pub clean: bool,
    pub info: Option<String>,
}

pub async fn scan_verdict_of(conn: &mut Conn, content_sha256: &str) -> Result<Option<ScanVerdict>> {
    let row = sqlx::query("SELECT clean, info FROM media_scans WHERE content_sha256 = $1")
        .bind(content_sha256)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| ScanVerdict { clean: row.get::<i64, _>(0) != 0, info: row.get(1) }))
}

/// Records a verdict; a second scan of the same content (two workers at once) keeps the first.
pub async fn insert_scan_verdict(
    conn: &mut Conn,
    content_sha256: &str,
    verdict: &ScanVerdict,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO media_scans (content_sha256, clean, info, scanned_ts) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (content_sha256) DO NOTHING",
    )
    .bind(content_sha256)
    .bind(i64::from(verdict.clean))
    .bind(verdict.info.as_deref())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records `content_sha256` as infected whatever was found before: an encrypted attachment whose
/// plaintext is infected makes its ciphertext, which clamd finds clean, unservable too.
pub async fn record_infected(conn: &mut Conn, content_sha256: &str, info: &str, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO media_scans (content_sha256, clean, info, scanned_ts) VALUES ($1, 0, $2, $3) \
         ON CONFLICT (content_sha256) DO UPDATE SET clean = 0, info = excluded.info, scanned_ts = excluded.scanned_ts",
    )
    .bind(content_sha256)
    .bind(info)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A URL's preview fetched after `fetched_after` (ms), as stored.
pub async fn url_preview_of(conn: &mut Conn, url: &str, fetched_after: i64) -> Result<Option<String>> {
    let row = sqlx::query("SELECT og FROM media_url_previews WHERE url = $1 AND fetched_ts > $2")
        .bind(url)
        .bind(fetched_after)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Stores a URL's preview, replacing an older one.
pub async fn insert_url_preview(conn: &mut Conn, url: &str, og: &str, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO media_url_previews (url, og, fetched_ts) VALUES ($1, $2, $3) \
         ON CONFLICT (url) DO UPDATE SET og = excluded.og, fetched_ts = excluded.fetched_ts",
    )
    .bind(url)
    .bind(og)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Another server's media as fetched here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMediaRow {
    pub content_sha256: String,
    pub content_type: String,
    pub filename: Option<String>,
    pub size_bytes: i64,
}

/// Media `media_id` of server `origin`, if it was fetched before.
pub async fn remote_media(conn: &mut Conn, origin: &str, media_id: &str) -> Result<Option<RemoteMediaRow>> {
    let row = sqlx::query(
        "SELECT content_sha256, content_type, filename, size_bytes FROM remote_media WHERE origin = $1 AND media_id = $2",
    )
    .bind(origin)
    .bind(media_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| RemoteMediaRow {
        content_sha256: row.get(0),
        content_type: row.get(1),
        filename: row.get(2),
        size_bytes: row.get(3),
    }))
}

/// Records media fetched from `origin` (a second fetch of the same id changes nothing).
pub async fn insert_remote_media(
    conn: &mut Conn,
    origin: &str,
    media_id: &str,
    row: &RemoteMediaRow,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO remote_media (origin, media_id, content_sha256, content_type, filename, size_bytes, fetched_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(media_id)
    .bind(&row.content_sha256)
    .bind(&row.content_type)
    .bind(&row.filename)
    .bind(row.size_bytes)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}
