//! The packaging: units pass `systemd-analyze verify` (in a staging root holding the
//! host's system units, ours, and stand-ins for every program they run), the bus
//! activation file names the unit that owns the bus name, and every file the Debian
//! package ships from the source tree exists. `scripts/check-deb.sh` builds the package
//! itself and lists it with `dpkg -c`.

use rig::project_path;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = [
    "osm-hostd.service",
    "osm-hostd-backup.service",
    "osm-hostd-backup.timer",
];

fn unit_text(name: &str) -> String {
    std::fs::read_to_string(project_path("packaging/systemd").join(name)).unwrap()
}

/// `Key=value` values of a unit or .service file.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The programs the units run (first word of every Exec*=, prefixes removed).
fn exec_paths() -> Vec<String> {
    let mut out = Vec::new();
    for u in UNITS {
        let text = unit_text(u);
        for key in ["ExecStart", "ExecStop", "ExecStartPre", "ExecReload"] {
            for v in values(&text, key) {
                let prog = v.trim_start_matches(['-', '@', '+', '!', ':']);
                out.push(prog.split_whitespace().next().unwrap().to_string());
            }
        }
    }
    out
}

fn deb_assets() -> Vec<(String, String)> {
    // The package is described by the daemon's crate; its asset paths are relative to
    // that crate's directory, so project files start with `../`.
    let text = std::fs::read_to_string(project_path("osm-hostd/Cargo.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            let src = a[0].as_str().unwrap();
            (
                src.strip_prefix("../").unwrap_or(src).to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Where the package installs a source file (a dest ending in `/` is a directory).
fn installed_as(src: &str) -> Option<PathBuf> {
    deb_assets()
        .into_iter()
        .find(|(s, _)| s == src)
        .map(|(s, d)| {
            let d = PathBuf::from("/").join(&d);
            if d.to_string_lossy().ends_with('/') {
                d.join(Path::new(&s).file_name().unwrap())
            } else {
                d
            }
        })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        let ty = e.file_type().unwrap();
        if ty.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            let _ = std::os::unix::fs::symlink(target, dst);
        } else if ty.is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is missing: install the systemd package (scripts/test.sh does)");
    let root = tempfile::tempdir().unwrap();
    let units_dir = root.path().join("lib/systemd/system");
    for system in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        if Path::new(system).is_dir() {
            copy_dir(Path::new(system), &units_dir);
            break;
        }
    }
    for u in UNITS {
        std::fs::copy(project_path("packaging/systemd").join(u), units_dir.join(u)).unwrap();
    }
    // Every program a unit runs: a stand-in at its path, and the package ships it.
    for prog in exec_paths() {
        let shipped = deb_assets().iter().any(|(s, d)| {
            let name = Path::new(s)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            Path::new("/").join(d).join(&name) == Path::new(&prog)
        });
        assert!(shipped, "{prog} is run by a unit but not in the package");
        let stub = root.path().join(prog.trim_start_matches('/'));
        std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
        std::fs::write(&stub, "#!/bin/sh\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&stub, mode).unwrap();
    }
    let out = Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(UNITS.iter().map(|u| units_dir.join(u)))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_keeps_containers_and_stops_them_only_at_host_shutdown() {
    let unit = unit_text("osm-hostd.service");
    assert_eq!(values(&unit, "Type"), ["notify"]);
    assert_eq!(values(&unit, "KillMode"), ["process"]);
    assert_eq!(values(&unit, "BusName"), [osm_host_bus::BUS_NAME]);
    let stop = values(&unit, "ExecStop");
    assert_eq!(stop, ["/usr/lib/osm-host/osm-hostd-host-shutdown"]);
    let script =
        std::fs::read_to_string(project_path("packaging/libexec/osm-hostd-host-shutdown")).unwrap();
    assert!(script.contains("is-system-running") && script.contains("host shutdown"));
    // Outside a shutdown (here: no systemd at all), the guard does nothing and succeeds.
    let out = Command::new("/bin/sh")
        .arg(project_path("packaging/libexec/osm-hostd-host-shutdown"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let timer = unit_text("osm-hostd-backup.timer");
    assert_eq!(values(&timer, "Persistent"), ["true"]);
    assert!(!values(&timer, "RandomizedDelaySec").is_empty());
    let backup = unit_text("osm-hostd-backup.service");
    assert_eq!(
        values(&backup, "ExecStart"),
        ["/usr/bin/osm-hostctl backup run --all"]
    );
}

#[test]
fn the_bus_activation_file_starts_the_unit_that_owns_the_name() {
    let text = std::fs::read_to_string(project_path(
        "packaging/dbus/uk.co.devtank.OsmHost1.service",
    ))
    .unwrap();
    assert_eq!(values(&text, "Name"), [osm_host_bus::BUS_NAME]);
    assert_eq!(values(&text, "SystemdService"), ["osm-hostd.service"]);
    assert_eq!(values(&text, "User"), ["root"]);
    assert!(values(&text, "Exec")[0].starts_with("/usr/sbin/osm-hostd "));
    assert_eq!(
        installed_as("packaging/dbus/uk.co.devtank.OsmHost1.service"),
        Some(PathBuf::from(
            "/usr/share/dbus-1/system-services/uk.co.devtank.OsmHost1.service"
        ))
    );
}

#[test]
fn every_packaged_source_file_exists_and_the_config_is_the_default() {
    let assets = deb_assets();
    for want in [
        "usr/sbin/",
        "usr/bin/",
        "lib/systemd/system/",
        "usr/share/dbus-1/system.d/",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/osm-hostctl",
    ] {
        assert!(
            assets.iter().any(|(_, d)| d == want),
            "nothing installed to {want}"
        );
    }
    for (src, _) in &assets {
        if src.starts_with("target/") {
            continue; // built by scripts/build-deb.sh
        }
        let matches = if let Some((dir, suffix)) = src.split_once("/*") {
            std::fs::read_dir(project_path(dir))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
        } else {
            project_path(src).is_file()
        };
        assert!(matches, "{src} is in the package but missing from the tree");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let path = project_path("packaging/debian").join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    }
    let postinst = std::fs::read_to_string(project_path("packaging/debian/postinst")).unwrap();
    assert!(postinst.contains("addgroup --system osm-admin"));
    // The shipped hostd.toml has every key commented out, so it is the defaults.
    let text = std::fs::read_to_string(project_path("packaging/hostd.toml")).unwrap();
    let uncommented: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed =
        osm_hostd::config::HostConfig::parse(&uncommented, Path::new("hostd.toml")).unwrap();
    assert_eq!(parsed, osm_hostd::config::HostConfig::default());
    // And uncommented, every key is a known one.
    let all: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").filter(|r| is_setting(r)).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = osm_hostd::config::HostConfig::parse(&all, Path::new("hostd.toml"));
    assert!(parsed.is_ok(), "{parsed:?}");
}

/// `key = value` with a lower-case key, or a `[table.name]` header: a commented-out
/// setting, not prose.
fn is_setting(line: &str) -> bool {
    let lower = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
    };
    if let Some(table) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return lower(table);
    }
    line.split_once(" = ")
        .is_some_and(|(k, _)| lower(k) && !k.contains('.'))
}

#[test]
fn the_nginx_setup_adds_both_includes_once_and_nginx_accepts_them() {
    let nginx_conf = Path::new("/etc/nginx/nginx.conf");
    assert!(
        nginx_conf.is_file(),
        "install nginx and libnginx-mod-stream (scripts/lib.sh lists them)"
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    let frags = dir.path().join("osm-host");
    std::fs::copy(nginx_conf, &conf).unwrap();
    let script = project_path("packaging/libexec/osm-host-nginx-setup");
    for _ in 0..2 {
        let out = Command::new("sh")
            .arg(&script)
            .arg(&conf)
            .arg(&frags)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let text = std::fs::read_to_string(&conf).unwrap();
    let http = format!("include {}/http/*.conf;", frags.display());
    let stream = format!("include {}/stream/*.conf;", frags.display());
    assert_eq!(text.matches(&http).count(), 1, "{text}");
    assert_eq!(text.matches(&stream).count(), 1, "{text}");
    let http_block = text.find("http {").unwrap();
    assert!(text.find(&http).unwrap() > http_block);
    // A stream server in the included directory parses: the stream module is loaded.
    std::fs::write(
        frags.join("stream/t.conf"),
        "server { listen 18883; proxy_pass 127.0.0.1:1883; }\n",
    )
    .unwrap();
    let out = Command::new("nginx")
        .args(["-t", "-q", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // A host that already has its own stream {} block (nginx allows only one) gets the
    // include inside it.
    let own = dir.path().join("own-stream.conf");
    let frags2 = dir.path().join("osm-host-2");
    let mut text = std::fs::read_to_string(nginx_conf).unwrap();
    if !text.lines().any(|l| l.trim_start().starts_with("stream {")) {
        text.push_str("\nstream {\n}\n");
    }
    std::fs::write(&own, text).unwrap();
    let out = Command::new("sh")
        .arg(&script)
        .arg(&own)
        .arg(&frags2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&own).unwrap();
    let blocks = text
        .lines()
        .filter(|l| l.trim_start().starts_with("stream {"))
        .count();
    assert_eq!(blocks, 1, "{text}");
    let stream2 = format!("include {}/stream/*.conf;", frags2.display());
    assert!(text.find(&stream2).unwrap() > text.find("stream {").unwrap());
}
