//! Publishing containers through the host's NGINX: HTTPS vhosts (with an HTTP->HTTPS
//! redirect) and TLS streams terminated by NGINX, proxied to the container's address.
//!
//! What a container publishes lives in its `container.toml` (`[publish]`), so a snapshot
//! or backup carries it and the daemon can rewrite every fragment at start. This module
//! holds the pure parts: the entries, their validation and merging, and the customer
//! preset; `nginx` renders and applies fragments, `ports` reads the host's listeners.

pub mod nginx;
pub mod ports;
pub mod settings;

use serde::{Deserialize, Serialize};

/// HTTPS and HTTP (redirect) ports NGINX listens on for vhosts; never a TLS stream's.
pub const VHOST_PORTS: [u16; 2] = [80, 443];

/// The `preset` of containers made by `customer add`.
pub const CUSTOMER_PRESET: &str = "customer";

/// A name-based vhost: `host` over HTTPS on 443 proxied to the container's `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    pub host: String,
    pub port: u16,
}

/// TLS on the host's `public` port, terminated by NGINX, plain TCP to the container's `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsStream {
    pub public: u16,
    pub port: u16,
}

/// `[publish]` of `container.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// Set by `customer add` (`"customer"`), so `customer list` knows its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_streams: Vec<TlsStream>,
}

impl PublishSpec {
    pub fn is_default(&self) -> bool {
        *self == PublishSpec::default()
    }

    /// Whether anything reaches NGINX (a preset alone publishes nothing).
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tls_streams.is_empty()
    }

    /// Adds routes and streams; one for the same host (or public port) replaces the old
    /// one. Kept sorted so equal sets compare equal.
    pub fn merge(&mut self, http: &[HttpRoute], streams: &[TlsStream]) {
        for r in http {
            self.http.retain(|o| o.host != r.host);
            self.http.push(r.clone());
        }
        for s in streams {
            self.tls_streams.retain(|o| o.public != s.public);
            self.tls_streams.push(s.clone());
        }
        self.http.sort();
        self.tls_streams.sort();
    }

    /// Removes the named hosts and public ports (all with `all`); names not published
    /// are an error, so a typo is not silently ignored.
    pub fn remove(&mut self, hosts: &[String], publics: &[u16], all: bool) -> Result<(), String> {
        if all {
            self.http.clear();
            self.tls_streams.clear();
            return Ok(());
        }
        for h in hosts {
            let h = h.to_ascii_lowercase();
            if !self.http.iter().any(|r| r.host == h) {
                return Err(format!("host {h} is not published by this container"));
            }
            self.http.retain(|r| r.host != h);
        }
        for p in publics {
            if !self.tls_streams.iter().any(|s| s.public == *p) {
                return Err(format!("port {p} is not published by this container"));
            }
            self.tls_streams.retain(|s| s.public != *p);
        }
        Ok(())
    }
}

/// A host name for a vhost: a DNS name of labels `[a-z0-9-]` (1-63 each, no leading or
/// trailing `-`), at least two labels, at most 253 characters. Upper case is folded.
pub fn validate_host(host: &str) -> Result<String, String> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| {
        Err(format!(
            "host name {host:?} is not valid: {why}; give a DNS name such as acme.example.com"
        ))
    };
    if h.is_empty() {
        return bad("it is empty");
    }
    if h.len() > 253 {
        return bad("it is longer than 253 characters");
    }
    let labels: Vec<&str> = h.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs a domain (at least two labels)");
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return bad("each label between dots must have 1-63 characters");
        }
        if let Some(c) = l
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return bad(&format!("character {c:?} is not allowed"));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return bad("a label must not start or end with '-'");
        }
    }
    Ok(h)
}

/// Checks a request's entries on their own: valid names and ports, no duplicates, and
/// no TLS stream on the vhost ports. Returns the routes with host names normalised.
pub fn validate_request(
    http: &[HttpRoute],
    streams: &[TlsStream],
) -> Result<(Vec<HttpRoute>, Vec<TlsStream>), String> {
    if http.is_empty() && streams.is_empty() {
        return Err("nothing to publish; give at least one HTTP host or TLS stream".into());
    }
    let mut routes = Vec::new();
    for r in http {
        let host = validate_host(&r.host)?;
        if r.port == 0 {
            return Err(format!(
                "container port 0 for {host} is not valid; give 1-65535"
            ));
        }
        if routes.iter().any(|o: &HttpRoute| o.host == host) {
            return Err(format!("host {host} is given twice"));
        }
        routes.push(HttpRoute { host, port: r.port });
    }
    for (i, s) in streams.iter().enumerate() {
        if s.public == 0 || s.port == 0 {
            return Err(format!(
                "TLS stream {}:{} is not valid; ports are 1-65535",
                s.public, s.port
            ));
        }
        if VHOST_PORTS.contains(&s.public) {
            return Err(format!(
                "public port {} is NGINX's HTTP/HTTPS port for the vhosts; choose another for a TLS stream",
                s.public
            ));
        }
        if streams[..i].iter().any(|o| o.public == s.public) {
            return Err(format!("public port {} is given twice", s.public));
        }
    }
    Ok((routes, streams.to_vec()))
}

/// A customer name: a container name (a DNS label). A name written as words ("Acme
/// Corp") is refused with the form to use ("acme-corp"): a dash where a space would be.
pub fn validate_customer_name(name: &str) -> Result<(), String> {
    if crate::names::validate_container_name(name).is_ok() {
        // The longest host of the preset, `<name>-chirpstack`, must stay a DNS label.
        if name.len() + "-chirpstack".len() > 63 {
            return Err(format!(
                "customer name {name:?} is too long: {name}-chirpstack must fit a DNS label (63 characters); use at most 52"
            ));
        }
        return Ok(());
    }
    let suggestion: String = name
        .trim()
        .to_ascii_lowercase()
        .split(|c: char| c.is_whitespace() || c == '_' || c == '.')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    let suggestion = suggestion.trim_matches('-');
    let hint =
        if !suggestion.is_empty() && crate::names::validate_container_name(suggestion).is_ok() {
            format!("; use {suggestion:?}")
        } else {
            String::new()
        };
    Err(format!(
        "customer name {name:?} is not valid: use lowercase a-z, 0-9 and a dash where a space would be{hint}"
    ))
}

/// The OSM customer preset: Grafana, InfluxDB 2 and ChirpStack vhosts under `domain`,
/// and the customer's MQTT port over TLS to Mosquitto (1883).
pub fn customer_routes(
    name: &str,
    domain: &str,
    mqtt_port: u16,
) -> (Vec<HttpRoute>, Vec<TlsStream>) {
    let route = |suffix: &str, port| HttpRoute {
        host: format!("{name}{suffix}.{domain}"),
        port,
    };
    (
        vec![
            route("", 3000),
            route("-influx", 8086),
            route("-chirpstack", 8080),
        ],
        vec![TlsStream {
            public: mqtt_port,
            port: 1883,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: &str, port: u16) -> HttpRoute {
        HttpRoute {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn host_names_are_dns_names() {
        assert_eq!(
            validate_host("Acme.Example.test.").unwrap(),
            "acme.example.test"
        );
        for bad in [
            "",
            "acme",
            "-a.example.com",
            "a-.example.com",
            "a..b",
            "a b.com",
            "a_b.com",
            "x;y.com",
            "a.com/x",
        ] {
            assert!(validate_host(bad).is_err(), "{bad:?}");
        }
        assert!(validate_host(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn requests_are_checked_for_ports_and_duplicates() {
        let s = |public, port| TlsStream { public, port };
        assert!(validate_request(&[], &[]).is_err());
        assert!(validate_request(&[r("a.b", 0)], &[]).is_err());
        assert!(validate_request(&[r("a.b", 1), r("A.b", 2)], &[]).is_err());
        assert!(validate_request(&[], &[s(443, 1883)]).is_err());
        assert!(validate_request(&[], &[s(8883, 0)]).is_err());
        assert!(validate_request(&[], &[s(8883, 1883), s(8883, 1)]).is_err());
        let (routes, _) = validate_request(&[r("A.B", 80)], &[s(8883, 1883)]).unwrap();
        assert_eq!(routes, vec![r("a.b", 80)]);
    }

    #[test]
    fn merge_replaces_by_host_and_port_and_remove_refuses_unknown() {
        let mut p = PublishSpec::default();
        p.merge(
            &[r("b.x", 1), r("a.x", 2)],
            &[TlsStream { public: 9, port: 1 }],
        );
        p.merge(&[r("b.x", 3)], &[TlsStream { public: 9, port: 2 }]);
        assert_eq!(p.http, vec![r("a.x", 2), r("b.x", 3)]);
        assert_eq!(p.tls_streams, vec![TlsStream { public: 9, port: 2 }]);
        assert!(p.remove(&["c.x".into()], &[], false).is_err());
        assert!(p.remove(&[], &[10], false).is_err());
        p.remove(&["B.x".into()], &[9], false).unwrap();
        assert_eq!(p.http, vec![r("a.x", 2)]);
        assert!(p.tls_streams.is_empty());
        p.remove(&[], &[], true).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn customer_names_get_a_hint() {
        validate_customer_name("acme-corp").unwrap();
        let e = validate_customer_name("Acme Corp").unwrap_err();
        assert!(e.contains("\"acme-corp\""), "{e}");
        let e = validate_customer_name("acme_corp").unwrap_err();
        assert!(e.contains("\"acme-corp\""), "{e}");
        assert!(validate_customer_name(&"a".repeat(53)).is_err());
        validate_customer_name(&"a".repeat(52)).unwrap();
    }

    #[test]
    fn customer_preset_routes() {
        let (http, streams) = customer_routes("acme", "example.test", 8883);
        let hosts: Vec<_> = http.iter().map(|r| (r.host.as_str(), r.port)).collect();
        assert_eq!(
            hosts,
            [
                ("acme.example.test", 3000),
                ("acme-influx.example.test", 8086),
                ("acme-chirpstack.example.test", 8080)
            ]
        );
        assert_eq!(
            streams,
            vec![TlsStream {
                public: 8883,
                port: 1883
            }]
        );
    }
}
