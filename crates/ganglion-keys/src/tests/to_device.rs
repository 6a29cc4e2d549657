use ruma::to_device::DeviceIdOrAllDevices;

use super::*;

fn check(body: &Value) -> Result<Vec<ToDeviceMessage>, KeyError> {
    check_to_device_messages(&alice(), "m.room_key_request", body)
}

#[test]
fn messages_to_devices_and_to_all_devices_are_listed() {
    let body = json!({
        "messages": {
            "@bob:example.org": { "BOBDEVICE": { "a": 1 }, "*": { "b": 2 } },
            "@carol:other.example": {},
        }
    });
    let messages = check(&body).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].user_id, UserId::parse("@bob:example.org").unwrap());
    assert_eq!(messages[0].device, DeviceIdOrAllDevices::AllDevices);
    assert_eq!(messages[0].content, r#"{"b":2}"#);
    assert_eq!(messages[1].device, DeviceIdOrAllDevices::DeviceId("BOBDEVICE".into()));
    assert_eq!(check(&json!({ "messages": {} })).unwrap(), []);
}

#[test]
fn bad_shapes_and_event_types_are_refused() {
    let cases = [
        (json!({}), ErrorClass::BadJson),
        (json!({ "messages": [] }), ErrorClass::BadJson),
        (json!({ "messages": { "@bob:example.org": [] } }), ErrorClass::BadJson),
        (json!({ "messages": { "@bob:example.org": { "D": "text" } } }), ErrorClass::BadJson),
        (json!({ "messages": { "@bob:example.org": { "": {} } } }), ErrorClass::InvalidParam),
        (json!({ "messages": { "bob": { "D": {} } } }), ErrorClass::InvalidParam),
        (json!({ "messages": { "@bob:example.org": { "D": { "n": 0.5 } } } }), ErrorClass::BadJson),
    ];
    for (body, expected) in cases {
        assert_eq!(class(check(&body)), expected, "{body}");
    }
    let body = json!({ "messages": {} });
    let too_long = "m".repeat(MAX_EVENT_TYPE_BYTES + 1);
    for event_type in ["", too_long.as_str()] {
        let error = check_to_device_messages(&alice(), event_type, &body).unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidParam);
    }
    assert!(check_to_device_messages(&alice(), &too_long[1..], &body).is_ok());
}

#[test]
fn each_message_must_fit_alone_in_a_federation_edu() {
    let body_with = |padding: usize| json!({ "messages": { "@bob:example.org": { "BOBDEVICE": { "p": "x".repeat(padding) } } } });
    // The EDU around this message, measured independently of the code under test.
    let edu_bytes = |padding: usize| {
        let edu = json!({
            "content": {
                "message_id": "x".repeat(32),
                "messages": { "@bob:example.org": { "BOBDEVICE": { "p": "x".repeat(padding) } } },
                "sender": "@alice:example.org",
                "type": "m.room_key_request",
            },
            "edu_type": "m.direct_to_device",
        });
        CanonicalJsonValue::try_from(edu).unwrap().to_string().len()
    };
    let fits = MAX_TO_DEVICE_EDU_BYTES - edu_bytes(0);
    assert_eq!(edu_bytes(fits), MAX_TO_DEVICE_EDU_BYTES);
    assert!(check(&body_with(fits)).is_ok());
    let error = check(&body_with(fits + 1)).unwrap_err();
    assert_eq!(
        error,
        KeyError::TooLarge {
            what: "messages.@bob:example.org.BOBDEVICE".into(),
            bytes: MAX_TO_DEVICE_EDU_BYTES + 1,
            max: MAX_TO_DEVICE_EDU_BYTES,
        }
    );
    assert_eq!(error.class(), ErrorClass::TooLarge);
    // The bound is per message: many messages that each fit pass, the body limit bounds the rest.
    let devices: serde_json::Map<String, Value> =
        (0..3).map(|index| (format!("D{index}"), json!({ "p": "x".repeat(fits) }))).collect();
    assert_eq!(check(&json!({ "messages": { "@bob:example.org": devices } })).unwrap().len(), 3);
}
