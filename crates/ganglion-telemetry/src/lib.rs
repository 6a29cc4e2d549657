//! OpenTelemetry traces, off unless `tracing.otlp_endpoint` is set. When on, the spans of
//! `tracing` are exported over OTLP/gRPC, and a trace crosses processes as a W3C `traceparent`:
//! an HTTP header from the client, gRPC metadata from a worker to the master, a field of the
//! master's Redis entry to the workers. When off, no span is made for tracing's sake
//! ([`exporting`] is false) and nothing is sent.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use ganglion_config::TracingConfig;
use opentelemetry::{
    KeyValue,
    propagation::TextMapPropagator as _,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: callers make the spans that carry a trace only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// Flushes the spans not yet exported when dropped (at the end of `main`).
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

impl Exporter {
    /// Exports what is queued now (before the process exits on a signal).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// The `tracing` layer that exports spans, for `config`, naming this process `ganglion-<role>`
/// with instance id `name`; `None` when tracing is off. Call inside the tokio runtime: the
/// exporter's connection lives on it.
pub fn layer<S>(
    config: &TracingConfig,
    role: &str,
    name: &str,
) -> Result<Option<(impl tracing_subscriber::Layer<S> + use<S>, Exporter)>, TelemetryError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let failed = |reason: String| TelemetryError { endpoint: endpoint.clone(), reason };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| failed(error.to_string()))?;
    // Exported every second: a trace shows up while the operator still looks for it.
    let batch = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_secs(1)).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(
            Resource::builder()
                .with_service_name(format!("ganglion-{role}"))
                .with_attribute(KeyValue::new("service.instance.id", name.to_owned()))
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("ganglion");
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer), Exporter { provider })))
}

/// Makes `span` a child of the remote span `traceparent` names (ignored if malformed).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The `traceparent` that makes a remote span a child of `span`; `None` when `span` is not
/// exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}
