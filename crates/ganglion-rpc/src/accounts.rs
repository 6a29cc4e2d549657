//! The `Accounts` service: users, sessions, devices and filters.

use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId};
use ganglion_proto::master::v1 as pb;
use serde_json::Value;

use crate::wire::{AfterCall, Answer, Call, ConvertError, id, ids, json_value, optional_id};

service! {
    /// Users, sessions, devices and filters.
    pub trait Accounts: accounts_server::Accounts, accounts_client::AccountsClient {
        fn register(RegisterRequest) -> SessionGrant as pb::SessionGrant;
        /// Checks the password and opens a session.
        fn login(LoginRequest) -> SessionGrant as pb::SessionGrant;
        /// Whether the password is the user's (false for unknown or deactivated users).
        fn check_password(CheckPassword) -> bool as pb::CheckPasswordResponse;
        fn logout(Logout) -> () as pb::Done;
        fn logout_all(LogoutAll) -> () as pb::Done;
        /// Sets a new password; with `logout_devices`, ends every session but `keep_device`'s.
        fn set_password(SetPassword) -> () as pb::Done;
        fn delete_devices(DeleteDevices) -> () as pb::Done;
        fn rename_device(RenameDevice) -> () as pb::Done;
        fn create_filter(CreateFilter) -> String as pb::CreateFilterResponse;
        /// Leaves every room, ends every session and locks the account; `erase` clears the
        /// profile first, so the leave events carry none.
        fn deactivate_account(DeactivateAccount) -> () as pb::Done;
        fn create_open_id_token(CreateOpenIdToken) -> OpenIdToken as pb::CreateOpenIdTokenResponse;
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// Localpart; generated when absent.
    pub username: Option<String>,
    pub password: Option<String>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    pub inhibit_login: bool,
}

impl Call for RegisterRequest {
    type Message = pb::RegisterRequest;

    fn into_message(self) -> pb::RegisterRequest {
        pb::RegisterRequest {
            username: self.username,
            password: self.password,
            device_id: self.device_id,
            initial_device_display_name: self.initial_device_display_name,
            inhibit_login: self.inhibit_login,
        }
    }

    fn from_message(message: pb::RegisterRequest) -> Result<Self, ConvertError> {
        Ok(RegisterRequest {
            username: message.username,
            password: message.password,
            device_id: message.device_id,
            initial_device_display_name: message.initial_device_display_name,
            inhibit_login: message.inhibit_login,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub user_id: OwnedUserId,
    pub password: String,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
}

impl Call for LoginRequest {
    type Message = pb::LoginRequest;

    fn into_message(self) -> pb::LoginRequest {
        pb::LoginRequest {
            user_id: self.user_id.into(),
            password: self.password,
            device_id: self.device_id,
            initial_device_display_name: self.initial_device_display_name,
        }
    }

    fn from_message(message: pb::LoginRequest) -> Result<Self, ConvertError> {
        Ok(LoginRequest {
            user_id: id("user_id", message.user_id)?,
            password: message.password,
            device_id: message.device_id,
            initial_device_display_name: message.initial_device_display_name,
        })
    }

    fn after(&self) -> AfterCall {
        // Naming an existing device revokes its old token.
        if self.device_id.is_some() { AfterCall::ForgetSessions } else { AfterCall::Nothing }
    }
}

/// A new session. `access_token` and `device_id` are absent for `inhibit_login` registrations.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub user_id: OwnedUserId,
    pub access_token: Option<String>,
    pub device_id: Option<OwnedDeviceId>,
}

impl Answer<pb::SessionGrant> for SessionGrant {
    fn into_message(self) -> pb::SessionGrant {
        pb::SessionGrant {
            user_id: self.user_id.into(),
            access_token: self.access_token,
            device_id: self.device_id.map(Into::into),
        }
    }

    fn from_message(message: pb::SessionGrant) -> Result<Self, ConvertError> {
        Ok(SessionGrant {
            user_id: id("user_id", message.user_id)?,
            access_token: message.access_token,
            device_id: optional_id("device_id", message.device_id)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct CheckPassword {
    pub user_id: OwnedUserId,
    pub password: String,
}

impl Call for CheckPassword {
    type Message = pb::CheckPasswordRequest;

    fn into_message(self) -> pb::CheckPasswordRequest {
        pb::CheckPasswordRequest { user_id: self.user_id.into(), password: self.password }
    }

    fn from_message(message: pb::CheckPasswordRequest) -> Result<Self, ConvertError> {
        Ok(CheckPassword { user_id: id("user_id", message.user_id)?, password: message.password })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

impl Answer<pb::CheckPasswordResponse> for bool {
    fn into_message(self) -> pb::CheckPasswordResponse {
        pb::CheckPasswordResponse { matches: self }
    }

    fn from_message(message: pb::CheckPasswordResponse) -> Result<bool, ConvertError> {
        Ok(message.matches)
    }
}

#[derive(Debug, Clone)]
pub struct Logout {
    pub access_token: String,
}

impl Call for Logout {
    type Message = pb::LogoutRequest;

    fn into_message(self) -> pb::LogoutRequest {
        pb::LogoutRequest { access_token: self.access_token }
    }

    fn from_message(message: pb::LogoutRequest) -> Result<Self, ConvertError> {
        Ok(Logout { access_token: message.access_token })
    }

    fn after(&self) -> AfterCall {
        AfterCall::ForgetSessions
    }
}

#[derive(Debug, Clone)]
pub struct LogoutAll {
    pub user_id: OwnedUserId,
}

impl Call for LogoutAll {
    type Message = pb::LogoutAllRequest;

    fn into_message(self) -> pb::LogoutAllRequest {
        pb::LogoutAllRequest { user_id: self.user_id.into() }
    }

    fn from_message(message: pb::LogoutAllRequest) -> Result<Self, ConvertError> {
        Ok(LogoutAll { user_id: id("user_id", message.user_id)? })
    }

    fn after(&self) -> AfterCall {
        AfterCall::ForgetSessions
    }
}

#[derive(Debug, Clone)]
pub struct SetPassword {
    pub user_id: OwnedUserId,
    pub new_password: String,
    pub logout_devices: bool,
    /// The session that changed the password survives `logout_devices`.
    pub keep_device: Option<OwnedDeviceId>,
}

impl Call for SetPassword {
    type Message = pb::SetPasswordRequest;

    fn into_message(self) -> pb::SetPasswordRequest {
        pb::SetPasswordRequest {
            user_id: self.user_id.into(),
            new_password: self.new_password,
            logout_devices: self.logout_devices,
            keep_device: self.keep_device.map(Into::into),
        }
    }

    fn from_message(message: pb::SetPasswordRequest) -> Result<Self, ConvertError> {
        Ok(SetPassword {
            user_id: id("user_id", message.user_id)?,
            new_password: message.new_password,
            logout_devices: message.logout_devices,
            keep_device: optional_id("keep_device", message.keep_device)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::ForgetSessions
    }
}

#[derive(Debug, Clone)]
pub struct DeleteDevices {
    pub user_id: OwnedUserId,
    pub device_ids: Vec<OwnedDeviceId>,
}

impl Call for DeleteDevices {
    type Message = pb::DeleteDevicesRequest;

    fn into_message(self) -> pb::DeleteDevicesRequest {
        pb::DeleteDevicesRequest {
            user_id: self.user_id.into(),
            device_ids: self.device_ids.into_iter().map(Into::into).collect(),
        }
    }

    fn from_message(message: pb::DeleteDevicesRequest) -> Result<Self, ConvertError> {
        Ok(DeleteDevices {
            user_id: id("user_id", message.user_id)?,
            device_ids: ids("device_ids", message.device_ids)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::ForgetSessions
    }
}

#[derive(Debug, Clone)]
pub struct RenameDevice {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub name: String,
}

impl Call for RenameDevice {
    type Message = pb::RenameDeviceRequest;

    fn into_message(self) -> pb::RenameDeviceRequest {
        pb::RenameDeviceRequest {
            user_id: self.user_id.into(),
            device_id: self.device_id.into(),
            name: self.name,
        }
    }

    fn from_message(message: pb::RenameDeviceRequest) -> Result<Self, ConvertError> {
        Ok(RenameDevice {
            user_id: id("user_id", message.user_id)?,
            device_id: id("device_id", message.device_id)?,
            name: message.name,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone)]
pub struct CreateFilter {
    pub user_id: OwnedUserId,
    pub filter: Value,
}

impl Call for CreateFilter {
    type Message = pb::CreateFilterRequest;

    fn into_message(self) -> pb::CreateFilterRequest {
        pb::CreateFilterRequest { user_id: self.user_id.into(), filter_json: self.filter.to_string() }
    }

    fn from_message(message: pb::CreateFilterRequest) -> Result<Self, ConvertError> {
        Ok(CreateFilter {
            user_id: id("user_id", message.user_id)?,
            filter: json_value("filter_json", &message.filter_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

impl Answer<pb::CreateFilterResponse> for String {
    fn into_message(self) -> pb::CreateFilterResponse {
        pb::CreateFilterResponse { filter_id: self }
    }

    fn from_message(message: pb::CreateFilterResponse) -> Result<String, ConvertError> {
        Ok(message.filter_id)
    }
}

#[derive(Debug, Clone)]
pub struct DeactivateAccount {
    pub user_id: OwnedUserId,
    pub erase: bool,
}

impl Call for DeactivateAccount {
    type Message = pb::DeactivateAccountRequest;

    fn into_message(self) -> pb::DeactivateAccountRequest {
        pb::DeactivateAccountRequest { user_id: self.user_id.into(), erase: self.erase }
    }

    fn from_message(message: pb::DeactivateAccountRequest) -> Result<Self, ConvertError> {
        Ok(DeactivateAccount { user_id: id("user_id", message.user_id)?, erase: message.erase })
    }

    fn after(&self) -> AfterCall {
        AfterCall::ForgetSessions
    }
}

#[derive(Debug, Clone)]
pub struct CreateOpenIdToken {
    pub user_id: OwnedUserId,
}

impl Call for CreateOpenIdToken {
    type Message = pb::CreateOpenIdTokenRequest;

    fn into_message(self) -> pb::CreateOpenIdTokenRequest {
        pb::CreateOpenIdTokenRequest { user_id: self.user_id.into() }
    }

    fn from_message(message: pb::CreateOpenIdTokenRequest) -> Result<Self, ConvertError> {
        Ok(CreateOpenIdToken { user_id: id("user_id", message.user_id)? })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// An OpenID token and how long it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIdToken {
    pub access_token: String,
    pub expires_in_ms: u64,
}

impl Answer<pb::CreateOpenIdTokenResponse> for OpenIdToken {
    fn into_message(self) -> pb::CreateOpenIdTokenResponse {
        pb::CreateOpenIdTokenResponse { access_token: self.access_token, expires_in_ms: self.expires_in_ms }
    }

    fn from_message(message: pb::CreateOpenIdTokenResponse) -> Result<Self, ConvertError> {
        Ok(OpenIdToken { access_token: message.access_token, expires_in_ms: message.expires_in_ms })
    }
}
