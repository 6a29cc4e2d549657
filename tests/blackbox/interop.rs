//! Interoperability with a second client crypto stack: a matrix-nio client (Python, its own
//! Olm/Megolm handling) and a matrix-sdk client decrypt each other's messages in an encrypted
//! room, through this server.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use ganglion_testkit::{Backend, python_with_nio, sdk_client};
use matrix_sdk::ruma::OwnedRoomId;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::{
    PASSWORD, SYNC_DEADLINE, account_of,
    e2ee::{send_text, sync_all, until_all_decrypt},
    start,
};

on_all_backends!(a_matrix_nio_client_and_a_matrix_sdk_client_decrypt_each_other);

/// The script's next line, which must start with `prefix`; returns the rest.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, child: &mut Child, prefix: &str) -> String {
    let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await;
    match line {
        Ok(Ok(Some(line))) if line.starts_with(prefix) => line[prefix.len()..].trim().to_owned(),
        other => {
            let _ = child.kill().await;
            panic!("matrix-nio: expected `{prefix}`, got {other:?}");
        }
    }
}

async fn a_matrix_nio_client_and_a_matrix_sdk_client_decrypt_each_other(backend: Backend) {
    let python = tokio::task::spawn_blocking(python_with_nio).await.unwrap().expect("Python with matrix-nio");
    let server = start(backend).await;
    let alice = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    server.register("carol", PASSWORD).await.unwrap();
    sync_all(&[&alice]).await;
    let raw = account_of(&server, &alice);
    let room = raw
        .create_room(&json!({
            "preset": "private_chat",
            "invite": ["@carol:localhost"],
            "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
        }))
        .await
        .unwrap();
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/nio_e2ee.py");
    let mut child = Command::new(python)
        .arg(script)
        .args([
            &server.base_url,
            "@carol:localhost",
            PASSWORD,
            room.as_str(),
            "from matrix-sdk",
            "from matrix-nio",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the matrix-nio script");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let nio_device = expect_line(&mut lines, &mut child, "READY").await;

    // Alice learns of Carol's device from her sync, then shares her room key with it.
    let carol = matrix_sdk::ruma::OwnedUserId::try_from("@carol:localhost").unwrap();
    let device_id = matrix_sdk::ruma::OwnedDeviceId::from(nio_device.as_str());
    let known = async {
        loop {
            sync_all(&[&alice]).await;
            if alice.encryption().get_device(&carol, &device_id).await.unwrap().is_some() {
                return;
            }
        }
    };
    tokio::time::timeout(SYNC_DEADLINE, known).await.expect("Alice learns of Carol's matrix-nio device");
    send_text(&alice, &room_id, "from matrix-sdk").await;
    expect_line(&mut lines, &mut child, "DECRYPTED").await;
    expect_line(&mut lines, &mut child, "SENT").await;
    until_all_decrypt(&[&alice], &room_id, &BTreeSet::from(["from matrix-nio".to_owned()])).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "matrix-nio exited with {status}");
}
