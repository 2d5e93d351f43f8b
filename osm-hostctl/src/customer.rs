//! `osm-hostctl customer …`: the OSM preset on top of create and publish.

use clap::{Args, Subcommand};
use serde::Serialize;
use zbus::zvariant::Value;

use super::args::{CreateArgs, JsonArg};
use super::calls::{create_options, Daemon};
use super::exit::CliError;
use super::format::table;
use super::run::{print_json, say};
use osm_host_bus::size::parse_size;
use osm_host_bus::Autostart;

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer's container, publish <NAME>.<domain> (Grafana, 3000),
    /// <NAME>-influx.<domain> (InfluxDB, 8086), <NAME>-chirpstack.<domain> (ChirpStack,
    /// 8080) and MQTT over TLS on --mqtt-port (Mosquitto, 1883), and start it
    Add(CustomerAddArgs),
    /// Stop a customer's container, remove its vhosts and MQTT port, and delete it
    /// (its backups are kept; refused while a backup runs)
    Delete {
        /// Customer name
        name: String,
    },
    /// List customers: names, host names, MQTT ports and state
    List(JsonArg),
}

#[derive(Debug, Args)]
pub struct CustomerAddArgs {
    /// Customer name: lowercase a-z, 0-9, and a dash where a space would be ("acme-corp")
    pub name: String,
    /// The customer's public MQTT port (TLS, terminated by NGINX)
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    pub mqtt_port: u16,
    /// Base image [default: the newest]
    #[arg(long)]
    pub base: Option<String>,
    /// Layer to stack on the base; repeat for several [default: osm-stack if it exists]
    #[arg(long = "layer", value_name = "L")]
    pub layers: Vec<String>,
    /// Start at host boot: true, false or last-state [default: true]
    #[arg(long, value_name = "POLICY")]
    pub autostart: Option<Autostart>,
    /// Memory limit, e.g. 2G [default: no limit]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Fixed IPv4 address on the bridge [default: the lowest free one]
    #[arg(long, value_name = "A")]
    pub ip: Option<std::net::Ipv4Addr>,
}

/// `customer list --json`: one object per customer.
#[derive(Debug, Serialize)]
struct CustomerRow {
    name: String,
    state: String,
    hosts: Vec<String>,
    mqtt_ports: Vec<u16>,
}

pub async fn run(daemon: &Daemon, cmd: CustomerCommand) -> Result<(), CliError> {
    let m = &daemon.manager;
    match cmd {
        CustomerCommand::Add(a) => {
            let create = CreateArgs {
                name: a.name.clone(),
                base: String::new(),
                autostart: a.autostart,
                boot_priority: None,
                boot_delay: None,
                memory: a.memory,
                cpus: a.cpus,
                layers: a.layers,
                ip: a.ip,
                privileged: false,
            };
            let mut options = create_options(&create);
            if let Some(b) = a.base {
                options.insert("base", Value::from(b));
            }
            m.add_customer(&a.name, a.mqtt_port, options).await?;
            say(&format!("added customer {}", a.name));
        }
        CustomerCommand::Delete { name } => {
            m.delete_customer(&name).await?;
            say(&format!("deleted customer {name} (its backups are kept)"));
        }
        CustomerCommand::List(out) => {
            let rows: Vec<CustomerRow> = m
                .list_customers()
                .await?
                .into_iter()
                .map(|(name, hosts, mqtt_ports, state)| CustomerRow {
                    name,
                    state,
                    hosts,
                    mqtt_ports,
                })
                .collect();
            if out.json {
                print_json(&rows)?;
            } else {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let ports: Vec<String> = r.mqtt_ports.iter().map(u16::to_string).collect();
                        vec![
                            r.name.clone(),
                            r.state.clone(),
                            ports.join(","),
                            r.hosts.join(" "),
                        ]
                    })
                    .collect();
                say(table(&["NAME", "STATE", "MQTT", "HOSTS"], &cells).trim_end());
            }
        }
    }
    Ok(())
}
