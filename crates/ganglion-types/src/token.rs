//! The sync token: an opaque, versioned vector of stream positions.
//!
//! Format v2: `s2_<events>_<receipts>_<typing>_<account_data>_<typing_epoch>_<to_device>_
//! <device_lists>_<presence>`. The typing epoch identifies the writer's process lifetime, because
//! the typing stream is ephemeral and restarts at zero; a token from an older epoch is treated
//! as "typing position 0". Format v1 (`s1_`, the first five fields) is still accepted: a client
//! holding one from before the upgrade reads the streams v1 lacked from their start, which
//! hands it its pending to-device messages and tells it to refresh every device list.

use crate::{StreamKind, StreamPosition};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SyncToken {
    pub events: StreamPosition,
    pub receipts: StreamPosition,
    pub typing: StreamPosition,
    pub account_data: StreamPosition,
    pub typing_epoch: u64,
    pub to_device: StreamPosition,
    pub device_lists: StreamPosition,
    pub presence: StreamPosition,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sync token")]
pub struct TokenParseError;

impl SyncToken {
    pub fn get(&self, kind: StreamKind) -> StreamPosition {
        match kind {
            StreamKind::Events => self.events,
            StreamKind::Receipts => self.receipts,
            StreamKind::Typing => self.typing,
            StreamKind::AccountData => self.account_data,
            StreamKind::ToDevice => self.to_device,
            StreamKind::DeviceLists => self.device_lists,
            StreamKind::Presence => self.presence,
        }
    }

    pub fn set(&mut self, kind: StreamKind, position: StreamPosition) {
        match kind {
            StreamKind::Events => self.events = position,
            StreamKind::Receipts => self.receipts = position,
            StreamKind::Typing => self.typing = position,
            StreamKind::AccountData => self.account_data = position,
            StreamKind::ToDevice => self.to_device = position,
            StreamKind::DeviceLists => self.device_lists = position,
            StreamKind::Presence => self.presence = position,
        }
    }

    /// Whether `self` has reached `other` on every stream.
    pub fn covers(&self, other: &SyncToken) -> bool {
        StreamKind::all().into_iter().all(|kind| self.get(kind) >= other.get(kind))
    }

    pub fn parse(text: &str) -> Result<SyncToken, TokenParseError> {
        let mut parts = text.split('_');
        let version = match parts.next() {
            Some("s1") => 1,
            Some("s2") => 2,
            _ => return Err(TokenParseError),
        };
        let mut next = || -> Result<i64, TokenParseError> {
            let value: i64 = parts.next().ok_or(TokenParseError)?.parse().map_err(|_| TokenParseError)?;
            if value < 0 {
                return Err(TokenParseError);
            }
            Ok(value)
        };
        let mut token = SyncToken {
            events: StreamPosition(next()?),
            receipts: StreamPosition(next()?),
            typing: StreamPosition(next()?),
            account_data: StreamPosition(next()?),
            typing_epoch: next()? as u64,
            ..SyncToken::default()
        };
        if version >= 2 {
            token.to_device = StreamPosition(next()?);
            token.device_lists = StreamPosition(next()?);
            token.presence = StreamPosition(next()?);
        }
        if parts.next().is_some() {
            return Err(TokenParseError);
        }
        Ok(token)
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s2_{}_{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.receipts,
            self.typing,
            self.account_data,
            self.typing_epoch,
            self.to_device,
            self.device_lists,
            self.presence
        )
    }
}
