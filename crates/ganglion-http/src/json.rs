//! Body and query extractors that fail with Matrix errors.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
};
use ganglion_types::ErrorClass;
use http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

use crate::MatrixError;

/// A JSON request body. An empty body reads as `{}`; text that is not JSON is `M_NOT_JSON`;
/// JSON of the wrong shape is `M_BAD_JSON`; a body over the limit is `M_TOO_LARGE`.
pub struct MatrixJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MatrixJson<T> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                MatrixError::new(ErrorClass::TooLarge, "Request body too large")
            } else {
                MatrixError::new(ErrorClass::BadJson, rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(MatrixJson)
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MatrixError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|error| MatrixError::new(ErrorClass::NotJson, format!("Content not JSON: {error}")))?;
    serde_json::from_value(value).map_err(|error| MatrixError::bad_json(format!("Invalid JSON: {error}")))
}

/// Query parameters; a malformed one is `M_INVALID_PARAM`.
pub struct MatrixQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for MatrixQuery<T> {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(query).map(MatrixQuery)
    }
}

/// Query strings are decoded into a JSON object of strings (repeated keys become arrays) and
/// then deserialized, so handlers may declare numeric and boolean fields as strings or values.
fn serde_urlencoded_like<T: DeserializeOwned>(query: &str) -> Result<T, MatrixError> {
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        let value = serde_json::Value::String(percent_decode(value)?);
        match object.get_mut(&key) {
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, value]);
            }
            None => {
                object.insert(key, value);
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|error| MatrixError::invalid_param(format!("Invalid query parameter: {error}")))
}

fn percent_decode(text: &str) -> Result<String, MatrixError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| MatrixError::invalid_param("Invalid percent-encoding in query"))?;
                decoded.push(hex);
                index += 2;
            }
            b'%' => return Err(MatrixError::invalid_param("Invalid percent-encoding in query")),
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8(decoded).map_err(|_| MatrixError::invalid_param("Query is not UTF-8"))
}

/// Deserializes a query value that arrives as a string into a number or boolean.
/// `?ts=…&dir=f|b` of `/timestamp_to_event`, which clients and other servers both ask.
#[derive(Debug, serde::Deserialize)]
pub struct AtTimestamp {
    #[serde(default, deserialize_with = "lenient::i64_opt")]
    ts: Option<i64>,
    dir: Option<String>,
}

impl AtTimestamp {
    /// `(ts, forward)`, or the Matrix error for a missing or bad parameter.
    pub fn parse(self) -> crate::MatrixResult<(i64, bool)> {
        let ts = self.ts.ok_or_else(|| crate::MatrixError::missing_param("Missing `ts`"))?;
        match self.dir.as_deref() {
            Some("f") => Ok((ts, true)),
            Some("b") => Ok((ts, false)),
            Some(_) => Err(crate::MatrixError::invalid_param("`dir` must be f or b")),
            None => Err(crate::MatrixError::missing_param("Missing `dir`")),
        }
    }
}

pub mod lenient {
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn u64_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => {
                text.parse().map(Some).map_err(|_| D::Error::custom(format!("not a number: {text}")))
            }
            None => Ok(None),
        }
    }

    pub fn i64_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => {
                text.parse().map(Some).map_err(|_| D::Error::custom(format!("not a number: {text}")))
            }
            None => Ok(None),
        }
    }

    pub fn bool_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
        match Option::<String>::deserialize(deserializer)?.as_deref() {
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(other) => Err(D::Error::custom(format!("not a boolean: {other}"))),
            None => Ok(None),
        }
    }
}
