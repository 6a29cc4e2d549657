//! The presence state machine, on plain timestamps.

use ganglion_events::presence::PresenceState::{self, Offline, Online, Unavailable};
use ganglion_storage::presence::PresenceRow;

use super::{Timings, UserPresence, Visible};

const DEFAULT: Timings = Timings { idle: 300_000, offline: 60_000, granularity: 60_000 };
const SHORT: Timings = Timings { idle: 1_000, offline: 10_000, granularity: 500 };

/// The row a write would store now, if clients must hear of the change.
fn written(user: &mut UserPresence, timings: &Timings) -> Option<Visible> {
    user.changed(timings).then(|| {
        user.publish();
        user.current().clone()
    })
}

fn visible(
    state: PresenceState,
    status_msg: Option<&str>,
    last_active_ts: i64,
    currently_active: bool,
) -> Visible {
    Visible { state, status_msg: status_msg.map(str::to_owned), last_active_ts, currently_active }
}

#[test]
fn a_put_sets_state_and_status_and_is_written_once() {
    let mut user = UserPresence::stored(None);
    user.set_by_client("PHONE", Online, Some("lunch".into()), 1_000, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Online, Some("lunch"), 1_000, true)));
    // The same again a little later: only last_active moved, within the granularity.
    user.set_by_client("PHONE", Online, Some("lunch".into()), 5_000, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), None);
    assert_eq!(user.current().last_active_ts, 5_000, "memory still has the newest activity");
    // A PUT without a status message clears it.
    user.set_by_client("PHONE", Online, None, 6_000, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Online, None, 6_000, true)));
    user.set_by_client("PHONE", Unavailable, Some("away".into()), 7_000, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Unavailable, Some("away"), 6_000, false)));
}

#[test]
fn syncing_online_keeps_a_user_online_and_active_without_new_rows() {
    let mut user = UserPresence::stored(None);
    user.syncing("PHONE", Online, 0, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Online, None, 0, true)));
    // A worker reports the device every 20 s; the timeouts run every second in between.
    for now in (1_000..600_000).step_by(1_000) {
        if now % 20_000 == 0 {
            user.syncing("PHONE", Online, now, &DEFAULT);
        }
        user.expire(now, &DEFAULT);
        assert_eq!(written(&mut user, &DEFAULT), None, "at {now} ms");
    }
    assert_eq!((user.current().state, user.current().currently_active), (Online, true));
}

#[test]
fn a_sync_keeps_the_status_message_and_offline_keeps_it_too() {
    let mut user = UserPresence::stored(None);
    user.set_by_client("PHONE", Online, Some("in a meeting".into()), 0, &SHORT);
    written(&mut user, &SHORT);
    user.syncing("PHONE", Unavailable, 100, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Unavailable, Some("in a meeting"), 0, false)));
    user.expire(10_101, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Offline, Some("in a meeting"), 0, false)));
    assert!(user.is_dormant());
}

#[test]
fn idle_then_offline_without_activity() {
    let mut user = UserPresence::stored(None);
    user.set_by_client("PHONE", Online, None, 0, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Online, None, 0, true)));
    user.expire(400, &SHORT);
    assert_eq!(written(&mut user, &SHORT), None);
    // Past the granularity: still online, no longer currently active.
    user.expire(600, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Online, None, 0, false)));
    user.expire(900, &SHORT);
    assert_eq!(written(&mut user, &SHORT), None);
    // Past the idle timeout.
    user.expire(1_001, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Unavailable, None, 0, false)));
    assert!(!user.is_dormant());
    user.expire(10_000, &SHORT);
    assert_eq!(written(&mut user, &SHORT), None);
    // Past the offline timeout: the device is forgotten.
    user.expire(10_001, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Offline, None, 0, false)));
    assert!(user.is_dormant());
    // Activity brings the user back.
    user.syncing("PHONE", Online, 20_000, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Online, None, 20_000, true)));
}

#[test]
fn a_user_is_the_most_present_of_their_devices() {
    let mut user = UserPresence::stored(None);
    user.syncing("PHONE", Unavailable, 0, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Unavailable, None, 0, false)));
    user.syncing("LAPTOP", Online, 100, &SHORT);
    assert_eq!(written(&mut user, &SHORT), Some(visible(Online, None, 100, true)));
    // The phone keeps syncing as unavailable; it does not pull the user down.
    user.syncing("PHONE", Unavailable, 200, &SHORT);
    assert_eq!(written(&mut user, &SHORT), None);
    // An explicit offline from the phone neither.
    user.set_by_client("PHONE", Offline, None, 300, &SHORT);
    assert_eq!(written(&mut user, &SHORT), None);
    // The laptop stops syncing: idle first, then gone; the phone still syncs as unavailable.
    for now in (400..=11_000).step_by(100) {
        user.syncing("PHONE", Unavailable, now, &SHORT);
        user.expire(now, &SHORT);
        written(&mut user, &SHORT);
    }
    // The phone's reports counted as activity while the laptop still made the user online.
    assert_eq!(user.current(), &visible(Unavailable, None, 1_200, false));
    assert_eq!(user.devices.len(), 1);
}

#[test]
fn a_sync_marked_unavailable_does_not_bump_last_active() {
    let mut user = UserPresence::stored(None);
    user.syncing("PHONE", Online, 1_000, &DEFAULT);
    written(&mut user, &DEFAULT);
    user.syncing("PHONE", Unavailable, 90_000, &DEFAULT);
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Unavailable, None, 1_000, false)));
    for now in [110_000, 130_000, 150_000] {
        user.syncing("PHONE", Unavailable, now, &DEFAULT);
        user.expire(now, &DEFAULT);
        assert_eq!(written(&mut user, &DEFAULT), None);
    }
}

#[test]
fn a_restart_gives_online_users_one_offline_timeout_to_come_back() {
    let row = PresenceRow {
        user_id: "@alice:x".into(),
        state: "online".into(),
        status_msg: Some("here".into()),
        last_active_ts: 1_000,
        currently_active: true,
        stream_pos: 7,
    };
    let mut gone = UserPresence::restored(&row, 100_000);
    let mut back = gone.clone();
    gone.expire(150_000, &DEFAULT);
    // Not active for a while: no longer currently active.
    assert_eq!(written(&mut gone, &DEFAULT), Some(visible(Online, Some("here"), 1_000, false)));
    gone.expire(160_001, &DEFAULT);
    assert_eq!(written(&mut gone, &DEFAULT), Some(visible(Offline, Some("here"), 1_000, false)));

    back.syncing("PHONE", Online, 101_000, &DEFAULT);
    back.expire(161_000, &DEFAULT);
    back.syncing("PHONE", Online, 161_000, &DEFAULT);
    assert_eq!(written(&mut back, &DEFAULT), None, "same state and status, still active");
    back.expire(200_000, &DEFAULT);
    assert_eq!(back.current(), &visible(Online, Some("here"), 161_000, true));
    assert_eq!(back.devices.len(), 1, "the restored stand-in timed out");
}

#[test]
fn a_stored_row_is_what_was_published() {
    let row = PresenceRow {
        user_id: "@alice:x".into(),
        state: "offline".into(),
        status_msg: Some("on holiday".into()),
        last_active_ts: 5,
        currently_active: false,
        stream_pos: 3,
    };
    let mut user = UserPresence::stored(Some(&row));
    assert!(user.is_dormant());
    assert_eq!(written(&mut user, &DEFAULT), None);
    assert_eq!(user.current().row("@alice:x", 3), row);
}

#[test]
fn the_timeouts_are_checked_often_enough() {
    assert_eq!(DEFAULT.tick(), std::time::Duration::from_secs(1));
    assert_eq!(SHORT.tick(), std::time::Duration::from_millis(125));
    let config = ganglion_config::PresenceConfig {
        enabled: true,
        idle_timeout_ms: 1_500,
        offline_timeout_ms: 2_000,
        federation_ping_interval_ms: 60_000,
    };
    assert_eq!(Timings::from_config(&config), Timings { idle: 1_500, offline: 2_000, granularity: 750 });
}

#[test]
fn another_servers_user_is_stored_as_reported_and_pushed_as_the_spec_says() {
    let mut user = UserPresence::stored(None);
    user.set_remote(visible(Online, Some("remote"), 9_000, true));
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Online, Some("remote"), 9_000, true)));
    // The same report again changes nothing clients see.
    user.set_remote(visible(Online, Some("remote"), 9_500, true));
    assert_eq!(written(&mut user, &DEFAULT), None);
    user.set_remote(visible(Unavailable, None, 9_500, false));
    assert_eq!(written(&mut user, &DEFAULT), Some(visible(Unavailable, None, 9_500, false)));

    let push = visible(Online, Some("tea"), 9_000, true).push("@a:x", 10_000);
    assert_eq!(
        push,
        serde_json::json!({
            "user_id": "@a:x",
            "presence": "online",
            "status_msg": "tea",
            "last_active_ago": 1_000,
            "currently_active": true,
        })
    );
    let push = visible(Offline, None, 0, false).push("@a:x", 10_000);
    assert_eq!(push.get("status_msg"), None);
    assert_eq!(push["last_active_ago"], 10_000);
}

#[test]
fn other_servers_are_owed_a_ping_while_the_user_is_not_offline() {
    let mut user = UserPresence::stored(None);
    assert!(!user.ping_due(10_000, 1_000), "offline: nothing to keep alive");
    user.set_by_client("PHONE", Online, None, 1_000, &DEFAULT);
    assert!(user.ping_due(1_000, 1_000), "never sent since the start");
    user.federated_at = 1_000;
    assert!(!user.ping_due(1_999, 1_000));
    assert!(user.ping_due(2_000, 1_000));
    user.set_by_client("PHONE", Unavailable, None, 3_000, &DEFAULT);
    assert!(user.ping_due(3_000, 1_000), "unavailable is kept alive too");
    // Restored after a restart: other servers heard of them before it.
    let row = user.current().row("@alice:x", 1);
    let restored = UserPresence::restored(&row, 50_000);
    assert!(!restored.ping_due(50_500, 1_000));
    assert!(restored.ping_due(51_000, 1_000));
}
