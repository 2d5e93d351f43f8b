//! Wire forms of published vhosts and streams, shared by the Manager methods and the
//! Container properties.

use crate::publish::{HttpRoute, PublishSpec, TlsStream};

/// `a(sq)`: (host, container port).
pub type HttpWire = Vec<(String, u16)>;
/// `a(qq)`: (public port, container port).
pub type StreamWire = Vec<(u16, u16)>;

pub fn routes(http: HttpWire) -> Vec<HttpRoute> {
    http.into_iter()
        .map(|(host, port)| HttpRoute { host, port })
        .collect()
}

pub fn streams(wire: StreamWire) -> Vec<TlsStream> {
    wire.into_iter()
        .map(|(public, port)| TlsStream { public, port })
        .collect()
}

pub fn http_wire(p: &PublishSpec) -> HttpWire {
    p.http.iter().map(|r| (r.host.clone(), r.port)).collect()
}

pub fn stream_wire(p: &PublishSpec) -> StreamWire {
    p.tls_streams.iter().map(|s| (s.public, s.port)).collect()
}
