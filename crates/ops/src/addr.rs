//! Listen addresses as operators write them (`host:port`, `:port`, a bare
//! port, Go's `localhost:6060`), and the rule that the debug endpoint stays
//! on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::Error;

/// Parses a listen address for an endpoint that may face the network when
/// told to (the metrics endpoint's `--metrics-listen`).
///
/// `:port` and a bare port mean loopback (`127.0.0.1`), as does the host
/// `localhost`; an IP literal (`0.0.0.0`, `10.0.0.5`, `[::]`) is used as
/// given. Other host names are refused rather than resolved: a name that
/// resolves elsewhere tomorrow would move the listener silently. `name` is
/// the flag or variable the value came from; errors name it.
pub fn listen_addr(name: &str, value: &str) -> Result<SocketAddr, Error> {
    let bad = |rule: &'static str| Error::Address {
        name: name.to_owned(),
        value: value.to_owned(),
        rule,
    };
    if value.is_empty() {
        return Err(bad("empty; expected host:port, :port or a port"));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let port = value.parse().map_err(|_| bad(PORT_RULE))?;
        return Ok(SocketAddr::new(LOOPBACK, port));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("no port; expected host:port, :port or a port"));
    };
    let port: u16 = port.parse().map_err(|_| bad(PORT_RULE))?;
    let ip = match host {
        "" | "localhost" => LOOPBACK,
        _ => {
            // IPv6 literals come bracketed, as in a URL (`[::1]:9090`), so
            // that the last `:` is the port's.
            let literal = match host.strip_prefix('[') {
                Some(rest) => rest.strip_suffix(']').ok_or_else(|| bad(IPV6_RULE))?,
                None if host.contains(':') => return Err(bad(IPV6_RULE)),
                None => host,
            };
            literal.parse::<IpAddr>().map_err(|_| bad(HOST_RULE))?
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses a listen address for the debug endpoint (`NSM_PPROF_LISTEN_ON`):
/// [`listen_addr`]'s rules, and the address must be loopback, since that
/// endpoint serves CPU profiles and the daemon's state to whoever connects.
pub fn loopback_addr(name: &str, value: &str) -> Result<SocketAddr, Error> {
    let addr = listen_addr(name, value)?;
    if !addr.ip().is_loopback() {
        return Err(Error::NotLoopback {
            name: name.to_owned(),
            addr,
        });
    }
    Ok(addr)
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PORT_RULE: &str = "the port must be a number from 0 to 65535";
const IPV6_RULE: &str = "an IPv6 address goes in brackets: [::1]:port";
const HOST_RULE: &str = "the host must be an IP address or localhost (host names are not resolved)";

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str) -> String {
        match listen_addr("--metrics-listen", value) {
            Ok(addr) => addr.to_string(),
            Err(e) => panic!("{value}: {e}"),
        }
    }

    #[test]
    fn ports_alone_and_localhost_mean_loopback() {
        assert_eq!(ok("9090"), "127.0.0.1:9090");
        assert_eq!(ok(":9090"), "127.0.0.1:9090");
        assert_eq!(ok("localhost:6060"), "127.0.0.1:6060");
        assert_eq!(ok("127.0.0.1:1"), "127.0.0.1:1");
        assert_eq!(ok("[::1]:9090"), "[::1]:9090");
    }

    #[test]
    fn explicit_addresses_are_kept_for_metrics() {
        assert_eq!(ok("0.0.0.0:9090"), "0.0.0.0:9090");
        assert_eq!(ok("10.1.2.3:9090"), "10.1.2.3:9090");
        assert_eq!(ok("[::]:9090"), "[::]:9090");
    }

    #[test]
    fn malformed_addresses_name_the_flag_and_the_rule() {
        for (value, rule) in [
            ("", "empty"),
            ("70000", "0 to 65535"),
            (":http", "0 to 65535"),
            ("localhost", "no port"),
            ("example.com:9090", "host names are not resolved"),
            ("::1:9090", "brackets"),
            ("[::1:9090", "brackets"),
        ] {
            let err = listen_addr("--metrics-listen", value)
                .expect_err(value)
                .to_string();
            assert!(err.contains("--metrics-listen"), "{value}: {err}");
            assert!(err.contains(rule), "{value}: {err}");
        }
    }

    #[test]
    fn the_debug_endpoint_refuses_anything_but_loopback() {
        assert_eq!(
            loopback_addr("NSM_PPROF_LISTEN_ON", "localhost:6060").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 6060)))
        );
        assert!(loopback_addr("NSM_PPROF_LISTEN_ON", "[::1]:6060").is_ok());
        for value in ["0.0.0.0:6060", "10.1.2.3:6060", "[::]:6060"] {
            let err = loopback_addr("NSM_PPROF_LISTEN_ON", value)
                .expect_err(value)
                .to_string();
            assert!(err.contains("NSM_PPROF_LISTEN_ON"), "{err}");
            assert!(err.contains("loopback"), "{err}");
            assert!(err.contains("profiles"), "{err}");
        }
    }
}
