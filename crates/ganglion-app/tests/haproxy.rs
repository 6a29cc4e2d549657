//! The generated HAProxy config, run by a real HAProxy in front of fake instances that only say
//! who they are: the same checks as `nginx.rs` (every route of the table reaches a role that
//! serves its class, stickiness per access token, unknown paths to a client-reader, body limits),
//! plus what HAProxy does differently: per-route server timeouts set by a variable, uploads limited
//! by `Content-Length`, the forwarding headers, operators' endpoints hidden, and a dead server's
//! clients moved to the others.

mod common;

use common::{Proxy, concrete, fake_cluster};
use ganglion_app::{haproxy::haproxy_config, route_table};
use ganglion_config::Config;
use ganglion_http::RouteInfo;
use ganglion_testkit::{Haproxy, free_port};
use ganglion_types::Role;

/// A master, two sync workers, two client-readers and two media workers (fake, on loopback)
/// behind HAProxy, which runs the config generated from `routes`.
async fn proxy(routes: &[RouteInfo]) -> Proxy<Haproxy> {
    start(fake_cluster().await, routes)
}

fn start(config: Config, routes: &[RouteInfo]) -> Proxy<Haproxy> {
    let haproxy = Haproxy::start(&haproxy_config(&config, routes).unwrap()).unwrap();
    Proxy::new(config, haproxy.base_url(), haproxy)
}

/// Asserts that `response` is the proxy's own Matrix error: uncacheable, readable by a browser
/// client on another origin, with `errcode`.
async fn assert_matrix_error(response: reqwest::Response, status: u16, errcode: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["errcode"], errcode, "{body}");
}

#[tokio::test]
async fn every_route_reaches_a_role_that_serves_its_class() {
    let routes = route_table();
    let proxy = proxy(&routes).await;
    common::every_route_reaches_a_role_that_serves_its_class(&proxy, &routes).await;
    // HAProxy matches the path as sent: an encoded `/` stays inside its parameter, and the
    // route still reaches its role (nginx decodes first and sends it to a client-reader).
    let download = "/_matrix/client/v1/media/download/example.org/a%2Fb";
    assert_eq!(proxy.role_of(&proxy.instance("GET", download, Some("token")).await), Role::Media);
}

#[tokio::test]
async fn sync_sticks_to_one_worker_per_access_token() {
    let proxy = proxy(&route_table()).await;
    let first = common::sync_sticks_to_one_worker_per_access_token(&proxy).await;
    // The r0 alias and sliding sync are long-polls of the same client: the same worker.
    for path in ["/_matrix/client/r0/sync", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"] {
        assert_eq!(proxy.instance("GET", path, Some("alice-token")).await, first, "{path}");
    }
}

#[tokio::test]
async fn a_path_whose_methods_need_different_roles_is_routed_by_method() {
    common::a_path_whose_methods_need_different_roles_is_routed_by_method(proxy).await;
}

/// Bodies over HAProxy's buffer (16 KiB) pass, up to `http.max_body_bytes`; uploads up to
/// `media.max_upload_bytes`. A body over the limit is refused from its `Content-Length`.
#[tokio::test]
async fn bodies_pass_up_to_max_body_bytes() {
    let proxy = proxy(&route_table()).await;
    let send = concrete("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}");
    let max = proxy.config.http.max_body_bytes;
    for size in [64 * 1024, max] {
        let response =
            proxy.client.put(format!("{}{send}", proxy.base_url)).body(vec![b' '; size]).send().await;
        assert_eq!(response.unwrap().status(), 200, "{size} bytes");
    }
    let (status, headers, body) = declared_body_answer(&proxy, "PUT", &send, max + 1).await;
    assert_raw_matrix_error(status, &headers, &body, 413, "M_TOO_LARGE");

    let upload = "/_matrix/media/v3/upload";
    let max_upload = usize::try_from(proxy.config.media.max_upload_bytes).unwrap();
    assert!(max_upload > max + 1);
    let response = proxy.client.post(format!("{}{upload}", proxy.base_url)).body(vec![b'x'; max + 1]).send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ganglion-instance"].to_str().unwrap().split('/').next(), Some("media"));
    let (status, headers, body) = declared_body_answer(&proxy, "POST", upload, max_upload + 1).await;
    assert_raw_matrix_error(status, &headers, &body, 413, "M_TOO_LARGE");
}

/// HAProxy's answer to `method path` declaring a `length`-byte body it never sends: status,
/// headers (`name: value` lines, names in lower case) and body. Sending the body would race:
/// HAProxy 2.6 closes the connection after refusing a request without reading the rest of its
/// body (3.0 drains it, as nginx does), so a client still writing may see a reset, not the 413.
async fn declared_body_answer<P>(
    proxy: &Proxy<P>,
    method: &str,
    path: &str,
    length: usize,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = proxy.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer));
    read.await.expect("HAProxy closes the connection after its answer").unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let (status_line, headers) = head.split_once("\r\n").unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = headers
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            format!("{}: {}", name.to_ascii_lowercase(), value.trim())
        })
        .collect::<Vec<_>>()
        .join("\n");
    (status, headers, body.to_owned())
}

/// [`assert_matrix_error`] on a raw answer.
fn assert_raw_matrix_error(status: u16, headers: &str, body: &str, expected: u16, errcode: &str) {
    assert_eq!(status, expected, "{headers}\n{body}");
    for header in
        ["content-type: application/json", "cache-control: no-store", "access-control-allow-origin: *"]
    {
        assert!(headers.lines().any(|line| line == header), "no {header:?} in\n{headers}");
    }
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["errcode"], errcode, "{body}");
}

/// The instances learn the client's address (`X-Forwarded-For`, appended to what the client sent,
/// and `X-Real-IP`) and scheme; operators' endpoints are not reachable through the proxy.
#[tokio::test]
async fn forwarding_headers_and_operators_endpoints() {
    let proxy = proxy(&route_table()).await;
    let (_, forwarded) = proxy.answer("GET", "/_matrix/client/versions", None).await;
    assert_eq!(forwarded["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(forwarded["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(forwarded["x-forwarded-proto"], serde_json::json!(["http"]));

    let response = proxy
        .client
        .get(format!("{}/_matrix/client/versions", proxy.base_url))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-real-ip", "203.0.113.8")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let forwarded: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    // The hop the client claims, then the one HAProxy saw; the rest is replaced.
    assert_eq!(forwarded["x-forwarded-for"], serde_json::json!(["203.0.113.7", "127.0.0.1"]));
    assert_eq!(forwarded["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(forwarded["x-forwarded-proto"], serde_json::json!(["http"]));

    let response =
        proxy.client.get(format!("{}/_ganglion/v1/replication", proxy.base_url)).send().await.unwrap();
    assert_matrix_error(response, 404, "M_UNRECOGNIZED").await;
}

/// A server that refuses connections: its clients are retried on the other server of the
/// backend; with none left, HAProxy's 503 is a Matrix error.
#[tokio::test]
async fn a_dead_servers_clients_go_to_the_others() {
    let mut config = fake_cluster().await;
    // Nothing listens on a free port.
    let dead = ([127, 0, 0, 1], free_port()).into();
    config.instance_map.get_mut("reader2").unwrap().http = dead;
    let proxy = start(config.clone(), &route_table());
    let messages = concrete("/_matrix/client/v3/rooms/{roomId}/messages");
    for user in 0..20 {
        let instance = proxy.instance("GET", &messages, Some(&format!("token-of-user-{user}"))).await;
        assert_eq!(instance, "client-reader/reader1");
    }
    drop(proxy);

    config.instance_map.get_mut("reader1").unwrap().http = dead;
    let proxy = start(config, &route_table());
    let response = proxy.client.get(format!("{}{messages}", proxy.base_url)).send().await.unwrap();
    assert_matrix_error(response, 503, "M_UNKNOWN").await;
}

/// Long-polls and media wait longer for their server than other requests. Checked with the
/// default server timeout cut to 1 s and answers that take 2 s.
#[tokio::test]
async fn long_polls_and_media_get_longer_server_timeouts() {
    let config = fake_cluster().await;
    let text = haproxy_config(&config, &route_table()).unwrap();
    assert!(text.contains("\n    timeout server 60s\n"));
    let haproxy =
        Haproxy::start(&text.replace("\n    timeout server 60s\n", "\n    timeout server 1s\n")).unwrap();
    let proxy = Proxy::new(config, haproxy.base_url(), haproxy);
    for path in ["/_matrix/client/v3/sync", "/_matrix/client/v1/media/download/example.org/AbCdEf123"] {
        let instance = proxy.instance("GET", &format!("{path}?delay_ms=2000"), Some("token")).await;
        assert_ne!(proxy.role_of(&instance), Role::ClientReader, "{path}");
    }
    let messages = concrete("/_matrix/client/v3/rooms/{roomId}/messages");
    let response =
        proxy.client.get(format!("{}{messages}?delay_ms=2000", proxy.base_url)).send().await.unwrap();
    assert_matrix_error(response, 504, "M_UNKNOWN").await;
}
