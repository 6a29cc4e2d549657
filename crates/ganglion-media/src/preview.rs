//! URL previews: `GET /_matrix/client/v1/media/preview_url` (and the legacy
//! `/_matrix/media/v3/preview_url`), off unless `media.url_preview_enabled`. The server fetches
//! the page for its users, so it refuses to fetch from loopback, private, link-local and other
//! internal addresses unless `media.url_preview_allowed_ranges` allows them; every address a host
//! name resolves to is checked, the request goes to the addresses checked (no second lookup to
//! rebind), and each redirect is checked again. A page's OpenGraph data (or its title and
//! description) is answered; its image, or an image URL itself, is stored as media. Previews are
//! kept for an hour, shared by every media worker.

use axum::{
    Json,
    extract::{Query, State},
};
use bytes::Bytes;
use ganglion_http::{Auth, MatrixError, MatrixResult};
use ganglion_storage::media::{self as media_store, MediaContent};
use ganglion_types::ErrorClass;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{MediaError, MediaState, mxc, new_media_id};

/// How long a preview is served from the cache.
const CACHE_MS: i64 = 60 * 60 * 1000;
/// Descriptions are cut to this many characters, as other servers do.
const MAX_DESCRIPTION: usize = 500;
const USER_AGENT: &str = concat!("Ganglion URL preview/", env!("CARGO_PKG_VERSION"));

#[derive(Deserialize)]
pub(crate) struct PreviewQuery {
    url: Option<String>,
}

/// `GET /_matrix/client/v1/media/preview_url`
pub(crate) async fn preview_url(
    State(state): State<MediaState>,
    Auth(session): Auth,
    Query(query): Query<PreviewQuery>,
) -> MatrixResult<Json<Value>> {
    if !state.config.media.url_preview_enabled {
        return Err(MatrixError::new(ErrorClass::Unrecognized, "URL previews are turned off on this server"));
    }
    let Some(raw) = query.url else { return Err(MatrixError::missing_param("Missing `url`")) };
    let url = Url::parse(&raw).map_err(|_| MatrixError::invalid_param("`url` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(MatrixError::invalid_param("Only http and https URLs are previewed"));
    }
    let now = ganglion_storage::now_ms();
    {
        let mut conn = state.db.conn().await?;
        if let Some(cached) = media_store::url_preview_of(&mut conn, url.as_str(), now - CACHE_MS).await?
            && let Ok(og) = serde_json::from_str(&cached)
        {
            return Ok(Json(og));
        }
    }
    let page = fetch(&state, url.clone()).await?;
    let og = match page.content_type.as_str() {
        "text/html" | "application/xhtml+xml" => {
            let text = String::from_utf8_lossy(&page.body).into_owned();
            let base = page.url.clone();
            let mut og = tokio::task::spawn_blocking(move || open_graph(&text, &base))
                .await
                .map_err(|_| MatrixError::internal("parsing the page panicked"))?;
            let image =
                og.get("og:image").and_then(Value::as_str).and_then(|image| page.url.join(image).ok());
            og.remove("og:image");
            if let Some(image) = image
                && let Ok(fetched) = fetch(&state, image).await
                && fetched.content_type.starts_with("image/")
            {
                og.extend(store_image(&state, session.user_id.as_str(), fetched).await?);
            }
            og
        }
        kind if kind.starts_with("image/") => store_image(&state, session.user_id.as_str(), page).await?,
        _ => Map::new(),
    };
    let og = Value::Object(og);
    let mut conn = state.db.conn().await?;
    media_store::insert_url_preview(&mut conn, url.as_str(), &og.to_string(), now).await?;
    Ok(Json(og))
}

struct Fetched {
    /// Where the body came from, after redirects.
    url: Url,
    /// The type's essence, lowercased.
    content_type: String,
    body: Bytes,
}

/// `GET url` for a preview: from addresses `media.url_preview_allowed_ranges` lets through,
/// within `media.url_preview_max_bytes`.
async fn fetch(state: &MediaState, url: Url) -> MatrixResult<Fetched> {
    let media = &state.config.media;
    let limits = crate::outbound::Limits {
        allowed: &media.url_preview_allowed_ranges,
        max_bytes: media.url_preview_max_bytes,
        verify_certificates: true,
        user_agent: USER_AGENT,
    };
    let fetched = crate::outbound::get(url, &limits).await.map_err(|error| error.into_matrix("page"))?;
    let content_type = fetched
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(Fetched { url: fetched.url, content_type, body: fetched.body })
}

/// Stores an image fetched for a preview as the user's media; its `og:image` keys.
async fn store_image(state: &MediaState, user_id: &str, image: Fetched) -> MatrixResult<Map<String, Value>> {
    let size = image.body.len();
    let dimensions = image::ImageReader::new(std::io::Cursor::new(&image.body))
        .with_guessed_format()
        .ok()
        .and_then(|reader| reader.into_dimensions().ok());
    let stored = state
        .store
        .put(futures_util::stream::once(async move { Ok::<_, std::io::Error>(image.body) }), u64::MAX)
        .await
        .map_err(MediaError::from)?;
    let media_id = new_media_id();
    let mut conn = state.db.conn().await?;
    media_store::insert_media(
        &mut conn,
        &media_id,
        user_id,
        ganglion_storage::now_ms(),
        &MediaContent {
            content_sha256: &stored.sha256,
            content_type: &image.content_type,
            filename: None,
            size_bytes: stored.size as i64,
            authenticated_only: state.config.media.enable_authenticated_media,
        },
    )
    .await?;
    let mut og = Map::new();
    og.insert("og:image".into(), json!(mxc(&state.config, &media_id)));
    og.insert("og:image:type".into(), json!(image.content_type));
    og.insert("matrix:image:size".into(), json!(size));
    if let Some((width, height)) = dimensions {
        og.insert("og:image:width".into(), json!(width));
        og.insert("og:image:height".into(), json!(height));
    }
    Ok(og)
}

/// A page's `og:*` meta properties, falling back to its `<title>` and description meta tag.
fn open_graph(html: &str, base: &Url) -> Map<String, Value> {
    let document = ruma::html::Html::parse(html);
    let mut og = Map::new();
    let mut title = None;
    let mut description = None;
    let mut stack: Vec<_> = document.children().collect();
    while let Some(node) = stack.pop() {
        stack.extend(node.children());
        let Some(element) = node.as_element() else { continue };
        let attribute = |name: &str| {
            element
                .attrs
                .borrow()
                .iter()
                .find(|attribute| &*attribute.name.local == name)
                .map(|a| a.value.to_string())
        };
        match &*element.name.local {
            "meta" => {
                let key = attribute("property").or_else(|| attribute("name")).unwrap_or_default();
                let Some(content) = attribute("content") else { continue };
                if key.starts_with("og:") && !og.contains_key(&key) {
                    og.insert(key, Value::String(content));
                } else if key.eq_ignore_ascii_case("description") {
                    description.get_or_insert(content);
                }
            }
            "title" if title.is_none() => {
                let text: String = node
                    .children()
                    .filter_map(|child| child.as_text().map(|t| t.borrow().to_string()))
                    .collect();
                title = Some(text.trim().to_owned()).filter(|text| !text.is_empty());
            }
            _ => {}
        }
    }
    if let Some(title) = title.filter(|_| !og.contains_key("og:title")) {
        og.insert("og:title".into(), Value::String(title));
    }
    if let Some(description) = description.filter(|_| !og.contains_key("og:description")) {
        og.insert("og:description".into(), Value::String(description));
    }
    if let Some(Value::String(text)) = og.get_mut("og:description")
        && text.chars().count() > MAX_DESCRIPTION
    {
        *text = text.chars().take(MAX_DESCRIPTION).collect::<String>() + "…";
    }
    og.entry("og:url").or_insert_with(|| Value::String(base.to_string()));
    og
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_reads_properties_and_falls_back_to_the_title() {
        let base = Url::parse("https://example.org/post").unwrap();
        let og = open_graph(
            r#"<html><head><title> Plain title </title>
            <meta property="og:title" content="OG title">
            <meta name="description" content="A description">
            <meta property="og:image" content="/cat.png"></head><body><p>text</p></body></html>"#,
            &base,
        );
        assert_eq!(og["og:title"], "OG title");
        assert_eq!(og["og:description"], "A description");
        assert_eq!(og["og:image"], "/cat.png");
        assert_eq!(og["og:url"], "https://example.org/post");
        let og = open_graph("<title>Only a title</title>", &base);
        assert_eq!(og["og:title"], "Only a title");
    }

    fn allowed(media: &ganglion_config::MediaConfig, ip: std::net::IpAddr) -> bool {
        ganglion_config::may_contact(ip, &media.url_preview_allowed_ranges)
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let mut media = ganglion_config::Config::embedded_default().media;
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allowed(&media, refused.parse().unwrap()), "{refused}");
        }
        for fine in ["93.184.216.34", "2a00:1450:4001::1"] {
            assert!(allowed(&media, fine.parse().unwrap()), "{fine}");
        }
        media.url_preview_allowed_ranges = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(allowed(&media, "127.0.0.1".parse().unwrap()));
        assert!(!allowed(&media, "10.0.0.1".parse().unwrap()));
    }
}
