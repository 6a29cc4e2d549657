use ganglion_events::ruma::RoomVersionId;

use super::power;

mod auth_chains;
mod backlogs;
mod key_backup;

#[test]
fn v12_creators_have_infinite_power() {
    let rules = RoomVersionId::V12.rules().unwrap().authorization;
    let key = ganglion_events::ServerKey::ephemeral("x");
    let alice = ganglion_events::ruma::UserId::parse("@alice:x").unwrap();
    let create = ganglion_events::build_pdu(
        &key,
        &RoomVersionId::V12.rules().unwrap(),
        None,
        &alice,
        &ganglion_events::EventTemplate::state(
            "m.room.create",
            "",
            serde_json::json!({"room_version": "12"}),
        ),
        &[],
        &[],
        1,
        1,
    )
    .unwrap();
    assert_eq!(power::user_power(&rules, &create, None, "@alice:x"), i64::MAX);
    assert_eq!(power::user_power(&rules, &create, None, "@bob:x"), 0);
    assert_eq!(power::required_power(None, "redact", 50), 50);
}
