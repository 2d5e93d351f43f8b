//! The files snapper reads to find a container's snapshots: `/etc/snapper/configs/<name>`
//! and the `SNAPPER_CONFIGS` list in `/etc/default/snapper` (which only enumerates
//! configs for `list-configs` and snapper's timers). osm-hostd owns cleanup (only one
//! owner may prune, or the two race), so the configs it writes turn snapper's own timeline
//! creation and every cleanup off: snapper's timers never race the daemon.

use super::cleanup::{NumberLimits, TimelineLimits};
use std::io;
use std::path::Path;

/// First line of every config osm-hostd writes; how it recognises its own.
pub const MARKER: &str = "# Written by osm-hostd";

/// The config file for the container whose subvolume is `subvolume`. The limits are the
/// daemon's, so a `snapper cleanup` run by hand agrees with the daemon's own cleanup.
pub fn render_config(
    name: &str,
    subvolume: &Path,
    number: &NumberLimits,
    timeline: &TimelineLimits,
) -> String {
    format!(
        "{MARKER} for container {name}; it is rewritten at every start of the daemon.\n\
         # osm-hostd creates and cleans up this container's snapshots itself, so snapper's\n\
         # timeline creation and all its cleanups are off here (they would race it).\n\
         SUBVOLUME=\"{sub}\"\n\
         FSTYPE=\"btrfs\"\n\
         QGROUP=\"\"\n\
         SPACE_LIMIT=\"0.5\"\n\
         FREE_LIMIT=\"0.2\"\n\
         ALLOW_USERS=\"\"\n\
         ALLOW_GROUPS=\"\"\n\
         SYNC_ACL=\"no\"\n\
         BACKGROUND_COMPARISON=\"no\"\n\
         NUMBER_CLEANUP=\"no\"\n\
         NUMBER_MIN_AGE=\"{nmin}\"\n\
         NUMBER_LIMIT=\"{nl}\"\n\
         NUMBER_LIMIT_IMPORTANT=\"{nli}\"\n\
         TIMELINE_CREATE=\"no\"\n\
         TIMELINE_CLEANUP=\"no\"\n\
         TIMELINE_MIN_AGE=\"{tmin}\"\n\
         TIMELINE_LIMIT_HOURLY=\"{h}\"\n\
         TIMELINE_LIMIT_DAILY=\"{d}\"\n\
         TIMELINE_LIMIT_WEEKLY=\"{w}\"\n\
         TIMELINE_LIMIT_MONTHLY=\"{m}\"\n\
         TIMELINE_LIMIT_YEARLY=\"{y}\"\n\
         EMPTY_PRE_POST_CLEANUP=\"no\"\n\
         EMPTY_PRE_POST_MIN_AGE=\"1800\"\n",
        sub = subvolume.display(),
        nmin = number.min_age,
        nl = number.limit,
        nli = number.limit_important,
        tmin = timeline.min_age,
        h = timeline.hourly,
        d = timeline.daily,
        w = timeline.weekly,
        m = timeline.monthly,
        y = timeline.yearly,
    )
}

/// Writes `<dir>/<name>` if its content differs. A config osm-hostd did not write is
/// never overwritten: that is an error.
pub fn write_config(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(old) if old == text => return Ok(()),
        Ok(old) if !old.starts_with(MARKER) => {
            return Err(io::Error::other(format!(
                "{} exists and osm-hostd did not write it; left as it is",
                path.display()
            )))
        }
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    // Derived from the store and rewritten at every daemon start: no fsync needed.
    crate::fsutil::replace_file(&path, text.as_bytes(), 0o644)
}

/// Removes `<dir>/<name>` if osm-hostd wrote it; a config someone else wrote is kept.
/// Returns false for such a foreign config (the name is then not ours to unlist).
pub fn remove_config(dir: &Path, name: &str) -> io::Result<bool> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.starts_with(MARKER) => std::fs::remove_file(&path).map(|()| true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// The names in the `SNAPPER_CONFIGS="…"` line of a defaults file.
pub fn listed_configs(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("SNAPPER_CONFIGS="))
        .map(|v| {
            v.trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Returns `text` with `name` added to (or removed from) `SNAPPER_CONFIGS`, every other
/// line and entry kept as it was.
pub fn edit_configs_list(text: &str, name: &str, present: bool) -> String {
    let mut names = listed_configs(text);
    names.retain(|n| n != name);
    if present {
        names.push(name.to_string());
    }
    let line = format!("SNAPPER_CONFIGS=\"{}\"", names.join(" "));
    let mut out = String::new();
    let mut replaced = false;
    for l in text.lines() {
        if !replaced && l.trim_start().starts_with("SNAPPER_CONFIGS=") {
            out.push_str(&line);
            replaced = true;
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Adds or removes `name` in the defaults file's `SNAPPER_CONFIGS`, creating the file if
/// needed; does nothing when the list already says so.
pub fn set_listed(defaults_file: &Path, name: &str, present: bool) -> io::Result<()> {
    let text = match std::fs::read_to_string(defaults_file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if listed_configs(&text).iter().any(|n| n == name) == present {
        return Ok(());
    }
    if let Some(parent) = defaults_file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::fsutil::replace_file(
        defaults_file,
        edit_configs_list(&text, name, present).as_bytes(),
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_list_keeps_other_entries_and_lines() {
        let text = "# comment\nSNAPPER_CONFIGS=\"root home\"\nOTHER=1\n";
        let added = edit_configs_list(text, "web1", true);
        assert_eq!(
            added,
            "# comment\nSNAPPER_CONFIGS=\"root home web1\"\nOTHER=1\n"
        );
        assert_eq!(edit_configs_list(&added, "web1", true), added);
        assert_eq!(edit_configs_list(&added, "web1", false), text);
        assert_eq!(edit_configs_list("", "a", true), "SNAPPER_CONFIGS=\"a\"\n");
        assert_eq!(
            listed_configs("SNAPPER_CONFIGS=\"\"\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn config_turns_snappers_cleanup_and_timeline_off() {
        let t = render_config(
            "web1",
            Path::new("/srv/osm-lxc/lxc/containers/web1"),
            &NumberLimits::default(),
            &TimelineLimits::default(),
        );
        assert!(t.starts_with(MARKER));
        for line in [
            "SUBVOLUME=\"/srv/osm-lxc/lxc/containers/web1\"",
            "FSTYPE=\"btrfs\"",
            "NUMBER_CLEANUP=\"no\"",
            "TIMELINE_CREATE=\"no\"",
            "TIMELINE_CLEANUP=\"no\"",
            "EMPTY_PRE_POST_CLEANUP=\"no\"",
            "NUMBER_LIMIT=\"50\"",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
    }

    #[test]
    fn only_own_configs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "a", &format!("{MARKER}\nSUBVOLUME=\"/x\"\n")).unwrap();
        std::fs::write(dir.path().join("b"), "SUBVOLUME=\"/y\"\n").unwrap();
        remove_config(dir.path(), "a").unwrap();
        remove_config(dir.path(), "b").unwrap();
        remove_config(dir.path(), "c").unwrap();
        assert!(!dir.path().join("a").exists());
        assert!(dir.path().join("b").exists());
        let defaults = dir.path().join("default/snapper");
        set_listed(&defaults, "a", true).unwrap();
        set_listed(&defaults, "b", true).unwrap();
        set_listed(&defaults, "a", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&defaults).unwrap(),
            "SNAPPER_CONFIGS=\"b\"\n"
        );
    }
}
