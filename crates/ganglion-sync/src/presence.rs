//! Presence on the sync worker: the `presence` section of a response, and telling the master
//! which devices sync (`set_presence`).
//!
//! The section holds `m.presence` events of the user and of everyone who shares a joined room
//! with them: on an initial (or `full_state`) sync their current presence, offline users left
//! out; on an incremental sync every row in `since < position <= next`, offline included, and
//! the current presence of members whose join the response shows (as Synapse). One query, none
//! when the stream did not move, and one more when members joined.
//!
//! Reporting is throttled per device ([`SyncingDevices`]): the master hears of a device when
//! the presence it syncs with changes, and otherwise at most every
//! `PresenceConfig::syncing_report_interval_ms` while it keeps syncing (long-polls included),
//! never once per `/sync`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ganglion_config::PresenceConfig;
use ganglion_events::{
    presence::{PresenceState, presence_content},
    ruma::{OwnedDeviceId, OwnedUserId},
};
use ganglion_rpc::{Master, PresenceSyncing};
use ganglion_storage::{Connect, LazyConn, presence::PresenceRow};
use ganglion_types::SyncToken;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    SyncState,
    compute::{SyncError, SyncRequest},
};

const PRESENCE: &str = "m.presence";
/// How long a sync that changed its device's presence waits for the master, so the response
/// already shows it; past that the report goes on in the background.
const REPORT_WAIT: Duration = Duration::from_secs(1);
/// Devices forgotten after this many report intervals without a sync.
const FORGET_AFTER_INTERVALS: u32 = 10;

/// The `presence` section's events for `request` up to `next`. `newcomers` are the members other
/// than the user whose join the response's `join` section shows (all of a newly joined room's,
/// in its state)
/// come with their current presence, as Synapse sends them, rather than at their next change.
pub(crate) async fn presence_events(
    state: &SyncState,
    conn: &mut LazyConn,
    request: &SyncRequest<'_>,
    (next, untouched): (&SyncToken, bool),
    newcomers: BTreeSet<String>,
) -> Result<Vec<Value>, SyncError> {
    let filter = &request.filter.presence;
    if !state.config.presence.enabled || filter.limit == Some(0) || !filter.allows(PRESENCE, None) {
        return Ok(Vec::new());
    }
    let up_to = next.presence.0;
    let (initial, after) = match request.since {
        Some(since) if !request.full_state => (false, since.presence.0),
        _ => (true, 0),
    };
    let mut rows = Vec::new();
    // `untouched`: memory knows no row of the range concerns the user's room-mates.
    if after < up_to && !untouched {
        rows = ganglion_storage::presence::presence_of_room_mates_between(
            conn.connection().await?,
            request.user_id,
            after,
            up_to,
        )
        .await?;
    }
    if !initial {
        let mut newcomers = newcomers;
        newcomers.retain(|user_id| !rows.iter().any(|row| &row.user_id == user_id));
        if !newcomers.is_empty() {
            let newcomers: Vec<String> = newcomers.into_iter().collect();
            rows.extend(
                ganglion_storage::presence::presence_between(conn.connection().await?, &newcomers, 0, up_to)
                    .await?,
            );
            rows.sort_unstable_by_key(|row| row.stream_pos);
        }
    }
    let now = ganglion_storage::now_ms();
    let mut events: Vec<Value> = rows
        .iter()
        .filter(|row| !(initial && row.state == PresenceState::Offline.as_str()))
        .filter(|row| filter.allows(PRESENCE, Some(&row.user_id)))
        .map(|row| presence_event(row, now))
        .collect();
    // Rows come by position: a limit keeps the newest.
    if let Some(limit) = filter.limit.and_then(|limit| usize::try_from(limit).ok()) {
        events.drain(..events.len().saturating_sub(limit));
    }
    Ok(events)
}

fn presence_event(row: &PresenceRow, now: i64) -> Value {
    let state = PresenceState::parse(&row.state).unwrap_or(PresenceState::Offline);
    json!({
        "type": PRESENCE,
        "sender": row.user_id,
        "content": presence_content(state, row.status_msg.as_deref(), row.last_active_ts, row.currently_active, now),
    })
}

/// A device that syncs on this worker.
#[derive(Debug)]
struct Device {
    /// The presence it syncs with (never offline: such syncs are not tracked).
    presence: PresenceState,
    /// When the master was last told.
    reported_at: Instant,
    /// Syncs under way (long-polls).
    in_flight: u32,
    last_seen: Instant,
}

type DeviceKey = (OwnedUserId, OwnedDeviceId);

/// What the start of a sync asks of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Told recently enough.
    Nothing,
    /// Due again: tell it, without making the sync wait.
    InBackground,
    /// A device new here, or a new presence: tell it, and let the sync wait a little so its
    /// response already shows it.
    AndWait,
}

/// The bookkeeping of the devices syncing on this worker, on plain instants.
#[derive(Debug)]
struct Tracked {
    devices: HashMap<DeviceKey, Device>,
    report_every: Duration,
}

impl Tracked {
    fn sync_starts(&mut self, key: &DeviceKey, presence: PresenceState, now: Instant) -> Report {
        let Some(device) = self.devices.get_mut(key) else {
            let device = Device { presence, reported_at: now, in_flight: 1, last_seen: now };
            self.devices.insert(key.clone(), device);
            return Report::AndWait;
        };
        device.in_flight += 1;
        device.last_seen = now;
        let report = if device.presence != presence {
            Report::AndWait
        } else if now - device.reported_at >= self.report_every {
            Report::InBackground
        } else {
            return Report::Nothing;
        };
        device.presence = presence;
        device.reported_at = now;
        report
    }

    fn sync_ends(&mut self, key: &DeviceKey, now: Instant) {
        if let Some(device) = self.devices.get_mut(key) {
            device.in_flight = device.in_flight.saturating_sub(1);
            device.last_seen = now;
        }
    }

    /// The devices in a long-poll whose last report is due again; forgets devices that
    /// stopped syncing long ago.
    fn due_long_polls(&mut self, now: Instant) -> Vec<(DeviceKey, PresenceState)> {
        let forget_after = self.report_every * FORGET_AFTER_INTERVALS;
        self.devices.retain(|_, device| device.in_flight > 0 || now - device.last_seen < forget_after);
        let mut due = Vec::new();
        for (key, device) in self.devices.iter_mut() {
            if device.in_flight > 0 && now - device.reported_at >= self.report_every {
                device.reported_at = now;
                due.push((key.clone(), device.presence));
            }
        }
        due
    }
}

/// The devices syncing on this worker and what the master was last told of them.
pub struct SyncingDevices {
    master: Arc<dyn Master>,
    enabled: bool,
    tracked: Mutex<Tracked>,
    reporter: Once,
    /// Set while reports fail, so a master outage is logged once, not once per device.
    failing: AtomicBool,
}

/// Marks the end of a sync; dropping it counts the sync out.
pub(crate) struct SyncingGuard {
    devices: Option<(Arc<SyncingDevices>, DeviceKey)>,
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        if let Some((devices, key)) = self.devices.take() {
            devices.tracked.lock().sync_ends(&key, Instant::now());
        }
    }
}

impl SyncingDevices {
    pub fn new(master: Arc<dyn Master>, config: &PresenceConfig) -> Arc<SyncingDevices> {
        let report_every = Duration::from_millis(config.syncing_report_interval_ms());
        Arc::new(SyncingDevices {
            master,
            enabled: config.enabled,
            tracked: Mutex::new(Tracked { devices: HashMap::new(), report_every }),
            reporter: Once::new(),
            failing: AtomicBool::new(false),
        })
    }

    /// A sync of `device_id` with `set_presence` = `presence` starts: tells the master when
    /// due. The guard counts the sync out when dropped.
    pub(crate) async fn sync_started(
        self: &Arc<Self>,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        presence: PresenceState,
    ) -> SyncingGuard {
        // `offline` means "do not change my presence": the device is not tracked either.
        if !self.enabled || presence == PresenceState::Offline {
            return SyncingGuard { devices: None };
        }
        self.reporter.call_once(|| {
            tokio::spawn(report_long_polls(Arc::downgrade(self)));
        });
        let key = (user_id.clone(), device_id.clone());
        let report = self.tracked.lock().sync_starts(&key, presence, Instant::now());
        if report != Report::Nothing {
            let reported = tokio::spawn(self.clone().report(key.clone(), presence));
            if report == Report::AndWait {
                let _ = tokio::time::timeout(REPORT_WAIT, reported).await;
            }
        }
        SyncingGuard { devices: Some((self.clone(), key)) }
    }

    /// Tells the master. A failed report is not retried: the next one is at most an interval
    /// away, well within the offline timeout.
    async fn report(self: Arc<Self>, (user_id, device_id): DeviceKey, presence: PresenceState) {
        match self.master.presence_syncing(PresenceSyncing { user_id, device_id, presence }).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("presence reports reach the master again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot report syncing devices to the master");
                }
            }
        }
    }
}

/// Reports the devices held in long-polls, whose syncs started too long ago to count, until
/// the worker goes away.
async fn report_long_polls(devices: std::sync::Weak<SyncingDevices>) {
    let Some(report_every) = devices.upgrade().map(|devices| devices.tracked.lock().report_every) else {
        return;
    };
    let mut interval = tokio::time::interval((report_every / 2).max(Duration::from_millis(50)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(devices) = devices.upgrade() else { return };
        let due = devices.tracked.lock().due_long_polls(Instant::now());
        for (key, presence) in due {
            tokio::spawn(devices.clone().report(key, presence));
        }
    }
}

#[cfg(test)]
mod tests;
