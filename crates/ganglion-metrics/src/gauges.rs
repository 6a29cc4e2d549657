//! Gauges whose values are read when scraped, from state the process keeps anyway.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

pub(crate) struct GaugeFn {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    pub values: Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>,
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        for (value_label, value) in (self.values)() {
            let labels = [(self.label, value_label)];
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

pub(crate) struct CounterFn {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    pub values: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>,
}

impl std::fmt::Debug for CounterFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFn").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Collector for CounterFn {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
        for (value_label, value) in (self.values)() {
            let labels = [(self.label, value_label)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
