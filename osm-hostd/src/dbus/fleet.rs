//! Wire forms of the fleet calls (`GetCapacity`, `CheckHealth`).

use crate::engine::fleet::Capacity;
use std::collections::HashMap;
use zbus::zvariant::{OwnedValue, Value};

/// `GetCapacity() -> a{sv}`; keys as documented in the bus crate's `proxies.rs`.
pub fn capacity_map(c: &Capacity) -> HashMap<String, OwnedValue> {
    let mut m: HashMap<String, OwnedValue> = HashMap::new();
    let mut put = |k: &str, v: Value<'_>| {
        if let Ok(v) = v.try_to_owned() {
            m.insert(k.to_string(), v);
        }
    };
    put("Cpus", Value::from(c.cpus));
    put("CpusCommitted", Value::from(c.cpus_committed));
    put("MemoryTotal", Value::from(c.memory_total));
    put("MemoryUsed", Value::from(c.memory_used));
    put("MemoryCommitted", Value::from(c.memory_committed));
    put(
        "ContainersWithoutMemoryLimit",
        Value::from(c.containers_without_memory_limit),
    );
    put("StoreTotal", Value::from(c.store_total));
    put("StoreUsed", Value::from(c.store_used));
    put("StoreFree", Value::from(c.store_free));
    let states: HashMap<String, u32> = c
        .containers
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    put("Containers", Value::from(states));
    put("AddressesUsed", Value::from(c.addresses_used));
    put("AddressesFree", Value::from(c.addresses_free));
    put("PublishedPorts", Value::from(c.published_ports.clone()));
    m
}
