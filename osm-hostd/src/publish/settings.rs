//! `[publish]` of `hostd.toml`: where NGINX and the certificates are. `config` holds it
//! and calls [`PublishConfig::validate`] at load; this module never depends on `config`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[publish]`: customers' HTTP vhosts and TLS streams through the host's NGINX.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// The domain customers' vhosts live under; "" (unset) refuses every publish.
    pub domain: String,
    /// The certificate (a wildcard for `domain`) and its key, for every vhost and stream.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// What `nginx -t -c` checks and `nginx -s reload -c` reloads.
    pub nginx_conf: PathBuf,
    /// Fragments: `<nginx_dir>/http/<name>.conf`, `<nginx_dir>/stream/<name>.conf`.
    pub nginx_dir: PathBuf,
    /// Per-host certificates overriding `tls_cert`/`tls_key`, by host name.
    pub certs: std::collections::BTreeMap<String, CertPair>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            domain: String::new(),
            tls_cert: PathBuf::from("/etc/osm-host/tls/fullchain.pem"),
            tls_key: PathBuf::from("/etc/osm-host/tls/privkey.pem"),
            nginx_conf: PathBuf::from("/etc/nginx/nginx.conf"),
            nginx_dir: PathBuf::from("/etc/nginx/osm-host"),
            certs: Default::default(),
        }
    }
}

impl PublishConfig {
    /// The certificate and key for `host`: its override, else the domain's.
    pub fn cert_for(&self, host: &str) -> (&Path, &Path) {
        match self.certs.get(host) {
            Some(c) => (&c.tls_cert, &c.tls_key),
            None => (&self.tls_cert, &self.tls_key),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.domain.is_empty() {
            super::validate_host(&self.domain).map_err(|e| format!("publish.domain: {e}"))?;
        }
        let mut paths = vec![
            ("publish.tls_cert", &self.tls_cert),
            ("publish.tls_key", &self.tls_key),
            ("publish.nginx_conf", &self.nginx_conf),
            ("publish.nginx_dir", &self.nginx_dir),
        ];
        for c in self.certs.values() {
            paths.push(("publish.certs.*.tls_cert", &c.tls_cert));
            paths.push(("publish.certs.*.tls_key", &c.tls_key));
        }
        for (key, p) in paths {
            if !p.is_absolute() {
                return Err(format!("{key} = {p:?} must be an absolute path"));
            }
        }
        for host in self.certs.keys() {
            super::validate_host(host).map_err(|e| format!("publish.certs: {e}"))?;
        }
        Ok(())
    }
}
