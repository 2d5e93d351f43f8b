//! Writes `osm-hostctl`'s man pages and shell completions, generated from the clap
//! definition (`osm_hostctl::command()`), into a directory (default `target/assets`):
//! `man/osm-hostctl.1` and one page per subcommand (`osm-hostctl-create.1`, ...), and
//! `completions/{osm-hostctl.bash,_osm-hostctl,osm-hostctl.fish}`.
//! `scripts/build-deb.sh` runs it before `cargo deb`.
//!
//! Usage: cargo run --example gen-assets [-- OUT_DIR]

use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/assets"));
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = osm_hostctl::command();
    write_man_pages(&cmd, &man, None)?;
    for (shell, file) in [
        (Shell::Bash, "osm-hostctl.bash"),
        (Shell::Zsh, "_osm-hostctl"),
        (Shell::Fish, "osm-hostctl.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "osm-hostctl", &mut text);
        std::fs::write(completions.join(file), text)?;
    }
    println!(
        "wrote man pages to {} and completions to {}",
        man.display(),
        completions.display()
    );
    Ok(())
}

/// One page for the command and, recursively, one per subcommand (`git`-style page
/// names: `osm-hostctl-host-shutdown.1` documents `osm-hostctl host shutdown`).
fn write_man_pages(
    cmd: &clap::Command,
    dir: &Path,
    parent: Option<(&str, &str)>,
) -> std::io::Result<()> {
    let (name, bin) = match parent {
        None => (cmd.get_name().to_string(), cmd.get_name().to_string()),
        Some((page, bin)) => (
            format!("{page}-{}", cmd.get_name()),
            format!("{bin} {}", cmd.get_name()),
        ),
    };
    // clap keeps command names as &'static str; this program is short-lived.
    let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
    let page = cmd.clone().name(static_name).bin_name(bin.clone());
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    std::fs::write(dir.join(format!("{name}.1")), text)?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            write_man_pages(sub, dir, Some((&name, &bin)))?;
        }
    }
    Ok(())
}
