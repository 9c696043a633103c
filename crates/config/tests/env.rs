//! The `NSM_*` environment: defaults, every variable's parsing, and a message for each bad value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use sriov_config::{EnvConfig, EnvProblem, Error, LogLevel, NsmUrl, VARIABLES, Warning};

fn load(vars: &[(&str, &str)]) -> sriov_config::LoadedEnv {
    EnvConfig::from_vars(vars.iter().copied()).unwrap()
}

fn problems(vars: &[(&str, &str)]) -> Vec<EnvProblem> {
    match EnvConfig::from_vars(vars.iter().copied()).unwrap_err() {
        Error::Environment { problems } => problems,
        other => panic!("expected an environment error, got {other}"),
    }
}

/// The message for one bad variable; asserts it names the variable and the value.
fn message(var: &str, value: &str) -> String {
    let err = EnvConfig::from_vars([(var, value)]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(var), "{msg}");
    assert!(msg.contains(&format!("{value:?}")), "{msg}");
    msg
}

#[test]
fn empty_environment_gives_the_readme_defaults() {
    let loaded = load(&[]);
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.name, "sriov-forwarder");
    assert_eq!(c.ns_name, "forwarder");
    assert_eq!(c.labels.get("p2p").map(String::as_str), Some("true"));
    assert_eq!(
        c.connect_to,
        NsmUrl::Unix(PathBuf::from("/var/lib/networkservicemesh/nsm.io.sock"))
    );
    assert_eq!(c.dial_timeout, Duration::from_millis(50));
    assert_eq!(c.max_token_lifetime, Duration::from_secs(600));
    assert_eq!(c.resource_poll_timeout, Duration::from_secs(30));
    assert_eq!(c.metrics_export_interval, Duration::from_secs(10));
    assert_eq!(
        c.device_plugin_path,
        PathBuf::from("/var/lib/kubelet/device-plugins/")
    );
    assert_eq!(
        c.pod_resources_path,
        PathBuf::from("/var/lib/kubelet/pod-resources/")
    );
    assert_eq!(c.sriov_config_file, PathBuf::from("./pci.config"));
    assert_eq!(c.pci_devices_path, PathBuf::from("/sys/bus/pci/devices"));
    assert_eq!(c.pci_drivers_path, PathBuf::from("/sys/bus/pci/drivers"));
    assert_eq!(c.cgroup_path, PathBuf::from("/host/sys/fs/cgroup/devices"));
    assert_eq!(c.vfio_path, PathBuf::from("/host/dev/vfio"));
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.registry_client_policies.len(), 3);
    assert!(!c.pprof_enabled);
    assert_eq!(c.pprof_listen_on, "localhost:6060");
    assert!(!c.insecure);
    assert_eq!(
        c.state_dir,
        PathBuf::from("/var/lib/networkservicemesh/forwarder-sriov")
    );
}

#[test]
fn every_variable_is_read() {
    let c = load(&[
        ("NSM_NAME", "fwd-1"),
        ("NSM_LABELS", "a:1, b : 2"),
        ("NSM_NSNAME", "other"),
        ("NSM_CONNECT_TO", "tcp://10.0.0.1:5001"),
        ("NSM_LISTEN_ON", "unix:///run/fwd.sock"),
        ("NSM_DIAL_TIMEOUT", "1.5s"),
        ("NSM_MAX_TOKEN_LIFETIME", "2h"),
        ("NSM_REGISTRY_CLIENT_POLICIES", "a.rego, ,b.rego"),
        ("NSM_RESOURCE_POLL_TIMEOUT", "300ms"),
        ("NSM_DEVICE_PLUGIN_PATH", "/dp"),
        ("NSM_POD_RESOURCES_PATH", "/pr"),
        ("NSM_SRIOV_CONFIG_FILE", "/etc/sriov.yaml"),
        ("NSM_PCI_DEVICES_PATH", "/d"),
        ("NSM_PCI_DRIVERS_PATH", "/r"),
        ("NSM_CGROUP_PATH", "/c"),
        ("NSM_VFIO_PATH", "/v"),
        ("NSM_LOG_LEVEL", "debug"),
        ("NSM_OPEN_TELEMETRY_ENDPOINT", ""),
        ("NSM_METRICS_EXPORT_INTERVAL", "1m"),
        ("NSM_PPROF_ENABLED", "False"),
        ("NSM_PPROF_LISTEN_ON", ":6061"),
        ("NSM_METRICS_LISTEN", ":9464"),
        ("NSM_INSECURE", "1"),
        ("NSM_STATE_DIR", "/state"),
    ])
    .config;
    assert_eq!(c.name, "fwd-1");
    assert_eq!(c.labels.len(), 2);
    assert_eq!(c.labels["b"], "2");
    assert_eq!(c.ns_name, "other");
    assert_eq!(
        c.connect_to,
        NsmUrl::Tcp {
            host: "10.0.0.1".into(),
            port: 5001
        }
    );
    assert_eq!(c.listen_on.to_string(), "unix:///run/fwd.sock");
    assert_eq!(c.dial_timeout, Duration::from_millis(1500));
    assert_eq!(c.max_token_lifetime, Duration::from_secs(7200));
    assert_eq!(c.registry_client_policies, ["a.rego", "b.rego"]);
    assert_eq!(c.resource_poll_timeout, Duration::from_millis(300));
    assert_eq!(c.sriov_config_file, PathBuf::from("/etc/sriov.yaml"));
    assert_eq!(c.cgroup_path, PathBuf::from("/c"));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_level.as_filter(), "debug");
    assert_eq!(c.open_telemetry_endpoint, None);
    assert_eq!(c.metrics_export_interval, Duration::from_secs(60));
    assert!(!c.pprof_enabled);
    assert_eq!(c.pprof_listen_on, ":6061");
    assert_eq!(c.metrics_listen.as_deref(), Some(":9464"));
    assert!(c.insecure);
    assert_eq!(c.state_dir, PathBuf::from("/state"));
    let sysfs = c.sysfs();
    assert_eq!(sysfs.devices_dir(), PathBuf::from("/d"));
    assert_eq!(sysfs.drivers_dir(), PathBuf::from("/r"));
}

#[test]
fn ns_name_accepts_either_spelling() {
    assert_eq!(load(&[("NSM_NS_NAME", "x")]).config.ns_name, "x");
    assert_eq!(load(&[("NSM_NSNAME", "y")]).config.ns_name, "y");
    assert_eq!(
        load(&[("NSM_NSNAME", "z"), ("NSM_NS_NAME", "z")])
            .config
            .ns_name,
        "z"
    );
}

#[test]
fn ns_name_spellings_that_disagree_are_an_error_naming_both() {
    let p = problems(&[("NSM_NSNAME", "a"), ("NSM_NS_NAME", "b")]);
    assert_eq!(p.len(), 1);
    let msg = p[0].to_string();
    assert!(
        msg.contains("NSM_NSNAME=\"a\"") && msg.contains("NSM_NS_NAME=\"b\""),
        "{msg}"
    );
    assert!(msg.contains("set only one"), "{msg}");
}

#[test]
fn unknown_nsm_variables_are_warnings_with_suggestions() {
    let loaded = load(&[
        ("NSM_DIAL_TIMOUT", "5s"),
        ("NSM_TOTALLY_NEW", "x"),
        ("PATH", "/bin"),
        ("NSM_NAME", "ok"),
    ]);
    assert_eq!(
        loaded.warnings,
        [
            Warning::UnknownVariable {
                name: "NSM_DIAL_TIMOUT".into(),
                did_you_mean: Some("NSM_DIAL_TIMEOUT")
            },
            Warning::UnknownVariable {
                name: "NSM_TOTALLY_NEW".into(),
                did_you_mean: None
            },
        ]
    );
    assert_eq!(
        loaded.warnings[0].to_string(),
        "unknown environment variable NSM_DIAL_TIMOUT is ignored (did you mean NSM_DIAL_TIMEOUT?)"
    );
    assert_eq!(
        loaded.config.dial_timeout,
        Duration::from_millis(50),
        "typo does not apply"
    );
}

#[test]
fn bad_duration_names_the_variable_and_go_syntax() {
    let msg = message("NSM_DIAL_TIMEOUT", "30");
    assert!(msg.contains("expected a Go duration like 50ms"), "{msg}");
    assert!(msg.contains("a unit is missing"), "{msg}");
    let msg = message("NSM_RESOURCE_POLL_TIMEOUT", "5d");
    assert!(msg.contains("unknown unit \"d\""), "{msg}");
    let msg = message("NSM_METRICS_EXPORT_INTERVAL", "-10s");
    assert!(msg.contains("it is negative"), "{msg}");
    let msg = message("NSM_MAX_TOKEN_LIFETIME", "");
    assert!(msg.contains("it is empty"), "{msg}");
    let msg = message("NSM_MAX_TOKEN_LIFETIME", "99999999h");
    assert!(msg.contains("too large"), "{msg}");
}

#[test]
fn bad_bool_names_the_variable() {
    let msg = message("NSM_PPROF_ENABLED", "yes");
    assert!(msg.contains("expected true or false"), "{msg}");
    message("NSM_INSECURE", "enabled");
}

#[test]
fn bad_urls_say_what_form_is_expected() {
    let msg = message("NSM_CONNECT_TO", "http://nsmgr:5001");
    assert!(
        msg.contains("expected unix:///absolute/path, tcp://host:port or host:port"),
        "{msg}"
    );
    let msg = message("NSM_LISTEN_ON", "unix://relative.sock");
    assert!(msg.contains("must be absolute"), "{msg}");
    let msg = message("NSM_CONNECT_TO", "tcp://nsmgr");
    assert!(msg.contains("no port"), "{msg}");
    let msg = message("NSM_CONNECT_TO", "tcp://nsmgr:99999");
    assert!(msg.contains("not a number 0-65535"), "{msg}");
}

#[test]
fn bad_log_level_lists_the_levels() {
    let msg = message("NSM_LOG_LEVEL", "verbose");
    assert!(
        msg.contains("one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, PANIC"),
        "{msg}"
    );
    assert_eq!(
        load(&[("NSM_LOG_LEVEL", "WARNING")]).config.log_level,
        LogLevel::Warn
    );
    assert_eq!(
        load(&[("NSM_LOG_LEVEL", "fatal")])
            .config
            .log_level
            .as_filter(),
        "error"
    );
}

#[test]
fn bad_labels_name_the_item() {
    let msg = message("NSM_LABELS", "p2p:true,oops");
    assert!(msg.contains("key:value pairs separated by commas"), "{msg}");
    assert!(msg.contains("(\"oops\" is not key:value)"), "{msg}");
    let msg = message("NSM_LABELS", ":v");
    assert!(msg.contains("(\":v\" has an empty key)"), "{msg}");
    let msg = message("NSM_LABELS", "a:1,a:2");
    assert!(msg.contains("(key \"a\" repeats)"), "{msg}");
    assert!(load(&[("NSM_LABELS", "")]).config.labels.is_empty());
}

#[test]
fn empty_names_and_paths_are_refused() {
    assert!(message("NSM_NAME", " ").contains("expected a non-empty string"));
    assert!(message("NSM_NSNAME", "").contains("expected a non-empty string"));
    assert!(message("NSM_NS_NAME", "").contains("expected a non-empty string"));
    assert!(message("NSM_PCI_DEVICES_PATH", "").contains("expected a path"));
    assert!(message("NSM_STATE_DIR", "/a\0b").contains("without NUL"));
}

#[test]
fn every_bad_variable_is_reported_at_once() {
    let p = problems(&[
        ("NSM_DIAL_TIMEOUT", "x"),
        ("NSM_PPROF_ENABLED", "x"),
        ("NSM_LOG_LEVEL", "x"),
    ]);
    let vars: Vec<_> =
        p.iter()
            .map(|p| match p {
                EnvProblem::BadValue { variable, .. }
                | EnvProblem::Unsupported { variable, .. } => variable.as_str(),
                EnvProblem::Conflict { .. } => "conflict",
            })
            .collect();
    assert_eq!(
        vars,
        ["NSM_DIAL_TIMEOUT", "NSM_LOG_LEVEL", "NSM_PPROF_ENABLED"]
    );
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let help = EnvConfig::help();
    for v in VARIABLES {
        assert!(help.contains(v.name), "{} missing from help", v.name);
        if !v.default.is_empty() {
            assert!(
                help.contains(&format!("[{}]", v.default)),
                "{} default missing",
                v.name
            );
        }
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
fn from_env_reads_the_process_environment_through_figment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NSM_DIAL_TIMEOUT", "2s");
        jail.set_env("NSM_NS_NAME", "from-env");
        jail.set_env("NSM_UNKNOWN_THING", "1");
        let loaded = EnvConfig::from_env().unwrap();
        assert_eq!(loaded.config.dial_timeout, Duration::from_secs(2));
        assert_eq!(loaded.config.ns_name, "from-env");
        assert!(loaded.warnings.iter().any(|w| matches!(
            w,
            Warning::UnknownVariable { name, .. } if name == "NSM_UNKNOWN_THING"
        )));
        jail.set_env(
            "SPIFFE_ENDPOINT_SOCKET",
            "unix:///run/spire/sockets/agent.sock",
        );
        let loaded = EnvConfig::from_env().unwrap();
        assert_eq!(
            loaded.config.spiffe_endpoint_socket.as_deref(),
            Some("unix:///run/spire/sockets/agent.sock")
        );
        // Go NSM's unprefixed switch is read too.
        jail.set_env("TELEMETRY", "true");
        assert!(EnvConfig::from_env().unwrap().config.telemetry);
        jail.set_env("TELEMETRY", "false");
        assert!(!EnvConfig::from_env().unwrap().config.telemetry);
        jail.set_env("NSM_DIAL_TIMEOUT", "soon");
        let err = EnvConfig::from_env().unwrap_err();
        assert!(
            err.to_string().contains("NSM_DIAL_TIMEOUT=\"soon\""),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn the_socket_group_is_a_gid_or_a_known_group_name() {
    assert_eq!(load(&[]).config.socket_group, None);
    assert_eq!(
        load(&[("NSM_SOCKET_GROUP", "1234")]).config.socket_group,
        Some(1234)
    );
    assert_eq!(
        load(&[("NSM_SOCKET_GROUP", "root")]).config.socket_group,
        Some(0)
    );
    let msg = message("NSM_SOCKET_GROUP", "no-such-group-here");
    assert!(msg.contains("group name"), "{msg}");
}

#[test]
fn pprof_is_accepted_now_that_the_binaries_serve_it() {
    let c = load(&[
        ("NSM_PPROF_ENABLED", "1"),
        ("NSM_PPROF_LISTEN_ON", "127.0.0.1:6061"),
    ])
    .config;
    assert!(c.pprof_enabled);
    assert_eq!(c.pprof_listen_on, "127.0.0.1:6061");
    let msg = message("NSM_PPROF_LISTEN_ON", " ");
    assert!(msg.contains("non-empty"), "{msg}");
}

#[test]
fn the_metrics_endpoint_is_off_unless_an_address_is_given() {
    assert_eq!(load(&[]).config.metrics_listen, None);
    assert_eq!(
        load(&[("NSM_METRICS_LISTEN", " ")]).config.metrics_listen,
        None
    );
    assert_eq!(
        load(&[("NSM_METRICS_LISTEN", " 127.0.0.1:9464 ")])
            .config
            .metrics_listen
            .as_deref(),
        Some("127.0.0.1:9464")
    );
}

#[test]
fn the_log_format_is_text_or_json() {
    assert_eq!(load(&[]).config.log_format, "text");
    assert_eq!(
        load(&[("NSM_LOG_FORMAT", "JSON")]).config.log_format,
        "json"
    );
    let msg = message("NSM_LOG_FORMAT", "yaml");
    assert!(msg.contains("text or json"), "{msg}");
}

#[test]
fn telemetry_is_gos_switch_in_any_of_its_spellings() {
    assert!(!load(&[]).config.telemetry, "off by default");
    for on in ["true", "1", "T", "TRUE"] {
        assert!(load(&[("TELEMETRY", on)]).config.telemetry, "{on}");
    }
    for off in ["false", "0", "F"] {
        assert!(!load(&[("TELEMETRY", off)]).config.telemetry, "{off}");
    }
    // A bad spelling is a bad value, not "off".
    let msg = message("TELEMETRY", "yes");
    assert!(msg.contains("true or false"), "{msg}");
}

#[test]
fn the_workload_api_address_is_go_spiffes() {
    for ok in [
        "unix:///run/spire/sockets/agent.sock",
        "unix:/run/spire/agent.sock",
        "tcp://127.0.0.1:8081",
    ] {
        let c = load(&[("SPIFFE_ENDPOINT_SOCKET", ok)]).config;
        assert_eq!(c.spiffe_endpoint_socket.as_deref(), Some(ok));
    }
    assert_eq!(
        load(&[("SPIFFE_ENDPOINT_SOCKET", "")])
            .config
            .spiffe_endpoint_socket,
        None
    );
    for bad in [
        "/run/spire/agent.sock",
        "unix://relative.sock",
        "tcp://nohost",
        "http://x:1",
    ] {
        let msg = message("SPIFFE_ENDPOINT_SOCKET", bad);
        assert!(msg.contains("unix:///path/to/agent.sock"), "{msg}");
    }
}
