//! A real NGINX (Debian's, with the stream module) for publish tests: a self-signed
//! wildcard certificate, an nginx.conf including the daemon's fragment directories (as
//! `osm-host-nginx-setup` wires the host's), and a rig whose daemon publishes through it.
//! NGINX runs inside the sandbox, so it dies with the sandbox's PID namespace.

use std::path::{Path, PathBuf};

use super::{DaemonConfig, Rig};

const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Where the test's NGINX keeps its files.
pub struct NginxPaths {
    pub conf: PathBuf,
    /// The daemon's `nginx_dir`: `http/` and `stream/` fragments.
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub error_log: PathBuf,
}

impl NginxPaths {
    /// A container's fragment: `kind` is `http` or `stream`.
    pub fn fragment(&self, kind: &str, name: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{name}.conf"))
    }
}

/// Writes the certificate (CN and SAN `*.<domain>`) and the nginx.conf under `root/nginx`.
pub fn prepare_nginx(root: &Path, domain: &str) -> NginxPaths {
    assert!(
        Path::new(STREAM_MODULE).exists(),
        "{STREAM_MODULE} is missing: install nginx and libnginx-mod-stream"
    );
    let n = root.join("nginx");
    for d in ["tmp", "osm-host"] {
        std::fs::create_dir_all(n.join(d)).unwrap();
    }
    let p = NginxPaths {
        conf: n.join("nginx.conf"),
        dir: n.join("osm-host"),
        cert: n.join("cert.pem"),
        key: n.join("key.pem"),
        error_log: n.join("error.log"),
    };
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&p.key)
        .arg("-out")
        .arg(&p.cert)
        .args([
            "-subj",
            &format!("/CN=*.{domain}"),
            "-addext",
            &format!("subjectAltName=DNS:*.{domain}"),
        ])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = n.display();
    let conf = format!(
        "load_module {STREAM_MODULE};\n\
         user nobody nogroup;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {log};\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   include {frag}/http/*.conf;\n\
         }}\n\
         stream {{\n\
         \x20   include {frag}/stream/*.conf;\n\
         }}\n",
        log = p.error_log.display(),
        frag = p.dir.display(),
    );
    std::fs::write(&p.conf, conf).unwrap();
    p
}

/// A rig (sandbox, bus, daemon) whose daemon publishes under `domain` through an NGINX
/// started in the sandbox. A per-host certificate override for `broken.<domain>` names a
/// missing file, so NGINX refuses any fragment for that host.
pub fn publish_rig(domain: &str) -> (Rig, NginxPaths) {
    super::require_root();
    let mut rig = Rig::builder().no_daemon_start().start();
    let p = prepare_nginx(rig.dir(), domain);
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("publish.domain", domain)
        .set_str("publish.tls_cert", &p.cert.to_string_lossy())
        .set_str("publish.tls_key", &p.key.to_string_lossy())
        .set_str("publish.nginx_conf", &p.conf.to_string_lossy())
        .set_str("publish.nginx_dir", &p.dir.to_string_lossy())
        .append(&format!(
            "[publish.certs.\"broken.{domain}\"]\ntls_cert = \"{0}/missing.pem\"\ntls_key = \"{0}/missing.key\"",
            rig.dir().display()
        ));
    rig.daemon().write_config(&cfg);
    rig.sandbox()
        .run_ok("nginx", &["-c", &p.conf.to_string_lossy()]);
    rig.daemon_mut().start();
    (rig, p)
}
