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
