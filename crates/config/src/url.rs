//! NSM endpoint URLs, one type for the environment (`NSM_CONNECT_TO`,
//! `NSM_LISTEN_ON`), the registry's answers and the clients that dial them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The forms a URL is accepted in, for messages.
const FORMS: &str = "expected unix:///absolute/path, tcp://host:port or host:port";

/// A URL that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NSM URL {url:?}: {reason}")]
pub struct UrlError {
    /// The text as given.
    pub url: String,
    /// What is wrong with it, and the forms expected.
    pub reason: String,
}

/// Where an NSM peer listens, as `NSM_CONNECT_TO` and `NSM_LISTEN_ON` give
/// it: `unix:///absolute/path`, `tcp://host:port`, or a bare `host:port`
/// (which gRPC-Go reads as TCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NsmUrl {
    /// A unix socket at an absolute path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// Host name or address; an IPv6 address keeps its brackets.
        host: String,
        /// Port.
        port: u16,
    },
}

impl NsmUrl {
    /// Parses a URL in one of the three accepted forms.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let bad = |reason: &str| UrlError {
            url: text.to_string(),
            reason: format!("{reason}; {FORMS}"),
        };
        if let Some(path) = text.strip_prefix("unix://") {
            // `unix://relative` would put the first path element in the
            // authority; Go's url.Parse then drops it, so refuse it here
            // rather than dial somewhere surprising.
            if !path.starts_with('/') {
                return Err(bad("the unix path must be absolute"));
            }
            if path.len() < 2 {
                return Err(bad("the unix socket path is empty"));
            }
            if path.contains('\0') {
                return Err(bad("the unix socket path contains a NUL byte"));
            }
            return Ok(NsmUrl::Unix(PathBuf::from(path)));
        }
        let hostport = match text.strip_prefix("tcp://") {
            Some(rest) => rest.strip_suffix('/').unwrap_or(rest),
            None if text.contains("://") => {
                return Err(bad("the scheme must be unix:// or tcp://"));
            }
            None => text,
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number 0-65535"))?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.contains('/') || host.chars().any(char::is_whitespace) {
            return Err(bad("the host contains '/' or whitespace"));
        }
        // A bare IPv6 address without brackets has more colons than the
        // port separator; gRPC needs `[::1]:port`.
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("an IPv6 host must be in brackets: [::1]:port"));
        }
        Ok(NsmUrl::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// The unix socket path, if this is a unix URL.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            NsmUrl::Unix(path) => Some(path),
            NsmUrl::Tcp { .. } => None,
        }
    }

    /// The form NSM registries store in `NetworkServiceEndpoint.url`:
    /// `unix:///path` for a socket and plain `host:port` for TCP, as the Go
    /// SDK's `grpcutils.URLToTarget` writes them.
    pub fn to_target(&self) -> String {
        match self {
            NsmUrl::Unix(path) => format!("unix://{}", path.display()),
            NsmUrl::Tcp { host, port } => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for NsmUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsmUrl::Unix(path) => write!(f, "unix://{}", path.display()),
            NsmUrl::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl FromStr for NsmUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NsmUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_url_keeps_the_absolute_path() {
        let url = NsmUrl::parse("unix:///var/lib/networkservicemesh/nsm.io.sock").unwrap();
        assert_eq!(
            url.unix_path(),
            Some(Path::new("/var/lib/networkservicemesh/nsm.io.sock"))
        );
        assert_eq!(
            url.to_string(),
            "unix:///var/lib/networkservicemesh/nsm.io.sock"
        );
        assert_eq!(
            url.to_target(),
            "unix:///var/lib/networkservicemesh/nsm.io.sock"
        );
    }

    #[test]
    fn tcp_url_and_bare_host_port_are_tcp() {
        let a = NsmUrl::parse("tcp://127.0.0.1:5001").unwrap();
        let b = NsmUrl::parse("127.0.0.1:5001").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_target(), "127.0.0.1:5001");
        assert_eq!(a.to_string(), "tcp://127.0.0.1:5001");
        let v6: NsmUrl = "tcp://[::1]:80/".parse().unwrap();
        assert_eq!(
            v6,
            NsmUrl::Tcp {
                host: "[::1]".into(),
                port: 80
            }
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_url_in_the_message() {
        for text in [
            "unix://relative/path",
            "unix://",
            "unix:///",
            "http://host:80",
            "tcp://host",
            "tcp://host:http",
            "tcp://host:70000",
            ":80",
            "::1:80",
            "",
        ] {
            let err = NsmUrl::parse(text).unwrap_err();
            assert_eq!(err.url, text, "{text:?} gave {err:?}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
            assert!(err.to_string().contains(FORMS), "{err}");
        }
    }
}
