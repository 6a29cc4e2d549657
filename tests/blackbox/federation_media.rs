//! Media across servers with Synapse: each server's users download and thumbnail the other's
//! media through their own server, which fetches it over federation (`/_matrix/federation/v1/
//! media/download`, answered `multipart/mixed`) the first time and keeps it.

use ganglion_testkit::{Account, FederationNode, Synapse, enc};
use reqwest::Method;

use crate::federation_rooms::synapse_account;

pub(crate) async fn upload(account: &Account, content_type: &str, name: &str, bytes: Vec<u8>) -> String {
    let response = account
        .api
        .raw(
            Method::POST,
            &format!("/_matrix/media/v3/upload?filename={}", enc(name)),
            Some(&account.access_token),
            Some(content_type),
            Some(bytes),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text);
    response.body["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned()
}

pub(crate) async fn get(account: &Account, path: &str) -> ganglion_testkit::Response {
    account.api.raw(Method::GET, path, Some(&account.access_token), None, None).await.unwrap()
}

#[tokio::test]
async fn media_crosses_servers_both_ways_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (mut synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let log = || format!("--- ganglion\n{}\n--- synapse\n{}", ganglion.log(), synapse.log());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = synapse_account(&synapse, "bob").await;

        // Synapse's media, through Ganglion.
        let theirs = upload(&bob, "text/plain", "notes.txt", b"written on synapse".to_vec()).await;
        assert!(theirs.starts_with(synapse.server_name()), "{theirs}");
        let fetched = get(&alice, &format!("/_matrix/client/v1/media/download/{theirs}")).await;
        assert_eq!(fetched.status, 200, "{}\n{}", fetched.text, log());
        assert_eq!(fetched.text, "written on synapse");
        assert!(fetched.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert!(fetched.headers["content-disposition"].to_str().unwrap().contains("notes.txt"));
        let picture = upload(&bob, "image/png", "picture.png", crate::media::png(400, 300)).await;
        let thumbnail = get(
            &alice,
            &format!("/_matrix/client/v1/media/thumbnail/{picture}?width=32&height=32&method=scale"),
        )
        .await;
        assert_eq!(thumbnail.status, 200, "{}\n{}", thumbnail.text, log());
        assert_eq!(thumbnail.headers["content-type"], "image/png");
        let (server, _) = theirs.split_once('/').unwrap();
        let missing = get(&alice, &format!("/_matrix/client/v1/media/download/{server}/NoSuchMedia")).await;
        assert_eq!((missing.status, missing.errcode()), (404, Some("M_NOT_FOUND")), "{}", missing.text);

        // Ganglion's media, through Synapse (which asks our federation media endpoints).
        let ours = upload(&alice, "text/plain", "memo.txt", b"written on ganglion".to_vec()).await;
        let fetched = get(&bob, &format!("/_matrix/client/v1/media/download/{ours}")).await;
        assert_eq!(fetched.status, 200, "{}\n{}", fetched.text, log());
        assert_eq!(fetched.text, "written on ganglion");
        let our_picture = upload(&alice, "image/png", "view.png", crate::media::png(300, 200)).await;
        let thumbnail = get(
            &bob,
            &format!("/_matrix/client/v1/media/thumbnail/{our_picture}?width=32&height=32&method=crop"),
        )
        .await;
        assert_eq!(thumbnail.status, 200, "{}\n{}", thumbnail.text, log());
        assert!(thumbnail.headers["content-type"].to_str().unwrap().starts_with("image/"));

        // Our federation media endpoint wants a signed request.
        let (_, media_id) = ours.split_once('/').unwrap();
        let unsigned = ganglion
            .http()
            .get(format!("{}/_matrix/federation/v1/media/download/{media_id}", ganglion.federation_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), 401);

        // Fetched once, kept: Synapse down, its media still served here.
        synapse.stop().await.unwrap();
        let again = get(&alice, &format!("/_matrix/client/v1/media/download/{theirs}")).await;
        assert_eq!((again.status, again.text.as_str()), (200, "written on synapse"));
    })
    .await
}

/// A server whose media answers name the file by `Location` (which the spec allows, for files
/// kept behind a CDN or an object store): a small HTTPS server in Python standing in for it,
/// since neither Synapse nor Ganglion answers that way. The file is fetched from where it
/// points (through one more redirect), with the type and name that answer gives, and a
/// `Location` pointing at an address the node does not contact is refused.
#[tokio::test]
async fn media_answers_that_redirect_are_followed() {
    crate::run(async {
        const PEER: &str = r#"
import http.server, ssl, sys, threading
tls_port, plain_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def multipart(location):
    return (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: " + location.encode()
            + b"\r\n\r\n\r\n--b--\r\n")

class Federation(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/_matrix/federation/v1/media/download/redirected"):
            body = multipart("http://127.0.0.1:%d/hop" % plain_port)
        elif self.path.startswith("/_matrix/federation/v1/media/download/internal"):
            body = multipart("http://10.255.255.1/file")
        else:
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errcode": "M_NOT_FOUND", "error": "no"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/mixed; boundary=b")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", "/files/cat.txt")
            self.end_headers()
            return
        body = b"kept behind a redirect"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Disposition", 'inline; filename="cat.txt"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

tls = http.server.ThreadingHTTPServer(("127.0.0.1", tls_port), Federation)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
tls.socket = context.wrap_socket(tls.socket, server_side=True)
plain = http.server.ThreadingHTTPServer(("127.0.0.1", plain_port), Files)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("ready", flush=True)
tls.serve_forever()
"#;
        let dir = tempfile::tempdir().unwrap();
        let (certificate, key) = (dir.path().join("peer.crt"), dir.path().join("peer.key"));
        ganglion_testkit::self_signed_certificate(&certificate, &key).unwrap();
        std::fs::write(dir.path().join("peer.py"), PEER).unwrap();
        let (tls_port, plain_port) = (ganglion_testkit::free_port(), ganglion_testkit::free_port());
        let mut peer = tokio::process::Command::new("python3")
            .arg(dir.path().join("peer.py"))
            .args([tls_port.to_string(), plain_port.to_string()])
            .arg(&certificate)
            .arg(&key)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(peer.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "the peer did not start: {ready:?}"
        );

        let node = FederationNode::start().await.unwrap();
        let alice = node.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let peer_name = format!("127.0.0.1:{tls_port}");
        let fetched = get(&alice, &format!("/_matrix/client/v1/media/download/{peer_name}/redirected")).await;
        assert_eq!(
            (fetched.status, fetched.text.as_str()),
            (200, "kept behind a redirect"),
            "{}",
            node.log()
        );
        let header = |name: &str| {
            fetched.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
        };
        assert!(header("content-type").starts_with("text/plain"), "{:?}", fetched.headers);
        assert!(header("content-disposition").contains("cat.txt"), "{:?}", fetched.headers);
        let refused = get(&alice, &format!("/_matrix/client/v1/media/download/{peer_name}/internal")).await;
        refused.err(403, "M_FORBIDDEN");
        drop(peer);
    })
    .await
}
