//! Federation, first step: server keys, the notary, signed requests and profile queries, between
//! Ganglion and Synapse (from PyPI) and between two Ganglions, each started as
//! docs/federation.md says (`scripts/federation-node.sh`), on loopback with self-signed TLS.

use std::{collections::BTreeMap, time::Duration};

use ganglion_testkit::{Account, Api, Backend, FederationNode, ServerOptions, Synapse, TestServer, enc};
use ruma::{
    CanonicalJsonValue, OwnedServerName, ServerName,
    api::federation::authentication::{ServerSignaturesInput, XMatrix},
    serde::Base64,
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

/// `GET /_matrix/key/v2/server` of a server, over TLS.
async fn server_keys(http: &reqwest::Client, federation_url: &str) -> Value {
    let response = http.get(format!("{federation_url}/_matrix/key/v2/server")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Checks `answer` is signed by `server` with one of the keys it lists as current.
fn assert_self_signed(answer: &Value, server: &str) {
    let keys: BTreeMap<String, Base64> = answer["verify_keys"]
        .as_object()
        .unwrap_or_else(|| panic!("no verify_keys: {answer}"))
        .iter()
        .map(|(id, key)| (id.clone(), Base64::parse(key["key"].as_str().unwrap()).unwrap()))
        .collect();
    let map = BTreeMap::from([(server.to_owned(), keys)]);
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(answer.clone()).unwrap() else {
        panic!("not an object: {answer}");
    };
    // Only the server's own signature is checked here (a notary adds its own).
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|entity, _| entity == server);
    }
    ruma::signatures::verify_json(&map, &object)
        .unwrap_or_else(|e| panic!("{server}'s signature: {e}: {answer}"));
}

/// A notary's answer about `server`'s key `key_id`, with the notary's countersignature; `log`
/// tells why not.
async fn notary_answer(
    http: &reqwest::Client,
    notary_url: &str,
    notary: &str,
    (server, key_id): (&str, &str),
    log: impl Fn() -> String,
) -> Value {
    let response = http
        .post(format!("{notary_url}/_matrix/key/v2/query"))
        .json(&json!({ "server_keys": { server: { key_id: { "minimum_valid_until_ts": 0 } } } }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let answer = body["server_keys"]
        .as_array()
        .and_then(|answers| answers.iter().find(|a| a["server_name"] == server))
        .unwrap_or_else(|| panic!("{notary} has no answer about {server}: {body}\n{}", log()))
        .clone();
    assert!(answer["signatures"][notary].is_object(), "{notary} did not countersign: {answer}");
    assert_self_signed(&answer, server);
    answer
}

fn key_id(answer: &Value) -> String {
    answer["verify_keys"].as_object().and_then(|keys| keys.keys().next()).cloned().unwrap_or_default()
}

pub(crate) async fn set_displayname(account: &Account, name: &str) {
    account
        .put(&format!("/profile/{}/displayname", enc(&account.user_id)), &json!({ "displayname": name }))
        .await
        .unwrap()
        .ok();
}

#[tokio::test]
async fn keys_notaries_and_profiles_both_ways_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let (s_name, g_name) = (synapse.server_name().to_owned(), ganglion.server_name().to_owned());

        // Our key answer verifies, and Synapse, as a notary, fetches and vouches for it.
        let ours = server_keys(ganglion.http(), &ganglion.federation_url()).await;
        assert_eq!(ours["server_name"], g_name);
        assert_self_signed(&ours, &g_name);
        let vouched = notary_answer(
            synapse.http(),
            &synapse.federation_url(),
            &s_name,
            (&g_name, &key_id(&ours)),
            || synapse.log(),
        )
        .await;
        assert_eq!(vouched["verify_keys"], ours["verify_keys"], "{}", synapse.log());
        // We fetch Synapse's keys and vouch for them the same way.
        let theirs = server_keys(synapse.http(), &synapse.federation_url()).await;
        let vouched = notary_answer(
            ganglion.http(),
            &ganglion.federation_url(),
            &g_name,
            (&s_name, &key_id(&theirs)),
            || ganglion.log(),
        )
        .await;
        assert_eq!(vouched["verify_keys"], theirs["verify_keys"], "{}", ganglion.log());

        // Profile queries, signed both ways.
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        set_displayname(&alice, "Alice of Ganglion").await;
        let (bob_id, bob_token) = synapse.register("bob", crate::PASSWORD).await.unwrap();
        let bob = Account::new(synapse.client_api(), &bob_id, &bob_token, "");
        set_displayname(&bob, "Bob of Synapse").await;

        let seen_by_bob = bob.get(&format!("/profile/{}", enc(&alice.user_id))).await.unwrap();
        assert_eq!(seen_by_bob.ok()["displayname"], "Alice of Ganglion", "{}", synapse.log());
        let seen_by_alice = alice.get(&format!("/profile/{}", enc(&bob_id))).await.unwrap();
        assert_eq!(seen_by_alice.ok()["displayname"], "Bob of Synapse", "{}", ganglion.log());
        let field = alice.get(&format!("/profile/{}/displayname", enc(&bob_id))).await.unwrap();
        assert_eq!(field.ok(), json!({ "displayname": "Bob of Synapse" }));

        // Aliases resolve through their server.
        let ganglion_room = alice.create_room(&json!({ "room_alias_name": "lobby" })).await.unwrap();
        let synapse_room = bob.create_room(&json!({ "room_alias_name": "hall" })).await.unwrap();
        let resolved =
            bob.get(&format!("/directory/room/{}", enc(&format!("#lobby:{g_name}")))).await.unwrap().ok();
        assert_eq!(resolved["room_id"], ganglion_room, "{}", synapse.log());
        assert_eq!(resolved["servers"], json!([g_name]));
        let resolved =
            alice.get(&format!("/directory/room/{}", enc(&format!("#hall:{s_name}")))).await.unwrap().ok();
        assert_eq!(resolved["room_id"], synapse_room, "{}", ganglion.log());
        let missing = enc(&format!("#nowhere:{s_name}"));
        alice.get(&format!("/directory/room/{missing}")).await.unwrap().err(404, "M_NOT_FOUND");
        let missing = enc(&format!("#nowhere:{g_name}"));
        bob.get(&format!("/directory/room/{missing}")).await.unwrap().err(404, "M_NOT_FOUND");

        let nobody = format!("@nobody:{s_name}");
        alice.get(&format!("/profile/{}", enc(&nobody))).await.unwrap().err(404, "M_NOT_FOUND");
        let nobody = format!("@nobody:{g_name}");
        bob.get(&format!("/profile/{}", enc(&nobody))).await.unwrap().err(404, "M_NOT_FOUND");
    })
    .await
}

/// The signing key of a node, read from its data directory as an operator would back it up.
pub(crate) fn node_key(node: &FederationNode) -> Ed25519KeyPair {
    use base64::Engine as _;
    let text = std::fs::read_to_string(node.dir().join("data/signing.key")).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let der =
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(parts[2].trim_end_matches('=')).unwrap();
    Ed25519KeyPair::from_der(&der, parts[1].to_owned()).unwrap()
}

/// The `Authorization: X-Matrix …` of `method uri` with `body`, signed as `origin` with `key`
/// for `destination`.
pub(crate) fn x_matrix(
    method: &str,
    uri: &str,
    body: &[u8],
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
) -> http::HeaderValue {
    let request = http::Request::builder().method(method).uri(uri).body(body).unwrap();
    let origin: OwnedServerName = ServerName::parse(origin).unwrap();
    let destination: OwnedServerName = ServerName::parse(destination).unwrap();
    let header =
        XMatrix::try_from_http_request(&request, ServerSignaturesInput::new(origin, destination, key))
            .unwrap();
    http::HeaderValue::from(&header)
}

/// Sends `method base_url+uri` with `authorization` and a JSON `body` (certificates not verified).
pub(crate) async fn send_signed(
    method: reqwest::Method,
    base_url: &str,
    uri: &str,
    authorization: http::HeaderValue,
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let client = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().unwrap();
    let mut request =
        client.request(method, format!("{base_url}{uri}")).header("authorization", authorization);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    request.send().await.unwrap()
}

/// A `GET` of `uri` at `base_url`, signed as `origin` with `key` for `destination`.
async fn signed_get_at(
    base_url: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
) -> reqwest::Response {
    send_signed(
        reqwest::Method::GET,
        base_url,
        uri,
        x_matrix("GET", uri, &[], origin, destination, key),
        None,
    )
    .await
}

/// A `GET` of `uri` on `to`'s federation listener, signed as `origin` with `key` for `destination`.
pub(crate) async fn signed_get(
    to: &FederationNode,
    uri: &str,
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
) -> reqwest::Response {
    signed_get_at(&to.federation_url(), uri, origin, destination, key).await
}

async fn assert_unauthorized(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 401, "{why}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{why}: {body}");
}

#[tokio::test]
async fn requests_signed_wrongly_are_refused_and_a_rotated_key_keeps_verifying() {
    crate::run(async {
        let (a, b) = tokio::join!(FederationNode::start(), FederationNode::start());
        let (mut a, b) = (a.unwrap(), b.unwrap());
        let alice = a.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = b.client_api().register("bob", crate::PASSWORD).await.unwrap();
        set_displayname(&bob, "Bob").await;
        let profile_uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&bob.user_id));

        // Signed correctly by A's key (from its data directory): answered. This is what makes
        // the refusals below refusals of the signature, not of the harness.
        let a_key = node_key(&a);
        let response = signed_get(&b, &profile_uri, a.server_name(), b.server_name(), &a_key).await;
        assert_eq!(response.status(), 200, "{}", b.log());

        // No signature at all.
        let unsigned = b.http().get(format!("{}{profile_uri}", b.federation_url())).send().await.unwrap();
        assert_unauthorized(unsigned, "unsigned").await;
        // Addressed to another server.
        let response = signed_get(&b, &profile_uri, a.server_name(), "127.0.0.1:1", &a_key).await;
        assert_unauthorized(response, "wrong destination").await;
        // A's name and key id, someone else's key.
        let forged_document = Ed25519KeyPair::generate();
        let forged = Ed25519KeyPair::from_der(&forged_document, a_key.version().to_owned()).unwrap();
        let response = signed_get(&b, &profile_uri, a.server_name(), b.server_name(), &forged).await;
        assert_unauthorized(response, "forged signature").await;
        // Signed for one request, sent as another.
        let header = x_matrix("GET", &profile_uri, &[], a.server_name(), b.server_name(), &a_key);
        let other_uri = format!("{profile_uri}&field=displayname");
        let tampered = send_signed(reqwest::Method::GET, &b.federation_url(), &other_uri, header, None).await;
        assert_unauthorized(tampered, "a signature over another request").await;
        // A server that does not exist (nothing listens there): its key cannot be found.
        let nowhere = format!("127.0.0.1:{}", ganglion_testkit::free_port());
        let response = signed_get(&b, &profile_uri, &nowhere, b.server_name(), &forged).await;
        assert_unauthorized(response, "an origin that cannot be reached").await;

        // Rotation: the old key is retired to old_verify_keys, a new one signs from now on.
        a.stop().await.unwrap();
        let output = std::process::Command::new(ganglion_testkit::ganglion_binary().unwrap())
            .args(["rotate-signing-key", "--config"])
            .arg(a.config_path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        a.start_again().await.unwrap();
        let keys = server_keys(a.http(), &a.federation_url()).await;
        let old_id = format!("ed25519:{}", a_key.version());
        assert!(keys["verify_keys"].get(&old_id).is_none(), "{keys}");
        assert_eq!(keys["verify_keys"].as_object().unwrap().len(), 1, "{keys}");
        assert_eq!(
            keys["old_verify_keys"][&old_id]["key"],
            Base64::<ruma::serde::base64::Standard>::new(a_key.public_key().to_vec()).encode().as_str(),
            "{keys}"
        );
        assert!(keys["old_verify_keys"][&old_id]["expired_ts"].as_i64().is_some(), "{keys}");
        assert_self_signed(&keys, a.server_name());
        // B learns A's new key when A next signs with it.
        let seen = alice.get(&format!("/profile/{}", enc(&bob.user_id))).await.unwrap();
        assert_eq!(seen.ok()["displayname"], "Bob", "{}\n{}", a.log(), b.log());
        // A request signed with the retired key, after it expired, is refused.
        let response = signed_get(&b, &profile_uri, a.server_name(), b.server_name(), &a_key).await;
        assert_unauthorized(response, "a retired key").await;
    })
    .await
}

/// `federation.signing_key` puts the server's key where the operator says (generated there on
/// first start, and the key the server publishes), and `federation.request_timeout_ms` bounds a
/// request to another server that never answers.
#[tokio::test]
async fn the_signing_key_path_and_the_request_timeout_come_from_the_config() {
    crate::run(async {
        use base64::Engine as _;
        let keys = tempfile::tempdir().unwrap();
        let key_path = keys.path().join("secrets/ganglion.key");
        std::fs::create_dir_all(key_path.parent().unwrap()).unwrap();
        // A peer that takes connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let options = ServerOptions {
            extra_toml: format!(
                "[federation]\nsigning_key = {:?}\nrequest_timeout_ms = 1000\nallowed_address_ranges = [\"127.0.0.0/8\"]\n",
                key_path.display().to_string()
            ),
            ..ServerOptions::default()
        };
        let server = TestServer::start(Backend::Sqlite, options).await.unwrap();
        let text = std::fs::read_to_string(&key_path).expect("the key is generated where configured");
        assert!(!server.dir().join("data/signing.key").exists(), "nor also in the data directory");
        let parts: Vec<&str> = text.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD_NO_PAD.decode(parts[2].trim_end_matches('=')).unwrap();
        let pair = Ed25519KeyPair::from_der(&der, parts[1].to_owned()).unwrap();
        let published = server.api().get("/_matrix/key/v2/server", None).await.unwrap().ok();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair.public_key());
        assert_eq!(published["verify_keys"][format!("ed25519:{}", parts[1])]["key"], public, "{published}");

        let alice = server.register("alice", crate::PASSWORD).await.unwrap();
        let started = std::time::Instant::now();
        let response = alice.get(&format!("/profile/{}", enc(&format!("@nobody:127.0.0.1:{silent_port}")))).await.unwrap();
        let took = started.elapsed();
        assert_ne!(response.status, 200, "{}", response.text);
        // It waited for the silent peer (not refused at once), and gave up well before the 30 s
        // default.
        assert!(took >= Duration::from_millis(900), "answered after {took:?}: {}", response.text);
        assert!(took < Duration::from_secs(10), "answered after {took:?}: {}", response.text);
        drop(silent);
    })
    .await
}

#[tokio::test]
async fn internal_addresses_are_not_contacted_unless_allowed() {
    crate::run(async {
        let node = FederationNode::start().await.unwrap();
        let bob = node.client_api().register("bob", crate::PASSWORD).await.unwrap();
        // The embedded default with no federation settings: loopback peers are refused.
        let server = TestServer::start(Backend::Sqlite, ServerOptions::default()).await.unwrap();
        let alice = server.register("alice", crate::PASSWORD).await.unwrap();
        let response = alice.get(&format!("/profile/{}", enc(&bob.user_id))).await.unwrap();
        let body = response.err(403, "M_FORBIDDEN");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("federation.allowed_address_ranges")),
            "{body}"
        );
        // (Allowed, as the federation nodes have it, the other tests reach loopback peers.)

        // No delegation unless configured; `federation.key_validity_hours` bounds the key answer.
        let api = server.api();
        api.get("/.well-known/matrix/server", None).await.unwrap().err(404, "M_NOT_FOUND");
        let configured = ServerOptions {
            extra_toml:
                "[federation]\nwell_known_server = \"matrix.example.org:443\"\nkey_validity_hours = 2\n"
                    .into(),
            ..ServerOptions::default()
        };
        let delegating = TestServer::start(Backend::Sqlite, configured).await.unwrap();
        let api = delegating.api();
        let well_known = api.get("/.well-known/matrix/server", None).await.unwrap().ok();
        assert_eq!(well_known, json!({ "m.server": "matrix.example.org:443" }));
        let keys = api.get("/_matrix/key/v2/server", None).await.unwrap().ok();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let valid_for = keys["valid_until_ts"].as_i64().unwrap() - now;
        assert!((7_000_000..=7_200_000).contains(&valid_for), "{keys}");
    })
    .await
}

#[tokio::test]
async fn keys_of_a_server_that_is_down_come_from_a_trusted_notary() {
    crate::run(async {
        let (a, notary) = tokio::join!(FederationNode::start(), FederationNode::start());
        let (mut a, notary) = (a.unwrap(), notary.unwrap());
        let a_key = node_key(&a);
        let notary_keys = server_keys(notary.http(), &notary.federation_url()).await;
        // The notary learns A's key while A is up.
        let a_id = format!("ed25519:{}", a_key.version());
        notary_answer(
            notary.http(),
            &notary.federation_url(),
            notary.server_name(),
            (a.server_name(), &a_id),
            || notary.log(),
        )
        .await;
        a.stop().await.unwrap();

        let trusting = |verify_keys: &Value| {
            let keys: Vec<String> = verify_keys
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, key)| format!("\"{id}\" = \"{}\"", key["key"].as_str().unwrap()))
                .collect();
            ServerOptions {
                extra_toml: format!(
                    "[federation]\nverify_certificates = false\nallowed_address_ranges = [\"127.0.0.0/8\"]\n\
                     [[federation.trusted_key_servers]]\nserver_name = \"{}\"\nverify_keys = {{ {} }}\n",
                    notary.server_name(),
                    keys.join(", ")
                ),
                ..ServerOptions::default()
            }
        };
        // C cannot reach A, and asks the notary it trusts.
        let c = TestServer::start(Backend::Sqlite, trusting(&notary_keys["verify_keys"])).await.unwrap();
        let carol = c.register("carol", crate::PASSWORD).await.unwrap();
        let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&carol.user_id));
        let response = signed_get_at(c.api().base_url(), &uri, a.server_name(), "localhost", &a_key).await;
        assert_eq!(response.status(), 200, "{}", notary.log());

        // A notary whose answers are not signed by the key configured for it is not believed.
        let mut wrong_keys = notary_keys["verify_keys"].clone();
        let id = key_id(&notary_keys);
        wrong_keys[&id]["key"] =
            json!(Base64::<ruma::serde::base64::Standard>::new(a_key.public_key().to_vec()).encode());
        let d = TestServer::start(Backend::Sqlite, trusting(&wrong_keys)).await.unwrap();
        let dave = d.register("dave", crate::PASSWORD).await.unwrap();
        let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&dave.user_id));
        let response = signed_get_at(d.api().base_url(), &uri, a.server_name(), "localhost", &a_key).await;
        assert_unauthorized(response, "keys vouched for by a notary with the wrong key").await;
    })
    .await
}

#[tokio::test]
async fn a_cluster_federates_through_its_federation_reader() {
    crate::run(async {
        let (cluster, node) = tokio::join!(
            ganglion_testkit::Cluster::start_federating(ServerOptions::default()),
            FederationNode::start()
        );
        let (mut cluster, node) = (cluster.unwrap(), node.unwrap());
        let federation_url = cluster.federation_url().unwrap();
        let http = node.http();

        // nginx ends TLS and a federation reader answers, with the cluster's keys.
        let response = http.get(format!("{federation_url}/_matrix/key/v2/server")).send().await.unwrap();
        assert_eq!(response.headers()["x-ganglion-instance"], "federation-reader/federation1");
        let keys: Value = response.json().await.unwrap();
        assert_eq!(keys["server_name"], cluster.server_name());
        assert_self_signed(&keys, cluster.server_name());
        // The node, as a notary, vouches for the cluster's key.
        notary_answer(
            http,
            &node.federation_url(),
            node.server_name(),
            (cluster.server_name(), &key_id(&keys)),
            || node.log(),
        )
        .await;

        let alice = Api::new(cluster.base_url()).register("alice", crate::PASSWORD).await.unwrap();
        set_displayname(&alice, "Alice of the cluster").await;
        let bob = node.client_api().register("bob", crate::PASSWORD).await.unwrap();
        set_displayname(&bob, "Bob of the node").await;
        // The node's request reaches the federation reader, which checks it with the node's key.
        let seen_by_bob = bob.get(&format!("/profile/{}", enc(&alice.user_id))).await.unwrap();
        assert_eq!(seen_by_bob.ok()["displayname"], "Alice of the cluster", "{}", node.log());
        // A client-reader signs with the key the master made.
        let seen_by_alice = alice.get(&format!("/profile/{}", enc(&bob.user_id))).await.unwrap();
        assert_eq!(seen_by_alice.ok()["displayname"], "Bob of the node", "{}", node.log());

        // An alias of the cluster, resolved by the node through the federation reader.
        let room = alice.create_room(&json!({ "room_alias_name": "lobby" })).await.unwrap();
        let alias = enc(&format!("#lobby:{}", cluster.server_name()));
        let resolved = bob.get(&format!("/directory/room/{alias}")).await.unwrap().ok();
        assert_eq!(resolved["room_id"], room, "{}", node.log());

        // Device keys through the federation reader, one-time keys claimed through the master.
        let alice_keys =
            crate::e2ee::signed_device_keys(&alice, &crate::e2ee::device_key_pair(&alice.device_id), "alice");
        alice.post("/keys/upload", &json!({ "device_keys": alice_keys })).await.unwrap().ok();
        crate::e2ee::upload_one_time_keys(&alice, "a", 1).await;
        let seen =
            bob.post("/keys/query", &json!({ "device_keys": { &alice.user_id: [] } })).await.unwrap().ok();
        assert_eq!(
            seen["device_keys"][&alice.user_id][&alice.device_id]["keys"], alice_keys["keys"],
            "{seen}"
        );
        let body = json!({ "one_time_keys": { &alice.user_id: { &alice.device_id: "curve25519" } } });
        let claimed = bob.post("/keys/claim", &body).await.unwrap().ok();
        assert!(claimed["one_time_keys"][&alice.user_id][&alice.device_id].is_object(), "{claimed}");
        let again = bob.post("/keys/claim", &body).await.unwrap().ok();
        assert!(again["one_time_keys"].get(&alice.user_id).is_none(), "one key, claimed twice: {again}");

        // To-device both ways: the master sends the cluster's, the federation reader takes the
        // node's and hands them to the master.
        let to_bob = json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": 1 } } } });
        alice.put("/sendToDevice/org.example.ping/c1", &to_bob).await.unwrap().ok();
        let event = to_device_event(&bob, "org.example.ping", || node.log()).await;
        assert_eq!(event["sender"], alice.user_id);
        let to_alice = json!({ "messages": { &alice.user_id: { "*": { "n": 2 } } } });
        bob.put("/sendToDevice/org.example.pong/n1", &to_alice).await.unwrap().ok();
        let event = to_device_event(&alice, "org.example.pong", || node.log()).await;
        assert_eq!(event["sender"], bob.user_id);

        // Rooms both ways: the node's user joins a room of the cluster by alias (make_join and
        // send_join answered by the federation reader and the master), the cluster's user joins
        // the node's room by id (through a client-reader); messages cross in both.
        use crate::federation_rooms::{joined_members, wait_for_messages};
        let log = || format!("--- node\n{}", node.log());
        let town =
            alice.create_room(&json!({ "preset": "public_chat", "room_alias_name": "town" })).await.unwrap();
        let joined = bob.join(&format!("#town:{}", cluster.server_name())).await.unwrap();
        assert_eq!(joined, town);
        // The room's hierarchy and its first event, asked by the node through nginx of a
        // federation reader.
        let node_key = node_key(&node);
        let mut answers = Vec::new();
        for uri in [
            format!("/_matrix/federation/v1/hierarchy/{}", enc(&town)),
            format!("/_matrix/federation/v1/timestamp_to_event/{}?ts=0&dir=f", enc(&town)),
        ] {
            let response =
                signed_get_at(&federation_url, &uri, node.server_name(), cluster.server_name(), &node_key)
                    .await;
            assert_eq!(response.status(), 200, "{uri}");
            let instance = response.headers()["x-ganglion-instance"].to_str().unwrap().to_owned();
            assert!(instance.starts_with("federation-reader/"), "{uri}: {instance}");
            answers.push(response.json::<Value>().await.unwrap());
        }
        assert_eq!(answers[0]["room"]["room_id"], town.as_str(), "{}", answers[0]);
        assert!(answers[1]["event_id"].as_str().is_some_and(|id| id.starts_with('$')), "{}", answers[1]);
        let village = bob.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        let joined = alice
            .post(&format!("/join/{}?via={}", enc(&village), enc(node.server_name())), &json!({}))
            .await
            .unwrap();
        assert_eq!(joined.status, 200, "{}\n{}", joined.text, log());
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        for room_id in [&town, &village] {
            for account in [&alice, &bob] {
                crate::federation_rooms::wait_for_members(account, room_id, &members).await;
                assert_eq!(joined_members(account, room_id).await, members, "{room_id}\n{}", log());
            }
            alice.send_text(room_id, "from the cluster").await.unwrap();
            wait_for_messages(&bob, room_id, 1, log).await;
            bob.send_text(room_id, "from the node").await.unwrap();
            let on_cluster = wait_for_messages(&alice, room_id, 2, log).await;
            let on_node = wait_for_messages(&bob, room_id, 2, log).await;
            assert_eq!(on_cluster, on_node, "{room_id}");
            assert_eq!(on_cluster.last().map(|(_, body)| body.as_str()), Some("from the node"));
        }
        // Invites both ways: the cluster's client-reader asks the node to countersign, the
        // node's invite is countersigned by the federation reader and stored by the master.
        let private = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        alice.invite(&private, &bob.user_id).await.unwrap();
        bob.join(&private).await.unwrap();
        let theirs = bob.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        bob.invite(&theirs, &alice.user_id).await.unwrap();
        alice.join(&theirs).await.unwrap();
        for room_id in [&private, &theirs] {
            for account in [&alice, &bob] {
                crate::federation_rooms::wait_for_members(account, room_id, &members).await;
                assert_eq!(joined_members(account, room_id).await, members, "{room_id}\n{}", log());
            }
        }

        // Media both ways: the node fetches the cluster's from a media worker behind nginx's TLS
        // listener; a media worker fetches the node's.
        use crate::federation_media::{get, upload};
        let ours = upload(&alice, "text/plain", "a.txt", b"from the cluster".to_vec()).await;
        let fetched = get(&bob, &format!("/_matrix/client/v1/media/download/{ours}")).await;
        assert_eq!((fetched.status, fetched.text.as_str()), (200, "from the cluster"), "{}", log());
        let theirs = upload(&bob, "text/plain", "b.txt", b"from the node".to_vec()).await;
        let fetched = get(&alice, &format!("/_matrix/client/v1/media/download/{theirs}")).await;
        assert_eq!((fetched.status, fetched.text.as_str()), (200, "from the node"), "{}", log());

        let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&alice.user_id));
        let unsigned = http.get(format!("{federation_url}{uri}")).send().await.unwrap();
        assert_unauthorized(unsigned, "unsigned, through nginx").await;
        // Client endpoints are not on the federation listener.
        let response = http.get(format!("{federation_url}/_matrix/client/versions")).send().await.unwrap();
        assert_eq!(response.status(), 404);

        // The block list, reloaded on SIGHUP by every process: the federation reader refuses
        // the node, and nothing of the cluster contacts it.
        cluster
            .add_to_section("federation", &format!("blocked_servers = [{:?}]", node.server_name()))
            .unwrap();
        for name in cluster.instance_names() {
            cluster.hangup(name).unwrap();
        }
        let profile = |account: &Account, of: &Account| {
            let (account, path) = (account.clone(), format!("/profile/{}", enc(&of.user_id)));
            async move { account.get(&path).await.unwrap() }
        };
        let refused =
            ganglion_testkit::eventually(Duration::from_secs(10), "the cluster refuses the node", || async {
                let response = profile(&bob, &alice).await;
                Ok((response.status == 403).then_some(response))
            })
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", log()));
        assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{}", refused.text);
        // The node's signed request itself, through nginx to a federation reader.
        let response =
            signed_get_at(&federation_url, &uri, node.server_name(), cluster.server_name(), &node_key).await;
        assert_eq!(response.status(), 403);
        ganglion_testkit::eventually(
            Duration::from_secs(10),
            "the cluster's users are refused the node",
            || async {
                let response = profile(&alice, &bob).await;
                Ok((response.status == 403).then_some(response))
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
        let body = profile(&alice, &bob).await.err(403, "M_FORBIDDEN").clone();
        assert!(body["error"].as_str().is_some_and(|e| e.contains("federation.blocked_servers")), "{body}");
        let room = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        let invite = alice
            .post(&format!("/rooms/{}/invite", enc(&room)), &json!({ "user_id": bob.user_id }))
            .await
            .unwrap();
        let body = invite.err(403, "M_FORBIDDEN").clone();
        assert!(body["error"].as_str().is_some_and(|e| e.contains("federation.blocked_servers")), "{body}");

        // HAProxy's federation frontend (from `ganglion routes --format haproxy`) routes the same.
        cluster.haproxy().await.unwrap();
        let haproxy = cluster.haproxy_federation_url().unwrap();
        let keys = http.get(format!("{haproxy}/_matrix/key/v2/server")).send().await.unwrap();
        assert_eq!(keys.status(), 200);
        assert_eq!(keys.headers()["x-ganglion-instance"], "federation-reader/federation1");
        let keys: Value = keys.json().await.unwrap();
        assert_eq!(keys["server_name"], cluster.server_name());
        let media =
            http.get(format!("{haproxy}/_matrix/federation/v1/media/download/abc")).send().await.unwrap();
        let instance = media.headers()["x-ganglion-instance"].to_str().unwrap().to_owned();
        assert!(instance.starts_with("media/"), "{instance}");
        assert_unauthorized(media, "unsigned media request, through HAProxy").await;
        // Answered by a worker (this cluster does not delegate), not refused by HAProxy.
        let well_known = http.get(format!("{haproxy}/.well-known/matrix/server")).send().await.unwrap();
        assert!(well_known.headers().contains_key("x-ganglion-instance"));
        let body: Value = well_known.json().await.unwrap();
        assert_eq!(body["errcode"], "M_NOT_FOUND");
        let client = http.get(format!("{haproxy}/_matrix/client/versions")).send().await.unwrap();
        assert_eq!(client.status(), 404);
        let body: Value = client.json().await.unwrap();
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    })
    .await
}

/// The cluster's two federation senders share the destinations; each is killed with `kill -9`
/// while the cluster's user sends, and restarted: the node still receives every message, once,
/// in the cluster's order.
#[tokio::test]
async fn a_federation_sender_killed_under_load_loses_nothing() {
    use crate::federation_rooms::{joined_members, wait_for_messages};
    crate::run(async {
        let (cluster, node) = tokio::join!(
            ganglion_testkit::Cluster::start_federating(ServerOptions::default()),
            FederationNode::start()
        );
        let (mut cluster, node) = (cluster.unwrap(), node.unwrap());
        let alice = Api::new(cluster.base_url()).register("alice", crate::PASSWORD).await.unwrap();
        let bob = node.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let room =
            alice.create_room(&json!({ "preset": "public_chat", "room_alias_name": "busy" })).await.unwrap();
        bob.join(&format!("#busy:{}", cluster.server_name())).await.unwrap();
        let mut members = vec![alice.user_id.clone(), bob.user_id.clone()];
        members.sort();
        crate::federation_rooms::wait_for_members(&alice, &room, &members).await;
        assert_eq!(joined_members(&alice, &room).await, members);

        const MESSAGES: usize = 90;
        let sending = {
            let (alice, room) = (alice.clone(), room.clone());
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    alice.send_text(&room, &format!("message {n}")).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        };
        // Whichever sender has the node's share, it dies once midway; for a while none runs.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill("fedsender1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill("fedsender2");
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start_instance("fedsender1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start_instance("fedsender2").await.unwrap();
        sending.await.unwrap();

        let log = || format!("--- node\n{}\n--- cluster\n{}", node.log(), cluster.stderr_logs());
        let on_node = wait_for_messages(&bob, &room, MESSAGES, log).await;
        let on_cluster = wait_for_messages(&alice, &room, MESSAGES, log).await;
        let expected: Vec<(String, String)> =
            (0..MESSAGES).map(|n| (alice.user_id.clone(), format!("message {n}"))).collect();
        assert_eq!(on_cluster, expected);
        assert_eq!(on_node, expected, "{}", log());

        // The senders sent, not the master.
        assert_eq!(transactions_sent(&cluster, "master").await, 0.0);
        assert!(
            transactions_sent(&cluster, "fedsender1").await + transactions_sent(&cluster, "fedsender2").await
                >= 1.0
        );

        // Both senders taken out of instance_map and stopped: after SIGHUP the master sends.
        let mut sections = Vec::new();
        for sender in ["fedsender1", "fedsender2"] {
            sections.push(cluster.remove_from_config(sender).unwrap());
            cluster.kill(sender);
        }
        cluster.hangup("master").unwrap();
        ganglion_testkit::eventually(Duration::from_secs(10), "the master's reload", || async {
            Ok(cluster.stderr_log("master").contains("federation destinations changed").then_some(()))
        })
        .await
        .unwrap();
        let log = || format!("--- node\n{}\n--- cluster\n{}", node.log(), cluster.stderr_logs());
        alice.send_text(&room, "after the senders left").await.unwrap();
        let on_node = wait_for_messages(&bob, &room, MESSAGES + 1, log).await;
        assert_eq!(on_node.last().map(|(_, body)| body.as_str()), Some("after the senders left"));
        let by_master = transactions_sent(&cluster, "master").await;
        assert!(by_master >= 1.0);

        // Added back and started: after SIGHUP the master stops sending and they take over.
        for (sender, section) in ["fedsender1", "fedsender2"].into_iter().zip(&sections) {
            cluster.add_to_config(section).unwrap();
            cluster.start_instance(sender).await.unwrap();
        }
        cluster.hangup("master").unwrap();
        let log = || format!("--- node\n{}\n--- cluster\n{}", node.log(), cluster.stderr_logs());
        ganglion_testkit::eventually(Duration::from_secs(10), "the master's second reload", || async {
            let reloads = cluster.stderr_log("master").matches("federation destinations changed").count();
            Ok((reloads >= 2).then_some(()))
        })
        .await
        .unwrap();
        for n in 0..3 {
            alice.send_text(&room, &format!("senders back {n}")).await.unwrap();
        }
        let on_node = wait_for_messages(&bob, &room, MESSAGES + 4, log).await;
        assert_eq!(on_node.last().map(|(_, body)| body.as_str()), Some("senders back 2"), "{}", log());
        assert_eq!(
            transactions_sent(&cluster, "master").await,
            by_master,
            "the master sent after the senders came back"
        );
        assert!(
            transactions_sent(&cluster, "fedsender1").await + transactions_sent(&cluster, "fedsender2").await
                >= 1.0
        );
    })
    .await
}

/// Transactions process `name` of `cluster` sent that their destination took, from its metrics.
async fn transactions_sent(cluster: &ganglion_testkit::Cluster, name: &str) -> f64 {
    let url = format!("{}/metrics", cluster.metrics_url_of(name));
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let line = r#"ganglion_federation_transactions_total{direction="out",result="ok"} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {line} in {name}'s metrics:\n{text}"))
}

#[tokio::test]
async fn device_keys_and_one_time_keys_across_servers_with_synapse() {
    use crate::e2ee::{device_key_pair, signed_device_keys, upload_one_time_keys};
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let (bob_id, bob_token) = synapse.register("bob", crate::PASSWORD).await.unwrap();
        let whoami = Account::new(synapse.client_api(), &bob_id, &bob_token, "")
            .get("/account/whoami")
            .await
            .unwrap()
            .ok();
        let bob =
            Account::new(synapse.client_api(), &bob_id, &bob_token, whoami["device_id"].as_str().unwrap());

        // Each uploads its device's signed keys and two one-time keys to its own server.
        let alice_keys = signed_device_keys(&alice, &device_key_pair(&alice.device_id), "alice");
        let bob_keys = signed_device_keys(&bob, &device_key_pair(&bob.device_id), "bob");
        for (account, keys) in [(&alice, &alice_keys), (&bob, &bob_keys)] {
            account.post("/keys/upload", &json!({ "device_keys": keys })).await.unwrap().ok();
        }
        upload_one_time_keys(&alice, "a", 2).await;
        upload_one_time_keys(&bob, "b", 2).await;

        // Each server's client asks the other server for its user's keys.
        let seen_by_bob =
            bob.post("/keys/query", &json!({ "device_keys": { &alice.user_id: [] } })).await.unwrap().ok();
        assert_eq!(
            seen_by_bob["device_keys"][&alice.user_id][&alice.device_id]["keys"],
            alice_keys["keys"],
            "{seen_by_bob}\n{}",
            synapse.log()
        );
        let seen_by_alice =
            alice.post("/keys/query", &json!({ "device_keys": { &bob_id: [] } })).await.unwrap().ok();
        assert_eq!(
            seen_by_alice["device_keys"][&bob_id][&bob.device_id]["keys"], bob_keys["keys"],
            "{seen_by_alice}"
        );
        assert_eq!(seen_by_alice["failures"], json!({}));
        // A server that cannot be reached is a failure, beside the answers of those that can.
        let nowhere = format!("@carol:127.0.0.1:{}", ganglion_testkit::free_port());
        let mixed = alice
            .post(
                "/keys/query",
                &json!({ "device_keys": { &bob_id: [], &nowhere: [], &alice.user_id: [] }, "timeout": 5000 }),
            )
            .await
            .unwrap()
            .ok();
        assert!(mixed["device_keys"][&bob_id][&bob.device_id].is_object(), "{mixed}");
        assert!(mixed["device_keys"][&alice.user_id][&alice.device_id].is_object(), "{mixed}");
        assert!(mixed["failures"][nowhere.split_once(':').unwrap().1].is_object(), "{mixed}");

        // `/user/devices`, signed as Synapse (with its key file): Alice's devices with their keys.
        let uri = format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id));
        let synapse_key = {
            use base64::Engine as _;
            let text = std::fs::read_to_string(synapse.dir().join("signing.key")).unwrap();
            let parts: Vec<&str> = text.split_whitespace().collect();
            let seed = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(parts[2].trim_end_matches('='))
                .unwrap();
            Ed25519KeyPair::from_der(&pkcs8_of_seed(&seed), parts[1].to_owned()).unwrap()
        };
        let listed: Value = signed_get_at(
            &ganglion.federation_url(),
            &uri,
            synapse.server_name(),
            ganglion.server_name(),
            &synapse_key,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(listed["user_id"], alice.user_id, "{listed}");
        let device = &listed["devices"][0];
        assert_eq!(device["device_id"], alice.device_id, "{listed}");
        assert_eq!(device["keys"]["keys"], alice_keys["keys"], "{listed}");
        assert!(listed["stream_id"].is_i64(), "{listed}");

        // One-time keys: each claim hands out another key, across servers, until none are left.
        let claim = |account: &Account, user: &str, device: &str| {
            let (account, body) =
                (account.clone(), json!({ "one_time_keys": { user: { device: "curve25519" } } }));
            async move { account.post("/keys/claim", &body).await.unwrap().ok() }
        };
        let first = claim(&alice, &bob_id, &bob.device_id).await;
        let second = claim(&alice, &bob_id, &bob.device_id).await;
        let (first, second) = (
            &first["one_time_keys"][&bob_id][&bob.device_id],
            &second["one_time_keys"][&bob_id][&bob.device_id],
        );
        assert!(first.as_object().is_some_and(|keys| keys.len() == 1), "{first}");
        assert!(second.as_object().is_some_and(|keys| keys.len() == 1), "{second}");
        assert_ne!(first, second);
        let third = claim(&alice, &bob_id, &bob.device_id).await;
        assert!(
            third["one_time_keys"].get(&bob_id).is_none_or(|user| user.get(&bob.device_id).is_none()),
            "{third}"
        );
        let claimed_by_bob = claim(&bob, &alice.user_id, &alice.device_id).await;
        let key = &claimed_by_bob["one_time_keys"][&alice.user_id][&alice.device_id];
        assert!(key.as_object().is_some_and(|keys| keys.len() == 1), "{claimed_by_bob}\n{}", synapse.log());
    })
    .await
}

#[tokio::test]
async fn servers_outside_the_allow_list_are_refused_both_ways_and_the_lists_reload_on_sighup() {
    crate::run(async {
        let (a, b, c) =
            tokio::join!(FederationNode::start(), FederationNode::start(), FederationNode::start());
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let alice = a.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = b.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let carol = c.client_api().register("carol", crate::PASSWORD).await.unwrap();
        for account in [&alice, &bob, &carol] {
            set_displayname(account, "someone").await;
        }
        let profile = |account: &Account, of: &Account| {
            let (account, path) = (account.clone(), format!("/profile/{}", enc(&of.user_id)));
            async move { account.get(&path).await.unwrap() }
        };
        // Open by default.
        profile(&alice, &carol).await.ok();

        // C federates with B only, from the next SIGHUP on.
        c.reconfigure(&format!("allowed_servers = [\"{}\"]", b.server_name())).unwrap();
        let refused =
            ganglion_testkit::eventually(std::time::Duration::from_secs(10), "C refuses A", || async {
                let response = profile(&alice, &carol).await;
                Ok((response.status == 403).then_some(response))
            })
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", c.log()));
        assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{}", refused.text);
        // A's signed request itself gets 403 from C, before C fetches anything of A's.
        let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&carol.user_id));
        let response = signed_get(&c, &uri, a.server_name(), c.server_name(), &node_key(&a)).await;
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
        // And C never contacts A: its user's query is refused at home.
        let response = profile(&carol, &alice).await;
        let body = response.err(403, "M_FORBIDDEN");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("federation.allowed_servers")), "{body}");
        // B is still fine both ways.
        profile(&bob, &carol).await.ok();
        profile(&carol, &bob).await.ok();

        // Wildcards let A back in; the block list wins over them and shuts B out.
        c.reconfigure(&format!(
            "allowed_servers = [\"127.0.0.1:*\"]\nblocked_servers = [\"{}\"]",
            b.server_name()
        ))
        .unwrap();
        ganglion_testkit::eventually(std::time::Duration::from_secs(10), "C lets A in again", || async {
            Ok((profile(&alice, &carol).await.status == 200).then_some(()))
        })
        .await
        .unwrap();
        profile(&carol, &alice).await.ok();
        let body = profile(&carol, &bob).await.err(403, "M_FORBIDDEN").clone();
        assert!(body["error"].as_str().is_some_and(|e| e.contains("federation.blocked_servers")), "{body}");
        profile(&bob, &carol).await.err(403, "M_FORBIDDEN");
    })
    .await
}

/// `scripts/federation-node.sh` without `GANGLION_BIN` runs the release build of the target
/// directory (here one made for the test, holding a copy of the binary under test), as its
/// header says.
#[tokio::test]
async fn the_node_script_runs_the_release_build_when_ganglion_bin_is_unset() {
    crate::run(async {
        let target = tempfile::tempdir().unwrap();
        let release = target.path().join("release");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::copy(ganglion_testkit::ganglion_binary().unwrap(), release.join("ganglion")).unwrap();
        let node = tempfile::tempdir().unwrap();
        let (client_port, federation_port) = (ganglion_testkit::free_port(), ganglion_testkit::free_port());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/federation-node.sh");
        let run = |args: Vec<String>| {
            let script = script.clone();
            let target = target.path().to_owned();
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(&script)
                    .args(&args)
                    .env_remove("GANGLION_BIN")
                    .env("CARGO_TARGET_DIR", &target)
                    .output()
                    .unwrap()
            })
        };
        let dir = node.path().display().to_string();
        let started =
            run(vec!["start".into(), dir.clone(), client_port.to_string(), federation_port.to_string()])
                .await
                .unwrap();
        let log = || std::fs::read_to_string(node.path().join("ganglion.log")).unwrap_or_default();
        assert!(
            started.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            log()
        );
        let pid = std::fs::read_to_string(node.path().join("ganglion.pid")).unwrap();
        let exe = std::fs::read_link(format!("/proc/{}/exe", pid.trim())).unwrap();
        let api = Api::new(format!("http://127.0.0.1:{client_port}"));
        let alice = api.register("alice", crate::PASSWORD).await;
        let stopped = run(vec!["stop".into(), dir]).await.unwrap();
        assert_eq!(exe, release.join("ganglion"), "the node runs another binary");
        assert_eq!(alice.unwrap().user_id, format!("@alice:127.0.0.1:{federation_port}"));
        assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    })
    .await
}

/// Server names resolved as on the internet: a well-known delegation served by Ganglion, and an
/// SRV record, answered by dnsmasq. `tests/discovery/by-name.sh` runs two embedded Ganglions in
/// network and mount namespaces of its own (so it may bind port 443 and answer for
/// /etc/resolv.conf without touching the machine's) and exchanges profiles, a join and a message.
#[tokio::test]
async fn servers_find_each_other_by_well_known_and_srv() {
    crate::run(async {
        let work = tempfile::tempdir().unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("discovery/by-name.sh");
        let binary = ganglion_testkit::ganglion_binary().unwrap();
        let mut command = tokio::process::Command::new("unshare");
        // Root makes the namespaces directly; anyone else maps themselves to root in a user
        // namespace first.
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            command.arg("--user").arg("--map-root-user");
        }
        command
            .args(["--net", "--mount", "--fork", "bash"])
            .arg(&script)
            .arg(&binary)
            .arg(work.path().join("run"));
        command.kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(180), command.output())
            .await
            .expect("the discovery script did not finish within 180 s")
            .unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("discovered by name both ways"), "{stdout}\n{stderr}");
    })
    .await
}

/// Syncs `account` (from `since`) until a to-device event of `event_type` arrives, for at most
/// 30 s; that event.
async fn to_device_event(account: &Account, event_type: &str, log: impl Fn() -> String) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut since: Option<String> = None;
    while std::time::Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/sync?timeout=2000&since={}", enc(since)),
            None => "/sync?timeout=0".to_owned(),
        };
        let body = account.get(&path).await.unwrap().ok();
        let events = body["to_device"]["events"].as_array().cloned().unwrap_or_default();
        if let Some(event) = events.into_iter().find(|event| event["type"] == event_type) {
            return event;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
    }
    panic!("no {event_type} to-device event for {} within 30 s\n{}", account.user_id, log());
}

#[tokio::test]
async fn to_device_messages_cross_servers_both_ways_with_synapse() {
    crate::run(async {
        let (synapse, ganglion) = tokio::join!(Synapse::start(), FederationNode::start());
        let (synapse, ganglion) = (synapse.unwrap(), ganglion.unwrap());
        let alice = ganglion.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let (bob_id, bob_token) = synapse.register("bob", crate::PASSWORD).await.unwrap();
        let whoami = Account::new(synapse.client_api(), &bob_id, &bob_token, "")
            .get("/account/whoami")
            .await
            .unwrap()
            .ok();
        let bob =
            Account::new(synapse.client_api(), &bob_id, &bob_token, whoami["device_id"].as_str().unwrap());

        let to_bob = json!({ "messages": { &bob.user_id: { &bob.device_id: { "from": "alice", "n": 1 } } } });
        alice.put("/sendToDevice/org.example.ping/txn1", &to_bob).await.unwrap().ok();
        // A client's retry is the same message: it arrives once.
        alice.put("/sendToDevice/org.example.ping/txn1", &to_bob).await.unwrap().ok();
        let event =
            to_device_event(&bob, "org.example.ping", || format!("{}\n{}", synapse.log(), ganglion.log()))
                .await;
        assert_eq!(event["sender"], alice.user_id);
        assert_eq!(event["content"], json!({ "from": "alice", "n": 1 }));

        let to_alice = json!({ "messages": { &alice.user_id: { "*": { "from": "bob" } } } });
        bob.put("/sendToDevice/org.example.pong/txn1", &to_alice).await.unwrap().ok();
        let event =
            to_device_event(&alice, "org.example.pong", || format!("{}\n{}", ganglion.log(), synapse.log()))
                .await;
        assert_eq!(event["sender"], bob.user_id);
        assert_eq!(event["content"], json!({ "from": "bob" }));
    })
    .await
}

#[tokio::test]
async fn to_device_messages_wait_for_a_peer_that_is_down() {
    crate::run(async {
        let (a, b) = tokio::join!(FederationNode::start(), FederationNode::start());
        let (a, mut b) = (a.unwrap(), b.unwrap());
        let alice = a.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let bob = b.client_api().register("bob", crate::PASSWORD).await.unwrap();
        b.stop().await.unwrap();
        for n in 0..3 {
            let body = json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": n } } } });
            alice.put(&format!("/sendToDevice/org.example.queued/t{n}"), &body).await.unwrap().ok();
        }
        // A restarts too while B is down: the queue is in its database.
        let mut a = a;
        a.stop().await.unwrap();
        a.start_again().await.unwrap();
        b.start_again().await.unwrap();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let mut since: Option<String> = None;
        while seen.len() < 3 && std::time::Instant::now() < deadline {
            let path = match &since {
                Some(since) => format!("/sync?timeout=2000&since={}", enc(since)),
                None => "/sync?timeout=0".to_owned(),
            };
            let body = bob.get(&path).await.unwrap().ok();
            for event in body["to_device"]["events"].as_array().cloned().unwrap_or_default() {
                seen.push(event["content"]["n"].as_i64().unwrap());
            }
            since = body["next_batch"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, vec![0, 1, 2], "{}\n{}", a.log(), b.log());
    })
    .await
}

/// A `PUT` of `uri` on `to` with a JSON `body`, signed as `from` (with its key file).
async fn signed_put(
    to: &FederationNode,
    uri: &str,
    from: &FederationNode,
    body: &Value,
) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let header = x_matrix("PUT", uri, &bytes, from.server_name(), to.server_name(), &node_key(from));
    send_signed(reqwest::Method::PUT, &to.federation_url(), uri, header, Some(bytes)).await
}

#[tokio::test]
async fn a_transaction_is_applied_once_and_bad_ones_are_refused() {
    crate::run(async {
        let (a, b) = tokio::join!(FederationNode::start(), FederationNode::start());
        let (a, b) = (a.unwrap(), b.unwrap());
        let bob = b.client_api().register("bob", crate::PASSWORD).await.unwrap();
        let sender = format!("@alice:{}", a.server_name());
        let edu = |message_id: &str, n: i64| {
            json!({ "edu_type": "m.direct_to_device", "content": {
                "sender": sender, "type": "org.example.once", "message_id": message_id,
                "messages": { &bob.user_id: { "*": { "n": n } } },
            }})
        };
        let transaction = |edus: Vec<Value>, pdus: Vec<Value>| {
            json!({ "origin": a.server_name(), "origin_server_ts": 1, "pdus": pdus, "edus": edus })
        };
        // The same transaction twice: the same answer, one message.
        for _ in 0..2 {
            let response = signed_put(&b, "/_matrix/federation/v1/send/t1", &a, &transaction(vec![edu("m1", 1)], vec![])).await;
            assert_eq!(response.status(), 200, "{}", b.log());
        }
        // A new transaction with the same message id: the message is not delivered again either.
        let response = signed_put(&b, "/_matrix/federation/v1/send/t2", &a, &transaction(vec![edu("m1", 1), edu("m2", 2)], vec![])).await;
        assert_eq!(response.status(), 200);
        let event = to_device_event(&bob, "org.example.once", || b.log()).await;
        assert_eq!(event["content"]["n"], 1);
        let body = bob.get("/sync?timeout=0").await.unwrap().ok();
        let ns: Vec<i64> = body["to_device"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|event| event["content"]["n"].as_i64())
            .collect();
        assert_eq!(ns, vec![1, 2], "each message once: {body}");

        // More than 50 PDUs: refused whole.
        let pdus = (0..51).map(|n| json!({ "event_id": format!("$e{n}") })).collect();
        let response = signed_put(&b, "/_matrix/federation/v1/send/t3", &a, &transaction(vec![], pdus)).await;
        assert_eq!(response.status(), 400);
        // A transaction naming another origin than its signer.
        let mut forged = transaction(vec![edu("m3", 3)], vec![]);
        forged["origin"] = json!("elsewhere.example");
        let response = signed_put(&b, "/_matrix/federation/v1/send/t4", &a, &forged).await;
        assert_eq!(response.status(), 403);
        // Not JSON.
        let response = signed_put(&b, "/_matrix/federation/v1/send/t5", &a, &json!("a string")).await;
        assert_eq!(response.status(), 400);

        // PDUs into a room of B's: each is answered by its id, never with a 5xx, and the room
        // is left as it was.
        let room_id = bob.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
        bob.send_text(&room_id, "mine").await.unwrap();
        let state = bob.get(&format!("/rooms/{}/state", enc(&room_id))).await.unwrap().ok();
        let power_levels = state
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["type"] == "m.room.power_levels")
            .map(|event| event["event_id"].as_str().unwrap().to_owned())
            .unwrap();
        let a_key = node_key(&a);
        let message = |body: &str| {
            json!({
                "room_id": room_id, "sender": sender, "type": "m.room.message",
                "content": { "msgtype": "m.text", "body": body },
                "auth_events": [power_levels], "prev_events": [], "depth": 10,
                "origin_server_ts": 1_700_000_000_000_i64,
            })
        };
        // Signed properly, but its sender is not in the room: rejected by its auth events.
        let (outsider_id, outsider) = signed_pdu(&a_key, a.server_name(), message("let me in"));
        // Its signature broken.
        let (forged_id, mut forged_pdu) = signed_pdu(&a_key, a.server_name(), message("forged"));
        forged_pdu["signatures"][a.server_name()]
            .as_object_mut()
            .unwrap()
            .values_mut()
            .for_each(|signature| *signature = json!("AAAA"));
        // Of a room B is not in, and without a room: dropped, there is no id to answer under.
        let mut elsewhere = message("elsewhere");
        elsewhere["room_id"] = json!("!unknown:elsewhere.example");
        let (_, elsewhere) = signed_pdu(&a_key, a.server_name(), elsewhere);
        let pdus = vec![outsider, forged_pdu, elsewhere, json!({ "event_id": "$x" })];
        let response = signed_put(&b, "/_matrix/federation/v1/send/t6", &a, &transaction(vec![], pdus)).await;
        assert_eq!(response.status(), 200, "{}", b.log());
        let answer: Value = response.json().await.unwrap();
        let error = |id: &str| answer["pdus"][id]["error"].as_str().map(str::to_owned);
        assert!(error(&outsider_id).is_some_and(|e| e.contains("auth events")), "{answer}");
        assert!(error(&forged_id).is_some_and(|e| e.contains("signature")), "{answer}");
        assert_eq!(answer["pdus"].as_object().unwrap().len(), 2, "{answer}");
        // The rejection is recorded: sent again, the same event is refused for the same reason.
        let (_, outsider) = signed_pdu(&a_key, a.server_name(), message("let me in"));
        let response =
            signed_put(&b, "/_matrix/federation/v1/send/t7", &a, &transaction(vec![], vec![outsider])).await;
        let again: Value = response.json().await.unwrap();
        assert_eq!(again["pdus"][&outsider_id], answer["pdus"][&outsider_id], "{again}");
        // A join template for a server that does not support the room's version.
        let uri = format!("/_matrix/federation/v1/make_join/{}/{}?ver=1&ver=2", enc(&room_id), enc(&sender));
        let response = signed_get(&b, &uri, a.server_name(), b.server_name(), &a_key).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!((&body["errcode"], &body["room_version"]), (&json!("M_INCOMPATIBLE_ROOM_VERSION"), &json!("12")));
        // Nor for a user of another server than the one asking.
        let uri = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", enc(&room_id), enc(&bob.user_id));
        let response = signed_get(&b, &uri, a.server_name(), b.server_name(), &a_key).await;
        assert_eq!(response.status(), 403);
        bob.send_text(&room_id, "still mine").await.unwrap();
        let history = bob.get(&format!("/rooms/{}/messages?dir=b&limit=50", enc(&room_id))).await.unwrap().ok();
        let bodies: Vec<&str> = history["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|event| event["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, vec!["still mine", "mine"]);
    })
    .await
}

/// `object` as a PDU of a room v12 hashed and signed by `server` with `key`: its event id and
/// JSON.
pub(crate) fn signed_pdu(key: &Ed25519KeyPair, server: &str, object: Value) -> (String, Value) {
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(object).unwrap() else {
        panic!("not an object");
    };
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    ruma::signatures::hash_and_sign_event(server, key, &mut object, &rules.redaction).unwrap();
    let event_id = format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap());
    (event_id, serde_json::to_value(&object).unwrap())
}

/// A PKCS#8 v1 document for an ed25519 seed (Synapse's signing key file holds the bare seed).
fn pkcs8_of_seed(seed: &[u8]) -> Vec<u8> {
    let mut document =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    document.extend_from_slice(seed);
    document
}
