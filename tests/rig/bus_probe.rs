//! zbus clients for tests that poke the bus directly: list names, or stand in for the
//! daemon to see what the bus policy lets through.

use zbus::connection::Builder;

use super::bus::BUS_NAME;

/// `org.freedesktop.DBus.ListNames` on the bus at `address`, over zbus.
pub fn list_names(address: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let conn = Builder::address(address)
            .expect("parse bus address")
            .build()
            .await
            .expect("connect to the private bus");
        let proxy = zbus::fdo::DBusProxy::new(&conn).await.expect("DBus proxy");
        let names = proxy.list_names().await.expect("ListNames");
        names.into_iter().map(|n| n.to_string()).collect()
    })
}

struct StandInManager;

#[zbus::interface(name = "uk.co.devtank.OsmHost1.Manager")]
impl StandInManager {
    fn create_container(&self, name: String) -> String {
        format!("stand-in created {name}")
    }
}

/// While alive, a root connection owns `uk.co.devtank.OsmHost1` and serves a stand-in
/// Manager at `/uk/co/devtank/OsmHost1` whose `CreateContainer(s)` answers
/// "stand-in created NAME". The bus checks its send policy only against an owned
/// name (for an unowned one it answers ServiceUnknown first), so policy tests need it.
pub struct StandInService {
    _conn: zbus::Connection,
    _rt: tokio::runtime::Runtime,
}

impl StandInService {
    pub fn start(address: &str) -> StandInService {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = rt.block_on(async {
            Builder::address(address)
                .expect("parse bus address")
                .name(BUS_NAME)
                .expect("valid name")
                .serve_at("/uk/co/devtank/OsmHost1", StandInManager)
                .expect("serve stand-in")
                .build()
                .await
                .expect("own the service name (as root)")
        });
        StandInService {
            _conn: conn,
            _rt: rt,
        }
    }
}
