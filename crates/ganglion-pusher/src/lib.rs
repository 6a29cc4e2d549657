//! The pusher role: what the master's push rules decided (`push_actions`, written with each
//! event) goes to the users' push gateways, in position order, one notification per event and
//! pusher (a pusher is one device of one app).
//!
//! Each pusher stores the events position it has delivered up to, moved on after each
//! notification the gateway took, so a pusher killed midway resumes where it was: nothing is
//! lost, and nothing but the one notification in flight at the kill could go twice. A pusher
//! sends its next notification only once the last one's position is committed; the positions
//! of every pusher waiting on one are committed together (a group commit), so the write per
//! notification does not bound the rate. A gateway
//! that fails (5xx, unreachable) is tried again after a back-off that doubles up to a cap, with
//! the same notification first; one that rejects the pushkey loses the pusher; one that refuses a
//! notification otherwise (4xx) has it skipped. Woken by the events stream.
//!
//! `role = "all"` pushes in process; a cluster's `pusher` instances share the users between them
//! by a stable hash of the user id (the master pushes when the cluster has none), and take the
//! new shares when SIGHUP reloads a changed `instance_map`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use ganglion_config::{Config, Duty};
use ganglion_push_gateway::{GatewayError, Gateways, Url};
use ganglion_replication::Positions;
use ganglion_state::Caches;
use ganglion_storage::{
    Db,
    push_actions::{self, PushNoticeRow},
    pushers::{self, PusherRow},
};
use ganglion_types::{RoomNid, StreamKind, SyncToken};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// How often pushers are looked at when the events stream does not move.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// Notices read per round (each may concern several of the pushers' users).
const BATCH: i64 = 200;
/// Users served at once: one slow gateway holds up only its own users. Delivery holds no
/// database connection, so this is bounded by the gateways, not the pool.
const CONCURRENT_USERS: usize = 256;
/// Positions written in one commit at most.
const POSITIONS_PER_COMMIT: usize = 1024;
/// How long a cached badge is trusted at most: a receipt or membership change the pusher
/// missed (one committed out of position order) is corrected by then.
const BADGE_TTL: Duration = Duration::from_secs(60);

/// Each served user's badge (the rooms with an unread notification), kept from round to round:
/// new notices add their rooms; a read receipt or a membership change of the user's drops it,
/// to be read again. Reading it costs a query per joined room, too much for every round.
#[derive(Default)]
struct Badges {
    users: HashMap<String, Badge>,
    /// The receipts position whose changes were applied; `None` before the first round.
    receipts_seen: Option<i64>,
    /// The events position up to which membership changes were applied.
    events_seen: i64,
    swept: Option<Instant>,
}

struct Badge {
    rooms: HashSet<RoomNid>,
    /// The notices up to this events position are in `rooms`.
    as_of: i64,
    read_at: Instant,
}

/// A pusher that failed: not tried again before `until`.
#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    interval: Duration,
}

type PusherKey = (String, String, String);

fn key_of(pusher: &PusherRow) -> PusherKey {
    (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone())
}

/// Counts of what the pushers did, for metrics.
#[derive(Default)]
pub struct PusherStats {
    pub sent: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl PusherStats {
    /// `(result, count)`: notifications the gateways took, attempts that failed, pushers dropped.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        vec![
            ("sent", self.sent.load(Relaxed)),
            ("failed", self.failed.load(Relaxed)),
            ("pusher_dropped", self.dropped.load(Relaxed)),
        ]
    }
}

pub struct Pusher {
    db: Db,
    caches: Arc<Caches>,
    positions: Arc<Positions>,
    config: Arc<Config>,
    duty: tokio::sync::watch::Receiver<Duty>,
    backoff: Mutex<HashMap<PusherKey, Backoff>>,
    gateways: Gateways,
    positions_written: tokio::sync::mpsc::Sender<Advance>,
    badges: Mutex<Badges>,
    pub stats: Arc<PusherStats>,
}

/// A pusher's new position, and who waits for it to be committed.
struct Advance {
    key: PusherKey,
    position: i64,
    committed: tokio::sync::oneshot::Sender<()>,
}

/// Commits the positions sent on `advances`: whatever is waiting when a commit starts goes in
/// it. A failed commit drops its waiters' senders, and they stop for this round.
async fn write_positions(db: Db, mut advances: tokio::sync::mpsc::Receiver<Advance>) {
    while let Some(first) = advances.recv().await {
        let mut batch = vec![first];
        while batch.len() < POSITIONS_PER_COMMIT {
            match advances.try_recv() {
                Ok(advance) => batch.push(advance),
                Err(_) => break,
            }
        }
        let keys: Vec<((&str, &str, &str), i64)> = batch
            .iter()
            .map(|advance| {
                ((advance.key.0.as_str(), advance.key.1.as_str(), advance.key.2.as_str()), advance.position)
            })
            .collect();
        let written = async {
            let mut tx = db.begin().await?;
            pushers::advance_pushers(&mut tx, &keys).await?;
            tx.commit().await?;
            Ok::<(), ganglion_storage::StorageError>(())
        };
        match written.await {
            Ok(()) => batch.into_iter().for_each(|advance| {
                let _ = advance.committed.send(());
            }),
            Err(error) => tracing::warn!(%error, "writing the pushers' positions failed"),
        }
    }
}

impl Pusher {
    pub fn new(
        db: Db,
        caches: Arc<Caches>,
        positions: Arc<Positions>,
        config: Arc<Config>,
        duty: tokio::sync::watch::Receiver<Duty>,
        stats: Arc<PusherStats>,
    ) -> Pusher {
        let (positions_written, advances) = tokio::sync::mpsc::channel(POSITIONS_PER_COMMIT);
        tokio::spawn(write_positions(db.clone(), advances));
        Pusher {
            db,
            caches,
            positions,
            config,
            duty,
            backoff: Mutex::default(),
            gateways: Gateways::default(),
            positions_written,
            badges: Mutex::default(),
            stats,
        }
    }

    /// Pushes until the process ends.
    pub async fn run(mut self) {
        let mut last_reached = None;
        loop {
            let duty = *self.duty.borrow_and_update();
            let up_to = self.positions.get(StreamKind::Events).0;
            if duty != Duty::Nothing {
                match self.round(duty, up_to).await {
                    // A full batch left a backlog: on with it at once, while it moves.
                    Ok(reached) if reached < up_to && last_reached != Some(reached) => {
                        last_reached = Some(reached);
                        continue;
                    }
                    Ok(reached) => last_reached = Some(reached),
                    Err(error) => tracing::warn!(%error, "reading the pushers failed"),
                }
            }
            // Woken by the next event (or a retry coming due).
            let next =
                SyncToken { events: ganglion_types::StreamPosition(up_to + 1), ..SyncToken::default() };
            let wait = self.next_retry().map_or(POLL_INTERVAL, |due| due.min(POLL_INTERVAL));
            self.positions.wait_for(&next, wait).await;
        }
    }

    fn next_retry(&self) -> Option<Duration> {
        let now = Instant::now();
        self.backoff.lock().values().map(|backoff| backoff.until.saturating_duration_since(now)).min()
    }

    /// Delivers what every pusher of the duty's users is owed up to `up_to`: the notices after
    /// the furthest-behind pusher's position, read once for all of them. How far it got:
    /// `up_to`, or the last notice of a full batch.
    async fn round(&self, duty: Duty, up_to: i64) -> ganglion_storage::Result<i64> {
        let (behind, notices) = {
            let mut conn = self.db.conn().await?;
            self.forget_stale_badges(&mut conn, up_to).await?;
            let now = Instant::now();
            let behind: Vec<PusherRow> = pushers::pushers_behind(&mut conn, up_to)
                .await?
                .into_iter()
                .filter(|pusher| duty.covers(&pusher.user_id))
                .filter(|pusher| {
                    self.backoff.lock().get(&key_of(pusher)).is_none_or(|backoff| backoff.until <= now)
                })
                .collect();
            let Some(after) = behind.iter().map(|pusher| pusher.last_stream_pos).min() else {
                return Ok(up_to);
            };
            (behind, push_actions::notices_between(&mut conn, after, up_to, BATCH).await?)
        };
        // A full batch reaches only as far as its last notice.
        let reached = match notices.len() as i64 == BATCH {
            true => notices.last().map_or(up_to, |notice| notice.stream_pos),
            false => up_to,
        };
        let mut by_user: BTreeMap<String, Vec<PusherRow>> = BTreeMap::new();
        for pusher in behind {
            by_user.entry(pusher.user_id.clone()).or_default().push(pusher);
        }
        // Each notice naming a served user is parsed and its notification built once, for all
        // of them.
        let parsed: Vec<ParsedNotice> = notices
            .iter()
            .map(ParsedNotice::of)
            .filter(|parsed| parsed.users.keys().any(|user| by_user.contains_key(user)))
            .collect();
        let mut built: HashMap<i64, Built> = HashMap::new();
        if !parsed.is_empty() {
            let mut conn = self.db.conn().await?;
            for notice in &parsed {
                if let Some(notification) = self.notification(&mut conn, notice.notice).await? {
                    built.insert(notice.notice.stream_pos, notification);
                }
            }
        }
        let (parsed, built) = (&parsed, &built);
        futures_util::stream::iter(by_user)
            .for_each_concurrent(CONCURRENT_USERS, |(user_id, pushers)| async move {
                let notices = (parsed.as_slice(), built);
                if let Err(error) = self.serve_user(&user_id, pushers, notices, (reached, up_to)).await {
                    tracing::warn!(%error, %user_id, "pushing failed");
                }
            })
            .await;
        Ok(reached)
    }

    /// Delivers the user's part of `notices` to each of their `pushers`, then moves them on to
    /// `reached`. Delivery holds no database connection.
    async fn serve_user(
        &self,
        user_id: &str,
        pushers: Vec<PusherRow>,
        (notices, built): (&[ParsedNotice<'_>], &HashMap<i64, Built>),
        (reached, up_to): (i64, i64),
    ) -> ganglion_storage::Result<()> {
        let mine: Vec<PushActionRow> = notices.iter().filter_map(|notice| notice.for_user(user_id)).collect();
        let behind = pushers.iter().map(|pusher| pusher.last_stream_pos).min().unwrap_or(reached);
        let badge = match mine.iter().any(|action| action.notice.stream_pos > behind) {
            false => 0,
            true => self.badge(user_id, &mine, built, (reached, up_to)).await?,
        };
        'pushers: for pusher in pushers {
            let key = key_of(&pusher);
            let due = mine.iter().filter(|action| action.notice.stream_pos > pusher.last_stream_pos);
            for action in due {
                // An event gone since (purged) is skipped.
                if let Some(notification) = built.get(&action.notice.stream_pos) {
                    match self.deliver(&pusher, notification, action, badge).await {
                        Delivery::Taken => {}
                        Delivery::Retry => continue 'pushers,
                        Delivery::Dropped => {
                            let mut conn = self.db.conn().await?;
                            pushers::delete_pusher(&mut conn, &key.0, &key.1, &key.2).await?;
                            continue 'pushers;
                        }
                    }
                }
                if !self.advance(key.clone(), action.notice.stream_pos).await {
                    return Ok(());
                }
            }
            if !self.advance(key, reached).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Drops the cached badges of users whose read receipts or memberships changed since the
    /// last round, and those older than [`BADGE_TTL`].
    async fn forget_stale_badges(
        &self,
        conn: &mut ganglion_storage::Conn,
        up_to: i64,
    ) -> ganglion_storage::Result<()> {
        let (receipts_seen, events_seen) = {
            let badges = self.badges.lock();
            (badges.receipts_seen, badges.events_seen)
        };
        let Some(receipts_seen) = receipts_seen else {
            // Nothing is cached yet: only where to start watching from.
            let receipts_now = ganglion_storage::streams::max_receipt_stream_pos(conn).await?;
            let mut badges = self.badges.lock();
            (badges.receipts_seen, badges.events_seen) = (Some(receipts_now), up_to);
            return Ok(());
        };
        let (readers, receipts_now) = push_actions::users_with_receipts_after(conn, receipts_seen).await?;
        let members = match up_to > events_seen {
            true => push_actions::users_with_membership_changes(conn, events_seen, up_to).await?,
            false => Vec::new(),
        };
        let mut badges = self.badges.lock();
        for user in readers.iter().chain(&members) {
            badges.users.remove(user);
        }
        badges.receipts_seen = Some(receipts_now);
        badges.events_seen = badges.events_seen.max(up_to);
        if badges.swept.is_none_or(|swept| swept.elapsed() >= BADGE_TTL) {
            badges.users.retain(|_, badge| badge.read_at.elapsed() < BADGE_TTL);
            badges.swept = Some(Instant::now());
        }
        Ok(())
    }

    /// The user's badge as of `up_to`: the cached one with the rooms of `mine` up to
    /// `reached` added, or read afresh.
    async fn badge(
        &self,
        user_id: &str,
        mine: &[PushActionRow<'_>],
        built: &HashMap<i64, Built>,
        (reached, up_to): (i64, i64),
    ) -> ganglion_storage::Result<i64> {
        // An invite of the user's is a room they are not joined to: read afresh (rarely).
        let targets_user = |action: &&PushActionRow| {
            built.get(&action.notice.stream_pos).and_then(|b| b.member_target.as_deref()) == Some(user_id)
        };
        if let Some(badge) = self.badges.lock().users.get_mut(user_id)
            && badge.read_at.elapsed() < BADGE_TTL
            && !mine.iter().filter(|action| action.notice.stream_pos > badge.as_of).any(|a| targets_user(&a))
        {
            for action in mine.iter().filter(|action| action.notice.stream_pos > badge.as_of) {
                badge.rooms.insert(action.notice.room_nid);
            }
            badge.as_of = badge.as_of.max(reached);
            return Ok(badge.rooms.len() as i64);
        }
        let mut conn = self.db.conn().await?;
        let rooms: HashSet<RoomNid> =
            push_actions::unread_rooms_of_user(&mut conn, user_id, up_to).await?.into_iter().collect();
        let count = rooms.len() as i64;
        let badge = Badge { rooms, as_of: up_to, read_at: Instant::now() };
        self.badges.lock().users.insert(user_id.to_owned(), badge);
        Ok(count)
    }

    /// Moves a pusher on to `position` and waits until that is committed; `false` if it could
    /// not be.
    async fn advance(&self, key: PusherKey, position: i64) -> bool {
        let (committed, done) = tokio::sync::oneshot::channel();
        if self.positions_written.send(Advance { key, position, committed }).await.is_err() {
            return false;
        }
        done.await.is_ok()
    }

    /// The event's part of a notification (the full format's fields, the same for every user
    /// it notified), or `None` for an event that is not there.
    async fn notification(
        &self,
        conn: &mut ganglion_storage::Conn,
        notice: &PushNoticeRow,
    ) -> ganglion_storage::Result<Option<Built>> {
        let state =
            |error: ganglion_state::StateError| ganglion_storage::StorageError::Corrupt(error.to_string());
        let Some(event) = self.caches.event(conn, notice.event_nid).await.map_err(state)? else {
            return Ok(None);
        };
        let pdu = &event.pdu;
        let snapshot = self.caches.snapshot(conn, event.row.snapshot_nid).await.map_err(state)?;
        let content_of = |event: Option<ganglion_state::StoredEvent>, key: &str| {
            event.and_then(|event| event.pdu.content_value().get(key)?.as_str().map(str::to_owned))
        };
        let sender = self
            .caches
            .state_event(conn, &snapshot, "m.room.member", pdu.sender.as_str())
            .await
            .map_err(state)?;
        let room_name = self.caches.state_event(conn, &snapshot, "m.room.name", "").await.map_err(state)?;
        let mut notification = json!({
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "type": pdu.kind.to_string(),
            "sender": pdu.sender,
            "content": pdu.content_value(),
        });
        if let Some(name) = content_of(sender, "displayname") {
            notification["sender_display_name"] = json!(name);
        }
        if let Some(name) = content_of(room_name, "name") {
            notification["room_name"] = json!(name);
        }
        let member_target = match pdu.kind.to_string() == "m.room.member" {
            true => pdu.state_key.clone(),
            false => None,
        };
        Ok(Some(Built { notification, member_target }))
    }

    /// Posts one notification to the pusher's gateway.
    async fn deliver(
        &self,
        pusher: &PusherRow,
        built: &Built,
        action: &PushActionRow<'_>,
        badge: i64,
    ) -> Delivery {
        let key = key_of(pusher);
        let mut data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
        let Some(url) = data.remove("url").and_then(|url| Url::parse(url.as_str()?).ok()) else {
            tracing::warn!(app_id = %pusher.app_id, "a pusher without a usable URL is dropped");
            return Delivery::Dropped;
        };
        let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
        let actions = action.actions.as_array().cloned().unwrap_or_default();
        let tweaks: Map<String, Value> = actions
            .iter()
            .filter_map(|action| {
                let tweak = action.get("set_tweak")?.as_str()?;
                Some((tweak.to_owned(), action.get("value").cloned().unwrap_or(Value::Bool(true))))
            })
            .collect();
        let high = tweaks.contains_key("sound")
            || tweaks.get("highlight").is_some_and(|value| value != &Value::Bool(false))
            || built.notification["type"] == "m.room.encrypted";
        let device = json!({
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.created_ts / 1000,
            "data": data,
            "tweaks": tweaks,
        });
        let event = &built.notification;
        let mut notification = match event_id_only {
            true => json!({ "event_id": event["event_id"], "room_id": event["room_id"] }),
            false => event.clone(),
        };
        if let Some(target) = built.member_target.as_deref().filter(|_| !event_id_only) {
            notification["user_is_target"] = json!(target == pusher.user_id);
        }
        notification["prio"] = json!(if high { "high" } else { "low" });
        notification["counts"] = json!({ "unread": badge });
        notification["devices"] = json!([device]);
        let sent = self
            .gateways
            .notify(&url, &json!({ "notification": notification }), &self.config.push.allowed_address_ranges)
            .await;
        let stats = &self.stats;
        match sent {
            Ok(rejected) if rejected.contains(&pusher.pushkey) => {
                tracing::info!(app_id = %pusher.app_id, user_id = %pusher.user_id, "the gateway rejected the pushkey: pusher dropped");
                stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.backoff.lock().remove(&key);
                Delivery::Dropped
            }
            Ok(_) => {
                stats.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.backoff.lock().remove(&key);
                Delivery::Taken
            }
            Err(error) => {
                stats.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.failed(key, pusher, &error)
            }
        }
    }

    fn failed(&self, key: PusherKey, pusher: &PusherRow, error: &GatewayError) -> Delivery {
        if !error.is_transient() {
            tracing::warn!(%error, app_id = %pusher.app_id, user_id = %pusher.user_id, "the push gateway refused a notification: skipped");
            return Delivery::Taken;
        }
        let mut backoff = self.backoff.lock();
        let interval = backoff.get(&key).map_or(FIRST_RETRY, |backoff| (backoff.interval * 2).min(MAX_RETRY));
        tracing::info!(%error, app_id = %pusher.app_id, user_id = %pusher.user_id, retry_in = ?interval, "the push gateway failed");
        backoff.insert(key, Backoff { until: Instant::now() + interval, interval });
        Delivery::Retry
    }
}

/// One notice of the user's: what their rules decided.
struct PushActionRow<'n> {
    notice: &'n PushNoticeRow,
    actions: Value,
}

/// A notice with its users and actions parsed, once for every user it names.
struct ParsedNotice<'n> {
    notice: &'n PushNoticeRow,
    /// User id -> `(highlight, index into actions)`.
    users: HashMap<String, (u8, usize)>,
    actions: Vec<Value>,
}

impl<'n> ParsedNotice<'n> {
    fn of(notice: &'n PushNoticeRow) -> ParsedNotice<'n> {
        ParsedNotice {
            notice,
            users: serde_json::from_str(&notice.users).unwrap_or_default(),
            actions: serde_json::from_str(&notice.actions).unwrap_or_default(),
        }
    }

    /// The notice as it concerns `user_id`, if it notified them.
    fn for_user(&self, user_id: &str) -> Option<PushActionRow<'n>> {
        let (_, index) = self.users.get(user_id)?;
        let actions = self.actions.get(*index).cloned().unwrap_or(Value::Array(Vec::new()));
        Some(PushActionRow { notice: self.notice, actions })
    }
}

/// An event's notification, built once for every user it notified.
struct Built {
    notification: Value,
    /// A membership event's target: `user_is_target` differs per user.
    member_target: Option<String>,
}

enum Delivery {
    /// The gateway took it (or refused it for good): on to the next.
    Taken,
    /// Try this one again after the back-off.
    Retry,
    /// The pusher is gone (its pushkey rejected).
    Dropped,
}
