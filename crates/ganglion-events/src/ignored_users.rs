//! The Ignoring Users module's account data, `m.ignored_user_list`: checking a list a client
//! sets, and reading the set of ignored users out of a stored one.

use std::collections::HashSet;

use ganglion_types::{ErrorClass, HasErrorClass};
use ruma::UserId;
use serde_json::Value;

/// The global account data type that holds a user's ignore list.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// Why a client's `m.ignored_user_list` content is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IgnoredUsersError {
    #[error("`ignored_users` must be an object mapping user ids to objects")]
    NotAnObject,
    #[error("`ignored_users` key {0:?} is not a user id")]
    NotAUserId(String),
    #[error("`ignored_users` entry of {0} must be an object")]
    EntryNotAnObject(String),
    #[error("You cannot ignore yourself")]
    Yourself,
}

impl HasErrorClass for IgnoredUsersError {
    fn class(&self) -> ErrorClass {
        match self {
            IgnoredUsersError::Yourself => ErrorClass::InvalidParam,
            _ => ErrorClass::BadJson,
        }
    }
}

/// Checks the content `owner` sets as `m.ignored_user_list`: the shape the spec gives
/// (`{"ignored_users": {"@user:server": {}}}`), and not the owner itself, whose own events
/// would otherwise vanish from its timelines.
pub fn check_ignored_user_list(content: &Value, owner: &str) -> Result<(), IgnoredUsersError> {
    let Some(ignored) = content.get("ignored_users").and_then(Value::as_object) else {
        return Err(IgnoredUsersError::NotAnObject);
    };
    for (user_id, entry) in ignored {
        if UserId::parse(user_id.as_str()).is_err() {
            return Err(IgnoredUsersError::NotAUserId(user_id.clone()));
        }
        if !entry.is_object() {
            return Err(IgnoredUsersError::EntryNotAnObject(user_id.clone()));
        }
        if user_id == owner {
            return Err(IgnoredUsersError::Yourself);
        }
    }
    Ok(())
}

/// The users a stored `m.ignored_user_list` ignores. Lenient, as stored data may predate the
/// check: content of another shape ignores nobody, and the owner is never ignored.
pub fn ignored_users_of(content: &str, owner: &str) -> HashSet<String> {
    #[derive(serde::Deserialize)]
    struct List {
        ignored_users: serde_json::Map<String, Value>,
    }
    match serde_json::from_str::<List>(content) {
        Ok(list) => list
            .ignored_users
            .into_iter()
            .map(|(user_id, _)| user_id)
            .filter(|user_id| user_id != owner && user_id.starts_with('@'))
            .collect(),
        Err(_) => HashSet::new(),
    }
}

#[cfg(test)]
mod tests;
