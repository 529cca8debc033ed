//! Who a client is, for counting: limits and lockouts key a client by its network, not by
//! the exact address it connects from.

use std::net::IpAddr;

/// The key a client is counted under: an IPv4 address, or an IPv6 /64 (one subscriber:
/// one host can use a whole /64 as easily as one address). An IPv4 client of a
/// dual-stack listener (`[::]`), which the socket names `::ffff:a.b.c.d`, is counted as
/// its IPv4 address: masked as IPv6, every IPv4 client would be one client.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_stay_apart() {
        assert_eq!(network(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(
            network(ip("::ffff:192.0.2.1")),
            network(ip("::ffff:192.0.2.2"))
        );
        assert_eq!(network(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn an_ipv6_subscriber_is_its_64() {
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            network(ip("2001:db8:1:2::1")),
            network(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            network(ip("2001:db8:1:2::1")),
            network(ip("2001:db8:1:3::1"))
        );
    }
}
