use ganglion_types::ErrorClass;

use super::{VersionQuery, version_number};

#[test]
fn versions_are_the_numbers_the_master_hands_out() {
    assert_eq!(version_number("1").unwrap(), 1);
    assert_eq!(version_number("9007199254740993").unwrap(), 9_007_199_254_740_993);
    for other in ["", "0", "-1", "+1", "01", " 1", "1.0", "one", "99999999999999999999"] {
        assert_eq!(version_number(other).unwrap_err().class, ErrorClass::NotFound, "{other:?}");
    }
}

#[test]
fn the_keys_endpoints_require_a_version() {
    let query = VersionQuery { version: None };
    assert_eq!(query.number().unwrap_err().class, ErrorClass::MissingParam);
    let query = VersionQuery { version: Some("abc".to_owned()) };
    assert_eq!(query.number().unwrap_err().class, ErrorClass::NotFound);
}
