//! matrix-sdk clients against a test server: in-memory stores, no retries, plain HTTP.

use std::time::Duration;

use anyhow::Context as _;
use matrix_sdk::{
    Client,
    config::RequestConfig,
    ruma::api::client::{
        account::register,
        uiaa::{AuthData, Dummy},
    },
};

/// A new, logged-out client for `base_url`. Retries are off so a failing request fails the test
/// at once instead of being retried with backoff.
pub async fn sdk_new_client(base_url: &str) -> anyhow::Result<Client> {
    Client::builder()
        .homeserver_url(base_url)
        .request_config(RequestConfig::new().disable_retry().timeout(Duration::from_secs(60)))
        .build()
        .await
        .with_context(|| format!("building a matrix-sdk client for {base_url}"))
}

/// Registers `username` through `Client::matrix_auth().register` with the `m.login.dummy` flow
/// (first attempt without auth, expected 401 with a session; then `auth.session`). The client used
/// is thrown away, so the registration device is not the one later tests use.
pub async fn sdk_register(base_url: &str, username: &str, password: &str) -> anyhow::Result<()> {
    let client = sdk_new_client(base_url).await?;
    let mut request = register::v3::Request::new();
    request.username = Some(username.to_owned());
    request.password = Some(password.to_owned());
    request.initial_device_display_name = Some("ganglion-testkit sdk register".to_owned());
    let session = match client.matrix_auth().register(request.clone()).await {
        Ok(_) => return Ok(()),
        Err(error) => {
            let info = error
                .as_uiaa_response()
                .with_context(|| format!("registering {username}: expected a UIA 401, got {error}"))?;
            info.session.clone().context("UIA 401 from /register without a session")?
        }
    };
    let mut dummy = Dummy::new();
    dummy.session = Some(session);
    request.auth = Some(AuthData::Dummy(dummy));
    client
        .matrix_auth()
        .register(request)
        .await
        .with_context(|| format!("registering {username} with m.login.dummy"))?;
    Ok(())
}

/// A new client logged in with `m.login.password` (a new device).
pub async fn sdk_login(base_url: &str, username: &str, password: &str) -> anyhow::Result<Client> {
    let client = sdk_new_client(base_url).await?;
    client
        .matrix_auth()
        .login_username(username, password)
        .initial_device_display_name("ganglion-testkit sdk")
        .send()
        .await
        .with_context(|| format!("logging in as {username}"))?;
    Ok(client)
}

/// Registers `username` then logs in with a fresh client: what most scenarios start with.
pub async fn sdk_client(base_url: &str, username: &str, password: &str) -> anyhow::Result<Client> {
    sdk_register(base_url, username, password).await?;
    sdk_login(base_url, username, password).await
}
