//! Other servers' signing keys: what a signature from them is checked against.
//!
//! A key is asked for together with the instant the signature was made; it answers only if the
//! key was valid then (`valid_until_ts` of a current key, `expired_ts` of an old one). Keys live
//! in memory and in the database; a missing or outdated one is fetched from its server
//! (`/_matrix/key/v2/server`), else from the trusted notaries (`/_matrix/key/v2/query`), one
//! fetch per server at a time, and a server that could not be asked is not asked again for a
//! short while.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use ganglion_config::{FederationConfig, TrustedKeyServer};
use ganglion_events::ServerKey;
use ganglion_storage::{Db, server_keys::StoredServerKey};
use parking_lot::Mutex;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName, serde::Base64, signatures::PublicKeyMap};
use serde_json::{Value, json};

use crate::FederationClient;

/// The spec caps how far ahead a server's key answer may be trusted (room versions 5 and later).
const MAX_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// After a failed fetch, how long the server is not asked again.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("no key {key_id} of {server} valid at {at_ms} could be found: {reason}")]
    NotFound { server: String, key_id: String, at_ms: i64, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] ganglion_storage::StorageError),
}

pub struct KeyRing {
    db: Db,
    client: Arc<FederationClient>,
    own: Arc<ServerKey>,
    notaries: Vec<TrustedKeyServer>,
    known: Mutex<HashMap<String, Vec<StoredServerKey>>>,
    /// One fetch per server at a time; the instant of its last failure.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl KeyRing {
    pub fn new(
        db: Db,
        client: Arc<FederationClient>,
        own: Arc<ServerKey>,
        config: &FederationConfig,
    ) -> KeyRing {
        KeyRing {
            db,
            client,
            own,
            notaries: config.trusted_key_servers.clone(),
            known: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The keys to check a signature of `server` made at `at_ms` with `key_ids`, as a
    /// [`PublicKeyMap`] for ruma's verification.
    pub async fn public_keys(
        &self,
        server: &ServerName,
        key_ids: &[&str],
        at_ms: i64,
    ) -> Result<PublicKeyMap, KeyRingError> {
        let mut keys = BTreeMap::new();
        for key_id in key_ids {
            keys.insert((*key_id).to_owned(), self.verify_key(server, key_id, at_ms).await?);
        }
        Ok(BTreeMap::from([(server.as_str().to_owned(), keys)]))
    }

    /// The public key `key_id` of `server`, valid at `at_ms`.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ms: i64,
    ) -> Result<Base64, KeyRingError> {
        if server.as_str() == self.own.server_name {
            return self.own_key(key_id).ok_or_else(|| not_found(server, key_id, at_ms, "not a key of ours"));
        }
        if let Some(key) = self.known_key(server, key_id, at_ms) {
            return Ok(key);
        }
        let mut conn = self.db.conn().await?;
        let stored = ganglion_storage::server_keys::keys_of_server(&mut conn, server.as_str()).await?;
        drop(conn);
        self.known.lock().insert(server.as_str().to_owned(), stored);
        if let Some(key) = self.known_key(server, key_id, at_ms) {
            return Ok(key);
        }
        let gate = self.fetching.lock().entry(server.as_str().to_owned()).or_default().clone();
        let mut last_failure = gate.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.known_key(server, key_id, at_ms) {
            return Ok(key);
        }
        if let Some(failed) = *last_failure
            && failed.elapsed() < FAILED_FETCH_BACKOFF
        {
            return Err(not_found(server, key_id, at_ms, "its server could not be asked a moment ago"));
        }
        match self.fetch(server, Some((key_id, at_ms))).await {
            Ok(()) => *last_failure = None,
            Err(reason) => {
                *last_failure = Some(Instant::now());
                return Err(not_found(server, key_id, at_ms, &reason));
            }
        }
        self.known_key(server, key_id, at_ms)
            .ok_or_else(|| not_found(server, key_id, at_ms, "neither its server nor a notary has it"))
    }

    fn own_key(&self, key_id: &str) -> Option<Base64> {
        if key_id == self.own.key_id() {
            return Base64::parse(self.own.public_key()).ok();
        }
        let retired = self.own.retired.iter().find(|retired| retired.key_id == key_id)?;
        Base64::parse(&retired.public_key).ok()
    }

    fn known_key(&self, server: &ServerName, key_id: &str, at_ms: i64) -> Option<Base64> {
        let known = self.known.lock();
        let key = known.get(server.as_str())?.iter().find(|key| key.key_id == key_id)?;
        if key.valid_until_ts < at_ms {
            return None;
        }
        Base64::parse(&key.verify_key).ok()
    }

    /// Fetches `server`'s keys from it, else from the notaries (asked for `wanted`, a key id and
    /// the instant it must be valid at, when there is one), and stores them.
    async fn fetch(&self, server: &ServerName, wanted: Option<(&str, i64)>) -> Result<(), String> {
        let direct = match self.client.get_unsigned(server, "/_matrix/key/v2/server").await {
            Ok(answer) => match checked_key_answer(server, answer) {
                Ok(checked) => return self.store(server, checked).await,
                Err(error) => error,
            },
            Err(error) => error.to_string(),
        };
        tracing::info!(%server, error = %direct, "fetching a server's keys from it failed");
        let mut reasons = vec![direct];
        for notary in &self.notaries {
            match self.fetch_from_notary(server, notary, wanted).await {
                Ok(checked) => return self.store(server, checked).await,
                Err(error) => {
                    tracing::info!(%server, notary = %notary.server_name, %error, "a notary did not vouch for a server's keys");
                    reasons.push(format!("notary {}: {error}", notary.server_name));
                }
            }
        }
        Err(reasons.join("; "))
    }

    async fn fetch_from_notary(
        &self,
        server: &ServerName,
        notary: &TrustedKeyServer,
        wanted: Option<(&str, i64)>,
    ) -> Result<CheckedKeys, String> {
        let notary_name = ServerName::parse(&notary.server_name).map_err(|e| e.to_string())?;
        // Synapse answers an empty criteria object from its cache only; naming the key makes it
        // fetch.
        let criteria = match wanted {
            Some((key_id, at_ms)) => json!({ key_id: { "minimum_valid_until_ts": at_ms } }),
            None => json!({}),
        };
        let query = json!({ "server_keys": { server.as_str(): criteria } });
        let answer = self
            .client
            .post_unsigned(&notary_name, "/_matrix/key/v2/query", &query)
            .await
            .map_err(|error| error.to_string())?;
        let mut notary_keys = BTreeMap::new();
        for (key_id, key) in &notary.verify_keys {
            notary_keys.insert(key_id.clone(), Base64::parse(key).map_err(|e| e.to_string())?);
        }
        let notary_map: PublicKeyMap = BTreeMap::from([(notary.server_name.clone(), notary_keys)]);
        let answers = answer.get("server_keys").and_then(Value::as_array).cloned().unwrap_or_default();
        for answer in answers {
            if answer.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
                continue;
            }
            verify_signed_by(&answer, &notary_map)
                .map_err(|error| format!("the notary's signature does not verify: {error}"))?;
            return checked_key_answer(server, answer);
        }
        Err("its answer has no keys of that server".into())
    }

    async fn store(&self, server: &ServerName, checked: CheckedKeys) -> Result<(), String> {
        let mut conn = self.db.conn().await.map_err(|e| e.to_string())?;
        ganglion_storage::server_keys::store_server_keys(
            &mut conn,
            server.as_str(),
            &checked.keys,
            &checked.response,
            checked.valid_until_ts,
            crate::now_ms(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let stored = ganglion_storage::server_keys::keys_of_server(&mut conn, server.as_str())
            .await
            .map_err(|e| e.to_string())?;
        self.known.lock().insert(server.as_str().to_owned(), stored);
        Ok(())
    }

    /// The key answers of `server` for a notary query: this server's own (freshly signed), or
    /// the stored answer of another, fetched again if it would not be valid at
    /// `minimum_valid_until_ts`. Each carries the origin's signatures; the caller adds ours.
    pub async fn answers_for_notary(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: i64,
        validity_ms: i64,
    ) -> Result<Vec<CanonicalJsonObject>, KeyRingError> {
        let now = crate::now_ms();
        if server.as_str() == self.own.server_name {
            return Ok(vec![crate::own_keys::own_key_response(&self.own, now, validity_ms)]);
        }
        let stored = {
            let mut conn = self.db.conn().await?;
            ganglion_storage::server_keys::key_response_of_server(&mut conn, server.as_str()).await?
        };
        let fresh_enough = |valid_until: i64| valid_until >= minimum_valid_until_ts.max(now);
        let response = match stored {
            Some((response, valid_until)) if fresh_enough(valid_until) => Some(response),
            stale => {
                let gate = self.fetching.lock().entry(server.as_str().to_owned()).or_default().clone();
                let _one_at_a_time = gate.lock().await;
                match self.fetch(server, None).await {
                    Ok(()) => {
                        let mut conn = self.db.conn().await?;
                        ganglion_storage::server_keys::key_response_of_server(&mut conn, server.as_str())
                            .await?
                            .map(|(response, _)| response)
                    }
                    // The spec lets a notary answer what it has when the origin is down.
                    Err(_) => stale.map(|(response, _)| response),
                }
            }
        };
        Ok(response
            .and_then(|response| serde_json::from_str::<Value>(&response).ok())
            .and_then(|value| canonical(value).ok())
            .into_iter()
            .collect())
    }
}

/// A key answer whose self-signature verified.
struct CheckedKeys {
    keys: Vec<StoredServerKey>,
    response: String,
    valid_until_ts: i64,
}

/// Checks a `/_matrix/key/v2/server` answer of `server`: its name, and a signature by one of the
/// keys it lists as current.
fn checked_key_answer(server: &ServerName, answer: Value) -> Result<CheckedKeys, String> {
    if answer.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err("the answer names another server".into());
    }
    let valid_until_ts = answer.get("valid_until_ts").and_then(Value::as_i64).ok_or("no valid_until_ts")?;
    let valid_until_ts = valid_until_ts.min(crate::now_ms() + MAX_VALIDITY_MS);
    let mut keys = Vec::new();
    let mut current = BTreeMap::new();
    for (key_id, key) in answer.get("verify_keys").and_then(Value::as_object).ok_or("no verify_keys")? {
        let public = key.get("key").and_then(Value::as_str).ok_or("a verify key without its key")?;
        current.insert(key_id.clone(), Base64::parse(public).map_err(|e| e.to_string())?);
        keys.push(StoredServerKey { key_id: key_id.clone(), verify_key: public.to_owned(), valid_until_ts });
    }
    if current.is_empty() {
        return Err("no current key".into());
    }
    if let Some(old) = answer.get("old_verify_keys").and_then(Value::as_object) {
        for (key_id, key) in old {
            let (Some(public), Some(expired_ts)) =
                (key.get("key").and_then(Value::as_str), key.get("expired_ts").and_then(Value::as_i64))
            else {
                continue;
            };
            keys.push(StoredServerKey {
                key_id: key_id.clone(),
                verify_key: public.to_owned(),
                valid_until_ts: expired_ts,
            });
        }
    }
    let map: PublicKeyMap = BTreeMap::from([(server.as_str().to_owned(), current)]);
    verify_signed_by(&answer, &map)
        .map_err(|error| format!("the self-signature does not verify: {error}"))?;
    let response = serde_json::to_string(&answer).map_err(|e| e.to_string())?;
    Ok(CheckedKeys { keys, response, valid_until_ts })
}

/// Checks the signatures of the entities of `keys` on `answer`, ignoring others' (a notary's
/// answer carries the origin's and the notary's; ruma's check wants keys for every signer).
fn verify_signed_by(answer: &Value, keys: &PublicKeyMap) -> Result<(), String> {
    let mut object = canonical(answer.clone())?;
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|entity, _| keys.contains_key(entity));
    }
    ruma::signatures::verify_json(keys, &object).map_err(|error| error.to_string())
}

fn canonical(value: Value) -> Result<CanonicalJsonObject, String> {
    match CanonicalJsonValue::try_from(value).map_err(|e| e.to_string())? {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err("not a JSON object".into()),
    }
}

fn not_found(server: &ServerName, key_id: &str, at_ms: i64, reason: &str) -> KeyRingError {
    KeyRingError::NotFound {
        server: server.to_string(),
        key_id: key_id.to_owned(),
        at_ms,
        reason: reason.to_owned(),
    }
}
