use super::{percentile, summarize_ns};

#[test]
fn nearest_rank_percentiles() {
    let samples: Vec<u32> = (1..=100).collect();
    assert_eq!(percentile(&samples, 50.0), Some(50));
    assert_eq!(percentile(&samples, 99.0), Some(99));
    assert_eq!(percentile(&samples, 100.0), Some(100));
    assert_eq!(percentile(&samples, 0.0), Some(1));
    assert_eq!(percentile(&[7], 99.0), Some(7));
    assert_eq!(percentile::<u32>(&[], 50.0), None);
}

#[test]
fn p99_of_few_samples_is_the_max() {
    assert_eq!(percentile(&[1, 2, 3], 99.0), Some(3));
}

#[test]
fn summary_is_in_milliseconds_and_sorts() {
    let mut samples = vec![3_000_000, 1_000_000, -2_000_000, 2_000_000];
    let summary = summarize_ns(&mut samples).unwrap();
    assert_eq!(summary.count, 4);
    assert_eq!(summary.min, -2.0);
    assert_eq!(summary.p50, 1.0);
    assert_eq!(summary.p99, 3.0);
    assert_eq!(summary.max, 3.0);
    assert_eq!(summary.mean, 1.0);
}

#[test]
fn no_samples_no_summary() {
    assert_eq!(summarize_ns(&mut []), None);
}
