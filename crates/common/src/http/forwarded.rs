//! Who the client is: the TCP peer, or, behind a proxy we trust, the address that proxy says it
//! forwarded for (`X-Forwarded-For`). Sticky placement by IP and the rate limit key on it.
//!
//! Depends on nothing else in the crate.

use std::net::IpAddr;

use http::HeaderMap;

/// Proxies whose `X-Forwarded-For` is believed. Without one, a client could name any IP it likes and
/// choose its worker, so by default the header is ignored and the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a comma-separated list of IPs and CIDR blocks, e.g. `127.0.0.1, 10.0.0.0/8, ::1`.
    /// `None` if any entry is not one.
    pub fn parse(list: &str) -> Option<Self> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, bits) = match item.split_once('/') {
                Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
                None => {
                    let ip = item.parse::<IpAddr>().ok()?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return None;
            }
            nets.push((canonical(ip), bits));
        }
        Some(Self { nets })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
    /// rightmost address in `X-Forwarded-For` that is not itself a trusted proxy (the leftmost ones
    /// are whatever the client chose to send).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.contains(ip) => continue,
                Ok(ip) => return canonical(ip),
                // Garbage from a hop we do not trust: stop believing the chain here.
                Err(_) => break,
            }
        }
        peer
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.1.2.3"),
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip("10.1.2.3".parse().unwrap(), &h),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The peer 10.1.2.3 is trusted; so is the 10.1.2.3 hop; 203.0.113.9 is the client.
        assert_eq!(
            trusted.client_ip("10.1.2.3".parse().unwrap(), &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is not believed.
        assert_eq!(
            trusted.client_ip("192.0.2.1".parse().unwrap(), &h),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_proxy_lists_parse_ips_and_cidrs() {
        let t = TrustedProxies::parse(" 127.0.0.1, 10.0.0.0/8 ,::1, fd00::/8").unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.255.0.1".parse().unwrap()));
        assert!(
            t.contains("::ffff:127.0.0.1".parse().unwrap()),
            "mapped IPv4 counts"
        );
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse("").unwrap().nets.is_empty());
        for bad in ["10.0.0.0/33", "localhost", "1.2.3.4/x", "::/129"] {
            assert_eq!(TrustedProxies::parse(bad), None, "{bad}");
        }
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
