//! The `RoomEventFilter` of `/messages`: which events of a page the client wants. The filter
//! itself is shared with `/sync` (`ganglion_events::filter`); this parses the query parameter.

use ganglion_http::{MatrixError, MatrixResult};

pub(crate) use ganglion_events::filter::RoomEventFilter;
#[cfg(test)]
pub(crate) use ganglion_events::filter::type_matches;

/// Parses the `filter` query parameter (a JSON object).
pub(crate) fn parse(text: &str) -> MatrixResult<RoomEventFilter> {
    serde_json::from_str(text).map_err(|error| MatrixError::invalid_param(format!("Invalid filter: {error}")))
}
