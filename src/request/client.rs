//! Who the client is: the peer, or behind trusted proxies only, the address
//! they report. A client can't name itself by sending `X-Forwarded-For`.

use std::net::IpAddr;

/// The configured trusted proxies (`server.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<ipnet::IpNet>) -> Self {
        TrustedProxies(networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The real client behind `peer`: the peer itself unless it is trusted;
    /// then `X-Forwarded-For` read right to left, skipping trusted addresses
    /// (nginx's `real_ip_recursive`). Also returns the part of the chain from
    /// that client on, which is all the upstream should be told.
    pub fn client<'h>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'h str>) -> ClientChain {
        let peer = canonical_ip(peer);
        if !self.contains(peer) {
            return ClientChain { client: peer, hops: Vec::new() };
        }
        let entries: Vec<&str> =
            forwarded_for.flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty()).collect();
        let mut client = peer;
        let mut hops = Vec::new();
        for entry in entries.iter().rev() {
            // An entry that isn't an address ends what can be believed.
            let Some(ip) = parse_forwarded_ip(entry) else { break };
            hops.push(client);
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        hops.reverse();
        ClientChain { client, hops }
    }
}

/// Who the gateway decided the client is, and the trusted proxies between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChain {
    pub client: IpAddr,
    /// Trusted proxies after the client, nearest the client first, the
    /// gateway's peer last (empty when the peer is the client).
    pub hops: Vec<IpAddr>,
}

impl ClientChain {
    /// The `X-Forwarded-For` value the upstream receives: the client, then every hop.
    pub fn forwarded_for(&self) -> String {
        let mut value = String::with_capacity(16 * (1 + self.hops.len()));
        push_ip(&mut value, self.client);
        for hop in &self.hops {
            value.push_str(", ");
            push_ip(&mut value, *hop);
        }
        value
    }
}

/// An address as `Display` writes it. IPv4 (nearly every client) without the
/// formatting machinery: this runs for every forwarded request.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` entry: an address, optionally `[v6]` or with a port.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| canonical_ip(a.ip()))
}
