//! Server discovery, accounts, sessions, devices, profiles, account data, filters and the
//! default push rules.
//!
//! Reads go to the database; every write (users, sessions, devices, profiles, account data,
//! filters) goes to the master. User-interactive auth sessions live in memory here: they are
//! short-lived and a lost one only makes the client start the flow again.

mod account_data;
mod deactivate;
mod devices;
mod discovery;
mod filters;
mod login;
pub(crate) mod password;
mod profile;
mod push_rules;
mod register;
mod tags;
pub(crate) mod uia;

use ganglion_events::ruma::OwnedUserId;
use ganglion_http::{MatrixError, MatrixResult, Route, Session};
use ganglion_types::EndpointClass::{Auth, ClientRead, ClientWrite, WellKnown};

use crate::ClientState;
pub use uia::UiaSessions;

pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        // Discovery.
        Route::get("/.well-known/matrix/client", WellKnown, discovery::well_known),
        Route::get("/_matrix/client/versions", ClientRead, discovery::versions),
        Route::get("/_matrix/client/v3/capabilities", ClientRead, discovery::capabilities),
        // Registration and sessions.
        Route::post("/_matrix/client/v3/register", Auth, register::register),
        Route::get("/_matrix/client/v3/register/available", Auth, register::available),
        Route::get("/_matrix/client/v3/login", Auth, login::login_flows),
        Route::post("/_matrix/client/v3/login", Auth, login::login),
        Route::post("/_matrix/client/v3/logout", Auth, login::logout),
        Route::post("/_matrix/client/v3/logout/all", Auth, login::logout_all),
        Route::get("/_matrix/client/v3/account/whoami", ClientRead, login::whoami),
        Route::post("/_matrix/client/v3/account/password", Auth, password::change_password),
        Route::post("/_matrix/client/v3/account/deactivate", Auth, deactivate::deactivate),
        Route::post(
            "/_matrix/client/v3/user/{userId}/openid/request_token",
            ClientWrite,
            deactivate::request_openid_token,
        ),
        // Devices.
        Route::get("/_matrix/client/v3/devices", ClientRead, devices::devices),
        Route::get("/_matrix/client/v3/devices/{deviceId}", ClientRead, devices::device),
        Route::put("/_matrix/client/v3/devices/{deviceId}", ClientWrite, devices::rename_device),
        Route::delete("/_matrix/client/v3/devices/{deviceId}", ClientWrite, devices::delete_device),
        Route::post("/_matrix/client/v3/delete_devices", ClientWrite, devices::delete_devices),
        // Profiles.
        Route::get("/_matrix/client/v3/profile/{userId}", ClientRead, profile::profile),
        Route::get("/_matrix/client/v3/profile/{userId}/displayname", ClientRead, profile::displayname),
        Route::put("/_matrix/client/v3/profile/{userId}/displayname", ClientWrite, profile::set_displayname),
        Route::get("/_matrix/client/v3/profile/{userId}/avatar_url", ClientRead, profile::avatar_url),
        Route::put("/_matrix/client/v3/profile/{userId}/avatar_url", ClientWrite, profile::set_avatar_url),
        // Account data.
        Route::get("/_matrix/client/v3/user/{userId}/account_data/{type}", ClientRead, account_data::global),
        Route::put(
            "/_matrix/client/v3/user/{userId}/account_data/{type}",
            ClientWrite,
            account_data::set_global,
        ),
        Route::get(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
            ClientRead,
            account_data::in_room,
        ),
        Route::put(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
            ClientWrite,
            account_data::set_in_room,
        ),
        // Room tags: read here, each one changed by the master.
        Route::get("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags", ClientRead, tags::tags),
        Route::put("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", ClientWrite, tags::set_tag),
        Route::delete(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}",
            ClientWrite,
            tags::delete_tag,
        ),
        // Filters.
        Route::post("/_matrix/client/v3/user/{userId}/filter", ClientWrite, filters::create_filter),
        Route::get("/_matrix/client/v3/user/{userId}/filter/{filterId}", ClientRead, filters::filter),
        // Push rules: read here, changed by the master.
        Route::get("/_matrix/client/v3/pushrules/", ClientRead, push_rules::all_rules),
        Route::get("/_matrix/client/v3/pushrules/global/", ClientRead, push_rules::global_rules),
        Route::get("/_matrix/client/v3/pushrules/global/{kind}/{ruleId}", ClientRead, push_rules::rule_by_id),
        Route::put("/_matrix/client/v3/pushrules/global/{kind}/{ruleId}", ClientWrite, push_rules::put_rule),
        Route::delete(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}",
            ClientWrite,
            push_rules::delete_rule,
        ),
        Route::get(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled",
            ClientRead,
            push_rules::enabled,
        ),
        Route::put(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled",
            ClientWrite,
            push_rules::set_enabled,
        ),
        Route::get(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions",
            ClientRead,
            push_rules::actions,
        ),
        Route::put(
            "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions",
            ClientWrite,
            push_rules::set_actions,
        ),
    ]
}

use crate::rooms::{from_object, user_id_param};

/// The path's user, who must be the requester: account data and filters are private.
fn own_user(session: &Session, text: &str, what: &str) -> MatrixResult<OwnedUserId> {
    let user_id = user_id_param(text)?;
    if user_id != session.user_id {
        return Err(MatrixError::forbidden(format!("Cannot access {what} of other users")));
    }
    Ok(user_id)
}

#[cfg(test)]
mod tests;
