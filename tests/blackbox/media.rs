//! The media repository: uploads (`/upload`, `/create` then `PUT`), authenticated downloads and
//! the legacy ones behind `media.enable_authenticated_media`, the headers that keep served files
//! from running in a browser, limits and quota, thumbnails, antivirus scanning (the content
//! scanner API included), and bad input. The embedded default keeps files in a directory; on the
//! cluster, two media workers share an S3 bucket (moto's server): a file uploaded through one
//! downloads through the other.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ganglion_testkit::{
    Account, Backend, Clamd, EICAR, S3Server, ServerOptions, TestServer, enc, sdk_client,
};
use matrix_sdk::{
    attachment::AttachmentConfig,
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{
        OwnedMxcUri,
        events::room::{
            MediaSource,
            message::{FileMessageEventContent, MessageType, OriginalSyncRoomMessageEvent},
        },
    },
};
use reqwest::Method;
use serde_json::json;

use crate::{PASSWORD, SYNC_DEADLINE, account_of, register_all};

on_all_backends!(
    uploads_download_back_with_safe_headers,
    created_ids_take_one_upload,
    limits_and_quota_refuse_what_is_too_large,
    legacy_endpoints_serve_media_unless_frozen,
    bad_input_gets_matrix_errors,
    matrix_sdk_sets_an_avatar_shows_a_thumbnail_and_sends_an_encrypted_file,
    thumbnails_are_rendered_once_at_snapped_sizes,
    infected_files_are_never_served,
    encrypted_attachments_are_scanned_through_the_content_scanner_api,
    url_previews_read_pages_from_allowed_addresses
);

const AUTHED: &str = "/_matrix/client/v1/media";

/// Uploads `body` through `POST /_matrix/media/v3/upload`; the raw response.
async fn upload(
    account: &Account,
    content_type: Option<&str>,
    filename: Option<&str>,
    body: Vec<u8>,
) -> ganglion_testkit::Response {
    let mut path = "/_matrix/media/v3/upload".to_owned();
    if let Some(name) = filename {
        path.push_str(&format!("?filename={}", enc(name)));
    }
    account.api.raw(Method::POST, &path, Some(&account.access_token), content_type, Some(body)).await.unwrap()
}

/// Uploads and returns the media id of the `mxc://` URI (whose server must be the server's).
async fn upload_ok(
    server: &TestServer,
    account: &Account,
    content_type: &str,
    filename: Option<&str>,
    body: &[u8],
) -> String {
    let response = upload(account, Some(content_type), filename, body.to_vec()).await;
    assert_eq!(response.status, 200, "upload: {}", response.text);
    let uri = response.body["content_uri"].as_str().unwrap();
    let prefix = format!("mxc://{}/", server.server_name);
    uri.strip_prefix(&prefix).unwrap_or_else(|| panic!("{uri} is not on {prefix}")).to_owned()
}

async fn download(account: &Account, server_name: &str, media_id: &str) -> ganglion_testkit::Response {
    account
        .api
        .get(&format!("{AUTHED}/download/{server_name}/{media_id}"), Some(&account.access_token))
        .await
        .unwrap()
}

fn header<'a>(response: &'a ganglion_testkit::Response, name: &str) -> &'a str {
    response.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
}

/// A test server whose files go to a directory on the embedded default and, on the cluster, to
/// an S3 bucket (a moto server) that the two media workers share.
struct MediaServer {
    server: TestServer,
    s3: Option<S3Server>,
}

impl std::ops::Deref for MediaServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl std::ops::DerefMut for MediaServer {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.server
    }
}

impl MediaServer {
    async fn start(backend: Backend, mut options: ServerOptions) -> MediaServer {
        let s3 = match backend {
            Backend::Cluster => Some(tokio::task::spawn_blocking(S3Server::start).await.unwrap().unwrap()),
            _ => None,
        };
        if let Some(s3) = &s3 {
            options.extra_toml = format!("{}\n{}", options.extra_toml, s3.media_toml());
        }
        MediaServer { server: TestServer::start(backend, options).await.unwrap(), s3 }
    }

    /// Files stored under `<prefix>/` (`sha256`, `uploads`), in the bucket or the directory.
    async fn stored_files(&self, prefix: &str) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|entry| if entry.path().is_dir() { count(&entry.path()) } else { 1 })
                        .sum()
                })
                .unwrap_or(0)
        }
        match &self.s3 {
            Some(s3) => s3.object_count(&format!("{prefix}/")).await.unwrap(),
            None => count(&self.server.dir().join("data").join("media").join(prefix)),
        }
    }
}

async fn uploads_download_back_with_safe_headers(backend: Backend) {
    let server = MediaServer::start(backend, ServerOptions::default()).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let name = &server.server_name;
    let config = alice.get(&format!("{AUTHED}/config")).await.unwrap().ok();
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);

    let note = upload_ok(&server, &alice, "text/plain", Some("note.txt"), b"hello media").await;
    // Anyone signed in may download it, with the spec's headers.
    let got = download(&bob, name, &note).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.text, "hello media");
    assert_eq!(header(&got, "content-type"), "text/plain");
    assert_eq!(header(&got, "content-length"), "11");
    assert_eq!(header(&got, "content-disposition"), "inline; filename=\"note.txt\"");
    assert!(
        header(&got, "content-security-policy").starts_with("sandbox; default-src 'none'"),
        "{:?}",
        got.headers
    );
    assert_eq!(header(&got, "cross-origin-resource-policy"), "cross-origin");
    // A name in the path is the name the file downloads under.
    let renamed = bob.get(&format!("{AUTHED}/download/{name}/{note}/r%C3%A9sum%C3%A9.txt")).await.unwrap();
    assert_eq!(renamed.status, 200);
    assert_eq!(header(&renamed, "content-disposition"), "inline; filename*=utf-8''r%C3%A9sum%C3%A9%2Etxt");

    // HTML never shows inline: it would run in the media origin.
    let page = upload_ok(&server, &alice, "text/html", Some("page.html"), b"<script>alert(1)</script>").await;
    let got = download(&bob, name, &page).await;
    assert_eq!(header(&got, "content-type"), "text/html");
    assert_eq!(header(&got, "content-disposition"), "attachment; filename=\"page.html\"");

    // Without a token: 401.
    let anonymous = server.api().get(&format!("{AUTHED}/download/{name}/{note}"), None).await.unwrap();
    anonymous.err(401, "M_MISSING_TOKEN");
    // Unknown ids and other servers' media: 404.
    download(&bob, name, "NoSuchMedia").await.err(404, "M_NOT_FOUND");
    download(&bob, "elsewhere.example", &note).await.err(404, "M_NOT_FOUND");

    // The same content twice: two ids, one stored copy.
    let before = server.stored_files("sha256").await;
    let again = upload_ok(&server, &bob, "text/plain", None, b"hello media").await;
    assert_ne!(again, note);
    assert_eq!(download(&alice, name, &again).await.text, "hello media");
    assert_eq!(server.stored_files("sha256").await, before);
    assert_eq!(server.stored_files("uploads").await, 0);

    // A binary file of several MiB comes back byte for byte.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i * 7 % 256) as u8).collect();
    let big_id = upload_ok(&server, &alice, "application/octet-stream", Some("blob.bin"), &big).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let bytes = http
        .get(format!("{}{AUTHED}/download/{name}/{big_id}", server.base_url))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.as_ref() == big.as_slice(), "the downloaded file differs ({} bytes)", bytes.len());
}

async fn created_ids_take_one_upload(backend: Backend) {
    let server = MediaServer::start(backend, ServerOptions::default()).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let name = server.server_name.clone();
    let created = alice.post("/_matrix/media/v1/create", &json!({})).await.unwrap().ok();
    let uri = created["content_uri"].as_str().unwrap();
    let media_id = uri.rsplit('/').next().unwrap().to_owned();
    assert!(created["unused_expires_at"].as_i64().unwrap() > ganglion_storage_now_ms());

    // Not uploaded yet: a download waits its timeout, then 504.
    let early = bob.get(&format!("{AUTHED}/download/{name}/{media_id}?timeout_ms=300")).await.unwrap();
    early.err(504, "M_NOT_YET_UPLOADED");
    // A download waiting when the upload comes gets the file.
    let waiting = {
        let (bob, name, media_id) = (bob.clone(), name.clone(), media_id.clone());
        tokio::spawn(async move {
            bob.get(&format!("{AUTHED}/download/{name}/{media_id}?timeout_ms=20000")).await.unwrap()
        })
    };
    let put = |account: &Account, id: &str, body: &str| {
        let path = format!("/_matrix/media/v3/upload/{name}/{id}?filename=late.txt");
        let (api, token, body) =
            (account.api.clone(), account.access_token.clone(), body.as_bytes().to_vec());
        async move { api.raw(Method::PUT, &path, Some(&token), Some("text/plain"), Some(body)).await.unwrap() }
    };
    // Only its creator may upload to it.
    put(&bob, &media_id, "not mine").await.err(403, "M_FORBIDDEN");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = put(&alice, &media_id, "arrived late").await;
    assert_eq!((done.status, &done.body), (200, &json!({})), "{}", done.text);
    let waited = tokio::time::timeout(Duration::from_secs(30), waiting).await.unwrap().unwrap();
    assert_eq!((waited.status, waited.text.as_str()), (200, "arrived late"));
    assert_eq!(header(&waited, "content-disposition"), "inline; filename=\"late.txt\"");
    // Once only.
    put(&alice, &media_id, "again").await.err(409, "M_CANNOT_OVERWRITE_MEDIA");
    assert_eq!(download(&bob, &name, &media_id).await.text, "arrived late");
    // An id that was never created.
    put(&alice, "NeverCreated", "x").await.err(404, "M_NOT_FOUND");
}

fn ganglion_storage_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn limits_and_quota_refuse_what_is_too_large(backend: Backend) {
    let options = ServerOptions {
        extra_toml: "[media]\nmax_upload_bytes = 20000\nuser_quota_bytes = 50000\n".into(),
        ..ServerOptions::default()
    };
    let server = MediaServer::start(backend, options).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let config = alice.get(&format!("{AUTHED}/config")).await.unwrap().ok();
    assert_eq!(config["m.upload.size"], 20000);
    // Announced too large: refused before the body is read.
    upload(&alice, Some("application/octet-stream"), None, vec![1; 20001]).await.err(413, "M_TOO_LARGE");
    // Streamed without a length: refused once past the limit, nothing kept.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..30).map(|_| Ok(vec![7u8; 1000])).collect();
    let streamed = http
        .post(format!("{}/_matrix/media/v3/upload", server.base_url))
        .bearer_auth(&alice.access_token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    // The server may answer before it has read the whole body, and close the connection.
    if let Ok(response) = streamed {
        assert_eq!(response.status().as_u16(), 413);
    }
    assert_eq!(server.stored_files("uploads").await, 0);
    assert_eq!(server.stored_files("sha256").await, 0);

    // 50000 bytes each: two of 20000 fit, a third does not (10000 left), a small one does.
    for fill in [1u8, 2] {
        assert_eq!(
            upload(&alice, Some("application/octet-stream"), None, vec![fill; 20000]).await.status,
            200
        );
    }
    upload(&alice, Some("application/octet-stream"), None, vec![3; 20000]).await.err(403, "M_FORBIDDEN");
    assert_eq!(upload(&alice, Some("application/octet-stream"), None, vec![4; 9000]).await.status, 200);
    // Others have their own quota.
    assert_eq!(upload(&bob, Some("application/octet-stream"), None, vec![5; 20000]).await.status, 200);
}

async fn legacy_endpoints_serve_media_unless_frozen(backend: Backend) {
    // Under a config file (as here), unauthenticated media is frozen by default.
    let frozen = MediaServer::start(backend, ServerOptions::default()).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&frozen, &["alice"]).await).unwrap();
    let id = upload_ok(&frozen, &alice, "text/plain", None, b"new media").await;
    let name = frozen.server_name.clone();
    let legacy = frozen.api().get(&format!("/_matrix/media/v3/download/{name}/{id}"), None).await.unwrap();
    legacy.err(404, "M_NOT_FOUND");
    assert_eq!(download(&alice, &name, &id).await.text, "new media");
    drop(frozen);

    let options = ServerOptions {
        extra_toml: "[media]\nenable_authenticated_media = false\n".into(),
        ..ServerOptions::default()
    };
    let open = MediaServer::start(backend, options).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&open, &["alice"]).await).unwrap();
    let id = upload_ok(&open, &alice, "text/plain", Some("old.txt"), b"for old clients").await;
    let name = open.server_name.clone();
    for version in ["v3", "r0"] {
        let legacy =
            open.api().get(&format!("/_matrix/media/{version}/download/{name}/{id}"), None).await.unwrap();
        assert_eq!((legacy.status, legacy.text.as_str()), (200, "for old clients"), "{version}");
        assert_eq!(header(&legacy, "content-disposition"), "inline; filename=\"old.txt\"");
        let named = open
            .api()
            .get(&format!("/_matrix/media/{version}/download/{name}/{id}/x.txt"), None)
            .await
            .unwrap();
        assert_eq!(named.status, 200, "{version}");
    }
    // The legacy config needs a token, as the spec says.
    open.api().get("/_matrix/media/v3/config", None).await.unwrap().err(401, "M_MISSING_TOKEN");
    assert_eq!(alice.get("/_matrix/media/v3/config").await.unwrap().ok()["m.upload.size"], 50 * 1024 * 1024);
}

async fn bad_input_gets_matrix_errors(backend: Backend) {
    let server = MediaServer::start(backend, ServerOptions::default()).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let name = server.server_name.clone();
    upload(&alice, None, None, b"x".to_vec()).await.err(400, "M_MISSING_PARAM");
    upload(&alice, Some("not a type"), None, b"x".to_vec()).await.err(400, "M_INVALID_PARAM");
    upload(&alice, Some("text/plain"), Some("../../etc/passwd"), b"x".to_vec())
        .await
        .err(400, "M_INVALID_PARAM");
    upload(&alice, Some("text/plain"), Some("a\u{1}b"), b"x".to_vec()).await.err(400, "M_INVALID_PARAM");
    let anonymous = server
        .api()
        .raw(Method::POST, "/_matrix/media/v3/upload", None, Some("text/plain"), Some(b"x".to_vec()))
        .await
        .unwrap();
    anonymous.err(401, "M_MISSING_TOKEN");
    // Ids outside [A-Za-z0-9_-], traversal included.
    for bad in ["a.b", "..", "%2E%2E%2Fetc", "a%00b"] {
        let response = alice.get(&format!("{AUTHED}/download/{name}/{bad}")).await.unwrap();
        assert!(
            [400, 404].contains(&response.status) && response.errcode().is_some(),
            "{bad}: {} {}",
            response.status,
            response.text
        );
    }
    alice.get(&format!("{AUTHED}/download/{name}/a.b")).await.unwrap().err(400, "M_INVALID_PARAM");
    let id = upload_ok(&server, &alice, "text/plain", None, b"ok").await;
    alice
        .get(&format!("{AUTHED}/download/{name}/{id}/..%2F..%2Fetc%2Fpasswd"))
        .await
        .unwrap()
        .err(400, "M_INVALID_PARAM");
    // A body shorter than it announced (the client gave up halfway): refused if answered at
    // all, never a 5xx, and nothing of it kept.
    let before = server.stored_files("sha256").await;
    let status = cut_off_upload(&server, &alice, 100_000, &[7u8; 5000]).await;
    assert!(status.is_none_or(|status| status == 400), "a cut-off upload answered {status:?}");
    // Nothing of the refused uploads was kept.
    assert_eq!(server.stored_files("uploads").await, 0);
    assert_eq!(server.stored_files("sha256").await, before);
}

/// An upload announcing `announced` bytes that sends `sent` and closes its side; the status
/// answered, if any.
async fn cut_off_upload(
    server: &TestServer,
    account: &Account,
    announced: usize,
    sent: &[u8],
) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {announced}\r\n\r\n",
        account.access_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept a cut-off upload open");
    let answer = String::from_utf8_lossy(&answer);
    answer.split_whitespace().nth(1).and_then(|status| status.parse().ok())
}

/// What Element does with a picture and a file: matrix-sdk uploads an avatar that another user
/// fetches through the authenticated endpoints, and sends a file to an encrypted room (uploaded
/// encrypted, `EncryptedFile` in the event) that the other user downloads and decrypts.
async fn matrix_sdk_sets_an_avatar_shows_a_thumbnail_and_sends_an_encrypted_file(backend: Backend) {
    let server = MediaServer::start(backend, ServerOptions::default()).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();

    let picture: Vec<u8> = (0..40_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let uri = alice.account().upload_avatar(&mime::IMAGE_PNG, picture.clone()).await.unwrap();
    let alice_id = alice.user_id().unwrap().to_string();
    let profile =
        account_of(&server, &bob).get(&format!("/profile/{}/avatar_url", enc(&alice_id))).await.unwrap().ok();
    assert_eq!(profile["avatar_url"], uri.to_string());
    let shown = OwnedMxcUri::from(profile["avatar_url"].as_str().unwrap());
    let request = MediaRequestParameters { source: MediaSource::Plain(shown), format: MediaFormat::File };
    let fetched = bob.media().get_media_content(&request, false).await.unwrap();
    assert!(fetched == picture, "the avatar bob fetched differs from alice's");

    // A picture sent to a plain room, shown by bob's client as a thumbnail.
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let plain = alice.create_room(request).await.unwrap();
    bob.join_room_by_id(plain.room_id()).await.unwrap();
    let sent = plain
        .send_attachment("cat.png", &mime::IMAGE_PNG, png(400, 300), AttachmentConfig::new())
        .await
        .unwrap();
    let event = account_of(&server, &bob)
        .get(&format!("/rooms/{}/event/{}", enc(plain.room_id().as_str()), enc(sent.event_id.as_str())))
        .await
        .unwrap()
        .ok();
    assert_eq!(event["content"]["msgtype"], "m.image", "{event}");
    let picture = OwnedMxcUri::from(event["content"]["url"].as_str().unwrap());
    let settings = MediaThumbnailSettings::new(96u32.into(), 96u32.into());
    let request = MediaRequestParameters {
        source: MediaSource::Plain(picture),
        format: MediaFormat::Thumbnail(settings),
    };
    let thumbnail = bob.media().get_media_content(&request, false).await.unwrap();
    let thumbnail = image::load_from_memory(&thumbnail).expect("the thumbnail is an image");
    assert!(
        thumbnail.width() < 400 && thumbnail.width() >= 96 && thumbnail.height() >= 72,
        "a {}x{} thumbnail",
        thumbnail.width(),
        thumbnail.height()
    );

    // Both devices' keys are published before the room exists, so alice shares the room key.
    crate::e2ee::sync_all(&[&alice, &bob]).await;
    let room_id = crate::e2ee::encrypted_room(&alice, &[&bob], &[&alice, &bob]).await;
    let secret = b"the minutes of the meeting, for bob only".to_vec();
    // Bob's client hands him the file event as it decrypts it during a sync.
    let received: Arc<Mutex<Option<FileMessageEventContent>>> = Arc::default();
    let slot = received.clone();
    bob.add_event_handler(move |event: OriginalSyncRoomMessageEvent| {
        let slot = slot.clone();
        async move {
            if let MessageType::File(file) = event.content.msgtype {
                *slot.lock().unwrap() = Some(file);
            }
        }
    });
    let room = alice.get_room(&room_id).unwrap();
    room.send_attachment("minutes.txt", &mime::TEXT_PLAIN, secret.clone(), AttachmentConfig::new())
        .await
        .unwrap();
    let file = async {
        loop {
            crate::e2ee::sync_all(&[&alice, &bob]).await;
            if let Some(found) = received.lock().unwrap().clone() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let content = tokio::time::timeout(SYNC_DEADLINE, file).await.expect("bob decrypts alice's file event");
    let MediaSource::Encrypted(encrypted) = &content.source else {
        panic!("the file in an encrypted room was not uploaded encrypted: {:?}", content.source)
    };
    // What the server holds is ciphertext.
    let stored = account_of(&server, &bob)
        .get(&format!("{AUTHED}/download/{}", encrypted.url.as_str().trim_start_matches("mxc://")))
        .await
        .unwrap();
    assert_eq!(stored.status, 200);
    assert_ne!(stored.text.as_bytes(), secret.as_slice());
    let decrypted = bob.media().get_file(&content, false).await.unwrap().expect("a file source");
    assert!(decrypted == secret, "bob's decrypted file differs from alice's");
}

/// Two media workers share one S3 bucket: a file uploaded through one downloads through the
/// other, and nginx sends every media endpoint to a media worker.
#[tokio::test]
async fn two_media_workers_serve_each_others_files() {
    crate::run(async {
        let mut server = MediaServer::start(Backend::Cluster, ServerOptions::default()).await;
        let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
        let through_nginx = upload(&alice, Some("text/plain"), None, b"via nginx".to_vec()).await;
        assert!(
            header(&through_nginx, "x-ganglion-instance").starts_with("media/media"),
            "{:?}",
            through_nginx.headers
        );
        let name = server.server_name.clone();
        let cluster = server.cluster().unwrap();
        let (first, second) = (cluster.url_of("media1"), cluster.url_of("media2"));
        let on = |url: &str, account: &Account| {
            Account::new(
                ganglion_testkit::Api::new(url),
                &account.user_id,
                &account.access_token,
                &account.device_id,
            )
        };
        let uploaded =
            upload(&on(&first, &alice), Some("text/plain"), Some("shared.txt"), b"one store".to_vec()).await;
        assert_eq!(header(&uploaded, "x-ganglion-instance"), "media/media1");
        let id = uploaded.body["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let got = download(&on(&second, &bob), &name, &id).await;
        assert_eq!(header(&got, "x-ganglion-instance"), "media/media2");
        assert_eq!((got.status, got.text.as_str()), (200, "one store"));
        // The store they share is the S3 bucket: the content is there, and nothing is left
        // under `uploads/`.
        assert!(server.s3.is_some());
        assert!(server.stored_files("sha256").await >= 2, "the files are not in the bucket");
        assert_eq!(server.stored_files("uploads").await, 0);
        // A created id uploaded through one worker is served by the other.
        let created = on(&second, &alice).post("/_matrix/media/v1/create", &json!({})).await.unwrap().ok();
        let later = created["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let put = on(&first, &alice)
            .api
            .raw(
                Method::PUT,
                &format!("/_matrix/media/v3/upload/{name}/{later}"),
                Some(&alice.access_token),
                Some("text/plain"),
                Some(b"later".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(put.status, 200, "{}", put.text);
        assert_eq!(download(&on(&second, &bob), &name, &later).await.text, "later");
    })
    .await
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, 64, (y % 256) as u8]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    bytes
}

/// An animated GIF of `frames` frames.
fn gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        for index in 0..frames {
            let buffer = image::RgbaImage::from_pixel(
                width,
                height,
                image::Rgba([index * 80, 0, 255 - index * 80, 255]),
            );
            let delay = image::Delay::from_numer_denom_ms(100, 1);
            encoder.encode_frame(image::Frame::from_parts(buffer, 0, 0, delay)).unwrap();
        }
    }
    bytes
}

/// `GET` with the account's token; the raw status, content type and body bytes.
async fn fetch(server: &TestServer, account: Option<&Account>, path: &str) -> (u16, String, Vec<u8>) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http.get(format!("{}{path}", server.base_url));
    if let Some(account) = account {
        request = request.bearer_auth(&account.access_token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

async fn thumbnails_are_rendered_once_at_snapped_sizes(backend: Backend) {
    let server = MediaServer::start(backend, ServerOptions::default()).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let name = server.server_name.clone();
    let thumb = |id: &str, query: &str| format!("{AUTHED}/thumbnail/{name}/{id}?{query}");
    let dimensions = |bytes: &[u8]| {
        let image = image::load_from_memory(bytes).expect("a decodable thumbnail");
        (image.width(), image.height())
    };

    let photo = upload_ok(&server, &alice, "image/png", Some("photo.png"), &png(800, 600)).await;
    let (status, kind, bytes) =
        fetch(&server, Some(&bob), &thumb(&photo, "width=320&height=240&method=scale")).await;
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert_eq!(dimensions(&bytes), (320, 240));
    let (_, _, cropped) = fetch(&server, Some(&bob), &thumb(&photo, "width=96&height=96&method=crop")).await;
    assert_eq!(dimensions(&cropped), (96, 96));
    // 100x100 cropped: no crop size is that large, so the next scale size (never smaller).
    let (_, _, snapped) =
        fetch(&server, Some(&bob), &thumb(&photo, "width=100&height=100&method=crop")).await;
    assert_eq!(dimensions(&snapped), (320, 240));
    // Rendered once: asking again stores nothing more.
    let files = server.stored_files("sha256").await;
    let (_, _, again) = fetch(&server, Some(&bob), &thumb(&photo, "width=96&height=96&method=crop")).await;
    assert_eq!(again, cropped);
    assert_eq!(server.stored_files("sha256").await, files);

    let wide = upload_ok(&server, &alice, "image/jpeg", None, &jpeg(1000, 500)).await;
    let (status, kind, bytes) = fetch(&server, Some(&bob), &thumb(&wide, "width=300&height=200")).await;
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    assert_eq!(dimensions(&bytes), (320, 160), "scale keeps the aspect ratio within 320x240");

    // Smaller than the size: the image itself, never upscaled.
    let small_png = png(20, 20);
    let small = upload_ok(&server, &alice, "image/png", None, &small_png).await;
    let (_, _, bytes) = fetch(&server, Some(&bob), &thumb(&small, "width=96&height=96&method=crop")).await;
    assert_eq!(bytes, small_png);

    // An animated GIF stays animated only when asked.
    let animation = upload_ok(&server, &alice, "image/gif", None, &gif(200, 200, 3)).await;
    let (status, kind, bytes) =
        fetch(&server, Some(&bob), &thumb(&animation, "width=96&height=96&method=crop&animated=true")).await;
    assert_eq!((status, kind.as_str()), (200, "image/gif"));
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder).collect_frames().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].buffer().dimensions(), (96, 96));
    let (_, kind, bytes) =
        fetch(&server, Some(&bob), &thumb(&animation, "width=96&height=96&method=crop")).await;
    assert_eq!(kind, "image/png");
    assert_eq!(dimensions(&bytes), (96, 96));

    // Bad input: Matrix errors, never a 5xx.
    let corrupt = upload_ok(&server, &alice, "image/png", None, b"\x89PNG\r\n\x1a\nnot really").await;
    let response = bob.get(&thumb(&corrupt, "width=96&height=96")).await.unwrap();
    response.err(400, "M_UNKNOWN");
    let text = upload_ok(&server, &alice, "text/plain", None, b"words").await;
    bob.get(&thumb(&text, "width=96&height=96")).await.unwrap().err(400, "M_UNKNOWN");
    bob.get(&thumb(&photo, "height=96")).await.unwrap().err(400, "M_MISSING_PARAM");
    bob.get(&thumb(&photo, "width=0&height=96")).await.unwrap().err(400, "M_INVALID_PARAM");
    bob.get(&thumb(&photo, "width=96&height=96&method=zoom")).await.unwrap().err(400, "M_INVALID_PARAM");
    bob.get(&thumb("NoSuchMedia", "width=96&height=96")).await.unwrap().err(404, "M_NOT_FOUND");
    // Under the freeze the legacy thumbnail path does not serve new media.
    let legacy = server
        .api()
        .get(&format!("/_matrix/media/v3/thumbnail/{name}/{photo}?width=96&height=96"), None)
        .await
        .unwrap();
    legacy.err(404, "M_NOT_FOUND");
}

/// An image over `media.max_thumbnail_source_pixels` is refused, and others still work.
#[tokio::test]
async fn images_over_the_pixel_limit_are_not_thumbnailed() {
    crate::run(async {
        let options = ServerOptions {
            extra_toml: "[media]\nmax_thumbnail_source_pixels = 50000\n".into(),
            ..ServerOptions::default()
        };
        let server = TestServer::start(Backend::Sqlite, options).await.unwrap();
        let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
        let name = server.server_name.clone();
        let big = upload_ok(&server, &alice, "image/png", None, &png(400, 300)).await;
        alice
            .get(&format!("{AUTHED}/thumbnail/{name}/{big}?width=96&height=96"))
            .await
            .unwrap()
            .err(413, "M_TOO_LARGE");
        let fine = upload_ok(&server, &alice, "image/png", None, &png(200, 200)).await;
        let (status, _, _) = fetch(
            &server,
            Some(&alice),
            &format!("{AUTHED}/thumbnail/{name}/{fine}?width=96&height=96&method=crop"),
        )
        .await;
        assert_eq!(status, 200);
    })
    .await
}

/// With `media.clamd` set, a real clamd scans every file before it is first served: the EICAR
/// test file is refused under any media id and as a thumbnail, verdicts are kept per content, and
/// with clamd down nothing unscanned is served (fail closed).
async fn infected_files_are_never_served(backend: Backend) {
    let mut clamd = Clamd::start().unwrap();
    let options = ServerOptions {
        extra_toml: format!("[media]\nclamd = \"{}\"\nscan_timeout_ms = 10000\n", clamd.address()),
        ..ServerOptions::default()
    };
    let server = MediaServer::start(backend, options).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let name = server.server_name.clone();
    let clean = upload_ok(&server, &alice, "text/plain", None, b"clean words").await;
    let virus = upload_ok(&server, &alice, "application/octet-stream", Some("eicar.com"), EICAR).await;
    assert_eq!(download(&bob, &name, &clean).await.text, "clean words");
    let refused = download(&bob, &name, &virus).await;
    refused.err(403, "M_FORBIDDEN");
    assert!(refused.body["info"].as_str().unwrap_or("").contains("eicar"), "{}", refused.text);
    // The same content under another id, and asked for as a thumbnail.
    let again = upload_ok(&server, &bob, "image/png", None, EICAR).await;
    download(&alice, &name, &again).await.err(403, "M_FORBIDDEN");
    alice
        .get(&format!("{AUTHED}/thumbnail/{name}/{again}?width=96&height=96"))
        .await
        .unwrap()
        .err(403, "M_FORBIDDEN");

    // clamd down: the verdicts given stand, and nothing new is served unscanned.
    clamd.kill().unwrap();
    assert_eq!(download(&bob, &name, &clean).await.text, "clean words");
    download(&bob, &name, &virus).await.err(403, "M_FORBIDDEN");
    let unscanned = upload_ok(&server, &alice, "text/plain", None, b"never scanned").await;
    let down = download(&bob, &name, &unscanned).await;
    assert_eq!((down.status, down.errcode()), (503, Some("M_UNKNOWN")), "{}", down.text);
    assert!(server.stderr_log().contains("antivirus scan failed"), "the log does not say why");
}

const PROXY: &str = "/_matrix/media_proxy/unstable";

/// Encrypts `plaintext` as a client does an attachment (matrix-sdk's attachment encryption),
/// uploads the ciphertext, and returns the event's `EncryptedFile` JSON and the ciphertext.
async fn upload_encrypted(account: &Account, plaintext: &[u8]) -> (serde_json::Value, Vec<u8>) {
    use std::io::Read as _;
    let mut reader = plaintext;
    let mut encryptor = matrix_sdk_crypto::AttachmentEncryptor::new(&mut reader);
    let mut ciphertext = Vec::new();
    encryptor.read_to_end(&mut ciphertext).unwrap();
    let info = encryptor.finish();
    let uploaded = upload(account, Some("application/octet-stream"), None, ciphertext.clone()).await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text);
    let mut file = serde_json::to_value(&info).unwrap();
    file["url"] = uploaded.body["content_uri"].clone();
    (file, ciphertext)
}

/// `body` encrypted to the scanner's public key, as `encrypted_body`.
fn encrypted_body(public_key: &str, body: &serde_json::Value) -> serde_json::Value {
    use vodozemac::{Curve25519PublicKey, base64_encode, pk_encryption::PkEncryption};
    let encryption = PkEncryption::from_key(Curve25519PublicKey::from_base64(public_key).unwrap());
    let message = encryption.encrypt(body.to_string().as_bytes()).unwrap();
    json!({ "encrypted_body": {
        "ciphertext": base64_encode(&message.ciphertext),
        "mac": base64_encode(&message.mac),
        "ephemeral": message.ephemeral_key.to_base64(),
    }})
}

/// The content scanner API: plain media scanned and served by `scan` and `download`, and
/// encrypted attachments whose key the client hands over, in clear or encrypted to the scanner's
/// key: the EICAR file inside an attachment is found, refused through every endpoint, and its
/// ciphertext is no longer served either; the verdicts stand with clamd down.
async fn encrypted_attachments_are_scanned_through_the_content_scanner_api(backend: Backend) {
    let mut clamd = Clamd::start().unwrap();
    let options = ServerOptions {
        extra_toml: format!("[media]\nclamd = \"{}\"\nscan_timeout_ms = 10000\n", clamd.address()),
        ..ServerOptions::default()
    };
    let mut server = MediaServer::start(backend, options).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let name = server.server_name.clone();

    // Plain media through the scanner's own endpoints.
    let clean = upload_ok(&server, &alice, "text/plain", None, b"clean words").await;
    let virus = upload_ok(&server, &alice, "application/octet-stream", None, EICAR).await;
    let verdict = bob.get(&format!("{PROXY}/scan/{name}/{clean}")).await.unwrap().ok();
    assert_eq!((verdict["clean"].as_bool(), verdict["info"].as_str()), (Some(true), Some("File is clean")));
    let verdict = bob.get(&format!("{PROXY}/scan/{name}/{virus}")).await.unwrap().ok();
    assert_eq!(verdict["clean"], false);
    assert!(verdict["info"].as_str().unwrap().contains("eicar"), "{verdict}");
    let got = bob.get(&format!("{PROXY}/download/{name}/{clean}")).await.unwrap();
    assert_eq!((got.status, got.text.as_str()), (200, "clean words"));
    let refused = bob.get(&format!("{PROXY}/download/{name}/{virus}")).await.unwrap();
    assert_eq!(refused.body["reason"], "MCS_MEDIA_NOT_CLEAN", "{}", refused.text);
    refused.err(403, "M_FORBIDDEN");

    // Thumbnails through the scanner: a clean picture's, and none of the EICAR file's.
    let picture = upload_ok(&server, &alice, "image/png", None, &png(200, 150)).await;
    let (status, content_type, _) =
        fetch(&server, Some(&bob), &format!("{PROXY}/thumbnail/{name}/{picture}?width=96&height=96")).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let disguised = upload_ok(&server, &alice, "image/png", None, EICAR).await;
    let refused = bob.get(&format!("{PROXY}/thumbnail/{name}/{disguised}?width=96&height=96")).await.unwrap();
    assert_eq!(refused.body["reason"], "MCS_MEDIA_NOT_CLEAN", "{}", refused.text);
    refused.err(403, "M_FORBIDDEN");

    // Encrypted attachments, their file in clear in the request.
    let (minutes, minutes_ciphertext) = upload_encrypted(&alice, b"the minutes of the meeting").await;
    let (infected, _) = upload_encrypted(&alice, EICAR).await;
    let verdict =
        bob.post(&format!("{PROXY}/scan_encrypted"), &json!({ "file": minutes })).await.unwrap().ok();
    assert_eq!(verdict["clean"], true);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let got = http
        .post(format!("{}{PROXY}/download_encrypted", server.base_url))
        .bearer_auth(&bob.access_token)
        .json(&json!({ "file": minutes }))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.bytes().await.unwrap() == minutes_ciphertext,
        "download_encrypted does not serve the ciphertext"
    );

    // The same, encrypted to the scanner's key; every media worker has the same key.
    let key = bob.get(&format!("{PROXY}/public_key")).await.unwrap().ok()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    if let Some(cluster) = server.cluster() {
        for worker in ["media1", "media2"] {
            let api = ganglion_testkit::Api::new(cluster.url_of(worker));
            assert_eq!(api.get(&format!("{PROXY}/public_key"), None).await.unwrap().ok()["public_key"], key);
        }
    }
    let sealed = encrypted_body(&key, &json!({ "file": infected }));
    let verdict = bob.post(&format!("{PROXY}/scan_encrypted"), &sealed).await.unwrap().ok();
    assert_eq!(verdict["clean"], false, "{verdict}");
    assert!(verdict["info"].as_str().unwrap().contains("eicar"), "{verdict}");
    let refused = bob.post(&format!("{PROXY}/download_encrypted"), &sealed).await.unwrap();
    assert_eq!(refused.body["reason"], "MCS_MEDIA_NOT_CLEAN", "{}", refused.text);
    refused.err(403, "M_FORBIDDEN");
    // Its ciphertext, which clamd alone finds clean, is refused through every endpoint now.
    let infected_id = infected["url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    download(&alice, &name, &infected_id).await.err(403, "M_FORBIDDEN");

    // Bad input: a body sealed for another key (clients fetch the key again and retry on this
    // reason), a hash that is not the file's, a body that is not a request, no token for media
    // only the authenticated endpoints serve.
    let stranger = vodozemac::pk_encryption::PkDecryption::new().public_key().to_base64();
    let wrong_key = bob
        .post(&format!("{PROXY}/scan_encrypted"), &encrypted_body(&stranger, &json!({ "file": minutes })))
        .await
        .unwrap();
    assert_eq!(wrong_key.body["reason"], "MCS_BAD_DECRYPTION", "{}", wrong_key.text);
    wrong_key.err(403, "M_FORBIDDEN");
    let mut tampered = minutes.clone();
    tampered["hashes"]["sha256"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mismatch = bob.post(&format!("{PROXY}/scan_encrypted"), &json!({ "file": tampered })).await.unwrap();
    assert_eq!(mismatch.body["reason"], "MCS_MEDIA_FAILED_TO_DECRYPT", "{}", mismatch.text);
    mismatch.err(400, "M_INVALID_PARAM");
    let malformed =
        bob.post(&format!("{PROXY}/scan_encrypted"), &json!({ "file": { "url": 3 } })).await.unwrap();
    assert_eq!(malformed.body["reason"], "MCS_MALFORMED_JSON", "{}", malformed.text);
    malformed.err(400, "M_BAD_JSON");
    let anonymous =
        alice.api.post(&format!("{PROXY}/scan_encrypted"), None, &json!({ "file": minutes })).await.unwrap();
    anonymous.err(404, "M_NOT_FOUND");

    // clamd down: the verdicts given stand, and nothing new is served unscanned.
    clamd.kill().unwrap();
    let verdict =
        bob.post(&format!("{PROXY}/scan_encrypted"), &json!({ "file": minutes })).await.unwrap().ok();
    assert_eq!(verdict["clean"], true);
    let verdict = bob.post(&format!("{PROXY}/scan_encrypted"), &sealed).await.unwrap().ok();
    assert_eq!(verdict["clean"], false);
    let (unscanned, _) = upload_encrypted(&alice, b"never scanned").await;
    let down = bob.post(&format!("{PROXY}/download_encrypted"), &json!({ "file": unscanned })).await.unwrap();
    assert_eq!((down.status, down.errcode()), (503, Some("M_UNKNOWN")), "{}", down.text);
}

/// A web site on loopback for URL previews: `/page` (OpenGraph), `/plain` (a title only),
/// `/cat.png`, `/moved` (a redirect to `/page`), anything else 404. Answers until dropped.
struct Site {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn site() -> Site {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let cat = png(64, 48);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let cat = cat.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let Ok(read) = socket.read(&mut request).await else { return };
                let request = String::from_utf8_lossy(&request[..read]).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, headers, body): (&str, String, Vec<u8>) = match path.as_str() {
                    "/page" => (
                        "200 OK",
                        "Content-Type: text/html; charset=utf-8\r\n".into(),
                        br#"<html><head><title>Ignored title</title>
                        <meta property="og:title" content="The minutes">
                        <meta property="og:description" content="What was decided">
                        <meta property="og:image" content="/cat.png"></head><body>Hi</body></html>"#
                            .to_vec(),
                    ),
                    "/plain" => (
                        "200 OK",
                        "Content-Type: text/html\r\n".into(),
                        b"<title>Just a title</title><p>text</p>".to_vec(),
                    ),
                    "/cat.png" => ("200 OK", "Content-Type: image/png\r\n".into(), cat),
                    "/moved" => ("302 Found", "Location: /page\r\n".into(), Vec::new()),
                    _ => ("404 Not Found", "Content-Type: text/plain\r\n".into(), b"no".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    Site { url, task }
}

async fn preview(account: &Account, url: &str) -> ganglion_testkit::Response {
    account.get(&format!("{AUTHED}/preview_url?url={}", enc(url))).await.unwrap()
}

/// URL previews, off by default, and refused for internal addresses unless allowed: with
/// loopback allowed, a page's OpenGraph data comes back with its image stored as media, through
/// a redirect too, from the cache once the site is gone.
async fn url_previews_read_pages_from_allowed_addresses(backend: Backend) {
    let site = site().await;
    let page = format!("{}/page", site.url);
    let options = ServerOptions {
        extra_toml: "[media]\nurl_preview_enabled = true\nurl_preview_allowed_ranges = [\"127.0.0.1/32\"]\n"
            .into(),
        ..ServerOptions::default()
    };
    let server = MediaServer::start(backend, options).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let og = preview(&alice, &page).await.ok();
    assert_eq!(
        (og["og:title"].as_str(), og["og:description"].as_str()),
        (Some("The minutes"), Some("What was decided"))
    );
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(64), Some(48)));
    assert_eq!(og["og:image:type"], "image/png");
    let image = og["og:image"].as_str().unwrap();
    let (status, content_type, bytes) =
        fetch(&server, Some(&alice), &format!("{AUTHED}/download/{}", image.trim_start_matches("mxc://")))
            .await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert!(bytes == png(64, 48), "the stored preview image differs from the site's");
    let moved = preview(&alice, &format!("{}/moved", site.url)).await.ok();
    assert_eq!(moved["og:title"], "The minutes");
    let plain = preview(&alice, &format!("{}/plain", site.url)).await.ok();
    assert_eq!(plain["og:title"], "Just a title");
    let legacy = alice.get(&format!("/_matrix/media/v3/preview_url?url={}", enc(&page))).await.unwrap().ok();
    assert_eq!(legacy["og:title"], "The minutes");

    // Bad input and failures: Matrix errors.
    preview(&alice, &format!("{}/missing", site.url)).await.err(502, "M_UNKNOWN");
    preview(&alice, "ftp://127.0.0.1/file").await.err(400, "M_INVALID_PARAM");
    preview(&alice, "not a url").await.err(400, "M_INVALID_PARAM");
    alice.get(&format!("{AUTHED}/preview_url")).await.unwrap().err(400, "M_MISSING_PARAM");
    // Other internal addresses stay refused.
    preview(&alice, "http://10.0.0.1/").await.err(403, "M_FORBIDDEN");
    preview(&alice, "http://[::1]/").await.err(403, "M_FORBIDDEN");

    // Kept: the site is gone, the preview is not.
    drop(site);
    assert_eq!(preview(&alice, &page).await.ok()["og:title"], "The minutes");
}

/// Off by default; on, loopback is refused unless allowed, by address and by name.
#[tokio::test]
async fn url_previews_are_off_by_default_and_refuse_loopback() {
    crate::run(async {
        let site = site().await;
        let off = MediaServer::start(Backend::Sqlite, ServerOptions::default()).await;
        let [alice] = <[Account; 1]>::try_from(register_all(&off, &["alice"]).await).unwrap();
        preview(&alice, &format!("{}/page", site.url)).await.err(404, "M_UNRECOGNIZED");
        let options = ServerOptions {
            extra_toml: "[media]\nurl_preview_enabled = true\n".into(),
            ..ServerOptions::default()
        };
        let on = MediaServer::start(Backend::Sqlite, options).await;
        let [bob] = <[Account; 1]>::try_from(register_all(&on, &["bob"]).await).unwrap();
        preview(&bob, &format!("{}/page", site.url)).await.err(403, "M_FORBIDDEN");
        let by_name = site.url.replace("127.0.0.1", "localhost");
        preview(&bob, &format!("{by_name}/page")).await.err(403, "M_FORBIDDEN");
    })
    .await
}
