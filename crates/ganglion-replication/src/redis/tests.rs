use redis::Value;

use super::follower::tests_support::parse;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn xread_replies_parse_in_resp2_and_resp3_shapes() {
    let entries = Value::Array(vec![Value::Array(vec![
        bulk("7-0"),
        Value::Array(vec![bulk("p"), bulk("7"), bulk("r"), bulk("!a:x"), bulk("u"), bulk("[\"@b:x\"]")]),
    ])]);
    let resp2 = Value::Array(vec![Value::Array(vec![bulk("ganglion:events"), entries.clone()])]);
    let resp3 = Value::Map(vec![(bulk("ganglion:events"), entries)]);
    for reply in [resp2, resp3] {
        let streams = parse(reply);
        assert_eq!(streams.len(), 1);
        let (key, entries) = &streams[0];
        assert_eq!(key, "ganglion:events");
        assert_eq!(
            entries,
            &vec![("7-0".to_owned(), Some(7), Some("!a:x".to_owned()), vec!["@b:x".to_owned()])]
        );
    }
    assert!(parse(Value::Nil).is_empty());
}
