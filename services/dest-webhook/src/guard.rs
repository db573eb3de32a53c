//! SSRF guard: a webhook may not reach private, loopback, link-local (cloud metadata) or otherwise
//! internal addresses unless its settings allow it. Literal addresses are checked when the settings
//! load; host names when they resolve, on every connection, so DNS cannot point one inward later.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};

/// A destination address the guard refused.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is a private or internal address (set allow_private: true to allow it)",
            self.0
        )
    }
}

impl std::error::Error for Refused {}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10, carrier-grade NAT (often cluster-internal)
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

/// Refuses a URL whose host is a literal internal address, or `localhost`.
pub fn check_url(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("settings.url has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let internal = match bare.parse::<IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => {
            let d = bare.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if internal {
        return Err(format!("settings.url: {}", Refused(host.to_string())));
    }
    Ok(())
}

/// A resolver that returns only public addresses, and an error naming the host when none is left.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_inward_is_refused() {
        let name: Name = "localhost".parse().expect("name");
        let err = PublicOnly.resolve(name).await.err().expect("refused");
        assert!(err.is::<Refused>(), "{err}");
    }
}
