//! The D-Bus contract of `osm-hostd`: the fixed bus name, object paths and
//! error names, the values both sides spell the same way (states, autostart policies,
//! sizes) and the typed proxies. The daemon serves it and `osm-hostctl` calls it; neither
//! spells a name of the contract anywhere else, so the two cannot drift apart.

pub mod access;
mod autostart;
pub mod escape;
mod names;
pub mod proxies;
pub mod size;
pub mod wire;

pub use access::ADMIN_GROUP;
pub use autostart::Autostart;
pub use names::*;
