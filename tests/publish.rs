//! Root integration: containers published through a real NGINX (Debian's, with the
//! stream module) running in the test's sandbox, with a self-signed certificate made
//! here. A busybox container serves HTTP on 3000 and echoes TCP on 1883; NGINX answers
//! on the sandbox's side of the bridge. Traffic only inside the test's namespaces.

use rig::nginx::{publish_rig as rig_with_nginx, NginxPaths};
use rig::{wait_until, Rig};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const DOMAIN: &str = "example.test";
/// The host's address on the bridge: where NGINX answers from the container's side.
const HOST: &str = "10.0.3.1";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `curl` inside the sandbox, `host` resolved to the bridge address.
fn curl(rig: &Rig, scheme: &str, host: &str, path: &str, extra: &[&str]) -> Output {
    let port = if scheme == "https" { 443 } else { 80 };
    rig.in_sandbox("curl")
        .args(["-sk", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{port}:{HOST}"))
        .args(extra)
        .arg(format!("{scheme}://{host}{path}"))
        .output()
        .unwrap()
}

fn https_body(rig: &Rig, host: &str) -> String {
    stdout(&curl(rig, "https", host, "/", &[]))
}

/// Sends a line over TLS to `port` and returns what came back (the container echoes).
fn tls_echo(rig: &Rig, port: u16, line: &str) -> String {
    let script = format!(
        "(echo {line}; sleep 1) | timeout 10 openssl s_client -connect {HOST}:{port} -quiet -no_ign_eof 2>/dev/null"
    );
    stdout(&rig.in_sandbox("sh").args(["-c", &script]).output().unwrap())
}

fn nft_table(rig: &Rig) -> String {
    stdout(
        &rig.sandbox()
            .run("nft", &["list", "table", "ip", "osm_host"]),
    )
}

fn listening(rig: &Rig, port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    let text = rig.sandbox().run_ok("cat", &["/proc/net/tcp"]);
    text.lines()
        .skip(1)
        .any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
}

fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A busybox container with an HTTP page on 3000 and a TCP echo on 1883.
fn serving_container(rig: &Rig, name: &str) {
    rig.ctl_ok(&["create", name, "--base", "bb"]);
    rig.ctl_ok(&["start", name]);
    let ip = rig.info_json(name)["ipv4_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wait_until(Duration::from_secs(15), || stdout(
            &rig.attach(name, "ip -4 addr show dev eth0")
        )
        .contains(&format!("inet {ip}/"))),
        "{name} got no address"
    );
    let script = format!(
        "mkdir -p /tmp/www && echo page-of-{name} > /tmp/www/index.html && httpd -p 3000 -h /tmp/www && \
         setsid nc -ll -p 1883 -e /bin/cat </dev/null >/dev/null 2>&1 &"
    );
    let out = rig.attach(name, &script);
    assert!(out.status.success(), "{out:?}");
}

fn fragment(p: &NginxPaths, kind: &str, name: &str) -> PathBuf {
    p.fragment(kind, name)
}

fn publish_rig() -> (Rig, NginxPaths) {
    rig_with_nginx(DOMAIN)
}

#[test]
fn published_vhosts_and_streams_reach_the_container_and_follow_every_change() {
    let (mut rig, p) = publish_rig();
    rig.import_busybox_base("bb");
    serving_container(&rig, "acme");

    // Publish: an HTTPS vhost and a TLS stream.
    let out = rig.ctl_ok(&[
        "publish",
        "acme",
        "--http",
        &format!("acme.{DOMAIN}:3000"),
        "--tls-stream",
        "8883:1883",
    ]);
    assert!(out.contains("published acme"), "{out}");
    // Publish returns once NGINX listens on the new ports (its reload is asynchronous).
    for port in [80, 443, 8883] {
        assert!(listening(&rig, port), "port {port} right after publish");
    }
    let acme = format!("acme.{DOMAIN}");
    assert!(
        wait_until(Duration::from_secs(5), || https_body(&rig, &acme)
            .contains("page-of-acme")),
        "HTTPS through NGINX: {:?}\n{}",
        curl(&rig, "https", &acme, "/", &["-v"]),
        rig::file_tail(&p.error_log, 20)
    );
    // Plain HTTP is redirected to HTTPS, path kept.
    let redirect = stdout(&curl(
        &rig,
        "http",
        &acme,
        "/d/x?y=1",
        &["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"],
    ));
    assert_eq!(redirect, format!("308 https://{acme}/d/x?y=1"));
    // The TLS stream reaches the container's port 1883.
    assert!(
        wait_until(Duration::from_secs(15), || tls_echo(
            &rig,
            8883,
            "ping-1883"
        )
        .contains("ping-1883")),
        "TLS stream to 1883"
    );

    // info shows what is published; the spec records it; the firewall accepts exactly it.
    let info = rig.info_json("acme");
    assert_eq!(
        info["published"],
        serde_json::json!({"http": [{"host": acme, "port": 3000}],
                           "tls_streams": [{"public": 8883, "port": 1883}]})
    );
    let table = rig.ctl_ok(&["info", "acme"]);
    assert!(
        table.contains(&format!("https://{acme} -> port 3000"))
            && table.contains("tls :8883 -> port 1883"),
        "{table}"
    );
    let spec = std::fs::read_to_string(
        rig.sandbox()
            .host_path(rig.lxc_path().join("acme/container.toml")),
    )
    .unwrap();
    assert!(
        spec.contains("[[publish.tls_streams]]") && spec.contains("public = 8883"),
        "{spec}"
    );
    let nft = nft_table(&rig);
    assert!(nft.contains("tcp dport { 80, 443, 8883 }"), "{nft}");

    // Websockets (Grafana Live) go through: the upgrade reaches the container, which
    // answers 101 and then echoes over the upgraded connection.
    let ws = r#"#!/bin/sh
while read -r l; do l=$(printf %s "$l" | tr -d '\r'); [ -z "$l" ] && break; echo "$l" >> /tmp/ws-headers; done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
exec cat
"#;
    let script = format!(
        "cat > /tmp/ws.sh <<'EOF'\n{ws}EOF\nchmod +x /tmp/ws.sh && setsid nc -ll -p 3001 -e /tmp/ws.sh </dev/null >/dev/null 2>&1 &"
    );
    let out = rig.attach("acme", &script);
    assert!(out.status.success(), "{out:?}");
    let live = format!("live.{DOMAIN}");
    rig.ctl_ok(&["publish", "acme", "--http", &format!("{live}:3001")]);
    let request = format!(
        "(printf 'GET /api/live/ws HTTP/1.1\\r\\nHost: {live}\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'; sleep 1; echo hello-ws; sleep 1) | \
         timeout 10 openssl s_client -connect {HOST}:443 -servername {live} -quiet -no_ign_eof 2>/dev/null"
    );
    let mut answer = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            answer = stdout(
                &rig.in_sandbox("sh")
                    .args(["-c", &request])
                    .output()
                    .unwrap(),
            );
            answer.contains("hello-ws")
        }),
        "websocket through NGINX: {answer:?}"
    );
    assert!(answer.contains("101 Switching Protocols"), "{answer}");
    let seen = stdout(&rig.attach("acme", "cat /tmp/ws-headers")).to_ascii_lowercase();
    assert!(
        seen.contains("upgrade: websocket") && seen.contains("x-forwarded-proto: https"),
        "{seen}"
    );
    rig.ctl_ok(&["unpublish", "acme", "--http", &live]);

    // A second container cannot take the same host name or port; nor a port another
    // program listens on (dnsmasq's DNS on 53). Refusals change nothing.
    rig.ctl_ok(&["create", "beta", "--base", "bb"]);
    let out = rig.ctl(&["publish", "beta", "--tls-stream", "8883:1883"]);
    assert_eq!(exit_code(&out), 4, "{out:?}");
    assert!(
        stderr(&out).contains("already published by container acme"),
        "{out:?}"
    );
    let out = rig.ctl(&["publish", "beta", "--http", &format!("ACME.{DOMAIN}:80")]);
    assert_eq!(exit_code(&out), 4, "{out:?}");
    assert!(listening(&rig, 53), "dnsmasq listens on 53");
    let out = rig.ctl(&["publish", "beta", "--tls-stream", "53:1883"]);
    assert_eq!(exit_code(&out), 4, "{out:?}");
    assert!(stderr(&out).contains("in use on this host"), "{out:?}");
    for bad in [
        vec!["--http", "not a host:80"],
        vec!["--tls-stream", "443:1883"],
    ] {
        let mut args = vec!["publish", "beta"];
        args.extend(bad);
        let out = rig.ctl(&args);
        assert!(matches!(exit_code(&out), 2 | 5), "{args:?}: {out:?}");
    }

    // A fragment NGINX rejects is put back; NGINX keeps serving the previous config.
    let out = rig.ctl(&[
        "publish",
        "beta",
        "--http",
        &format!("broken.{DOMAIN}:3000"),
    ]);
    assert_eq!(exit_code(&out), 5, "{out:?}");
    assert!(
        stderr(&out).contains("NGINX refused") && stderr(&out).contains("missing.pem"),
        "NGINX's own message: {out:?}"
    );
    assert!(!fragment(&p, "http", "beta").exists());
    assert_eq!(
        rig.info_json("beta")["published"]["http"],
        serde_json::json!([])
    );
    assert!(https_body(&rig, &acme).contains("page-of-acme"));

    // A reload (another container published) does not cut a streaming connection.
    let mut stream = rig
        .in_sandbox("openssl")
        .args(["s_client", "-connect", &format!("{HOST}:8883"), "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut sin = stream.stdin.take().unwrap();
    let sout = stream.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(sout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    use std::io::Write;
    writeln!(sin, "before-reload").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "before-reload"
    );
    rig.ctl_ok(&["publish", "beta", "--http", &format!("beta.{DOMAIN}:3000")]);
    std::thread::sleep(Duration::from_millis(300));
    writeln!(sin, "after-reload").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "after-reload",
        "the connection survived NGINX's reload"
    );
    drop(sin);
    let _ = stream.kill();
    let _ = stream.wait();

    // A daemon restart rewrites lost fragments from container.toml and keeps the ports.
    std::fs::remove_file(fragment(&p, "http", "acme")).unwrap();
    std::fs::write(
        fragment(&p, "http", "gone"),
        "# left by a deleted container\n",
    )
    .unwrap();
    rig.daemon_mut().restart();
    assert!(fragment(&p, "http", "acme").exists(), "rewritten at start");
    assert!(
        !fragment(&p, "http", "gone").exists(),
        "stale fragment removed"
    );
    assert!(https_body(&rig, &acme).contains("page-of-acme"));
    assert!(nft_table(&rig).contains("tcp dport { 80, 443, 8883 }"));

    // Unpublish the stream: its fragment goes, NGINX stops listening, the port closes.
    rig.ctl_ok(&["unpublish", "acme", "--tls-stream", "8883"]);
    assert!(!fragment(&p, "stream", "acme").exists());
    assert!(
        wait_until(Duration::from_secs(5), || !listening(&rig, 8883)),
        "NGINX still listens on 8883"
    );
    assert!(!nft_table(&rig).contains("8883"), "{}", nft_table(&rig));
    assert!(https_body(&rig, &acme).contains("page-of-acme"));
    let out = rig.ctl(&["unpublish", "acme", "--tls-stream", "8883"]);
    assert_eq!(exit_code(&out), 3, "{out:?}");

    // Delete removes a container's vhosts.
    rig.ctl_ok(&["delete", "beta"]);
    assert!(!fragment(&p, "http", "beta").exists());

    // Unpublish everything: the vhost is gone and so are 80/443 from the firewall.
    rig.ctl_ok(&["unpublish", "acme", "--all"]);
    assert!(!fragment(&p, "http", "acme").exists());
    assert!(
        wait_until(Duration::from_secs(5), || !https_body(&rig, &acme)
            .contains("page-of-acme")),
        "the vhost still answers"
    );
    assert!(!nft_table(&rig).contains("dport"), "{}", nft_table(&rig));
    assert_eq!(
        rig.info_json("acme")["published"]["http"],
        serde_json::json!([])
    );
}

#[test]
fn a_customer_is_added_served_and_deleted_in_one_command() {
    let (mut rig, p) = publish_rig();
    rig.import_busybox_base("bb");

    // Names follow the seed: a dash where a space would be.
    let err = rig.ctl_err(&["customer", "add", "Acme Corp", "--mqtt-port", "8883"]);
    assert!(err.contains("\"acme-corp\""), "{err}");

    // No osm-stack layer here: the newest base alone.
    rig.ctl_ok(&["customer", "add", "acme", "--mqtt-port", "8883"]);
    let info = rig.info_json("acme");
    assert_eq!(info["state"], "running");
    assert_eq!(info["base"], "bb");
    assert_eq!(info["preset"], "customer");
    assert_eq!(info["autostart"], true);
    let ip = info["ipv4_address"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(15), || stdout(
            &rig.attach("acme", "ip -4 addr show dev eth0")
        )
        .contains(&format!("inet {ip}/"))),
        "acme got no address"
    );
    let out = rig.attach(
        "acme",
        "mkdir -p /tmp/www && echo page-of-acme > /tmp/www/index.html && \
         for p in 3000 8086 8080; do httpd -p $p -h /tmp/www; done && \
         setsid nc -ll -p 1883 -e /bin/cat </dev/null >/dev/null 2>&1 &",
    );
    assert!(out.status.success(), "{out:?}");
    for host in ["acme", "acme-influx", "acme-chirpstack"] {
        let h = format!("{host}.{DOMAIN}");
        assert!(
            wait_until(Duration::from_secs(5), || https_body(&rig, &h)
                .contains("page-of-acme")),
            "{h}: {:?}",
            curl(&rig, "https", &h, "/", &["-v"])
        );
    }
    assert!(
        wait_until(Duration::from_secs(15), || tls_echo(
            &rig,
            8883,
            "mqtt-ping"
        )
        .contains("mqtt-ping")),
        "MQTT port over TLS"
    );

    // A second customer cannot take the same MQTT port, and leaves nothing behind.
    let out = rig.ctl(&["customer", "add", "beta", "--mqtt-port", "8883"]);
    assert_eq!(exit_code(&out), 4, "{out:?}");
    assert!(stderr(&out).contains("container acme"), "{out:?}");
    assert_eq!(exit_code(&rig.ctl(&["info", "beta"])), 3);
    // The same customer again changes nothing.
    rig.ctl_ok(&["customer", "add", "acme", "--mqtt-port", "8883"]);

    let list = rig.ctl_ok(&["customer", "list"]);
    assert!(
        list.contains("acme") && list.contains("8883") && list.contains("running"),
        "{list}"
    );
    // Anyone may list customers; only admins may change them.
    let out = rig.ctl_as_nobody(&["customer", "list"]);
    assert!(
        out.status.success() && stdout(&out).contains("acme"),
        "{out:?}"
    );
    let out = rig.ctl_as_nobody(&["unpublish", "acme", "--all"]);
    assert_eq!(exit_code(&out), 7, "{out:?}");
    let json: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["customer", "list", "--json"])).unwrap();
    assert_eq!(json[0]["name"], "acme");
    assert_eq!(json[0]["mqtt_ports"], serde_json::json!([8883]));
    assert_eq!(json[0]["hosts"].as_array().unwrap().len(), 3);

    // A daemon restart keeps the customer published.
    rig.daemon_mut().restart();
    assert!(https_body(&rig, &format!("acme-influx.{DOMAIN}")).contains("page-of-acme"));

    // Only customers are deleted as customers.
    rig.ctl_ok(&["create", "plain", "--base", "bb"]);
    let out = rig.ctl(&["customer", "delete", "plain"]);
    assert_eq!(exit_code(&out), 5, "{out:?}");

    // customer delete: stopped, unpublished, deleted; the port closes.
    rig.ctl_ok(&["customer", "delete", "acme"]);
    assert_eq!(exit_code(&rig.ctl(&["info", "acme"])), 3);
    assert!(!fragment(&p, "http", "acme").exists());
    assert!(!fragment(&p, "stream", "acme").exists());
    assert!(
        wait_until(Duration::from_secs(5), || !listening(&rig, 8883)),
        "NGINX still listens on 8883"
    );
    assert!(!nft_table(&rig).contains("8883"), "{}", nft_table(&rig));
    assert!(!https_body(&rig, &format!("acme.{DOMAIN}")).contains("page-of-acme"));
    assert!(rig.ctl_ok(&["customer", "list"]).lines().count() <= 1);
}
