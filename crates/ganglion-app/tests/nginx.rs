//! The generated nginx config, run by a real nginx in front of fake instances that only say who
//! they are: every route of the table reaches a role that serves its class, `/sync` sticks to
//! one worker per access token, and unknown paths reach a client-reader. No database involved.

use std::collections::BTreeSet;

use axum::Router;
use ganglion_app::{nginx::nginx_config, route_table};
use ganglion_config::{Config, InstanceConfig};
use ganglion_http::RouteInfo;
use ganglion_testkit::{Nginx, enc, free_port};
use ganglion_types::{EndpointClass, Role};
use reqwest::Method;

struct Proxy {
    config: Config,
    nginx: Nginx,
    client: reqwest::Client,
}

/// A master, two sync workers and two client-readers (fake, on loopback) behind nginx, which
/// runs the config generated from `routes`.
async fn proxy(routes: &[RouteInfo]) -> Proxy {
    let mut config = Config::production_default();
    for (name, role) in [
        ("master", Role::Master),
        ("sync1", Role::Sync),
        ("sync2", Role::Sync),
        ("reader1", Role::ClientReader),
        ("reader2", Role::ClientReader),
        ("media1", Role::Media),
        ("media2", Role::Media),
    ] {
        config.instance_map.insert(name.into(), fake_instance(name, role).await);
    }
    config.load_balancer.listen = ([127, 0, 0, 1], free_port()).into();
    let nginx = Nginx::start(&nginx_config(&config, routes).unwrap()).unwrap();
    Proxy { config, nginx, client: reqwest::Client::new() }
}

/// An HTTP server answering every request 200 with `X-Ganglion-Instance: <role>/<name>`.
async fn fake_instance(name: &str, role: Role) -> InstanceConfig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let instance = format!("{}/{name}", role.as_str());
    // Reads the whole body before answering, as a real worker does: answering first makes
    // nginx see the connection close mid-upload (502).
    let app = Router::new().fallback(move |_body: axum::body::Bytes| {
        let instance = instance.clone();
        async move { ([("x-ganglion-instance", instance)], "{}") }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    InstanceConfig { role, http, grpc: (role == Role::Master).then_some(http), metrics: None }
}

impl Proxy {
    /// The `role/name` of the instance that answered `method path` (sent with `token`, if any).
    async fn instance(&self, method: &str, path: &str, token: Option<&str>) -> String {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.nginx.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if method == Method::PUT || method == Method::POST {
            request = request.header("content-type", "application/json").body("{}");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let instance = response.headers()["x-ganglion-instance"].to_str().unwrap().to_owned();
        // The header names the instance truthfully: its role is the one in the instance map.
        let (role, name) = instance.split_once('/').unwrap();
        assert_eq!(self.config.instance_map[name].role.as_str(), role, "{instance}");
        instance
    }

    fn role_of(&self, instance: &str) -> Role {
        self.config.instance_map[instance.split_once('/').unwrap().1].role
    }
}

/// `path` with each `{param}` replaced by a realistic, percent-encoded value.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => segment.to_owned(),
            Some(param) => enc(match param {
                "roomId" | "roomIdOrAlias" => "!room:example.org",
                "roomAlias" => "#alias:example.org",
                "userId" | "stateKey" => "@alice:example.org",
                "eventId" => "$event:example.org",
                "eventType" => "m.room.member",
                "type" => "m.direct",
                "txnId" => "txn1",
                "deviceId" => "DEVICEID",
                "filterId" => "1",
                "kind" => "override",
                "ruleId" => ".m.rule.master",
                "receiptType" => "m.read",
                "id" => "some-id",
                "version" => "1",
                "sessionId" => "sessionid1",
                "serverName" => "example.org",
                "mediaId" => "AbCdEf123",
                "fileName" => "cat.png",
                other => panic!("no example value for {{{other}}} in {path}: add one"),
            }),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_reaches_a_role_that_serves_its_class() {
    let routes = route_table();
    let proxy = proxy(&routes).await;
    for route in &routes {
        let instance = proxy.instance(&route.method, &concrete(&route.path), Some("token")).await;
        assert!(
            proxy.role_of(&instance).serves(route.class),
            "{} {} ({}) went to {instance}",
            route.method,
            route.path,
            route.class.as_str()
        );
    }
    for path in ["/_matrix/client/v3/no_such_endpoint", "/_matrix/client/v3/sync/extra", "/elsewhere"] {
        let instance = proxy.instance("GET", path, Some("token")).await;
        assert_eq!(proxy.role_of(&instance), Role::ClientReader, "{path} went to {instance}");
    }
}

#[tokio::test]
async fn sync_sticks_to_one_worker_per_access_token() {
    let proxy = proxy(&route_table()).await;
    let sync = "/_matrix/client/v3/sync";
    let first = proxy.instance("GET", sync, Some("alice-token")).await;
    assert_eq!(proxy.role_of(&first), Role::Sync);
    for _ in 0..20 {
        assert_eq!(proxy.instance("GET", sync, Some("alice-token")).await, first);
        // The query parameter is the same token, so the same worker.
        assert_eq!(
            proxy.instance("GET", &format!("{sync}?access_token=alice-token&timeout=0"), None).await,
            first
        );
    }
    // Reads stick to one client-reader the same way.
    let messages = concrete("/_matrix/client/v3/rooms/{roomId}/messages");
    let reader = proxy.instance("GET", &messages, Some("alice-token")).await;
    for _ in 0..20 {
        assert_eq!(proxy.instance("GET", &messages, Some("alice-token")).await, reader);
    }

    let mut sync_workers = BTreeSet::new();
    let mut readers = BTreeSet::new();
    for user in 0..40 {
        let token = format!("token-of-user-{user}");
        sync_workers.insert(proxy.instance("GET", sync, Some(&token)).await);
        readers.insert(proxy.instance("GET", &messages, Some(&token)).await);
    }
    assert_eq!(sync_workers, BTreeSet::from(["sync/sync1".to_owned(), "sync/sync2".to_owned()]));
    assert_eq!(
        readers,
        BTreeSet::from(["client-reader/reader1".to_owned(), "client-reader/reader2".to_owned()])
    );

    // Without a token (a client's first, anonymous request) it still reaches a sync worker.
    assert_eq!(proxy.role_of(&proxy.instance("GET", sync, None).await), Role::Sync);
}

/// No path of today's table mixes roles, but the config must route one by method if it does.
#[tokio::test]
async fn a_path_whose_methods_need_different_roles_is_routed_by_method() {
    let path = "/_matrix/client/v3/mixed/{id}";
    let routes = [
        RouteInfo {
            method: "GET".into(),
            path: path.into(),
            class: EndpointClass::Sync,
            streams_body: false,
        },
        RouteInfo {
            method: "PUT".into(),
            path: path.into(),
            class: EndpointClass::ClientWrite,
            streams_body: false,
        },
    ];
    let proxy = proxy(&routes).await;
    let path = concrete(path);
    for (method, role) in [("GET", Role::Sync), ("HEAD", Role::Sync), ("PUT", Role::ClientReader)] {
        let instance = proxy.instance(method, &path, Some("token")).await;
        assert_eq!(proxy.role_of(&instance), role, "{method} went to {instance}");
    }
}

/// Bodies nginx spools to its temp dir (over 16 KiB) pass, up to `http.max_body_bytes`.
#[tokio::test]
async fn bodies_pass_up_to_max_body_bytes() {
    let proxy = proxy(&route_table()).await;
    let url = format!(
        "{}{}",
        proxy.nginx.base_url(),
        concrete("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}")
    );
    let max = proxy.config.http.max_body_bytes;
    for (size, status) in [(64 * 1024, 200), (max, 200), (max + 1, 413)] {
        let response = proxy.client.put(&url).body(vec![b' '; size]).send().await.unwrap();
        assert_eq!(response.status(), status, "{size} bytes");
        if status == 413 {
            // nginx's own answer, as the server's would be: uncacheable and readable by a
            // browser client on another origin.
            assert_eq!(response.headers()["cache-control"], "no-store");
            assert_eq!(response.headers()["access-control-allow-origin"], "*");
            let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["errcode"], "M_TOO_LARGE");
        }
    }
}
