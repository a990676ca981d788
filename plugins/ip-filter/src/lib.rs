//! IP filter: allow and deny lists of CIDR ranges, IPv4 and IPv6, answering
//! 403 (or a configured status) to clients they exclude.
//!
//! Ranges are merged into sorted, disjoint intervals over one 128-bit space
//! (IPv4 as IPv4-mapped IPv6), so a lookup is one binary search: O(log n)
//! whatever the number of ranges.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::Deserialize;
use weir_sdk::{Decision, Filter, Request, Response};

/// Settings, from the filter's `settings` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// When not empty, only clients in these ranges pass.
    #[serde(default)]
    allow: Vec<String>,
    /// Clients in these ranges never pass (checked first).
    #[serde(default)]
    deny: Vec<String>,
    /// The answer's status (default 403).
    #[serde(default = "forbidden")]
    status: u16,
    /// Which address to check: `peer` (the TCP peer, default) or
    /// `x-forwarded-for` (its first entry; only behind a trusted proxy).
    #[serde(default = "peer")]
    client: String,
}

fn forbidden() -> u16 {
    403
}
fn peer() -> String {
    "peer".into()
}

/// Sorted, disjoint, inclusive intervals of addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(u128, u128)>);

impl Ranges {
    /// Parses CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`, or a bare
    /// address) and merges them.
    pub fn parse(cidrs: &[String]) -> Result<Ranges, String> {
        let mut ranges = cidrs
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Result<Vec<_>, _>>()?;
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok(Ranges(merged))
    }

    /// Whether `ip` is in any range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = to_u128(ip);
        let i = self.0.partition_point(|&(start, _)| start <= ip);
        i > 0 && ip <= self.0[i - 1].1
    }

    /// True when there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An address in the shared 128-bit space: IPv4 as `::ffff:a.b.c.d`.
fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn parse_cidr(text: &str) -> Result<(u128, u128), String> {
    let bad = || format!("{text:?} is not an address or CIDR range");
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len.parse::<u32>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let (max, extra) = match ip {
        IpAddr::V4(_) => (32, 96),
        IpAddr::V6(_) => (128, 0),
    };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(bad());
    }
    let prefix = len + extra;
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let start = to_u128(ip) & mask;
    Ok((start, start | !mask))
}

/// The filter.
#[derive(Debug)]
pub struct IpFilter {
    allow: Ranges,
    deny: Ranges,
    status: u16,
    forwarded: bool,
}

impl IpFilter {
    /// Builds the filter from its settings (JSON).
    pub fn from_settings(config: &str) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_str(config).map_err(|e| format!("invalid ip-filter settings: {e}"))?;
        if !(400..=599).contains(&settings.status) {
            return Err(format!("status {} is not a 4xx or 5xx", settings.status));
        }
        let forwarded = match settings.client.as_str() {
            "peer" => false,
            "x-forwarded-for" => true,
            other => {
                return Err(format!(
                    "client {other:?} is not \"peer\" or \"x-forwarded-for\""
                ));
            }
        };
        Ok(IpFilter {
            allow: Ranges::parse(&settings.allow)?,
            deny: Ranges::parse(&settings.deny)?,
            status: settings.status,
            forwarded,
        })
    }

    /// Whether a client at `ip` may pass.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

/// The client's IP from `ip:port`, `[v6]:port` or a bare address.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
        .map(|ip| match ip {
            // A v4-mapped v6 peer is the v4 client it stands for.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
}

impl Filter for IpFilter {
    fn init(config: &str) -> Result<Self, String> {
        Self::from_settings(config)
    }

    fn on_request(&mut self, request: &Request<'_>) -> Decision {
        let ip = if self.forwarded {
            // An address weir cannot read is not let through an allow list.
            request
                .header("x-forwarded-for")
                .and_then(|v| v.split(',').next().and_then(parse_ip))
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        } else {
            request.client_ip()
        };
        if self.admits(ip) {
            Decision::pass()
        } else {
            weir_sdk::filter::counter("denied", 1);
            Decision::Respond(Response::new(self.status).text("forbidden\n"))
        }
    }
}

weir_sdk::export_filter!(IpFilter);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(settings: &str) -> IpFilter {
        IpFilter::from_settings(settings).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        parse_ip(text).unwrap()
    }

    #[test]
    fn allow_list_admits_only_its_ranges() {
        let f = filter(r#"{"allow": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]}"#);
        assert!(f.admits(ip("10.200.3.4:5000")));
        assert!(f.admits(ip("192.168.1.7")));
        assert!(!f.admits(ip("192.168.1.8")));
        assert!(f.admits(ip("[2001:db8::1]:443")));
        assert!(!f.admits(ip("[2001:db9::1]:443")));
        assert!(!f.admits(ip("11.0.0.1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = filter(r#"{"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]}"#);
        assert!(f.admits(ip("10.2.0.1")));
        assert!(!f.admits(ip("10.1.2.3")));
        let open = filter(r#"{"deny": ["::1"]}"#);
        assert!(!open.admits(ip("[::1]:80")));
        assert!(open.admits(ip("127.0.0.1:80")));
    }

    #[test]
    fn mapped_v4_is_v4() {
        let f = filter(r#"{"allow": ["127.0.0.0/8"]}"#);
        assert!(f.admits(ip("[::ffff:127.0.0.1]:80")));
    }

    #[test]
    fn ranges_merge_and_search() {
        let r = Ranges::parse(&[
            "10.0.0.0/9".into(),
            "10.128.0.0/9".into(),
            "0.0.0.0/0".into(),
        ])
        .unwrap();
        assert_eq!(r.0.len(), 1);
        let many: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let r = Ranges::parse(&many).unwrap();
        assert!(r.contains(ip("10.3.231.9")));
        assert!(!r.contains(ip("10.3.232.9")));
        assert!(!r.contains(ip("9.255.255.255")));
        let all6 = Ranges::parse(&["::/0".into()]).unwrap();
        assert!(all6.contains(ip("1.2.3.4")) && all6.contains(ip("::2")));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            r#"{"allow": ["10.0.0.0/33"]}"#,
            r#"{"allow": ["nope"]}"#,
            r#"{"status": 200}"#,
            r#"{"client": "cookie"}"#,
            r#"{"alow": []}"#,
        ] {
            assert!(IpFilter::from_settings(bad).is_err(), "{bad}");
        }
    }
}
