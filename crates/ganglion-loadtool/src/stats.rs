//! Exact percentiles over recorded samples. Runs are short, so every sample is kept and sorted
//! rather than bucketed: p99 is the 99th-percentile sample itself (nearest rank).

use serde::Serialize;

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The nearest-rank percentile of an ascending slice: the smallest sample such that at least
/// `percent`% of the samples are at or below it.
pub fn percentile<T: Copy>(sorted: &[T], percent: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summarises nanosecond samples (which may be negative) as milliseconds. Sorts in place.
pub fn summarize_ns(samples: &mut [i64]) -> Option<Summary> {
    samples.sort_unstable();
    let to_ms = |ns: i64| ns as f64 / 1e6;
    let sum: i128 = samples.iter().map(|&ns| i128::from(ns)).sum();
    Some(Summary {
        count: samples.len(),
        mean: sum as f64 / samples.len().max(1) as f64 / 1e6,
        min: to_ms(*samples.first()?),
        p50: to_ms(percentile(samples, 50.0)?),
        p90: to_ms(percentile(samples, 90.0)?),
        p99: to_ms(percentile(samples, 99.0)?),
        max: to_ms(*samples.last()?),
    })
}

#[cfg(test)]
mod tests;
