use super::{Lag, Status};

#[test]
fn a_workers_answer_parses() {
    let body = r#"{"following_redis":true,"positions":"s12_3_0_4_1","lag_ms":{"samples":20000,"p50":0.4,"p99":2.5,"max":11.0}}"#;
    let status: Status = serde_json::from_str(body).unwrap();
    assert!(status.following_redis);
    assert_eq!(status.positions, "s12_3_0_4_1");
    assert_eq!(status.lag_ms, Lag { samples: 20000, p50: 0.4, p99: 2.5, max: 11.0 });
}

#[test]
fn an_answer_without_samples_parses() {
    let body =
        r#"{"following_redis":false,"positions":"x","lag_ms":{"samples":0,"p50":0.0,"p99":0.0,"max":0.0}}"#;
    let status: Status = serde_json::from_str(body).unwrap();
    assert!(!status.following_redis);
    assert_eq!(status.lag_ms, Lag::default());
}
