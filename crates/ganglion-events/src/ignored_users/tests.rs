use serde_json::json;

use super::*;

const OWNER: &str = "@alice:example.org";

#[test]
fn a_list_of_the_spec_shape_is_accepted() {
    let content = json!({ "ignored_users": { "@bob:example.org": {}, "@carol:other.example": {} } });
    assert_eq!(check_ignored_user_list(&content, OWNER), Ok(()));
    assert_eq!(check_ignored_user_list(&json!({ "ignored_users": {} }), OWNER), Ok(()));
}

#[test]
fn junk_is_bad_json_and_the_owner_is_an_invalid_param() {
    let refused = |content: Value| check_ignored_user_list(&content, OWNER).unwrap_err();
    assert_eq!(refused(json!({})), IgnoredUsersError::NotAnObject);
    assert_eq!(refused(json!({ "ignored_users": ["@bob:example.org"] })), IgnoredUsersError::NotAnObject);
    assert_eq!(refused(json!({ "ignored_users": null })), IgnoredUsersError::NotAnObject);
    assert_eq!(
        refused(json!({ "ignored_users": { "bob": {} } })),
        IgnoredUsersError::NotAUserId("bob".into())
    );
    assert_eq!(
        refused(json!({ "ignored_users": { "@bob:example.org": true } })),
        IgnoredUsersError::EntryNotAnObject("@bob:example.org".into())
    );
    let yourself = refused(json!({ "ignored_users": { OWNER: {} } }));
    assert_eq!(yourself, IgnoredUsersError::Yourself);
    assert_eq!(yourself.class(), ErrorClass::InvalidParam);
    assert_eq!(IgnoredUsersError::NotAnObject.class(), ErrorClass::BadJson);
}

#[test]
fn stored_lists_are_read_leniently() {
    let stored = json!({ "ignored_users": { "@bob:example.org": {}, OWNER: {}, "junk": 1 } });
    let ignored = ignored_users_of(&stored.to_string(), OWNER);
    assert_eq!(ignored, HashSet::from(["@bob:example.org".to_owned()]));
    assert!(ignored_users_of(r#"{"ignored_users": []}"#, OWNER).is_empty());
    assert!(ignored_users_of("not json", OWNER).is_empty());
    assert!(ignored_users_of("{}", OWNER).is_empty());
}
