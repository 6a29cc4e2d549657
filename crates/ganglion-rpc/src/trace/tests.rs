use super::*;

fn fields(traceparent: &str) -> Vec<&str> {
    traceparent.split('-').collect()
}

#[test]
fn new_traceparent_is_valid_and_random() {
    let first = new_traceparent();
    assert!(is_valid(&first), "{first}");
    assert_eq!(first.len(), 55);
    assert!(first.starts_with("00-") && first.ends_with("-01"));
    assert_ne!(fields(&first)[1], fields(&new_traceparent())[1]);
}

#[test]
fn child_keeps_the_trace_and_flags_with_a_new_span() {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let child = child_of(parent);
    assert!(is_valid(&child), "{child}");
    assert_eq!(fields(&child)[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(fields(&child)[2], "00f067aa0ba902b7");
    assert_eq!(fields(&child)[3], "00");
}

#[test]
fn unparsable_parent_starts_a_new_trace() {
    for parent in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        assert!(!is_valid(parent), "{parent}");
        let child = child_of(parent);
        assert!(is_valid(&child), "{child}");
        assert_ne!(fields(&child)[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}

#[test]
fn later_versions_may_carry_more_fields() {
    let parent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    assert_eq!(fields(&child_of(parent))[1], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test]
async fn current_is_set_only_inside_scope() {
    assert_eq!(current(), None);
    let traceparent = new_traceparent();
    let seen = scope(traceparent.clone(), async { current() }).await;
    assert_eq!(seen, Some(traceparent));
    assert_eq!(current(), None);
}
