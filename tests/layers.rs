//! Layers built from `overlays/` recipes: `overlays/mqtt.toml` over the bookworm recipe
//! base, then a container stacked on it runs Mosquitto and answers MQTT from the host.
//!
//! apt needs Debian's mirror, so a first daemon in a sandbox that shares the host's network
//! builds the layer for real, into a build cache private to this test (seeded with the
//! shared bookworm base archive, so only the layer is built from the mirror). The container
//! then runs in a sandbox with its own network namespace, whose daemon (no route to the
//! mirror) builds base and layer again from that cache.

use rig::{project_path, require_root, wait_until, Rig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const BASE_RECIPE: &str = "base-images/debian-bookworm.toml";
const LAYER_RECIPE: &str = "overlays/mqtt.toml";
const SHARED_CACHE: &str = "/var/cache/osm-host-tests";

fn base_archive(cache: &Path) -> PathBuf {
    let text = std::fs::read_to_string(project_path(BASE_RECIPE)).unwrap();
    let key = osm_hostd::base::Recipe::parse(&text).unwrap().cache_key();
    cache.join("bases").join(format!("{key}.tar.zst"))
}

fn layer_archives(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("layers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mqtt_layer_builds_and_a_container_on_it_answers_mqtt() {
    require_root();
    let base_recipe = project_path(BASE_RECIPE);
    let base_recipe = base_recipe.to_str().unwrap();
    let layer_recipe = project_path(LAYER_RECIPE);
    let layer_recipe = layer_recipe.to_str().unwrap();

    // The shared base archive (built once by whichever test runs first).
    let shared = Path::new(SHARED_CACHE);
    if !base_archive(shared).exists() {
        let builder = Rig::builder().host_network().start();
        builder.ctl_ok(&["base", "build", "bookworm", "--recipe", base_recipe]);
        assert!(
            base_archive(shared).exists(),
            "a base build fills the cache"
        );
    }
    let cache = rig::test_tempdir("layer-cache");
    let cache_dir = cache.path().to_path_buf();
    std::fs::create_dir_all(cache_dir.join("bases")).unwrap();
    std::fs::copy(base_archive(shared), base_archive(&cache_dir)).unwrap();

    // Build the layer for real: apt-get from Debian's mirror in the host's network.
    {
        let c = cache_dir.to_string_lossy().into_owned();
        let builder = Rig::builder()
            .host_network()
            .config(move |cfg| {
                cfg.set_str("cache_dir", &c);
            })
            .start();
        builder.ctl_ok(&["base", "build", "bookworm", "--recipe", base_recipe]);
        let e = builder.ctl_err(&["layer", "build", "other", "--recipe", layer_recipe]);
        assert!(e.contains("recipe is for layer \"mqtt\""), "{e}");
        // A failed build reports apt's error and leaves nothing behind.
        let broken = cache.path().join("broken.toml");
        std::fs::write(
            &broken,
            "name = \"broken\"\nbase = \"bookworm\"\npackages = [\"osm-host-no-such-package\"]\n",
        )
        .unwrap();
        let e = builder.ctl_err(&[
            "layer",
            "build",
            "broken",
            "--recipe",
            broken.to_str().unwrap(),
        ]);
        assert!(e.contains("apt-get install"), "{e}");
        assert!(e.contains("osm-host-no-such-package"), "{e}");
        let layers_dir = builder
            .sandbox()
            .host_path(builder.store_root().join("lxc/layers"));
        let left: Vec<_> = std::fs::read_dir(&layers_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "a failed build left {left:?}");
        assert!(
            layer_archives(&cache_dir).is_empty(),
            "a failed build is not cached"
        );

        let t = Instant::now();
        builder.ctl_ok(&["layer", "build", "mqtt", "--recipe", layer_recipe]);
        eprintln!("layer build from the mirror took {:?}", t.elapsed());
        assert_eq!(layer_archives(&cache_dir).len(), 1, "the build is cached");

        let layer = builder
            .sandbox()
            .host_path(builder.store_root().join("lxc/layers/mqtt"));
        assert!(layer.join("usr/sbin/mosquitto").is_file());
        assert!(layer.join("usr/bin/mosquitto_pub").is_file());
        let conf =
            std::fs::read_to_string(layer.join("etc/mosquitto/conf.d/osm-listener.conf")).unwrap();
        assert!(conf.contains("listener 1883"), "{conf}");
        // Templates wait in the layer, with the unit that renders them at first boot.
        let motd =
            std::fs::read_to_string(layer.join("usr/lib/osm-host/templates/etc/motd")).unwrap();
        assert!(motd.contains("MQTT broker {{name}}"), "{motd}");
        assert!(layer
            .join("etc/systemd/system/sysinit.target.wants/osm-host-templates.service")
            .symlink_metadata()
            .is_ok());
        // Only what the recipe added: no systemd binary (that is the base's).
        assert!(!layer.join("usr/lib/systemd/systemd").exists());
        // Cleaned of apt's downloads, caches and the build's logs and helpers.
        let entries = |rel: &str| -> Vec<String> {
            std::fs::read_dir(layer.join(rel))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(
            entries("var/lib/apt/lists").is_empty(),
            "{:?}",
            entries("var/lib/apt/lists")
        );
        assert!(
            !entries("var/cache/apt/archives")
                .iter()
                .any(|n| n.ends_with(".deb")),
            "{:?}",
            entries("var/cache/apt/archives")
        );
        assert!(
            !entries("var/cache/apt").iter().any(|n| n.ends_with(".bin")),
            "{:?}",
            entries("var/cache/apt")
        );
        assert!(entries("var/log/apt").is_empty());
        assert!(!layer.join("var/log/dpkg.log").exists());
        assert!(!layer.join("usr/sbin/policy-rc.d").exists());
        // Read-only once built.
        assert!(
            std::fs::write(layer.join("probe"), b"x").is_err(),
            "the layer is read-only"
        );

        let list: serde_json::Value =
            serde_json::from_str(&builder.ctl_ok(&["layer", "list", "--json"])).unwrap();
        assert_eq!(list[0]["name"], "mqtt", "{list}");
        assert_eq!(list[0]["base"], "bookworm", "{list}");
        // The base cannot go while a layer is built over it.
        let e = builder.ctl_err(&["base", "delete", "bookworm"]);
        assert!(e.contains("layer(s) mqtt"), "{e}");
        builder.ctl_ok(&["layer", "delete", "mqtt"]);
        builder.ctl_ok(&["base", "delete", "bookworm"]);
    }

    // A sandbox with its own network: base and layer come from the cache.
    let c = cache_dir.to_string_lossy().into_owned();
    let rig = Rig::builder()
        .config(move |cfg| {
            cfg.set_str("cache_dir", &c);
        })
        .start();
    // Versioned: the recipe's "bookworm" and `create --base bookworm` mean the newest
    // bookworm@…, and the container pins it.
    rig.ctl_ok(&["base", "build", "bookworm@1", "--recipe", base_recipe]);
    rig.ctl_ok(&["layer", "build", "mqtt", "--recipe", layer_recipe]);
    // A layer stacks only on the base it was built over.
    rig.import_busybox_base("bb");
    let e = rig.ctl_err(&["create", "bb1", "--base", "bb", "--layer", "mqtt"]);
    assert!(e.contains("built over base \"bookworm@1\""), "{e}");
    rig.ctl_ok(&["base", "delete", "bb"]);
    rig.ctl_ok(&[
        "create", "mq1", "--base", "bookworm", "--layer", "mqtt", "--memory", "512M",
    ]);
    let e = rig.ctl_err(&["layer", "delete", "mqtt"]);
    assert!(e.contains("container mq1"), "{e}");
    assert_eq!(rig.info_json("mq1")["base"], "bookworm@1");
    // A newer base version changes nothing that exists, and prune keeps what is used.
    // `@auto`: the build date and the recipe's hash.
    let out = rig.ctl_ok(&["base", "build", "bookworm@auto", "--recipe", base_recipe]);
    let newer = out
        .trim()
        .strip_prefix("built base ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let text = std::fs::read_to_string(base_recipe).unwrap();
    let key = osm_hostd::base::Recipe::parse(&text).unwrap().cache_key();
    assert!(
        newer.starts_with("bookworm@20") && newer.ends_with(&format!("-{}", &key[..12])),
        "{newer}"
    );
    assert_eq!(rig.info_json("mq1")["base"], "bookworm@1");
    assert_eq!(rig.info_json("mq1")["newer_base"], newer.as_str());
    let info = rig.ctl_ok(&["info", "mq1"]);
    assert!(
        info.contains(&format!("bookworm@1 (newer: {newer})")),
        "{info}"
    );
    let out = rig.ctl_ok(&["base", "prune", "bookworm"]);
    assert!(out.contains("no unused older versions"), "{out}");
    rig.ctl_ok(&["start", "mq1"]);

    let mut state = String::new();
    let up = wait_until(Duration::from_secs(90), || {
        let out = rig.attach("mq1", "systemctl is-active mosquitto");
        state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        state == "active"
    });
    if !up {
        let st = rig.attach(
            "mq1",
            "systemctl status mosquitto --no-pager; journalctl -b --no-pager | tail -40",
        );
        panic!(
            "mosquitto is not active ({state:?}):\n{}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
    // The layer's template was rendered with the container's name at its first boot.
    let motd = rig.attach("mq1", "cat /etc/motd");
    assert!(
        String::from_utf8_lossy(&motd.stdout).contains("MQTT broker mq1 (osm-host mqtt layer)"),
        "{}",
        String::from_utf8_lossy(&motd.stdout)
    );
    // Mosquitto comes from the layer, not from the container's own upper layer.
    let upper = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers/mq1/rootfs-layer"));
    assert!(!upper.join("usr/sbin/mosquitto").exists());
    let listening = rig.attach("mq1", "ss -Htln 'sport = :1883'");
    assert!(
        !String::from_utf8_lossy(&listening.stdout).trim().is_empty(),
        "nothing listens on 1883"
    );

    // Publish/subscribe from the host over the container network.
    let ip = rig.info_json("mq1")["ipv4_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sub = rig
        .in_sandbox("mosquitto_sub")
        .args(["-h", &ip, "-t", "osm/layer-test", "-C", "1", "-W", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub (apt install mosquitto-clients)");
    let delivered = wait_until(Duration::from_secs(60), || {
        let _ = rig
            .in_sandbox("mosquitto_pub")
            .args([
                "-h",
                &ip,
                "-t",
                "osm/layer-test",
                "-m",
                "hello from the host",
            ])
            .output();
        matches!(sub.try_wait(), Ok(Some(_)))
    });
    if !delivered {
        let _ = sub.kill();
    }
    let out = sub.wait_with_output().unwrap();
    assert!(
        delivered && out.status.success(),
        "no message came back: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from the host"
    );

    // The same upper, imported as a layer from an archive (the build cache's), serves a
    // second container, whose template is rendered with its own name.
    let archive = layer_archives(&cache_dir).pop().unwrap();
    let archive = archive.to_str().unwrap();
    let e = rig.ctl_err(&["layer", "import", "mqtt2", archive, "--base", "nobase"]);
    assert!(e.contains("base \"nobase\""), "{e}");
    rig.ctl_ok(&["layer", "import", "mqtt2", archive, "--base", "bookworm@1"]);
    // `--base bookworm` now means the @auto version, which mqtt2 was not made over.
    let e = rig.ctl_err(&["create", "mq2", "--base", "bookworm", "--layer", "mqtt2"]);
    assert!(e.contains("built over base \"bookworm@1\""), "{e}");
    rig.ctl_ok(&["create", "mq2", "--base", "bookworm@1", "--layer", "mqtt2"]);
    rig.ctl_ok(&["start", "mq2"]);
    let mut motd = String::new();
    let rendered = wait_until(Duration::from_secs(60), || {
        motd = String::from_utf8_lossy(&rig.attach("mq2", "cat /etc/motd").stdout).into_owned();
        motd.contains("MQTT broker mq2 ")
    });
    assert!(rendered, "{motd}");
    rig.ctl_ok(&["delete", "mq2", "--force"]);
    rig.ctl_ok(&["layer", "delete", "mqtt2"]);

    rig.ctl_ok(&["stop", "mq1", "--timeout", "30"]);
    rig.ctl_ok(&["delete", "mq1"]);
    rig.ctl_ok(&["layer", "delete", "mqtt"]);
    let list: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["layer", "list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    let out = rig.ctl_ok(&["base", "prune", "bookworm"]);
    assert!(out.contains("deleted base bookworm@1"), "{out}");
    let bases: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["base", "list", "--json"])).unwrap();
    let names: Vec<&str> = bases
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![newer.as_str()]);
    rig.ctl_ok(&["base", "delete", &newer]);
}

/// A daemon killed in the middle of a layer build takes the build's processes with it,
/// and the next start removes the half-built layer.
#[test]
fn a_daemon_killed_mid_build_leaves_no_build_behind() {
    require_root();
    let shared = Path::new(SHARED_CACHE);
    let base_recipe = project_path(BASE_RECIPE);
    let base_recipe = base_recipe.to_str().unwrap();
    if !base_archive(shared).exists() {
        let builder = Rig::builder().host_network().start();
        builder.ctl_ok(&["base", "build", "bookworm", "--recipe", base_recipe]);
    }
    let mut rig = Rig::new();
    rig.ctl_ok(&["base", "build", "bookworm", "--recipe", base_recipe]);
    let marker = format!("{}.{}", 600, std::process::id());
    let recipe = rig.dir().join("slow.toml");
    std::fs::write(
        &recipe,
        format!("name = \"slow\"\nbase = \"bookworm\"\nrun = [[\"sleep\", \"{marker}\"]]\n"),
    )
    .unwrap();
    let mut ctl = rig
        .ctl_command(&[
            "layer",
            "build",
            "slow",
            "--recipe",
            recipe.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = || {
        rig::procs::all_pids()
            .into_iter()
            .filter(|p| rig::procs::cmdline(*p).is_some_and(|c| c.contains(&marker)))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(60), || !sleeping().is_empty()),
        "the build's run command did not start"
    );
    let layers_dir = rig.sandbox().host_path(rig.store_root().join("lxc/layers"));
    assert!(layers_dir.join(".building-slow").exists());

    rig.daemon_mut().kill9();
    let _ = ctl.wait();
    assert!(
        wait_until(Duration::from_secs(10), || sleeping().is_empty()),
        "the build's processes outlived the daemon: {:?}",
        sleeping()
    );
    rig.daemon_mut().start();
    let left: Vec<_> = std::fs::read_dir(&layers_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a killed build left {left:?}");
    let list: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["layer", "list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]));
    rig.ctl_ok(&["base", "delete", "bookworm"]);
}
