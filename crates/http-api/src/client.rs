//! Which client a request comes from, for rate limits and anonymous idempotency scopes.
//!
//! The TCP peer is the client unless it is one of `TRUSTED_PROXIES`. Behind a trusted proxy,
//! `X-Forwarded-For` is read from the right (each proxy appends the address it saw): trusted
//! addresses are skipped and the first untrusted one is the client. Everything to its left was
//! written by the client itself and is ignored, so a client cannot choose its own address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// `TRUSTED_PROXIES`: the networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// CIDRs (`10.0.0.0/8`) or single addresses (`192.0.2.1`); an unreadable one is an error,
    /// so a typo cannot silently turn the setting off.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        let networks = entries
            .iter()
            .map(|entry| entry.as_ref().trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| anyhow::anyhow!("TRUSTED_PROXIES: {entry:?} is not a CIDR or an IP address"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(Arc::new(networks)))
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Several X-Forwarded-For headers are one list, in order.
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut nearest = peer;
        for hop in forwarded.iter().rev() {
            // Unreadable before any untrusted address: a trusted proxy wrote nonsense, so the
            // client is not known beyond the last trusted hop.
            let Some(address) = parse_hop(hop) else { return nearest };
            if !self.contains(address) {
                return address;
            }
            nearest = address;
        }
        nearest
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip())).map(canonical)
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`; they are the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// The client address of the request (see the module documentation); `None` when the server
/// was started without connect info (as in-process tests may be).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S> FromRequestParts<S> for ClientAddr
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(ClientAddr(peer.map(|peer| TrustedProxies::from_ref(state).client(peer, &parts.headers))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(proxies.client(ip("203.0.113.9"), &headers(&["198.51.100.1"])), ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.1.1.1"), &headers(&["198.51.100.1"])), ip("10.1.1.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_address_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.1"]).unwrap();
        // The client forged the first entry; the ingress (10.0.0.5) appended what it saw.
        let forwarded = headers(&["1.1.1.1, 198.51.100.7", "192.0.2.1"]);
        assert_eq!(proxies.client(ip("10.0.0.5"), &forwarded), ip("198.51.100.7"));
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["198.51.100.7:4711"])), ip("198.51.100.7"));
        assert_eq!(proxies.client(ip("::ffff:10.0.0.5"), &headers(&["[2001:db8::1]:80"])), ip("2001:db8::1"));
    }

    #[test]
    fn without_a_readable_untrusted_hop_the_nearest_trusted_one_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(proxies.client(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["garbage, 10.0.0.9"])), ip("10.0.0.9"));
    }

    #[test]
    fn a_bad_entry_is_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal"]).is_err());
        assert!(TrustedProxies::parse(&["", " 10.0.0.1 "]).unwrap().contains(ip("10.0.0.1")));
    }
}
