//! The typed values of `[backup]`: each is checked once, when `hostd.toml` is loaded
//! (serde builds them, so a bad value is refused with its key and what is accepted),
//! and the backup code only reads them. `config::BackupConfig` holds them and
//! implements [`Settings`], so this module never depends on `config`.

use super::Target;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `backup.mode`: one tree per container updated in place, or a dated tree per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Mode {
    #[default]
    Mirror,
    History,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mirror => "mirror",
            Mode::History => "history",
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(text: String) -> Result<Mode, String> {
        match text.as_str() {
            "mirror" => Ok(Mode::Mirror),
            "history" => Ok(Mode::History),
            _ => Err(format!(
                "backup.mode = {text:?} must be \"mirror\" or \"history\""
            )),
        }
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(text: String) -> Result<Target, String> {
        Target::parse(&text).map_err(|e| format!("backup.target: {e}"))
    }
}

/// One `backup.ssh_options` entry: an ssh `-o` option `Key=value`, given without `-o`,
/// with no quote or newline (rsync's `-e` value single-quotes every word).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SshOption(String);

impl SshOption {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SshOption {
    type Error = String;
    fn try_from(o: String) -> Result<SshOption, String> {
        if o.contains('\'') || o.contains('\n') || o.contains('"') {
            return Err(format!(
                "backup.ssh_options entry {o:?} must not contain quotes or newlines"
            ));
        }
        if o.starts_with('-') || !o.contains('=') {
            return Err(format!(
                "backup.ssh_options entry {o:?} must be Key=value (an ssh -o option, without -o)"
            ));
        }
        Ok(SshOption(o))
    }
}

impl TryFrom<&str> for SshOption {
    type Error = String;
    fn try_from(o: &str) -> Result<SshOption, String> {
        SshOption::try_from(o.to_string())
    }
}

/// `backup.ssh_key`: the private key handed to `ssh -i`, a path with no quote or
/// newline (for the same reason as [`SshOption`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PathBuf")]
pub struct SshKey(PathBuf);

impl SshKey {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl TryFrom<PathBuf> for SshKey {
    type Error = String;
    fn try_from(p: PathBuf) -> Result<SshKey, String> {
        let text = p.to_string_lossy();
        if text.contains('\'') || text.contains('\n') || text.contains('"') {
            return Err(format!(
                "backup.ssh_key = {p:?} must not contain quotes or newlines"
            ));
        }
        Ok(SshKey(p))
    }
}

/// What rsync and ssh need from `[backup]`.
pub trait Settings {
    fn target(&self) -> &Target;
    /// Seconds of network silence before rsync and ssh give up.
    fn timeout(&self) -> u32;
    fn ssh_key(&self) -> Option<&SshKey>;
    fn ssh_options(&self) -> &[SshOption];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_with_their_key() {
        assert_eq!(Mode::try_from("history".to_string()), Ok(Mode::History));
        let e = Mode::try_from("sometimes".to_string()).unwrap_err();
        assert!(e.contains("backup.mode") && e.contains("\"mirror\""), "{e}");
        let e = Target::try_from("relative/dir".to_string()).unwrap_err();
        assert!(
            e.contains("backup.target") && e.contains("user@host:/path"),
            "{e}"
        );
        for bad in ["ProxyCommand='x'", "-oProxyCommand=x", "NoEquals"] {
            let e = SshOption::try_from(bad).unwrap_err();
            assert!(e.contains("backup.ssh_options"), "{e}");
        }
        assert!(SshOption::try_from("StrictHostKeyChecking=yes").is_ok());
        assert!(SshKey::try_from(PathBuf::from("/etc/osm-host/k'ey")).is_err());
    }
}
