//! `publish` / `unpublish`: a container's HTTPS vhosts and TLS streams through the
//! host's NGINX, recorded in its `container.toml`, with the firewall following.
//!
//! One publish change at a time on the host (the engine's publish lock), so two
//! containers cannot take the same host name or port; each change is NGINX first
//! (checked, reloaded, or put back), then the spec, then the nftables table, and a
//! failure at any step undoes the earlier ones.

use super::container::Container;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::net::publish_fw;
use crate::publish::nginx::{Fragments, Nginx, NginxError, Reload, NGINX};
use crate::publish::{self, HttpRoute, PublishSpec, TlsStream};
use crate::spec::ContainerSpec;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long NGINX gets after a reload to listen on newly published ports.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(3);

impl From<NginxError> for EngineError {
    fn from(e: NginxError) -> Self {
        let kind = match e {
            NginxError::Refused(_) => crate::error::ErrorKind::InvalidArgument,
            NginxError::Reload(_) | NginxError::Io(_) => crate::error::ErrorKind::Failed,
        };
        EngineError::new(kind, e.to_string()).with_source(e)
    }
}

impl Engine {
    /// NGINX as configured, or why publishing is not possible on this host.
    pub(super) fn nginx(&self) -> EngineResult<Nginx> {
        let cfg = &self.cfg.publish;
        if cfg.domain.is_empty() {
            return Err(EngineError::invalid_state(
                "publishing is not configured on this host: set [publish] domain, tls_cert and \
                 tls_key in /etc/osm-host/hostd.toml, install nginx and libnginx-mod-stream, \
                 then restart osm-hostd"
                    .into(),
            ));
        }
        let n = Nginx::new(cfg);
        if !n.bin.exists() {
            return Err(EngineError::invalid_state(format!(
                "nginx is not installed ({NGINX} is missing): apt install nginx libnginx-mod-stream"
            )));
        }
        if !cfg.nginx_conf.is_file() {
            return Err(EngineError::invalid_state(format!(
                "publish.nginx_conf {} does not exist; point it at the nginx.conf that includes {}/http/*.conf and {}/stream/*.conf",
                cfg.nginx_conf.display(),
                cfg.nginx_dir.display(),
                cfg.nginx_dir.display()
            )));
        }
        Ok(n)
    }

    /// The public ports NGINX serves for the containers (80 and 443 while any vhost exists).
    pub fn published_ports(&self) -> BTreeSet<u16> {
        let specs: Vec<PublishSpec> = self
            .all_containers()
            .iter()
            .map(|c| c.info().spec.publish)
            .collect();
        publish_fw::published_ports(&specs)
    }

    /// Adds HTTPS vhosts and TLS streams to a container (an entry for a host or public
    /// port it already has replaces that one). Returns whether anything changed;
    /// `AlreadyExists` when another container or program holds a host name or port.
    pub async fn publish(
        self: &Arc<Self>,
        name: &str,
        http: Vec<HttpRoute>,
        streams: Vec<TlsStream>,
    ) -> EngineResult<bool> {
        self.publish_as(name, http, streams, None).await
    }

    /// [`Engine::publish`], also marking the container with a preset (`customer`).
    pub(super) async fn publish_as(
        self: &Arc<Self>,
        name: &str,
        http: Vec<HttpRoute>,
        streams: Vec<TlsStream>,
        preset: Option<&str>,
    ) -> EngineResult<bool> {
        let (http, streams) =
            publish::validate_request(&http, &streams).map_err(EngineError::invalid_argument)?;
        let c = self.container(name)?;
        let nginx = self.nginx()?;
        let _publishing = self.publish_lock.lock().await;
        let _op = c.begin("publish")?;
        let spec = c.info().spec;
        let mut next = spec.publish.clone();
        next.merge(&http, &streams);
        if let Some(p) = preset {
            next.preset = Some(p.to_string());
        }
        if next == spec.publish {
            return Ok(false);
        }
        self.check_publish_conflicts(name, &spec.publish, &next)?;
        self.change_publish(&c, spec, next, nginx).await?;
        tracing::info!(container = %name, hosts = http.len(), streams = streams.len(), "published");
        Ok(true)
    }

    /// Removes vhosts (by host name) and TLS streams (by public port), or all of them.
    /// Returns whether anything changed; `NotFound` for an entry it does not publish.
    pub async fn unpublish(
        self: &Arc<Self>,
        name: &str,
        hosts: Vec<String>,
        publics: Vec<u16>,
        all: bool,
    ) -> EngineResult<bool> {
        if !all && hosts.is_empty() && publics.is_empty() {
            return Err(EngineError::invalid_argument(
                "say what to unpublish: host names, public ports, or all".into(),
            ));
        }
        let c = self.container(name)?;
        let _publishing = self.publish_lock.lock().await;
        let _op = c.begin("unpublish")?;
        let spec = c.info().spec;
        let mut next = spec.publish.clone();
        next.remove(&hosts, &publics, all).map_err(|e| {
            EngineError::not_found(format!(
                "{e} ({name}); `osm-hostctl info {name}` lists what it publishes"
            ))
        })?;
        if next == spec.publish {
            return Ok(false);
        }
        let nginx = self.nginx()?;
        self.change_publish(&c, spec, next, nginx).await?;
        tracing::info!(container = %name, all, "unpublished");
        Ok(true)
    }

    /// Host names and public ports new to this container must be free: not another
    /// container's, and (ports) not listened on by anything on the host.
    pub(super) fn check_publish_conflicts(
        &self,
        name: &str,
        old: &PublishSpec,
        next: &PublishSpec,
    ) -> EngineResult<()> {
        for other in self.all_containers() {
            if other.name == name {
                continue;
            }
            let theirs = other.info().spec.publish;
            for r in &next.http {
                if theirs.http.iter().any(|o| o.host == r.host) {
                    return Err(EngineError::already_exists(format!(
                        "host {} is already published by container {}; unpublish it there first or choose another name",
                        r.host, other.name
                    )));
                }
            }
            for s in &next.tls_streams {
                if theirs.tls_streams.iter().any(|o| o.public == s.public) {
                    return Err(EngineError::already_exists(format!(
                        "port {} is already published by container {}; choose another public port",
                        s.public, other.name
                    )));
                }
            }
        }
        let listening = publish::ports::listening_ports();
        for s in &next.tls_streams {
            let ours = old.tls_streams.iter().any(|o| o.public == s.public);
            if !ours && listening.contains(&s.public) {
                return Err(EngineError::already_exists(format!(
                    "port {} is already in use on this host by another program (see `ss -ltnp sport = :{}`); choose another public port",
                    s.public, s.public
                )));
            }
        }
        Ok(())
    }

    /// NGINX, then the spec, then the firewall; a failure undoes what was done.
    async fn change_publish(
        self: &Arc<Self>,
        c: &Arc<Container>,
        spec: ContainerSpec,
        next: PublishSpec,
        nginx: Nginx,
    ) -> EngineResult<()> {
        let name = spec.name.clone();
        let ip = spec.ipv4.clone().ok_or_else(|| {
            EngineError::invalid_state(format!(
                "container {name} has no address yet; restart osm-hostd so it gets one"
            ))
        })?;
        let cfg = &self.cfg.publish;
        let new_frags = Fragments::render(cfg, &name, &ip, &next);
        let old_frags = Fragments::render(cfg, &name, &ip, &spec.publish);
        let mut new_spec = spec.clone();
        new_spec.publish = next;
        let engine = self.clone();
        let saved = new_spec.clone();
        let nginx2 = nginx.clone();
        let old2 = old_frags.clone();
        let opened: Vec<u16> = publish_fw::published_ports([&saved.publish])
            .difference(&publish_fw::published_ports([&spec.publish]))
            .copied()
            .collect();
        blocking(move || {
            nginx2.apply(
                &nginx2.changes_for(&saved.name, &new_frags),
                Reload::Required,
            )?;
            // A reload is asynchronous, and NGINX keeps its old configuration when it
            // cannot bind a port: only a port it listens on is published.
            if let Some(port) = publish::ports::wait_listening(&opened, LISTEN_TIMEOUT) {
                engine.put_back_fragments(&nginx2, &saved.name, &old2);
                return Err(EngineError::failed(format!(
                    "NGINX reloaded but does not listen on port {port} (is another program holding it? see NGINX's error log); nothing was changed"
                )));
            }
            if let Err(e) = saved.save(&engine.store.container_dir(&saved.name)) {
                engine.put_back_fragments(&nginx2, &saved.name, &old2);
                return Err(EngineError::failed(e.to_string()));
            }
            Ok(())
        })
        .await?;
        c.update(|s| s.spec = new_spec);
        if self.cfg.network.manage {
            if let Err(e) = crate::net::apply_ruleset(self) {
                tracing::error!(container = %name, error = %e, "firewall not updated; undoing the publish change");
                let engine = self.clone();
                let old_spec = spec.clone();
                blocking(move || {
                    engine.put_back_fragments(&nginx, &old_spec.name, &old_frags);
                    old_spec
                        .save(&engine.store.container_dir(&old_spec.name))
                        .map_err(|e| EngineError::failed(e.to_string()))
                })
                .await?;
                c.update(|s| s.spec = spec);
                return Err(EngineError::failed(format!(
                    "the firewall could not be updated, nothing was changed: {e}"
                )));
            }
        }
        self.emit(Event::ContainerSpecChanged(name));
        Ok(())
    }

    fn put_back_fragments(&self, nginx: &Nginx, name: &str, old: &Fragments) {
        if let Err(e) = nginx.apply(&nginx.changes_for(name, old), Reload::IfRunning) {
            tracing::error!(container = %name, error = %e, "cannot put the previous NGINX fragments back");
        }
    }

    /// After a delete: its fragments go and the firewall closes its ports (best effort:
    /// the container is gone whatever happens here; problems are logged).
    pub(super) async fn drop_published(self: &Arc<Self>, name: &str, had: &PublishSpec) {
        if had.is_empty() {
            return;
        }
        let _publishing = self.publish_lock.lock().await;
        match self.nginx() {
            Ok(nginx) => {
                let n = name.to_string();
                let result = blocking(move || {
                    nginx
                        .apply(
                            &nginx.changes_for(&n, &Fragments::default()),
                            Reload::IfRunning,
                        )
                        .map_err(EngineError::from)
                })
                .await;
                if let Err(e) = result {
                    tracing::error!(container = %name, error = %e, "cannot remove the deleted container's NGINX fragments");
                }
            }
            Err(e) => {
                tracing::error!(container = %name, error = %e, "cannot remove the deleted container's NGINX fragments")
            }
        }
        if self.cfg.network.manage {
            if let Err(e) = crate::net::apply_ruleset(self) {
                tracing::error!(container = %name, error = %e, "cannot close the deleted container's ports");
            }
        }
    }

    /// At daemon start: every container's fragments rewritten from its `container.toml`,
    /// fragments of containers that no longer exist removed, NGINX checked and reloaded
    /// (if it runs; otherwise it reads them when it starts).
    pub fn sync_published(&self) {
        let containers: Vec<ContainerSpec> = self
            .all_containers()
            .iter()
            .map(|c| c.info().spec)
            .collect();
        let publishing: Vec<&ContainerSpec> = containers
            .iter()
            .filter(|s| !s.publish.is_empty())
            .collect();
        let nginx = match self.nginx() {
            Ok(n) => n,
            Err(e) => {
                if !publishing.is_empty() {
                    tracing::error!(error = %e, containers = publishing.len(), "containers publish vhosts or streams but NGINX cannot be used");
                }
                return;
            }
        };
        let mut changes = Vec::new();
        for s in &containers {
            let frags = match &s.ipv4 {
                Some(ip) => Fragments::render(&self.cfg.publish, &s.name, ip, &s.publish),
                None => Fragments::default(),
            };
            changes.extend(nginx.changes_for(&s.name, &frags));
        }
        let names: Vec<String> = containers.iter().map(|s| s.name.clone()).collect();
        changes.extend(nginx.stale(&names).into_iter().map(|p| (p, None)));
        match nginx.apply(&changes, Reload::IfRunning) {
            Ok(changed) => {
                tracing::info!(
                    containers = publishing.len(),
                    changed,
                    "NGINX fragments in step with the containers"
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot bring the NGINX fragments in step with the containers")
            }
        }
    }
}
