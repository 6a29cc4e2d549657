//! Writes to the presence stream. The master holds each active user's presence in memory, per
//! device as Synapse does (a user is the most present of their devices: online, then
//! unavailable, then offline), applies the idle and offline timeouts, and stores a row only when
//! what clients see changed (Synapse's `should_notify`). A sync worker reports a syncing device
//! when its `set_presence` changes and then at most every third of the offline timeout, so the
//! master never hears of every `/sync`.
//!
//! The state machine ([`UserPresence`]) is pure: timestamps in, changes out.
//!
//! Other servers' users' presence comes from their servers (`m.presence`), which apply the
//! timeouts: it is stored as given and never kept in memory here. A change of one of our users
//! is queued for every other server that shares a room with them.
//!
//! Invariant: a user's presence is changed and written under `PresenceStore::users`, so rows of
//! one user are written in the order their changes happened.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ganglion_config::PresenceConfig;
use ganglion_events::presence::PresenceState;
use ganglion_replication::StreamRow;
use ganglion_rpc::{MasterResult, PresenceSyncing, SetPresence, SetRemotePresence};
use ganglion_storage::{Db, presence::PresenceRow, rooms as room_store, streams as stream_store};
use ganglion_types::{StreamKind, StreamPosition};
use serde_json::{Value, json};

use crate::{
    MasterService,
    ephemeral::{is_ours, servers_of},
    internal,
};

/// The most users one `m.presence` EDU carries.
const MAX_PUSHES_PER_EDU: usize = 100;
/// The most users pinged per tick (each costs a query while the users are locked); the rest
/// wait for the next ticks.
const MAX_PINGS_PER_TICK: usize = 500;

/// The timeouts of the presence state machine, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timings {
    /// Online without activity for this long: unavailable.
    pub idle: i64,
    /// Neither synced nor active for this long: the device is gone.
    pub offline: i64,
    /// Active within this long: `currently_active`; within it, a newer activity changes no row
    /// (`PresenceConfig::last_active_granularity_ms`).
    pub granularity: i64,
}

impl Timings {
    pub(crate) fn from_config(config: &PresenceConfig) -> Timings {
        let ms = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        Timings {
            idle: ms(config.idle_timeout_ms),
            offline: ms(config.offline_timeout_ms),
            granularity: ms(config.last_active_granularity_ms()),
        }
    }

    /// How often the timeouts are checked: often enough for short test timeouts, at most once
    /// a second.
    pub(crate) fn tick(&self) -> std::time::Duration {
        let shortest = self.idle.min(self.offline).min(self.granularity);
        std::time::Duration::from_millis((shortest / 4).clamp(100, 1000) as u64)
    }
}

/// One device of a user, as the master last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    state: PresenceState,
    last_active_ts: i64,
    last_sync_ts: i64,
}

/// What clients see of a user's presence: a stored row without its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visible {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: bool,
}

impl Visible {
    /// A user never seen: offline, never active.
    fn unknown() -> Visible {
        Visible {
            state: PresenceState::Offline,
            status_msg: None,
            last_active_ts: 0,
            currently_active: false,
        }
    }

    fn from_row(row: &PresenceRow) -> Visible {
        Visible {
            state: PresenceState::parse(&row.state).unwrap_or(PresenceState::Offline),
            status_msg: row.status_msg.clone(),
            last_active_ts: row.last_active_ts,
            currently_active: row.currently_active,
        }
    }

    /// An entry of an `m.presence` EDU's `push`.
    fn push(&self, user_id: &str, now: i64) -> Value {
        let mut push = json!({
            "user_id": user_id,
            "presence": self.state.as_str(),
            "last_active_ago": (now - self.last_active_ts).max(0),
            "currently_active": self.currently_active,
        });
        if let Some(status_msg) = &self.status_msg {
            push["status_msg"] = json!(status_msg);
        }
        push
    }

    fn row(&self, user_id: &str, stream_pos: i64) -> PresenceRow {
        PresenceRow {
            user_id: user_id.to_owned(),
            state: self.state.as_str().to_owned(),
            status_msg: self.status_msg.clone(),
            last_active_ts: self.last_active_ts,
            currently_active: self.currently_active,
            stream_pos,
        }
    }
}

/// A user's presence: their devices, what they add up to now, and what the stream last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserPresence {
    devices: HashMap<String, Device>,
    current: Visible,
    /// The stored row's content.
    published: Visible,
    /// When one of our users' presence was last queued for other servers (0: not since start).
    federated_at: i64,
}

/// The device a restart stands in for the devices that were online before it: it times out as
/// a real one would unless a real device takes over.
const RESTORED_DEVICE: &str = "";

impl UserPresence {
    /// A user as stored (or never seen): no device is known to be online.
    pub(crate) fn stored(row: Option<&PresenceRow>) -> UserPresence {
        let visible = row.map_or_else(Visible::unknown, Visible::from_row);
        UserPresence {
            devices: HashMap::new(),
            current: visible.clone(),
            published: visible,
            federated_at: 0,
        }
    }

    /// A user who was not offline when the master stopped: given a full offline timeout from
    /// `now` to sync again.
    pub(crate) fn restored(row: &PresenceRow, now: i64) -> UserPresence {
        let mut user = UserPresence::stored(Some(row));
        // Other servers heard of them before the restart: pinged from one interval on, not all
        // at once as the master starts.
        user.federated_at = now;
        let device =
            Device { state: user.current.state, last_active_ts: row.last_active_ts, last_sync_ts: now };
        user.devices.insert(RESTORED_DEVICE.to_owned(), device);
        user
    }

    pub(crate) fn current(&self) -> &Visible {
        &self.current
    }

    /// `PUT /presence/{userId}/status` from `device_id`: sets the device's state and the
    /// user's status message (absent clears it).
    pub(crate) fn set_by_client(
        &mut self,
        device_id: &str,
        presence: PresenceState,
        status_msg: Option<String>,
        now: i64,
        timings: &Timings,
    ) {
        self.device_reports(device_id, presence, now, false);
        self.current.status_msg = status_msg;
        self.refresh(now, timings);
    }

    /// Another server's user as that server reports them.
    pub(crate) fn set_remote(&mut self, visible: Visible) {
        self.current = visible;
    }

    /// `device_id` syncs with `presence`: the status message stays.
    pub(crate) fn syncing(&mut self, device_id: &str, presence: PresenceState, now: i64, timings: &Timings) {
        self.device_reports(device_id, presence, now, true);
        self.refresh(now, timings);
    }

    fn device_reports(&mut self, device_id: &str, presence: PresenceState, now: i64, synced: bool) {
        let device = self.devices.entry(device_id.to_owned()).or_insert(Device {
            state: PresenceState::Offline,
            last_active_ts: 0,
            last_sync_ts: 0,
        });
        device.state = presence;
        // As Synapse: any report is activity of the device, though only an online user's
        // `last_active_ts` moves.
        device.last_active_ts = now;
        if synced {
            device.last_sync_ts = now;
        }
        if self.combined() == PresenceState::Online {
            self.current.last_active_ts = now;
        }
    }

    /// Applies the timeouts at `now`: an online device idle for `idle` becomes unavailable, a
    /// device that neither synced nor was active for `offline` is forgotten.
    pub(crate) fn expire(&mut self, now: i64, timings: &Timings) {
        for device in self.devices.values_mut() {
            if device.state == PresenceState::Online && now - device.last_active_ts > timings.idle {
                device.state = PresenceState::Unavailable;
            }
        }
        self.devices
            .retain(|_, device| now - device.last_sync_ts.max(device.last_active_ts) <= timings.offline);
        self.refresh(now, timings);
    }

    /// The most present of the devices; offline without any.
    fn combined(&self) -> PresenceState {
        self.devices.values().map(|device| device.state).max().unwrap_or(PresenceState::Offline)
    }

    fn refresh(&mut self, now: i64, timings: &Timings) {
        self.current.state = self.combined();
        self.current.currently_active = self.current.state == PresenceState::Online
            && now - self.current.last_active_ts < timings.granularity;
    }

    /// Whether clients must hear of the change since the last row (Synapse's `should_notify`):
    /// a new state or status message, `currently_active` flipping while online, or
    /// `last_active_ts` moving by more than the granularity while it is not implied by
    /// `currently_active`.
    pub(crate) fn changed(&self, timings: &Timings) -> bool {
        let (old, new) = (&self.published, &self.current);
        if old == new {
            return false;
        }
        if old.status_msg != new.status_msg || old.state != new.state {
            return true;
        }
        let moved = new.last_active_ts - old.last_active_ts > timings.granularity;
        if old.state == PresenceState::Online {
            old.currently_active != new.currently_active || (moved && !new.currently_active)
        } else {
            moved
        }
    }

    /// Marks the current presence as stored.
    fn publish(&mut self) {
        self.published = self.current.clone();
    }

    /// Whether other servers are owed this user's presence again, unchanged, at `now`: they
    /// take a user they have heard nothing of for long to be offline.
    fn ping_due(&self, now: i64, interval: i64) -> bool {
        self.current.state != PresenceState::Offline && now - self.federated_at >= interval
    }

    /// Offline with no device left: the stored row says all there is, memory may forget it.
    fn is_dormant(&self) -> bool {
        self.devices.is_empty()
            && self.current.state == PresenceState::Offline
            && self.current == self.published
    }
}

/// The users the master tracks, by user id.
pub(crate) struct PresenceStore {
    pub(crate) enabled: bool,
    pub(crate) timings: Timings,
    /// `presence.federation_ping_interval_ms`.
    ping_interval: i64,
    users: tokio::sync::Mutex<HashMap<String, UserPresence>>,
}

impl PresenceStore {
    /// Starts from the users stored as not offline (none when presence is off).
    pub(crate) async fn load(db: &Db, config: &PresenceConfig) -> MasterResult<PresenceStore> {
        let mut users = HashMap::new();
        if config.enabled {
            let mut conn = db.conn().await.map_err(internal)?;
            let now = ganglion_storage::now_ms();
            for row in ganglion_storage::presence::presence_not_offline(&mut conn).await.map_err(internal)? {
                users.insert(row.user_id.clone(), UserPresence::restored(&row, now));
            }
        }
        Ok(PresenceStore {
            enabled: config.enabled,
            timings: Timings::from_config(config),
            ping_interval: i64::try_from(config.federation_ping_interval_ms).unwrap_or(i64::MAX),
            users: tokio::sync::Mutex::new(users),
        })
    }
}

/// The user's entry, read from the database the first time.
async fn entry<'u>(
    svc: &MasterService,
    users: &'u mut HashMap<String, UserPresence>,
    user_id: &str,
) -> MasterResult<&'u mut UserPresence> {
    if !users.contains_key(user_id) {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        let row = ganglion_storage::presence::presence_of_user(&mut conn, user_id).await.map_err(internal)?;
        users.insert(user_id.to_owned(), UserPresence::stored(row.as_ref()));
    }
    Ok(users.get_mut(user_id).expect("inserted above"))
}

pub(crate) async fn set_presence(svc: &MasterService, request: SetPresence) -> MasterResult<()> {
    let store = &svc.presence;
    if !store.enabled {
        return Ok(());
    }
    let mut users = store.users.lock().await;
    let user_id = request.user_id.as_str();
    let user = entry(svc, &mut users, user_id).await?;
    let now = ganglion_storage::now_ms();
    user.set_by_client(request.device_id.as_str(), request.presence, request.status_msg, now, &store.timings);
    write_changes(svc, &mut users, &[user_id.to_owned()]).await
}

pub(crate) async fn presence_syncing(svc: &MasterService, request: PresenceSyncing) -> MasterResult<()> {
    let store = &svc.presence;
    // A sync with `offline` does not touch presence; workers do not report it.
    if !store.enabled || request.presence == PresenceState::Offline {
        return Ok(());
    }
    let mut users = store.users.lock().await;
    let user_id = request.user_id.as_str();
    let user = entry(svc, &mut users, user_id).await?;
    let now = ganglion_storage::now_ms();
    user.syncing(request.device_id.as_str(), request.presence, now, &store.timings);
    write_changes(svc, &mut users, &[user_id.to_owned()]).await
}

/// Other servers' users' presence, for those who are joined to a room here (no one here could
/// see anyone else's).
pub(crate) async fn set_remote_presence(svc: &MasterService, request: SetRemotePresence) -> MasterResult<()> {
    let store = &svc.presence;
    if !store.enabled {
        return Ok(());
    }
    let mut updates = Vec::with_capacity(request.updates.len());
    {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        for update in request.updates {
            if is_ours(svc, &update.user_id) {
                continue;
            }
            let memberships = room_store::memberships_of_user(&mut conn, update.user_id.as_str())
                .await
                .map_err(internal)?;
            if memberships.iter().any(|membership| membership.membership == "join") {
                updates.push(update);
            }
        }
    }
    if updates.is_empty() {
        return Ok(());
    }
    let now = ganglion_storage::now_ms();
    let mut users = store.users.lock().await;
    let mut user_ids: Vec<String> = Vec::with_capacity(updates.len());
    let written = async {
        for update in updates {
            let user_id = update.user_id.to_string();
            let user = entry(svc, &mut users, &user_id).await?;
            if !user_ids.contains(&user_id) {
                user_ids.push(user_id);
            }
            user.set_remote(Visible {
                state: update.presence,
                status_msg: update.status_msg,
                last_active_ts: now
                    .saturating_sub(i64::try_from(update.last_active_ago_ms).unwrap_or(i64::MAX)),
                currently_active: update.currently_active,
            });
        }
        write_changes(svc, &mut users, &user_ids).await
    }
    .await;
    // Never kept: the timeouts applied to what is in memory are for our users' devices.
    for user_id in &user_ids {
        users.remove(user_id);
    }
    written
}

/// Applies the timeouts to every tracked user and writes what changed.
pub(crate) async fn expire(svc: &MasterService) -> MasterResult<()> {
    let store = &svc.presence;
    if !store.enabled {
        return Ok(());
    }
    let mut users = store.users.lock().await;
    let now = ganglion_storage::now_ms();
    let mut changed = Vec::new();
    for (user_id, user) in users.iter_mut() {
        user.expire(now, &store.timings);
        if user.changed(&store.timings) {
            changed.push(user_id.clone());
        }
    }
    write_changes(svc, &mut users, &changed).await?;
    ping(svc, &mut users, now).await?;
    users.retain(|_, user| !user.is_dormant());
    Ok(())
}

/// Sends our users who are not offline, and whose presence other servers have not been sent for
/// the ping interval, to those servers again as it is (no row: nothing changed here).
async fn ping(svc: &MasterService, users: &mut HashMap<String, UserPresence>, now: i64) -> MasterResult<()> {
    let interval = svc.presence.ping_interval;
    let due: Vec<String> = users
        .iter()
        .filter(|(user_id, user)| {
            user.ping_due(now, interval)
                && ganglion_events::ruma::UserId::parse(user_id.as_str())
                    .is_ok_and(|user| is_ours(svc, &user))
        })
        .map(|(user_id, _)| user_id.clone())
        .take(MAX_PINGS_PER_TICK)
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let mut pushes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut conn = svc.db.conn().await.map_err(internal)?;
    for user_id in &due {
        let remote =
            room_store::remote_users_sharing_a_room_with(&mut conn, user_id, &svc.config.server_name)
                .await
                .map_err(internal)?;
        let push = users[user_id].current().push(user_id, now);
        for server in servers_of(&remote) {
            pushes.entry(server).or_default().push(push.clone());
        }
    }
    let edus = presence_edus(pushes);
    ganglion_storage::federation::insert_outbox_edus(&mut conn, &edus, now).await.map_err(internal)?;
    for user_id in due {
        if let Some(user) = users.get_mut(&user_id) {
            user.federated_at = now;
        }
    }
    Ok(())
}

/// `m.presence` EDUs of `pushes` by destination, at most [`MAX_PUSHES_PER_EDU`] users each.
fn presence_edus(pushes: BTreeMap<String, Vec<Value>>) -> Vec<(String, String, String)> {
    pushes
        .into_iter()
        .flat_map(|(destination, pushes)| {
            pushes
                .chunks(MAX_PUSHES_PER_EDU)
                .map(|push| {
                    (destination.clone(), "m.presence".to_owned(), json!({ "push": push }).to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Stores a row for each of `user_ids` whose presence changed visibly, in one transaction, and
/// publishes them. Each row wakes its user and the rooms the user is joined to, so the
/// long-polls of everyone who shares a room with them see it. Our users' changes are queued,
/// in the same transaction, for the other servers that share a room with them.
async fn write_changes(
    svc: &MasterService,
    users: &mut HashMap<String, UserPresence>,
    user_ids: &[String],
) -> MasterResult<()> {
    let timings = &svc.presence.timings;
    let user_ids: Vec<&String> = user_ids
        .iter()
        .filter(|user_id| users.get(*user_id).is_some_and(|user| user.changed(timings)))
        .collect();
    if user_ids.is_empty() {
        return Ok(());
    }
    let mut wake = Vec::with_capacity(user_ids.len());
    let mut pushes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let now = ganglion_storage::now_ms();
    {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        for user_id in &user_ids {
            let rooms = stream_store::rooms_of_user(&mut conn, user_id).await.map_err(internal)?;
            let mut keys: Vec<Arc<str>> = vec![Arc::from(user_id.as_str())];
            keys.extend(
                rooms
                    .iter()
                    .filter(|room| room.membership == "join")
                    .map(|room| Arc::from(room.room_id.as_str())),
            );
            let ours =
                ganglion_events::ruma::UserId::parse(user_id.as_str()).is_ok_and(|user| is_ours(svc, &user));
            // Joined to no room: no other server to tell, and no query to ask.
            if ours && keys.len() > 1 {
                let remote =
                    room_store::remote_users_sharing_a_room_with(&mut conn, user_id, &svc.config.server_name)
                        .await
                        .map_err(internal)?;
                let push = users[*user_id].current().push(user_id, now);
                for server in servers_of(&remote) {
                    pushes.entry(server).or_default().push(push.clone());
                }
            }
            wake.push(keys);
        }
    }
    let mut writer = svc.writer.lock().await;
    let mut tx = svc.db.begin().await.map_err(internal)?;
    let mut position = writer.last_presence_pos;
    let mut rows = Vec::with_capacity(user_ids.len());
    for (user_id, keys) in user_ids.iter().zip(wake) {
        position += 1;
        let visible = users[*user_id].current();
        ganglion_storage::presence::upsert_presence(&mut tx, &visible.row(user_id, position))
            .await
            .map_err(internal)?;
        rows.push(StreamRow::new(StreamKind::Presence, StreamPosition(position), None, keys));
    }
    let edus = presence_edus(pushes);
    ganglion_storage::federation::insert_outbox_edus(&mut tx, &edus, now).await.map_err(internal)?;
    tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
    writer.last_presence_pos = position;
    for user_id in user_ids {
        if let Some(user) = users.get_mut(user_id) {
            user.publish();
            user.federated_at = now;
        }
    }
    svc.bus.publish_all(rows);
    Ok(())
}

#[cfg(test)]
mod tests;
