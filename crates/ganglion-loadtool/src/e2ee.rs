//! Content shaped like end-to-end encryption's: megolm room events, olm to-device messages and
//! one-time keys. Nothing is encrypted or signed; the server never sees inside ciphertext, so
//! only the shapes and sizes matter, and those follow what real clients send.
//!
//! Ciphertext, keys and signatures are slices of one pool of random base64 characters, so that
//! filling them costs the load tool a copy, not a random number per character.

use serde_json::{Map, Value, json};

pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";
pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";
/// What one-time keys are published and claimed as.
pub const ONE_TIME_KEY_ALGORITHM: &str = "signed_curve25519";

/// What a megolm message adds to its plaintext: version, message index, AES-CBC padding (up to
/// 16 bytes), an 8-byte MAC and a 64-byte ed25519 signature.
pub const MEGOLM_OVERHEAD_BYTES: usize = 100;

/// An olm message (type 1) carrying an `m.room_key` share, the usual to-device message of an
/// encrypted room: about 750 bytes of plaintext and header, 1,000 characters of base64.
pub const OLM_MESSAGE_BYTES: usize = 750;

/// Characters of unpadded base64 for a 32-byte key.
const KEY_CHARS: usize = 43;
/// Characters of unpadded base64 for a 64-byte ed25519 signature.
const SIGNATURE_CHARS: usize = 86;
const POOL_CHARS: usize = 64 * 1024;
const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The length of `bytes` bytes in unpadded base64.
pub fn base64_chars(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// Random base64 text, handed out in slices at moving offsets.
#[derive(Debug, Clone)]
pub struct Noise {
    pool: String,
    next: usize,
}

impl Noise {
    /// A pool of random characters from `seed` (xorshift: cheap, and the same seed gives the
    /// same text).
    pub fn new(seed: u64) -> Noise {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pool = (0..POOL_CHARS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(BASE64_ALPHABET[(state >> 58) as usize])
            })
            .collect();
        Noise { pool, next: 0 }
    }

    /// `chars` characters of base64 (at most the pool's 64 Ki).
    pub fn base64(&mut self, chars: usize) -> &str {
        let chars = chars.min(POOL_CHARS);
        if self.next + chars > POOL_CHARS {
            self.next = 0;
        }
        let start = self.next;
        self.next += chars;
        &self.pool[start..start + chars]
    }

    /// A curve25519 or ed25519 public key: 32 bytes, unpadded base64. Its last character
    /// carries 4 bits and 2 zero bits, so it is `A` (or any character whose low 2 bits are 0) for
    /// a strict decoder.
    pub fn key(&mut self) -> String {
        let mut key = self.base64(KEY_CHARS - 1).to_owned();
        key.push('A');
        key
    }
}

/// A sender's outbound megolm session: what every `m.room.encrypted` event it sends carries
/// besides the ciphertext.
#[derive(Debug, Clone)]
pub struct MegolmSession {
    pub sender_key: String,
    pub session_id: String,
    pub device_id: String,
}

impl MegolmSession {
    pub fn new(noise: &mut Noise, device_id: &str) -> MegolmSession {
        MegolmSession { sender_key: noise.key(), session_id: noise.key(), device_id: device_id.to_owned() }
    }

    /// The `m.room.encrypted` content for `plaintext_bytes` of plaintext (the event a client
    /// encrypts: its type, content and room ID), with `extra` fields added in the clear.
    pub fn content(&self, plaintext_bytes: usize, noise: &mut Noise, extra: Map<String, Value>) -> Value {
        let mut content = extra;
        content.insert("algorithm".into(), json!(MEGOLM_ALGORITHM));
        let ciphertext = noise.base64(base64_chars(plaintext_bytes + MEGOLM_OVERHEAD_BYTES));
        content.insert("ciphertext".into(), json!(ciphertext));
        content.insert("sender_key".into(), json!(self.sender_key));
        content.insert("session_id".into(), json!(self.session_id));
        content.insert("device_id".into(), json!(self.device_id));
        Value::Object(content)
    }
}

/// The `m.room.encrypted` to-device content for the device whose identity key is
/// `recipient_key`, with `extra` fields added in the clear.
pub fn olm_content(
    sender_key: &str,
    recipient_key: &str,
    noise: &mut Noise,
    extra: Map<String, Value>,
) -> Value {
    let mut content = extra;
    content.insert("algorithm".into(), json!(OLM_ALGORITHM));
    content.insert("sender_key".into(), json!(sender_key));
    let body = noise.base64(base64_chars(OLM_MESSAGE_BYTES));
    content.insert("ciphertext".into(), json!({ recipient_key: { "type": 1, "body": body } }));
    Value::Object(content)
}

/// `count` one-time keys numbered from `first`, as `one_time_keys` of `/keys/upload`: signed
/// curve25519 keys whose signature is random (the server checks it only for devices that
/// uploaded device keys, which the load tool's devices do not).
pub fn one_time_keys(user_id: &str, device_id: &str, first: u64, count: u64, noise: &mut Noise) -> Value {
    let keys: Map<String, Value> = (first..first + count)
        .map(|number| {
            (format!("{ONE_TIME_KEY_ALGORITHM}:{number:011}"), signed_key(user_id, device_id, noise, false))
        })
        .collect();
    Value::Object(keys)
}

/// A fallback key, as `fallback_keys` of `/keys/upload`.
pub fn fallback_keys(user_id: &str, device_id: &str, noise: &mut Noise) -> Value {
    json!({ format!("{ONE_TIME_KEY_ALGORITHM}:fallback"): signed_key(user_id, device_id, noise, true) })
}

fn signed_key(user_id: &str, device_id: &str, noise: &mut Noise, fallback: bool) -> Value {
    let signature = noise.base64(SIGNATURE_CHARS).to_owned();
    let mut key = json!({
        "key": noise.key(),
        "signatures": { user_id: { format!("ed25519:{device_id}"): signature } },
    });
    if fallback {
        key["fallback"] = json!(true);
    }
    key
}

#[cfg(test)]
mod tests;
