//! The OSM customer preset: `customer add` creates a container (from the `osm-stack`
//! layer when there is one), publishes Grafana, InfluxDB 2 and ChirpStack vhosts under
//! `[publish] domain` and the customer's MQTT port over TLS, and starts it; `customer
//! delete` undoes all of it. Containers made so carry `preset = "customer"`.

use super::create::CreateRequest;
use super::Engine;
use crate::error::{EngineError, EngineResult};
use crate::publish::{self, PublishSpec, CUSTOMER_PRESET};
use std::sync::Arc;

/// The layer customers are created from when it exists (layers are built by issue 10's
/// `layer build`; until then the newest base alone is used).
pub const CUSTOMER_LAYER: &str = "osm-stack";

/// One row of `customer list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInfo {
    pub name: String,
    pub hosts: Vec<String>,
    pub mqtt_ports: Vec<u16>,
    pub state: String,
}

impl Engine {
    /// Creates, publishes and starts a customer's container. Idempotent: the same
    /// customer again is `Ok(false)`. Any failure after the create deletes it again.
    /// `req.base` "" means the newest base; no layers means `osm-stack` if it exists.
    pub async fn add_customer(
        self: &Arc<Self>,
        mut req: CreateRequest,
        mqtt_port: u16,
    ) -> EngineResult<bool> {
        let name = req.name.clone();
        publish::validate_customer_name(&name).map_err(EngineError::invalid_argument)?;
        if mqtt_port == 0 {
            return Err(EngineError::invalid_argument(
                "MQTT port 0 is not valid; give the customer's public port, 1-65535".into(),
            ));
        }
        self.nginx()?;
        let (http, streams) = publish::customer_routes(&name, &self.cfg.publish.domain, mqtt_port);
        publish::validate_request(&http, &streams).map_err(EngineError::invalid_argument)?;
        let mut wanted = PublishSpec {
            preset: Some(CUSTOMER_PRESET.into()),
            ..Default::default()
        };
        wanted.merge(&http, &streams);
        if let Ok(c) = self.container(&name) {
            if c.info().spec.publish == wanted {
                return Ok(false);
            }
            return Err(EngineError::already_exists(format!(
                "a container named {name} already exists and is not this customer; choose another name"
            )));
        }
        // Refuse taken names and ports before anything is created.
        self.check_publish_conflicts(&name, &PublishSpec::default(), &wanted)?;
        if req.layers.is_empty()
            && self
                .host
                .is_subvolume(&self.store.layers_dir().join(CUSTOMER_LAYER))
        {
            req.layers = vec![CUSTOMER_LAYER.to_string()];
        }
        if req.base.is_empty() {
            req.base = self.newest_base()?;
        }
        self.create_container(req).await?;
        let result = async {
            self.publish_as(&name, http, streams, Some(CUSTOMER_PRESET))
                .await?;
            self.start_container(&name).await
        }
        .await;
        if let Err(e) = result {
            if let Err(undo) = self.delete_container(&name, true).await {
                tracing::error!(customer = %name, error = %undo, "cannot delete the half-added customer");
            }
            return Err(e);
        }
        tracing::info!(customer = %name, mqtt_port, "customer added");
        Ok(true)
    }

    /// Stops a customer's container, removes its vhosts and MQTT port and deletes it.
    /// Refused while a backup runs (the last backup on the target is kept).
    pub async fn delete_customer(self: &Arc<Self>, name: &str) -> EngineResult<()> {
        let c = self.container(name)?;
        if c.info().spec.publish.preset.as_deref() != Some(CUSTOMER_PRESET) {
            return Err(EngineError::invalid_argument(format!(
                "container {name} is not a customer (made by `customer add`); delete it with `osm-hostctl delete {name}`"
            )));
        }
        if self.backup_running() {
            return Err(EngineError::busy(format!(
                "a backup run is in progress; delete customer {name} when it has finished"
            )));
        }
        self.stop_container(name, None, false).await?;
        self.delete_container(name, true).await?;
        tracing::info!(customer = %name, "customer deleted (its backups are kept)");
        Ok(())
    }

    /// The containers made by `customer add`, by name.
    pub fn customers(&self) -> Vec<CustomerInfo> {
        self.all_containers()
            .iter()
            .map(|c| c.info())
            .filter(|i| i.spec.publish.preset.as_deref() == Some(CUSTOMER_PRESET))
            .map(|i| CustomerInfo {
                name: i.spec.name.clone(),
                hosts: i.spec.publish.http.iter().map(|r| r.host.clone()).collect(),
                mqtt_ports: i
                    .spec
                    .publish
                    .tls_streams
                    .iter()
                    .map(|s| s.public)
                    .collect(),
                state: i.state.as_str().to_string(),
            })
            .collect()
    }

    /// The most recently created base.
    fn newest_base(&self) -> EngineResult<String> {
        self.bases
            .read()
            .expect("bases lock")
            .values()
            .max_by_key(|b| (b.created, b.name.clone()))
            .map(|b| b.name.clone())
            .ok_or_else(|| {
                EngineError::not_found(
                    "there is no base image to create the customer from; build one with `osm-hostctl base build`".into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::CreateRequest;
    use crate::error::ErrorKind;

    fn req(name: &str) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            base: "bb".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn publishing_is_refused_until_configured_and_names_get_a_hint() {
        let (_d, _h, e) = crate::testing::fake_engine();
        e.create_container(req("acme")).await.unwrap();
        let route = crate::publish::HttpRoute {
            host: "acme.example.test".into(),
            port: 3000,
        };
        let err = e.publish("acme", vec![route], vec![]).await.unwrap_err();
        assert!(
            (err.kind() == ErrorKind::InvalidState && err.message().contains("[publish] domain")),
            "{err:?}"
        );
        let err = e.add_customer(req("Acme Corp"), 8883).await.unwrap_err();
        assert!(
            (err.kind() == ErrorKind::InvalidArgument && err.message().contains("\"acme-corp\"")),
            "{err:?}"
        );
        let err = e.add_customer(req("beta"), 8883).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{err:?}");
        assert!(
            e.container_info("beta").is_err(),
            "a refused add creates nothing"
        );
    }

    #[tokio::test]
    async fn customer_delete_waits_for_backups_and_deletes_only_customers() {
        let (_d, _h, e) = crate::testing::fake_engine();
        e.create_container(req("plain")).await.unwrap();
        e.create_container(req("acme")).await.unwrap();
        e.container("acme")
            .unwrap()
            .update(|s| s.spec.publish.preset = Some(crate::publish::CUSTOMER_PRESET.into()));
        let err = e.delete_customer("plain").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err:?}");
        assert_eq!(e.customers().len(), 1);
        assert_eq!(e.customers()[0].name, "acme");
        e.reserved.lock().unwrap().insert("backup:run".into());
        assert!(e.backup_running());
        let err = e.delete_customer("acme").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
        assert!(e.container_info("acme").is_ok());
        e.release("backup:run");
        e.delete_customer("acme").await.unwrap();
        assert!(e.container_info("acme").is_err());
        assert!(e.customers().is_empty());
    }
}
