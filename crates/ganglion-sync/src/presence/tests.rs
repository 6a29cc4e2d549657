//! Which syncs reach the master, and which members a response brings the presence of.

use std::{collections::HashMap, time::Duration};

use ganglion_events::presence::PresenceState::{Online, Unavailable};
use tokio::time::Instant;

use super::{DeviceKey, Report, Tracked};

const EVERY: Duration = Duration::from_secs(20);

fn key(device: &str) -> DeviceKey {
    ("@alice:x".try_into().unwrap(), device.into())
}

#[test]
fn a_device_reaches_the_master_when_new_changed_or_due() {
    let mut tracked = Tracked { devices: HashMap::new(), report_every: EVERY };
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let phone = key("PHONE");
    assert_eq!(tracked.sync_starts(&phone, Online, at(0)), Report::AndWait);
    tracked.sync_ends(&phone, at(0));
    // A client syncing back to back: one report per interval, whatever the number of syncs.
    let mut reports = Vec::new();
    for second in 1..=60 {
        let report = tracked.sync_starts(&phone, Online, at(second));
        tracked.sync_ends(&phone, at(second));
        if report != Report::Nothing {
            reports.push((second, report));
        }
    }
    assert_eq!(reports, [(20, Report::InBackground), (40, Report::InBackground), (60, Report::InBackground)]);
    // A new presence is told at once, and the sync waits for it.
    assert_eq!(tracked.sync_starts(&phone, Unavailable, at(61)), Report::AndWait);
    tracked.sync_ends(&phone, at(61));
    assert_eq!(tracked.sync_starts(&phone, Unavailable, at(62)), Report::Nothing);
    // Another device of the same user is its own.
    assert_eq!(tracked.sync_starts(&key("LAPTOP"), Online, at(62)), Report::AndWait);
}

#[test]
fn long_polls_are_reported_while_they_last_and_idle_devices_forgotten() {
    let mut tracked = Tracked { devices: HashMap::new(), report_every: EVERY };
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let (phone, laptop) = (key("PHONE"), key("LAPTOP"));
    tracked.sync_starts(&phone, Online, at(0));
    tracked.sync_starts(&laptop, Unavailable, at(0));
    tracked.sync_ends(&laptop, at(1));
    assert!(tracked.due_long_polls(at(10)).is_empty());
    // The phone is still in its long-poll; the laptop's sync ended.
    assert_eq!(tracked.due_long_polls(at(20)), [(phone.clone(), Online)]);
    assert!(tracked.due_long_polls(at(30)).is_empty());
    assert_eq!(tracked.due_long_polls(at(40)), [(phone.clone(), Online)]);
    tracked.sync_ends(&phone, at(45));
    assert!(tracked.due_long_polls(at(100)).is_empty());
    assert_eq!(tracked.devices.len(), 2);
    // Ten intervals without a sync: forgotten, and new again when it comes back.
    tracked.due_long_polls(at(202));
    assert_eq!(tracked.devices.len(), 1);
    tracked.due_long_polls(at(246));
    assert!(tracked.devices.is_empty());
    assert_eq!(tracked.sync_starts(&phone, Online, at(250)), Report::AndWait);
}
