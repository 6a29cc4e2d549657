//! Streams and their positions.

use serde::{Deserialize, Serialize};

/// A stream of rows a client can observe. Adding a stream is adding a variant: the exhaustive
/// matches below and in the sync token show every place that must learn about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Events,
    Receipts,
    Typing,
    AccountData,
    /// Messages sent to one device, deleted once its sync acknowledges them.
    ToDevice,
    /// Users whose devices or keys changed.
    DeviceLists,
    Presence,
}

impl StreamKind {
    pub const fn all() -> [StreamKind; 7] {
        [
            StreamKind::Events,
            StreamKind::Receipts,
            StreamKind::Typing,
            StreamKind::AccountData,
            StreamKind::ToDevice,
            StreamKind::DeviceLists,
            StreamKind::Presence,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Events => "events",
            StreamKind::Receipts => "receipts",
            StreamKind::Typing => "typing",
            StreamKind::AccountData => "account_data",
            StreamKind::ToDevice => "to_device",
            StreamKind::DeviceLists => "device_lists",
            StreamKind::Presence => "presence",
        }
    }

    /// Ephemeral streams live only in the writer's memory; a restart starts them afresh.
    pub fn is_durable(self) -> bool {
        match self {
            StreamKind::Events
            | StreamKind::Receipts
            | StreamKind::AccountData
            | StreamKind::ToDevice
            | StreamKind::DeviceLists
            | StreamKind::Presence => true,
            StreamKind::Typing => false,
        }
    }
}

/// A position on one stream. Positions are allocated by the stream's single writer and only grow.
/// Zero means "before the first row".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamPosition(pub i64);

impl StreamPosition {
    pub const ZERO: StreamPosition = StreamPosition(0);

    pub fn next(self) -> StreamPosition {
        StreamPosition(self.0 + 1)
    }
}

impl std::fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
