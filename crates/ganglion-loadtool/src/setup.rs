//! Accounts and devices for a run, shared by every workload: registering users and logging more
//! devices of them in. Each step keeps `concurrency` requests in flight; a 429 is waited out and
//! counted, any other failure fails the run.

use std::sync::atomic::AtomicU64;

use futures_util::{StreamExt as _, TryStreamExt as _, stream};

use crate::matrix::{Api, Session};

const PASSWORD: &str = "ganglion-load-password";

pub struct Setup<'a> {
    pub api: &'a Api,
    /// Part of every username, so that runs against one server never collide.
    pub run_id: &'a str,
    pub concurrency: usize,
    /// 429 answers during setup.
    pub rate_limited: &'a AtomicU64,
}

impl Setup<'_> {
    /// Registers `count` users named `load<run>_<kind><i>`; `kind` tells the groups of a run
    /// apart (`""` for the users who receive).
    pub async fn register(&self, kind: &str, count: usize) -> anyhow::Result<Vec<Session>> {
        stream::iter(0..count)
            .map(|index| {
                let username = self.username(kind, index);
                async move { self.api.register(&username, PASSWORD, self.rate_limited).await }
            })
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// Every device of the users `register(kind, …)` answered, user by user: each one's
    /// registered session, then `devices_per_user - 1` more from logging in.
    pub async fn devices(
        &self,
        kind: &str,
        users: Vec<Session>,
        devices_per_user: usize,
    ) -> anyhow::Result<Vec<Session>> {
        let logins = (0..users.len()).flat_map(|user| (1..devices_per_user).map(move |_| user));
        let logged_in: Vec<Session> = stream::iter(logins)
            .map(|user| {
                let username = self.username(kind, user);
                async move { self.api.login(&username, PASSWORD, self.rate_limited).await }
            })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let mut devices = Vec::with_capacity(users.len() * devices_per_user);
        let mut more = logged_in.into_iter();
        for user in users {
            devices.push(user);
            devices.extend(more.by_ref().take(devices_per_user - 1));
        }
        Ok(devices)
    }

    pub fn username(&self, kind: &str, index: usize) -> String {
        format!("load{}_{kind}{index}", self.run_id)
    }
}
