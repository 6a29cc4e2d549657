//! The keys of local users as `/keys/query` (and another server's `/user/keys/query`) answers
//! them: device keys with the signatures made on them, and cross-signing keys.

use std::collections::{BTreeMap, BTreeSet};

use ganglion_storage::{
    Conn, accounts as account_store,
    keys::{self as key_store, CrossSigningKeyType},
};
use serde_json::{Map, Value, json};

/// The `/keys/query` answer for local `users` (each with its wanted devices, all when empty),
/// as `requester` may see it: user-signing keys, and signatures made with them, only its own.
/// `None` is another server asking (`/user/keys/query`): it gets no user-signing keys.
pub async fn key_query(
    conn: &mut Conn,
    requester: Option<&str>,
    users: &[String],
    wanted: &BTreeMap<String, BTreeSet<String>>,
) -> ganglion_storage::Result<Map<String, Value>> {
    let mut signatures: BTreeMap<(String, String), Vec<key_store::KeySignatureRow>> = BTreeMap::new();
    for signature in key_store::signatures_on_keys_of_users(conn, users).await? {
        // A signature with someone's user-signing key is that someone's business.
        if signature.signer_user_id != signature.target_user_id
            && Some(signature.signer_user_id.as_str()) != requester
        {
            continue;
        }
        let key = (signature.target_user_id.clone(), signature.target_key_id.clone());
        signatures.entry(key).or_default().push(signature);
    }
    let with_signatures = |user: &str, key_id: &str, mut object: Value| {
        if let Some(rows) = signatures.get(&(user.to_owned(), key_id.to_owned())) {
            for row in rows {
                object["signatures"][row.signer_user_id.as_str()][row.signer_key_id.as_str()] =
                    json!(row.signature);
            }
        }
        object
    };

    let mut device_keys = Map::new();
    for user in users {
        device_keys.insert(user.clone(), json!({}));
    }
    let names: BTreeMap<(String, String), Option<String>> = account_store::device_names_of_users(conn, users)
        .await?
        .into_iter()
        .map(|(user, device, name)| ((user, device), name))
        .collect();
    for row in key_store::device_keys_of_users(conn, users).await? {
        let devices = &wanted[&row.user_id];
        if !devices.is_empty() && !devices.contains(&row.device_id) {
            continue;
        }
        let Ok(mut object) = serde_json::from_str::<Value>(&row.keys_json) else { continue };
        if let Some(Some(name)) = names.get(&(row.user_id.clone(), row.device_id.clone())) {
            object["unsigned"] = json!({ "device_display_name": name });
        }
        let object = with_signatures(&row.user_id, &row.device_id, object);
        device_keys[row.user_id.as_str()][row.device_id.as_str()] = object;
    }

    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    for row in key_store::cross_signing_keys_of_users(conn, users).await? {
        let Ok(object) = serde_json::from_str::<Value>(&row.keys_json) else { continue };
        match row.key_type {
            CrossSigningKeyType::Master => {
                let public_key = public_key_of(&object).unwrap_or_default();
                let object = with_signatures(&row.user_id, &public_key, object);
                master_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::SelfSigning => {
                self_signing_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::UserSigning if Some(row.user_id.as_str()) == requester => {
                user_signing_keys.insert(row.user_id, object);
            }
            CrossSigningKeyType::UserSigning => {}
        }
    }
    let mut answer = Map::new();
    answer.insert("device_keys".into(), Value::Object(device_keys));
    answer.insert("master_keys".into(), Value::Object(master_keys));
    answer.insert("self_signing_keys".into(), Value::Object(self_signing_keys));
    answer.insert("user_signing_keys".into(), Value::Object(user_signing_keys));
    Ok(answer)
}

/// The public key of a cross-signing key object: its one `ed25519:` key.
pub fn public_key_of(object: &Value) -> Option<String> {
    let keys = object.get("keys")?.as_object()?;
    keys.keys().find_map(|id| id.strip_prefix("ed25519:")).map(str::to_owned)
}
