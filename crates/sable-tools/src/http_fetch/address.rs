//! Which addresses a fetch may reach: the special-purpose ranges refused by default and
//! the allowlist that admits some of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A special-purpose range; an address in one is refused unless the allowlist admits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecialRange {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Broadcast,
    Multicast,
    Documentation,
    Benchmarking,
    Reserved,
    UniqueLocal,
}

impl SpecialRange {
    /// The range as the object of "is …", for refusal messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified (\"this host\") address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address (cloud metadata lives here)",
            Self::SharedCgnat => "a shared (carrier-grade NAT) address",
            Self::Broadcast => "a broadcast address",
            Self::Multicast => "a multicast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Reserved => "a reserved address",
            Self::UniqueLocal => "a unique-local (private) IPv6 address",
        }
    }
}

/// The special-purpose range `ip` falls in, or `None` for an ordinary public address.
pub(crate) fn classify(ip: IpAddr) -> Option<SpecialRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<SpecialRange> {
    use SpecialRange::*;
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        // 0.0.0.0/8: Linux connects 0.0.0.0 to the local host.
        (0, _, _) => Unspecified,
        (127, _, _) => Loopback,
        (10, _, _) | (192, 168, _) => Private,
        (172, 16..=31, _) => Private,
        (169, 254, _) => LinkLocal,
        (100, 64..=127, _) => SharedCgnat,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => Broadcast,
        (224..=239, _, _) => Multicast,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Documentation,
        (198, 18..=19, _) => Benchmarking,
        // IETF protocol assignments, the old 6to4 relay anycast, and 240/4 (incl. the rest of 255/8).
        (192, 0, 0) | (192, 88, 99) | (240..=255, _, _) => Reserved,
        _ => return None,
    };
    Some(range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<SpecialRange> {
    use SpecialRange::*;
    // ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d on a dual-stack socket.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    let range = match segments {
        [0, 0, 0, 0, 0, 0, 0, 0] => Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => Loopback,
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return classify_v4(embedded_v4(segments[6], segments[7]));
        }
        // 6to4 (2002::/16) reaches the IPv4 address in its second and third segments.
        [0x2002, high, low, ..] => return classify_v4(embedded_v4(high, low)),
        // The deprecated IPv4-compatible ::/96, the discard prefix 100::/64, local-use NAT64
        // 64:ff9b:1::/48 and Teredo 2001::/32 (a tunnel to an address we cannot check).
        [0, 0, 0, 0, 0, 0, _, _]
        | [0x100, 0, 0, 0, ..]
        | [0x64, 0xff9b, 1, ..]
        | [0x2001, 0, ..] => Reserved,
        [0x2001, 0xdb8, ..] => Documentation,
        [0x2001, 2, 0, ..] => Benchmarking,
        [0x3fff, second, ..] if second & 0xf000 == 0 => Documentation,
        [first, ..] if first & 0xfe00 == 0xfc00 => UniqueLocal,
        // fe80::/10 link-local and the deprecated fec0::/10 site-local.
        [first, ..] if first & 0xffc0 == 0xfe80 => LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => Private,
        [first, ..] if first & 0xff00 == 0xff00 => Multicast,
        _ => return None,
    };
    Some(range)
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

/// An allowlist entry that is neither a network, an address nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "http_fetch.allow: '{0}' is not a CIDR network (\"10.0.0.0/8\"), an address or a host name"
)]
pub struct InvalidAllowEntry(pub String);

/// The networks and exact host names an operator admitted despite their ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allowlist {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
}

impl Allowlist {
    pub(crate) fn parse(entries: &[String]) -> Result<Self, InvalidAllowEntry> {
        let mut allowlist = Self::default();
        for entry in entries {
            let entry = entry.trim();
            if let Ok(network) = entry.parse::<IpNet>() {
                allowlist.networks.push(network);
            } else if let Ok(address) = entry.parse::<IpAddr>() {
                allowlist.networks.push(IpNet::from(address));
            } else if is_host_name(entry) {
                allowlist.hosts.push(normalize_host(entry));
            } else {
                return Err(InvalidAllowEntry(entry.to_owned()));
            }
        }
        Ok(allowlist)
    }

    /// True when the host name itself was admitted, whatever it resolves to.
    pub(crate) fn admits_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
    }

    /// True when an admitted network holds `ip` (an IPv4-mapped address also in its IPv4 form).
    pub(crate) fn admits_address(&self, ip: IpAddr) -> bool {
        let mapped_v4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.networks.iter().any(|network| {
            network.contains(&ip) || mapped_v4.is_some_and(|v4| network.contains(&v4))
        })
    }
}

/// Why a fetch may not reach an address; the message goes back to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(pub String);

/// Refuses `ip` when it is special-purpose and not admitted. `host` is the name it was
/// resolved from, or `None` when the URL named the address itself.
pub(crate) fn check_address(
    allowlist: &Allowlist,
    host: Option<&str>,
    ip: IpAddr,
) -> Result<(), Refusal> {
    let Some(range) = classify(ip) else {
        return Ok(());
    };
    if allowlist.admits_address(ip) {
        return Ok(());
    }
    let why = range.describe();
    let message = match host {
        None => format!("refused: {ip} is {why} (allow it in http_fetch.allow)"),
        Some(host) => format!(
            "refused: {host} resolves to {ip}, which is {why} (allow the address or the host name in http_fetch.allow)"
        ),
    };
    Err(Refusal(message))
}

fn is_host_name(entry: &str) -> bool {
    !entry.is_empty()
        && entry.chars().all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '-' | '.' | '_')
        })
}

/// Lower case without the trailing dot of a fully qualified name.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_of(address: &str) -> Option<SpecialRange> {
        classify(address.parse().expect("a valid address in the table"))
    }

    #[test]
    fn the_classifier_puts_each_ipv4_address_in_its_range() {
        use SpecialRange::*;
        let table: &[(&str, Option<SpecialRange>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("192.0.0.8", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.15.255.255", None),
            ("172.32.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.1", None),
            ("169.253.1.1", None),
            ("198.20.0.1", None),
            ("223.255.255.255", None),
        ];
        for (address, expected) in table {
            assert_eq!(range_of(address), *expected, "{address}");
        }
    }

    #[test]
    fn the_classifier_puts_each_ipv6_address_in_its_range() {
        use SpecialRange::*;
        let table: &[(&str, Option<SpecialRange>)] = &[
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Reserved)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:a9fe:a9fe::1", Some(LinkLocal)),
            ("2002:0808:0808::1", None),
            ("2001:0:4136:e378::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        for (address, expected) in table {
            assert_eq!(range_of(address), *expected, "{address}");
        }
    }

    #[test]
    fn the_allowlist_admits_networks_addresses_and_host_names() {
        let entries =
            ["127.0.0.1/32", "10.0.0.0/8", "fd00::1", "Internal.Example."].map(String::from);
        let allowlist = Allowlist::parse(&entries).expect("valid entries");
        assert!(allowlist.admits_address("127.0.0.1".parse().unwrap()));
        assert!(allowlist.admits_address("::ffff:127.0.0.1".parse().unwrap()));
        assert!(allowlist.admits_address("10.200.3.4".parse().unwrap()));
        assert!(allowlist.admits_address("fd00::1".parse().unwrap()));
        assert!(!allowlist.admits_address("127.0.0.2".parse().unwrap()));
        assert!(!allowlist.admits_address("::1".parse().unwrap()));
        assert!(allowlist.admits_host("internal.example"));
        assert!(!allowlist.admits_host("example"));
    }

    #[test]
    fn a_malformed_allowlist_entry_is_an_error() {
        for entry in ["10.0.0.0/33", "not a host", "", "http://x/"] {
            assert!(Allowlist::parse(&[entry.to_owned()]).is_err(), "{entry:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_host_the_address_and_the_range() {
        let allowlist = Allowlist::default();
        let refusal = check_address(&allowlist, None, "10.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            refusal.0,
            "refused: 10.0.0.1 is a private address (allow it in http_fetch.allow)"
        );
        let refusal =
            check_address(&allowlist, Some("db.internal"), "::1".parse().unwrap()).unwrap_err();
        assert!(
            refusal.0.contains("db.internal resolves to ::1"),
            "{}",
            refusal.0
        );
        assert!(check_address(&allowlist, None, "8.8.8.8".parse().unwrap()).is_ok());
    }
}
