//! The `NSM_*` environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{format_go_duration, parse_go_duration};
use crate::error::{EnvProblem, Error};
use crate::url::NsmUrl;
use crate::warning::Warning;

/// Prefix of every variable this crate reads.
pub const PREFIX: &str = "NSM_";

/// The variables without the prefix that the Go forwarder reads too:
/// NSM's OpenTelemetry switch, and go-spiffe's Workload API address.
pub(crate) const UNPREFIXED: &[&str] = &["TELEMETRY", "SPIFFE_ENDPOINT_SOCKET"];

/// One variable the forwarder reads: its name, default as text, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// Full name, e.g. `NSM_DIAL_TIMEOUT`.
    pub name: &'static str,
    /// Default as the user would write it (`""` when unset means "none").
    pub default: &'static str,
    /// One line for `--help` and the README.
    pub help: &'static str,
}

/// Every variable read, in `--help` order. Defaults are the Go forwarder's (cmd-forwarder-sriov
/// `main.go`), not its stale README: nsmgr discovers forwarders under the network service
/// `forwarder`, and tokens live `10m`.
pub const VARIABLES: &[EnvVar] = &[
    EnvVar {
        name: "NSM_NAME",
        default: "sriov-forwarder",
        help: "name of this forwarder's network service endpoint",
    },
    EnvVar {
        name: "NSM_LABELS",
        default: "p2p:true",
        help: "labels registered with the network service, as k1:v1,k2:v2",
    },
    EnvVar {
        name: "NSM_NSNAME",
        default: "forwarder",
        help: "network service name to register (NSM_NS_NAME is accepted too)",
    },
    EnvVar {
        name: "NSM_NS_NAME",
        default: "",
        help: "other spelling of NSM_NSNAME; both set and different is an error",
    },
    EnvVar {
        name: "NSM_CONNECT_TO",
        default: "unix:///var/lib/networkservicemesh/nsm.io.sock",
        help: "URL of the local NSM manager (unix:///path or tcp://host:port)",
    },
    EnvVar {
        name: "NSM_LISTEN_ON",
        default: "unix:///listen.on.sock",
        help: "URL our NetworkService server listens on (unix:///path or tcp://host:port)",
    },
    EnvVar {
        name: "NSM_DIAL_TIMEOUT",
        default: "50ms",
        help: "timeout for dialing the next endpoint (Go duration)",
    },
    EnvVar {
        name: "NSM_NEXT_HOP_TIMEOUT",
        default: "15s",
        help: "longest one call to the next hop may take; a caller's shorter deadline wins (Go duration)",
    },
    EnvVar {
        name: "NSM_MAX_TOKEN_LIFETIME",
        default: "10m",
        help: "maximum lifetime of the tokens we issue (Go duration)",
    },
    EnvVar {
        name: "NSM_REGISTRY_CLIENT_POLICIES",
        default: "etc/nsm/opa/common/.*.rego,etc/nsm/opa/registry/.*.rego,etc/nsm/opa/client/.*.rego",
        help: "comma-separated paths of registry client policy files",
    },
    EnvVar {
        name: "NSM_RESOURCE_POLL_TIMEOUT",
        default: "30s",
        help: "how often kubelet's pod-resources API is polled (Go duration)",
    },
    EnvVar {
        name: "NSM_DEVICE_PLUGIN_PATH",
        default: "/var/lib/kubelet/device-plugins/",
        help: "kubelet's device plugin directory",
    },
    EnvVar {
        name: "NSM_POD_RESOURCES_PATH",
        default: "/var/lib/kubelet/pod-resources/",
        help: "kubelet's pod-resources directory",
    },
    EnvVar {
        name: "NSM_SRIOV_CONFIG_FILE",
        default: "./pci.config",
        help: "the SR-IOV config file (YAML)",
    },
    EnvVar {
        name: "NSM_PCI_DEVICES_PATH",
        default: "/sys/bus/pci/devices",
        help: "sysfs PCI devices directory",
    },
    EnvVar {
        name: "NSM_PCI_DRIVERS_PATH",
        default: "/sys/bus/pci/drivers",
        help: "sysfs PCI drivers directory",
    },
    EnvVar {
        name: "NSM_CGROUP_PATH",
        default: "/host/sys/fs/cgroup/devices",
        help: "the host's v1 devices cgroup root",
    },
    EnvVar {
        name: "NSM_VFIO_PATH",
        default: "/host/dev/vfio",
        help: "the host's /dev/vfio",
    },
    EnvVar {
        name: "NSM_LOG_LEVEL",
        default: "INFO",
        help: "TRACE, DEBUG, INFO, WARN, ERROR, FATAL or PANIC",
    },
    EnvVar {
        name: "NSM_LOG_FORMAT",
        default: "text",
        help: "log lines as text or json (ours; --log-format overrides it)",
    },
    EnvVar {
        name: "NSM_OPEN_TELEMETRY_ENDPOINT",
        default: "otel-collector.observability.svc.cluster.local:4317",
        help: "OpenTelemetry collector endpoint (empty: off)",
    },
    EnvVar {
        name: "NSM_METRICS_EXPORT_INTERVAL",
        default: "10s",
        help: "interval between metrics exports (Go duration)",
    },
    EnvVar {
        name: "NSM_METRICS_LISTEN",
        default: "",
        help: "Prometheus /metrics with /readyz and /livez on host:port or :port (ours; empty: off; --metrics-listen overrides it)",
    },
    EnvVar {
        name: "NSM_SRIOV_IGNORE_CARRIER",
        default: "false",
        help: "keep VFs healthy while their PF's link is down or has no carrier (only a PF link that is gone, a VF gone or unbound makes them unhealthy)",
    },
    EnvVar {
        name: "NSM_PPROF_ENABLED",
        default: "false",
        help: "serve CPU profiles, memory figures and /debug/state on NSM_PPROF_LISTEN_ON",
    },
    EnvVar {
        name: "NSM_PPROF_LISTEN_ON",
        default: "localhost:6060",
        help: "address of the profiling endpoint (loopback only)",
    },
    EnvVar {
        name: "TELEMETRY",
        default: "false",
        help: "Go NSM's OpenTelemetry switch: true pushes traces and metrics to NSM_OPEN_TELEMETRY_ENDPOINT",
    },
    EnvVar {
        name: "SPIFFE_ENDPOINT_SOCKET",
        default: "",
        help: "the SPIFFE Workload API (SPIRE agent) socket, unix:///path; required unless NSM_INSECURE=true",
    },
    EnvVar {
        name: "NSM_INSECURE",
        default: "false",
        help: "serve and dial without TLS (tests and demos only)",
    },
    EnvVar {
        name: "NSM_SOCKET_GROUP",
        default: "",
        help: "group (name or gid) given access to the NSM socket, then mode 0660 (empty: 0600, root only)",
    },
    EnvVar {
        name: "NSM_STATE_DIR",
        default: DEFAULT_STATE_DIR,
        help: "where the VF pool keeps its crash-safe state",
    },
];

/// `NSM_STATE_DIR`'s default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/networkservicemesh/forwarder-sriov";

/// Log levels as NSM (logrus) names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN` or `WARNING`.
    Warn,
    /// `ERROR`.
    Error,
    /// `FATAL`: logs errors only (tracing has no fatal level).
    Fatal,
    /// `PANIC`: logs errors only.
    Panic,
}

impl LogLevel {
    /// Parses a logrus level name, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            "fatal" => Self::Fatal,
            "panic" => Self::Panic,
            _ => return None,
        })
    }

    /// The `tracing` filter directive for this level.
    pub fn as_filter(&self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error | Self::Fatal | Self::Panic => "error",
        }
    }
}

/// The forwarder's settings from the `NSM_*` environment; see [`VARIABLES`] for names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    /// `NSM_NAME`.
    pub name: String,
    /// `NSM_LABELS`.
    pub labels: BTreeMap<String, String>,
    /// `NSM_NSNAME` / `NSM_NS_NAME`.
    pub ns_name: String,
    /// `NSM_CONNECT_TO`.
    pub connect_to: NsmUrl,
    /// `NSM_LISTEN_ON`.
    pub listen_on: NsmUrl,
    /// `NSM_DIAL_TIMEOUT`.
    pub dial_timeout: Duration,
    /// `NSM_NEXT_HOP_TIMEOUT`.
    pub next_hop_timeout: Duration,
    /// `NSM_MAX_TOKEN_LIFETIME`.
    pub max_token_lifetime: Duration,
    /// `NSM_REGISTRY_CLIENT_POLICIES`.
    pub registry_client_policies: Vec<String>,
    /// `NSM_RESOURCE_POLL_TIMEOUT`.
    pub resource_poll_timeout: Duration,
    /// `NSM_DEVICE_PLUGIN_PATH`.
    pub device_plugin_path: PathBuf,
    /// `NSM_POD_RESOURCES_PATH`.
    pub pod_resources_path: PathBuf,
    /// `NSM_SRIOV_CONFIG_FILE`.
    pub sriov_config_file: PathBuf,
    /// `NSM_PCI_DEVICES_PATH`.
    pub pci_devices_path: PathBuf,
    /// `NSM_PCI_DRIVERS_PATH`.
    pub pci_drivers_path: PathBuf,
    /// `NSM_CGROUP_PATH`.
    pub cgroup_path: PathBuf,
    /// `NSM_VFIO_PATH`.
    pub vfio_path: PathBuf,
    /// `NSM_LOG_LEVEL`.
    pub log_level: LogLevel,
    /// `NSM_LOG_FORMAT`: `text` or `json` (lowercased).
    pub log_format: String,
    /// `TELEMETRY` (Go NSM's switch, read with `strconv.ParseBool`): push
    /// traces and metrics over OTLP to [`EnvConfig::open_telemetry_endpoint`].
    pub telemetry: bool,
    /// `NSM_OPEN_TELEMETRY_ENDPOINT`; `None` when set to the empty string.
    pub open_telemetry_endpoint: Option<String>,
    /// `NSM_METRICS_EXPORT_INTERVAL`.
    pub metrics_export_interval: Duration,
    /// `NSM_METRICS_LISTEN` (ours): where the Prometheus endpoint listens
    /// (`host:port`, `:port`); `None` when empty, the default: not served.
    /// The binary parses it (`sriov_ops::listen_addr`).
    pub metrics_listen: Option<String>,
    /// `NSM_SRIOV_IGNORE_CARRIER`.
    pub sriov_ignore_carrier: bool,
    /// `NSM_PPROF_ENABLED`: serve the debug endpoint (CPU profiles, memory
    /// figures, `/debug/state`) on [`EnvConfig::pprof_listen_on`].
    pub pprof_enabled: bool,
    /// `NSM_PPROF_LISTEN_ON`: the debug endpoint's address; the binary
    /// refuses one that is not loopback (`sriov_ops::loopback_addr`).
    pub pprof_listen_on: String,
    /// `NSM_INSECURE`.
    pub insecure: bool,
    /// `SPIFFE_ENDPOINT_SOCKET`, the Workload API address as go-spiffe
    /// reads it; `None` when unset or empty.
    pub spiffe_endpoint_socket: Option<String>,
    /// `NSM_STATE_DIR`.
    pub state_dir: PathBuf,
    /// `NSM_SOCKET_GROUP`, resolved to a gid; `None`: the socket is 0600.
    pub socket_group: Option<u32>,
}

/// An [`EnvConfig`] and what was odd about the environment it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEnv {
    /// The settings.
    pub config: EnvConfig,
    /// Things to log (for example unknown `NSM_` variables); never fatal.
    pub warnings: Vec<Warning>,
}

impl EnvConfig {
    /// Reads the process environment through figment's `Env` provider.
    pub fn from_env() -> Result<LoadedEnv, Error> {
        // Only the raw strings are taken from figment: its value guessing would turn
        // `NSM_NAME=123` into a number, and its errors do not name the variable.
        let env = figment::providers::Env::prefixed(PREFIX).lowercase(false);
        let unprefixed = figment::providers::Env::raw()
            .only(UNPREFIXED)
            .lowercase(false);
        Self::from_vars(
            env.iter()
                .map(|(k, v)| (format!("{PREFIX}{}", k.as_str()), v))
                .chain(unprefixed.iter().map(|(k, v)| (k.as_str().to_string(), v))),
        )
    }

    /// Builds the settings from `(name, value)` pairs (names with their `NSM_` prefix; other
    /// names are ignored). Every bad value is reported, not only the first.
    pub fn from_vars<I, K, V>(vars: I) -> Result<LoadedEnv, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut set: BTreeMap<String, String> = BTreeMap::new();
        let mut warnings = Vec::new();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if !k.to_ascii_uppercase().starts_with(PREFIX) && !UNPREFIXED.contains(&k) {
                continue;
            }
            if VARIABLES.iter().any(|var| var.name == k) {
                set.insert(k.to_string(), v.to_string());
            } else {
                warnings.push(Warning::UnknownVariable {
                    name: k.to_string(),
                    did_you_mean: closest_variable(k),
                });
            }
        }
        let mut p = Parser {
            set: &set,
            problems: Vec::new(),
        };
        let ns_name = p.ns_name();
        let config = EnvConfig {
            name: p.non_empty("NSM_NAME"),
            labels: p.labels("NSM_LABELS"),
            ns_name,
            connect_to: p.url("NSM_CONNECT_TO"),
            listen_on: p.url("NSM_LISTEN_ON"),
            dial_timeout: p.duration("NSM_DIAL_TIMEOUT"),
            next_hop_timeout: p.duration("NSM_NEXT_HOP_TIMEOUT"),
            max_token_lifetime: p.duration("NSM_MAX_TOKEN_LIFETIME"),
            registry_client_policies: p.list("NSM_REGISTRY_CLIENT_POLICIES"),
            resource_poll_timeout: p.duration("NSM_RESOURCE_POLL_TIMEOUT"),
            device_plugin_path: p.path("NSM_DEVICE_PLUGIN_PATH"),
            pod_resources_path: p.path("NSM_POD_RESOURCES_PATH"),
            sriov_config_file: p.path("NSM_SRIOV_CONFIG_FILE"),
            pci_devices_path: p.path("NSM_PCI_DEVICES_PATH"),
            pci_drivers_path: p.path("NSM_PCI_DRIVERS_PATH"),
            cgroup_path: p.path("NSM_CGROUP_PATH"),
            vfio_path: p.path("NSM_VFIO_PATH"),
            log_level: p.log_level("NSM_LOG_LEVEL"),
            log_format: p.one_of("NSM_LOG_FORMAT", &["text", "json"]),
            telemetry: p.bool("TELEMETRY"),
            open_telemetry_endpoint: Some(p.raw("NSM_OPEN_TELEMETRY_ENDPOINT"))
                .filter(|s| !s.is_empty()),
            metrics_export_interval: p.duration("NSM_METRICS_EXPORT_INTERVAL"),
            metrics_listen: Some(p.raw("NSM_METRICS_LISTEN").trim().to_string())
                .filter(|s| !s.is_empty()),
            sriov_ignore_carrier: p.bool("NSM_SRIOV_IGNORE_CARRIER"),
            pprof_enabled: p.bool("NSM_PPROF_ENABLED"),
            pprof_listen_on: p.non_empty("NSM_PPROF_LISTEN_ON"),
            insecure: p.bool("NSM_INSECURE"),
            spiffe_endpoint_socket: p.workload_api("SPIFFE_ENDPOINT_SOCKET"),
            state_dir: p.path("NSM_STATE_DIR"),
            socket_group: p.group("NSM_SOCKET_GROUP"),
        };
        if p.problems.is_empty() {
            Ok(LoadedEnv { config, warnings })
        } else {
            Err(Error::Environment {
                problems: p.problems,
            })
        }
    }

    /// A sysfs handle on `NSM_PCI_DEVICES_PATH` and `NSM_PCI_DRIVERS_PATH`, for [`crate::reconcile()`].
    pub fn sysfs(&self) -> sriov_pci::Sysfs {
        sriov_pci::Sysfs::new(&self.pci_devices_path, &self.pci_drivers_path)
    }

    /// `--help` text: every variable with its default.
    pub fn help() -> String {
        let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
        let mut out = String::from("Environment (default in brackets):\n");
        for v in VARIABLES {
            let default = if v.default.is_empty() {
                "unset"
            } else {
                v.default
            };
            out.push_str(&format!("  {:width$}  {} [{default}]\n", v.name, v.help));
        }
        out
    }

    /// The durations again in Go syntax, for a startup log line.
    pub fn durations_summary(&self) -> String {
        format!(
            "dial_timeout={} next_hop_timeout={} max_token_lifetime={} resource_poll_timeout={} \
             metrics_export_interval={}",
            format_go_duration(self.dial_timeout),
            format_go_duration(self.next_hop_timeout),
            format_go_duration(self.max_token_lifetime),
            format_go_duration(self.resource_poll_timeout),
            format_go_duration(self.metrics_export_interval),
        )
    }
}

fn default_of(name: &str) -> &'static str {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .map_or("", |v| v.default)
}

/// Suggests the known variable an unknown one is probably a typo of.
fn closest_variable(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    VARIABLES
        .iter()
        .map(|v| (edit_distance(&upper, v.name), v.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        let mut left = i + 1;
        // `prev` has one more entry than `b`: each window is (diagonal, above).
        for (cb, w) in b.iter().zip(prev.windows(2)) {
            let (diagonal, above) = match *w {
                [d, a] => (d, a),
                _ => break,
            };
            left = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(left + 1);
            cur.push(left);
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or_default()
}

struct Parser<'a> {
    set: &'a BTreeMap<String, String>,
    problems: Vec<EnvProblem>,
}

impl Parser<'_> {
    fn raw(&self, name: &str) -> String {
        self.set
            .get(name)
            .cloned()
            .unwrap_or_else(|| default_of(name).to_string())
    }

    fn bad(&mut self, name: &str, value: &str, expected: impl Into<String>) {
        self.problems.push(EnvProblem::BadValue {
            variable: name.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        });
    }

    /// One of `choices`, in any case; lowercased.
    fn one_of(&mut self, name: &str, choices: &[&str]) -> String {
        let v = self.raw(name);
        let lower = v.trim().to_ascii_lowercase();
        if !choices.contains(&lower.as_str()) {
            self.bad(name, &v, choices.join(" or "));
        }
        lower
    }

    fn non_empty(&mut self, name: &str) -> String {
        let v = self.raw(name);
        if v.trim().is_empty() {
            self.bad(name, &v, "a non-empty string");
        }
        v
    }

    fn ns_name(&mut self) -> String {
        match (self.set.get("NSM_NSNAME"), self.set.get("NSM_NS_NAME")) {
            (Some(a), Some(b)) if a != b => {
                self.problems.push(EnvProblem::Conflict {
                    first: "NSM_NSNAME".into(),
                    first_value: a.clone(),
                    second: "NSM_NS_NAME".into(),
                    second_value: b.clone(),
                });
                a.clone()
            }
            (None, Some(_)) => self.non_empty("NSM_NS_NAME"),
            _ => self.non_empty("NSM_NSNAME"),
        }
    }

    fn path(&mut self, name: &str) -> PathBuf {
        let v = self.raw(name);
        if v.is_empty() {
            self.bad(name, &v, "a path");
        } else if v.contains('\0') {
            self.bad(name, &v, "a path without NUL bytes");
        }
        PathBuf::from(v)
    }

    fn group(&mut self, name: &str) -> Option<u32> {
        let v = self.raw(name);
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        if let Ok(gid) = v.parse::<u32>() {
            return Some(gid);
        }
        match nix::unistd::Group::from_name(v) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => {
                self.bad(name, v, "a group name known to this node or a numeric gid");
                None
            }
            Err(e) => {
                self.bad(name, v, format!("a group name or gid (lookup failed: {e})"));
                None
            }
        }
    }

    fn duration(&mut self, name: &str) -> Duration {
        let v = self.raw(name);
        match parse_go_duration(v.trim()) {
            Ok(d) => d,
            Err(problem) => {
                self.bad(
                    name,
                    &v,
                    format!("a Go duration like 50ms, 30s, 10m, 1h30m ({problem})"),
                );
                Duration::ZERO
            }
        }
    }

    /// A Workload API address as go-spiffe accepts it: `unix:///path`
    /// (or `unix:/path`) or `tcp://ip:port`.
    fn workload_api(&mut self, name: &str) -> Option<String> {
        let v = self.raw(name);
        let t = v.trim();
        if t.is_empty() {
            return None;
        }
        let ok = match t.split_once(':') {
            Some(("unix", rest)) => rest.trim_start_matches("//").starts_with('/'),
            Some(("tcp", rest)) => rest.strip_prefix("//").is_some_and(|a| a.contains(':')),
            _ => false,
        };
        if !ok {
            self.bad(
                name,
                &v,
                "a Workload API address: unix:///path/to/agent.sock or tcp://ip:port",
            );
        }
        Some(t.to_string())
    }

    fn bool(&mut self, name: &str) -> bool {
        let v = self.raw(name);
        // The spellings Go's strconv.ParseBool accepts.
        match v.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                self.bad(name, &v, "true or false");
                false
            }
        }
    }

    fn url(&mut self, name: &str) -> NsmUrl {
        let v = self.raw(name);
        match NsmUrl::parse(v.trim()) {
            Ok(u) => u,
            Err(e) => {
                self.bad(name, &v, e.reason);
                NsmUrl::Unix(PathBuf::from("/"))
            }
        }
    }

    fn log_level(&mut self, name: &str) -> LogLevel {
        let v = self.raw(name);
        LogLevel::parse(v.trim()).unwrap_or_else(|| {
            self.bad(
                name,
                &v,
                "one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, PANIC",
            );
            LogLevel::Info
        })
    }

    fn list(&mut self, name: &str) -> Vec<String> {
        self.raw(name)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn labels(&mut self, name: &str) -> BTreeMap<String, String> {
        let v = self.raw(name);
        let mut labels = BTreeMap::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                Some((k, _)) if k.trim().is_empty() => self.bad(
                    name,
                    &v,
                    format!("key:value pairs separated by commas ({item:?} has an empty key)"),
                ),
                Some((k, val)) => {
                    if labels
                        .insert(k.trim().to_string(), val.trim().to_string())
                        .is_some()
                    {
                        self.bad(
                            name,
                            &v,
                            format!("each key once (key {:?} repeats)", k.trim()),
                        );
                    }
                }
                None => self.bad(
                    name,
                    &v,
                    format!("key:value pairs separated by commas ({item:?} is not key:value)"),
                ),
            }
        }
        labels
    }
}
