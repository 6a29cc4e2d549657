//! `GANGLION_*` environment overrides: `GANGLION_<SECTION>__<KEY>` (any case) sets
//! `<section>.<key>`. Operators configure services through the environment, so a variable that
//! names no key is refused with its name rather than silently ignored.

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::Serialized,
    value::{Dict, Map, Value},
};

use crate::{Config, ConfigError};

const PREFIX: &str = "GANGLION_";

/// Variables of our tools that share the prefix (the test kit, the load tool, scripts); the
/// server leaves them alone.
pub const TOOL_VARIABLES: [&str; 7] = [
    "GANGLION_BIN",
    "GANGLION_TESTKIT_BUILD",
    "GANGLION_TESTKIT_HANG",
    "GANGLION_TESTKIT_KEEP",
    "GANGLION_TEST_PG_BIN",
    "GANGLION_TEST_PYTHON",
    "GANGLION_TEST_REDIS_BIN",
];

/// The config keys the variables set, each with the variable's name and value.
pub(crate) struct Overrides {
    entries: Vec<(String, Vec<String>, String)>,
}

impl Overrides {
    /// Takes the `GANGLION_*` variables among `variables`; an error names the first one that
    /// names no config key.
    pub(crate) fn from_variables(
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Overrides, ConfigError> {
        let known = known_keys();
        let mut entries = Vec::new();
        for (name, value) in variables {
            let upper = name.trim().to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(PREFIX) else { continue };
            if TOOL_VARIABLES.contains(&upper.as_str()) {
                continue;
            }
            let path: Vec<String> = rest.to_ascii_lowercase().split("__").map(str::to_owned).collect();
            if !names_a_key(&known, &path) {
                return Err(ConfigError::UnknownVariable { variable: name, key: path.join(".") });
            }
            entries.push((name, path, value));
        }
        // Sorted, so the same variables give the same config whatever the environment's order.
        entries.sort();
        Ok(Overrides { entries })
    }
}

/// Every key of the config, as the defaults serialize it.
fn known_keys() -> Dict {
    let mut config = Config::embedded_default();
    // Sections that are off unless set, so that their keys are known too.
    config.media.s3 = Some(crate::S3Config::default());
    Figment::from(Serialized::defaults(config))
        .data()
        .ok()
        .and_then(|mut profiles| profiles.remove(&Profile::Default))
        .unwrap_or_default()
}

fn names_a_key(known: &Dict, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    // Instance names are the operator's; serde checks the fields below them.
    if first == "instance_map" {
        return true;
    }
    match (known.get(first), rest.is_empty()) {
        (Some(_), true) => true,
        (Some(Value::Dict(_, inner)), false) => names_a_key(inner, rest),
        _ => false,
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("`GANGLION_` environment variable(s)").interpolater(|_: &Profile, keys: &[&str]| {
            format!(
                "{PREFIX}{}",
                keys.iter().map(|key| key.to_ascii_uppercase()).collect::<Vec<_>>().join("__")
            )
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (_, path, value) in &self.entries {
            let value: Value = value.parse().unwrap_or_else(|never| match never {});
            insert(&mut dict, path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}
