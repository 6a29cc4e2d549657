//! Third-party identifiers (email addresses, phone numbers) and third-party networks (bridges):
//! this server supports neither, and each endpoint says so rather than answering 404. No
//! identifier is ever bound to an account, there is no identity server and no email or SMS
//! sender, and without application services no network is bridged.

use axum::{Json, extract::Path};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_types::ErrorClass;
use serde_json::{Map, Value, json};

fn denied() -> MatrixError {
    MatrixError::new(
        ErrorClass::ThreepidDenied,
        "This server does not take email addresses or phone numbers: it has no identity server and sends no email or SMS",
    )
}

/// `GET /account/3pid`: none.
pub(crate) async fn threepids(Auth(_session): Auth) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

/// `POST /account/3pid`, `/account/3pid/add` and `/account/3pid/bind`: refused.
pub(crate) async fn add_threepid(
    Auth(_session): Auth,
    MatrixJson(_body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    Err(denied())
}

/// `POST /account/3pid/delete` and `/account/3pid/unbind`: nothing is bound to forget, and no
/// identity server was told of any.
pub(crate) async fn forget_threepid(
    Auth(_session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    for key in ["medium", "address"] {
        match body.get(key) {
            Some(Value::String(_)) => {}
            Some(_) => return Err(MatrixError::bad_json(format!("`{key}` must be a string"))),
            None => return Err(MatrixError::missing_param(format!("Missing `{key}`"))),
        }
    }
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

/// The `requestToken` endpoints of registration, password reset and `/account/3pid`: no email
/// or SMS is ever sent.
pub(crate) async fn request_token(
    MatrixJson(_body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    Err(denied())
}

/// `GET /thirdparty/protocols`: no network is bridged.
pub(crate) async fn protocols(Auth(_session): Auth) -> Json<Value> {
    Json(json!({}))
}

/// `GET /thirdparty/protocol/{protocol}` and the lookups by protocol: no such protocol.
pub(crate) async fn unknown_protocol(
    Auth(_session): Auth,
    Path(protocol): Path<String>,
) -> MatrixResult<Json<Value>> {
    Err(MatrixError::not_found(format!("No bridged network has the protocol {protocol:?}")))
}

/// `GET /thirdparty/location` and `/thirdparty/user`: nothing matches.
pub(crate) async fn no_matches(Auth(_session): Auth) -> Json<Value> {
    Json(json!([]))
}
