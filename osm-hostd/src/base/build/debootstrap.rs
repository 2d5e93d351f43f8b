//! Running debootstrap for a recipe and turning its `I:` lines into progress.

use super::{allow_devices_in, child_env};
use crate::base::{BaseError, Recipe, Tail};
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const DEBOOTSTRAP: &str = "/usr/sbin/debootstrap";
const DEBOOTSTRAP_SCRIPTS: &str = "/usr/share/debootstrap/scripts";

/// Turns debootstrap's `I:` lines into a monotonic fraction. debootstrap does not say how
/// many packages it will fetch, so the download phase is measured against an estimate;
/// later phases are measured against the number actually downloaded.
pub(crate) struct DebootstrapProgress {
    expected: usize,
    downloaded: usize,
    extracted: usize,
    installed: usize,
    fraction: f64,
}

impl DebootstrapProgress {
    pub(crate) fn new(recipe: &Recipe) -> Self {
        // bookworm minbase is ~90 packages; each included package brings a few more.
        let expected = 90 + 4 * recipe.include.len();
        DebootstrapProgress {
            expected,
            downloaded: 0,
            extracted: 0,
            installed: 0,
            fraction: 0.0,
        }
    }

    /// The new fraction and a message for one output line, or `None` for lines that are
    /// not progress (warnings, wget chatter).
    pub(crate) fn line(&mut self, line: &str) -> Option<(f64, String)> {
        let rest = line.trim_end().strip_prefix("I: ")?;
        let msg = rest.trim_end_matches("...").trim_end().to_string();
        let (verb, object) = rest.split_once(' ').unwrap_or((rest, ""));
        let object = object.trim_end_matches("...").trim();
        let target = match verb {
            "Retrieving" | "Validating" if !object.contains(' ') => Some(0.03), // Release, Packages
            "Validating" => {
                self.downloaded += 1;
                Some(0.05 + 0.35 * ratio(self.downloaded, self.expected))
            }
            "Retrieving" => None,
            "Checking" | "Valid" | "Resolving" | "Found" => Some(0.05),
            "Chosen" => Some(0.40),
            "Extracting" => {
                self.extracted += 1;
                // Roughly 70% of the packages are "required" and get extracted.
                let required = (self.downloaded.max(1) * 7).div_ceil(10);
                Some(0.40 + 0.10 * ratio(self.extracted, required))
            }
            "Installing" => Some(0.50),
            "Unpacking" | "Configuring"
                if !matches!(object, "required packages" | "the base system") =>
            {
                self.installed += 1;
                Some(0.50 + 0.49 * ratio(self.installed, 2 * self.downloaded.max(1)))
            }
            "Base" if rest.starts_with("Base system installed successfully") => Some(1.0),
            _ => None,
        };
        if let Some(t) = target {
            self.fraction = self.fraction.max(t);
        }
        Some((self.fraction, msg))
    }
}

fn ratio(n: usize, of: usize) -> f64 {
    (n as f64 / of.max(1) as f64).min(1.0)
}

/// The debootstrap command line for `recipe` into `dest`, after checking debootstrap is
/// installed and knows the suite.
fn debootstrap_command(recipe: &Recipe, dest: &Path) -> Result<Command, BaseError> {
    if !Path::new(DEBOOTSTRAP).exists() {
        return Err(BaseError::MissingTool {
            tool: DEBOOTSTRAP.into(),
            package: "debootstrap".into(),
        });
    }
    let script = Path::new(DEBOOTSTRAP_SCRIPTS).join(&recipe.suite);
    if !script.exists() {
        return Err(BaseError::InvalidRecipe(format!(
            "debootstrap on this host does not know suite {:?} (no {}); use a suite it knows \
             or upgrade debootstrap",
            recipe.suite,
            script.display()
        )));
    }
    let mut cmd = Command::new(DEBOOTSTRAP);
    if recipe.variant != "default" {
        cmd.arg(format!("--variant={}", recipe.variant));
    }
    cmd.arg(format!("--components={}", recipe.components.join(",")));
    if !recipe.include.is_empty() {
        cmd.arg(format!("--include={}", recipe.include.join(",")));
    }
    cmd.arg(&recipe.suite).arg(dest).arg(&recipe.mirror);
    allow_devices_in(&mut cmd, dest)?;
    child_env(&mut cmd);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    for var in ["http_proxy", "https_proxy", "no_proxy"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    Ok(cmd)
}

pub(super) fn run_debootstrap(
    recipe: &Recipe,
    dest: &Path,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    let mut cmd = debootstrap_command(recipe, dest)?;
    // One pipe for stdout and stderr keeps the two in order for the error's tail. CLOEXEC
    // so children spawned by other threads do not hold the write end open.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| BaseError::io("creating a pipe for debootstrap", std::io::Error::from(e)))?;
    let write_clone = write_end
        .try_clone()
        .map_err(|e| BaseError::io("creating a pipe for debootstrap", e))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_clone));
    let mut child = cmd
        .spawn()
        .map_err(|e| BaseError::tool_missing_or_io(DEBOOTSTRAP, "debootstrap", e))?;
    drop(cmd); // closes our copies of the write end, so the read loop sees EOF

    let mut parser = DebootstrapProgress::new(recipe);
    let mut tail = Tail::new(30);
    progress(0.0, "starting debootstrap");
    let mut reader = BufReader::new(File::from(read_end));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        tail.push(&buf);
        let line = String::from_utf8_lossy(&buf);
        if let Some((f, msg)) = parser.line(&line) {
            progress(f, &msg);
        }
    }
    let status = child
        .wait()
        .map_err(|e| BaseError::io("waiting for debootstrap", e))?;
    if !status.success() {
        let log = dest.join("debootstrap/debootstrap.log");
        let log = if log.exists() {
            log.display().to_string()
        } else {
            format!("{} (not written)", log.display())
        };
        return Err(BaseError::Debootstrap {
            suite: recipe.suite.clone(),
            status: status.to_string(),
            log,
            output: tail.text(),
        });
    }
    progress(1.0, "debootstrap finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
I: Target architecture can be executed
I: Retrieving InRelease 
I: Checking Release signature
I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)
I: Retrieving Packages 
I: Validating Packages 
I: Resolving dependencies of required packages...
I: Resolving dependencies of base packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
I: Retrieving zlib1g 1:1.2.13.dfsg-1
I: Validating zlib1g 1:1.2.13.dfsg-1
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting zlib1g...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Configuring required packages...
I: Configuring adduser...
W: some warning
I: Unpacking the base system...
I: Unpacking apt...
I: Unpacking zlib1g...
I: Configuring the base system...
I: Configuring apt...
I: Configuring zlib1g...
I: Base system installed successfully.
";

    #[test]
    fn debootstrap_progress_is_monotonic_and_ends_at_one() {
        let recipe = Recipe::parse("suite = \"bookworm\"").unwrap();
        let mut p = DebootstrapProgress::new(&recipe);
        let mut last = 0.0;
        let mut seen = Vec::new();
        for line in SAMPLE.lines() {
            if let Some((f, msg)) = p.line(line) {
                assert!(f >= last, "{line:?} went back from {last} to {f}");
                assert!((0.0..=1.0).contains(&f));
                last = f;
                seen.push((f, msg));
            } else {
                assert!(!line.starts_with("I: "), "{line:?} ignored");
            }
        }
        assert_eq!(last, 1.0);
        assert!(seen.iter().any(|(_, m)| m == "Extracting adduser"));
        assert!(seen.iter().any(|(_, m)| m == "Retrieving apt 2.6.1"));
        // The download of 3 of an expected 90 packages is early, not half way.
        let after_download = seen
            .iter()
            .find(|(_, m)| m.starts_with("Chosen"))
            .unwrap()
            .0;
        assert!((0.39..=0.41).contains(&after_download), "{after_download}");
        let before_done = seen[seen.len() - 2].0;
        assert!(before_done > 0.9 && before_done < 1.0, "{before_done}");
    }
}
