//! The autostart policy, as `container.toml`, the bus and the CLI spell it.

use serde::{Deserialize, Serialize};

/// The autostart policy. Old specs say `autostart = true/false`; `"last-state"` starts
/// the container at boot only if it was running when the host last shut down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Autostart {
    #[default]
    Never,
    Always,
    LastState,
}

impl Autostart {
    pub fn as_str(self) -> &'static str {
        match self {
            Autostart::Never => "false",
            Autostart::Always => "true",
            Autostart::LastState => "last-state",
        }
    }

    /// Whether the container may be started at boot at all (`true` or `last-state`).
    pub fn enabled(self) -> bool {
        self != Autostart::Never
    }
}

impl std::str::FromStr for Autostart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "true" | "yes" | "on" => Ok(Autostart::Always),
            "false" | "no" | "off" => Ok(Autostart::Never),
            "last-state" => Ok(Autostart::LastState),
            other => Err(format!(
                "autostart {other:?} must be true, false or last-state"
            )),
        }
    }
}

impl std::fmt::Display for Autostart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Autostart {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Autostart::Never => s.serialize_bool(false),
            Autostart::Always => s.serialize_bool(true),
            Autostart::LastState => s.serialize_str("last-state"),
        }
    }
}

impl<'de> Deserialize<'de> for Autostart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Autostart::Always),
            Raw::Bool(false) => Ok(Autostart::Never),
            Raw::Text(t) if t == "last-state" => Ok(Autostart::LastState),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "autostart = {t:?} must be true, false or \"last-state\""
            ))),
        }
    }
}
