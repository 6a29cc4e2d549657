//! Thumbnails: `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}` and the legacy
//! `/_matrix/media/v3/thumbnail`. A request snaps to the smallest configured size that is at least
//! as large (the spec's "never smaller than asked"), each (content, size, method, animated) is
//! rendered once and stored like any file, and an image no larger than the size is served as it
//! is (never upscaled). Images whose dimensions exceed `media.max_thumbnail_source_pixels` are
//! refused from their header, before anything is decoded; decoding runs on blocking threads, a
//! bounded number at a time.

use std::io::Cursor;

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use ganglion_config::{ThumbnailMethod, ThumbnailSize};
use ganglion_http::{Auth, MatrixError, MatrixResult};
use ganglion_storage::media::{self as media_store, ThumbnailRow};
use ganglion_types::ErrorClass;
use image::{
    AnimationDecoder as _, DynamicImage, Frame, ImageDecoder as _, ImageFormat, ImageReader, Limits,
    codecs::{gif::GifDecoder, webp::WebPDecoder},
    imageops::FilterType,
};
use serde::Deserialize;

use crate::{
    MediaError, MediaState,
    download::{Access, serve_content, uploaded_row},
};

/// Frames an animated thumbnail keeps at most (the rest of a long animation is dropped).
const MAX_FRAMES: usize = 300;
/// Types thumbnails are made from.
const SOURCE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

#[derive(Deserialize)]
pub(crate) struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<bool>,
    timeout_ms: Option<u64>,
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<MediaState>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> MatrixResult<Response> {
    serve_thumbnail(&state, &server_name, &media_id, &query, Access::Authenticated).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
pub(crate) async fn legacy_thumbnail(
    State(state): State<MediaState>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> MatrixResult<Response> {
    serve_thumbnail(&state, &server_name, &media_id, &query, Access::Legacy).await
}

/// What a request asks for, checked.
struct Wanted {
    width: u32,
    height: u32,
    method: ThumbnailMethod,
    animated: bool,
}

fn wanted(query: &ThumbnailQuery) -> MatrixResult<Wanted> {
    let dimension = |value: &Option<String>, name: &str| -> MatrixResult<u32> {
        let value =
            value.as_deref().ok_or_else(|| MatrixError::missing_param(format!("Missing `{name}`")))?;
        value.parse::<u32>().ok().filter(|value| (1..=10_000).contains(value)).ok_or_else(|| {
            MatrixError::invalid_param(format!("`{name}` must be a whole number from 1 to 10000"))
        })
    };
    let method = match query.method.as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(_) => return Err(MatrixError::invalid_param("`method` must be `crop` or `scale`")),
    };
    Ok(Wanted {
        width: dimension(&query.width, "width")?,
        height: dimension(&query.height, "height")?,
        method,
        animated: query.animated == Some(true),
    })
}

/// The configured size to render for a request: the smallest at least as large as asked,
/// of the same method if one is; else the largest of the asked method (the image may still
/// be smaller, and is then served as it is).
pub(crate) fn snap(
    sizes: &[ThumbnailSize],
    width: u32,
    height: u32,
    method: ThumbnailMethod,
) -> Option<ThumbnailSize> {
    let area = |size: &&ThumbnailSize| u64::from(size.width) * u64::from(size.height);
    let large_enough = |size: &&ThumbnailSize| size.width >= width && size.height >= height;
    sizes
        .iter()
        .filter(large_enough)
        .filter(|size| size.method == method)
        .min_by_key(area)
        .or_else(|| sizes.iter().filter(large_enough).min_by_key(area))
        .or_else(|| sizes.iter().filter(|size| size.method == method).max_by_key(area))
        .or_else(|| sizes.iter().max_by_key(area))
        .copied()
}

pub(crate) async fn serve_thumbnail(
    state: &MediaState,
    server_name: &str,
    media_id: &str,
    query: &ThumbnailQuery,
    access: Access,
) -> MatrixResult<Response> {
    let wanted = wanted(query)?;
    let row = uploaded_row(state, server_name, media_id, query.timeout_ms, access).await?;
    let (Some(source), Some(content_type)) = (row.content_sha256.as_deref(), row.content_type.as_deref())
    else {
        return Err(MatrixError::not_found("Media not found"));
    };
    // Nothing of an infected file is served, thumbnails included.
    crate::scan::ensure_clean(state, source).await?;
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !SOURCE_TYPES.contains(&essence.as_str()) {
        return Err(MatrixError::new(ErrorClass::Unknown, "No thumbnails are made of this type of file"));
    }
    let media = &state.config.media;
    let Some(size) = snap(&media.thumbnail_sizes, wanted.width, wanted.height, wanted.method) else {
        return Err(MatrixError::not_found("Thumbnails are turned off"));
    };
    let key = (source, size.width, size.height, size.method.as_str(), wanted.animated);
    let stored = {
        let mut conn = state.db.conn().await?;
        media_store::thumbnail_of(&mut conn, key.0, key.1, key.2, key.3, key.4).await?
    };
    if let Some(thumbnail) = stored {
        return serve_content(state, &thumbnail.content_sha256, &thumbnail.content_type, None).await;
    }
    // Rendering is bounded: a burst of requests for new thumbnails queues here.
    let _permit =
        state.thumbnailers.acquire().await.map_err(|_| MatrixError::internal("thumbnailer closed"))?;
    let bytes = read_all(state, source, media.max_upload_bytes).await?;
    let limit = media.max_thumbnail_source_pixels;
    let rendered = tokio::task::spawn_blocking(move || render(&bytes, size, wanted.animated, limit))
        .await
        .map_err(|_| MatrixError::internal("thumbnailing panicked"))?;
    let rendered = match rendered {
        Ok(Some(rendered)) => rendered,
        // No larger than the size: the image itself.
        Ok(None) => return serve_content(state, source, content_type, None).await,
        Err(RenderError::TooLarge { width, height }) => {
            return Err(MatrixError::new(
                ErrorClass::TooLarge,
                format!("The image is too large to thumbnail ({width}x{height})"),
            ));
        }
        Err(RenderError::Image(error)) => {
            return Err(MatrixError::new(
                ErrorClass::Unknown,
                format!("The image cannot be thumbnailed: {error}"),
            ));
        }
    };
    let content = state
        .store
        .put(
            futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(rendered.bytes)) }),
            u64::MAX,
        )
        .await
        .map_err(MediaError::from)?;
    let row = ThumbnailRow {
        content_sha256: content.sha256,
        content_type: rendered.content_type.to_owned(),
        size_bytes: content.size as i64,
    };
    {
        let mut conn = state.db.conn().await?;
        media_store::insert_thumbnail(
            &mut conn,
            key.0,
            key.1,
            key.2,
            key.3,
            key.4,
            &row,
            ganglion_storage::now_ms(),
        )
        .await?;
    }
    serve_content(state, &row.content_sha256, &row.content_type, None).await
}

/// The whole stored file (a thumbnail's source is decoded whole anyway).
async fn read_all(state: &MediaState, sha256: &str, limit: u64) -> MatrixResult<Vec<u8>> {
    let Some(mut file) = state.store.get(sha256).await.map_err(MediaError::from)? else {
        return Err(MatrixError::not_found("Media not found"));
    };
    let mut bytes = Vec::with_capacity(file.size.min(limit) as usize);
    while let Some(chunk) = file.body.next().await {
        let chunk = chunk.map_err(|error| MediaError::from(crate::StoreError::from(error)))?;
        if bytes.len() as u64 + chunk.len() as u64 > limit {
            return Err(MatrixError::new(ErrorClass::TooLarge, "The file is too large to thumbnail"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

pub(crate) struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("{width}x{height} is over the pixel limit")]
    TooLarge { width: u32, height: u32 },
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

/// Renders `source` at `size`; `None` when it is no larger than the size (and may be served as
/// it is). Animated GIF and WebP stay animated (as GIF) when `animated`, and become their first
/// frame otherwise.
pub(crate) fn render(
    source: &[u8],
    size: ThumbnailSize,
    animated: bool,
    max_pixels: u64,
) -> Result<Option<Rendered>, RenderError> {
    let reader =
        ImageReader::new(Cursor::new(source)).with_guessed_format().map_err(image::ImageError::IoError)?;
    let format = reader.format();
    // The header alone: a decompression bomb is refused before anything is decoded.
    let (width, height) = reader.into_dimensions()?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(RenderError::TooLarge { width, height });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 * 1024 * 1024));
    let may_animate = matches!(format, Some(ImageFormat::Gif | ImageFormat::WebP));
    let (target_width, target_height) = target(width, height, size);
    let same_size = (target_width, target_height) == (width, height);
    // An image no larger than the size is served as it is, unless that would animate a
    // thumbnail the client asked to be still.
    if same_size && (animated || !may_animate) {
        return Ok(None);
    }
    if animated && may_animate {
        let frames = frames(source, format, &limits)?;
        if frames.len() > 1 {
            return Ok(Some(animated_gif(frames, size, target_width, target_height)?));
        }
    }
    let mut reader =
        ImageReader::new(Cursor::new(source)).with_guessed_format().map_err(image::ImageError::IoError)?;
    reader.limits(limits);
    let image = reader.decode()?;
    let thumbnail = resized(&image, size.method, target_width, target_height);
    encode_still(thumbnail, format == Some(ImageFormat::Jpeg)).map(Some)
}

/// The dimensions to render at: within the size, never larger than the image.
fn target(width: u32, height: u32, size: ThumbnailSize) -> (u32, u32) {
    match size.method {
        ThumbnailMethod::Crop => (size.width.min(width), size.height.min(height)),
        ThumbnailMethod::Scale => {
            if width <= size.width && height <= size.height {
                return (width, height);
            }
            let ratio = f64::min(
                f64::from(size.width) / f64::from(width),
                f64::from(size.height) / f64::from(height),
            );
            (
                ((f64::from(width) * ratio).round() as u32).max(1),
                ((f64::from(height) * ratio).round() as u32).max(1),
            )
        }
    }
}

fn resized(image: &DynamicImage, method: ThumbnailMethod, width: u32, height: u32) -> DynamicImage {
    if (image.width(), image.height()) == (width, height) {
        return image.clone();
    }
    match method {
        ThumbnailMethod::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
        ThumbnailMethod::Scale => image.resize_exact(width, height, FilterType::Triangle),
    }
}

fn encode_still(image: DynamicImage, jpeg: bool) -> Result<Rendered, RenderError> {
    let mut bytes = Vec::new();
    if jpeg {
        let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80);
        rgb.write_with_encoder(encoder)?;
        Ok(Rendered { bytes, content_type: "image/jpeg" })
    } else {
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)?;
        Ok(Rendered { bytes, content_type: "image/png" })
    }
}

fn frames(
    source: &[u8],
    format: Option<ImageFormat>,
    limits: &Limits,
) -> Result<Vec<Frame>, image::ImageError> {
    let frames = match format {
        Some(ImageFormat::Gif) => {
            let mut decoder = GifDecoder::new(Cursor::new(source))?;
            decoder.set_limits(limits.clone())?;
            decoder.into_frames()
        }
        _ => {
            let mut decoder = WebPDecoder::new(Cursor::new(source))?;
            decoder.set_limits(limits.clone())?;
            if !decoder.has_animation() {
                return Ok(Vec::new());
            }
            decoder.into_frames()
        }
    };
    frames.take(MAX_FRAMES).collect()
}

fn animated_gif(
    frames: Vec<Frame>,
    size: ThumbnailSize,
    width: u32,
    height: u32,
) -> Result<Rendered, RenderError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        for frame in frames {
            let delay = frame.delay();
            let image = DynamicImage::ImageRgba8(frame.into_buffer());
            let small = resized(&image, size.method, width, height).to_rgba8();
            encoder.encode_frame(Frame::from_parts(small, 0, 0, delay))?;
        }
    }
    Ok(Rendered { bytes, content_type: "image/gif" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Vec<ThumbnailSize> {
        ganglion_config::Config::embedded_default().media.thumbnail_sizes
    }

    #[test]
    fn requests_snap_to_a_size_never_smaller_than_asked() {
        let pick = |width, height, method| {
            let size = snap(&sizes(), width, height, method).unwrap();
            (size.width, size.height, size.method)
        };
        use ThumbnailMethod::{Crop, Scale};
        assert_eq!(pick(32, 32, Crop), (32, 32, Crop));
        assert_eq!(pick(40, 40, Crop), (96, 96, Crop));
        // No crop size that large: the smallest larger size of the other method.
        assert_eq!(pick(100, 100, Crop), (320, 240, Scale));
        assert_eq!(pick(321, 100, Scale), (640, 480, Scale));
        // Larger than every size: the largest of the method.
        assert_eq!(pick(2000, 2000, Scale), (800, 600, Scale));
        assert_eq!(pick(2000, 2000, Crop), (96, 96, Crop));
        assert!(snap(&[], 10, 10, Crop).is_none());
    }

    /// A PNG whose header claims `width` x `height` (and no pixel data).
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = 0xffff_ffffu32;
            for byte in bytes {
                crc ^= u32::from(*byte);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // An empty data chunk: the header is read once the data starts.
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        png
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let size = ThumbnailSize { width: 96, height: 96, method: ThumbnailMethod::Crop };
        let bomb = png_header(60_000, 60_000);
        match render(&bomb, size, false, 32_000_000) {
            Err(RenderError::TooLarge { width: 60_000, height: 60_000 }) => {}
            Err(error) => panic!("refused for another reason: {error}"),
            Ok(_) => panic!("a 60000x60000 image was rendered"),
        }
        // Within the limit, the missing pixel data is a decoding error, not a panic.
        assert!(matches!(render(&png_header(500, 500), size, false, 32_000_000), Err(RenderError::Image(_))));
    }
}
