//! W3C trace context (`traceparent`) for the current request, until OpenTelemetry takes over.
//!
//! The HTTP edge runs each request inside [`scope`]; the gRPC client sends a child of
//! [`current`] with every master call, and the server runs the call inside the `traceparent` it
//! received, so one trace id follows a request across processes. Nothing here records spans.

use std::future::Future;

use rand::Rng;

tokio::task_local! {
    static TRACEPARENT: String;
}

/// The `traceparent` of the request this task serves, if it runs inside [`scope`].
pub fn current() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// Runs `f` with `traceparent` as [`current`].
pub async fn scope<F: Future>(traceparent: String, f: F) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// A `traceparent` that starts a new, sampled trace.
pub fn new_traceparent() -> String {
    format!("00-{:032x}-{}-01", rand::rng().random_range(1..=u128::MAX), new_span_id())
}

/// A `traceparent` for a call made on behalf of `parent`: the same trace and flags, a new span.
/// An unparsable parent starts a new trace rather than failing the call.
pub fn child_of(parent: &str) -> String {
    match parse(parent) {
        Some(Parsed { trace_id, flags }) => format!("00-{trace_id}-{}-{flags}", new_span_id()),
        None => new_traceparent(),
    }
}

/// Whether `traceparent` is one this module can continue.
pub(crate) fn is_valid(traceparent: &str) -> bool {
    parse(traceparent).is_some()
}

fn new_span_id() -> String {
    // All-zero ids are invalid in W3C trace context.
    format!("{:016x}", rand::rng().random_range(1..=u64::MAX))
}

struct Parsed<'a> {
    trace_id: &'a str,
    flags: &'a str,
}

fn parse(traceparent: &str) -> Option<Parsed<'_>> {
    let mut fields = traceparent.split('-');
    let (version, trace_id, span_id, flags) =
        (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let hex = |field: &str, len: usize| {
        field.len() == len && field.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    };
    let non_zero = |field: &str| field.bytes().any(|byte| byte != b'0');
    // Version ff is forbidden; later versions may append fields, which version 00 may not.
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || fields.next().is_none())
        && hex(trace_id, 32)
        && non_zero(trace_id)
        && hex(span_id, 16)
        && non_zero(span_id)
        && hex(flags, 2);
    valid.then_some(Parsed { trace_id, flags })
}

#[cfg(test)]
mod tests;
