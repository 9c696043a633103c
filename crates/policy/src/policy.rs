//! Compiling policies once and checking inputs against them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::spec::{self, Source};
use crate::{Denied, Input, PolicyError, jwt};

/// The spec NSM's `authorize.NewServer` defaults to: every Request and Close.
pub const DEFAULT_SERVER_SPEC: &str = "etc/nsm/opa/common/.*.rego,etc/nsm/opa/server/.*.rego";
/// The monitor's connection-owner rule.
pub const DEFAULT_MONITOR_SPEC: &str = "etc/nsm/opa/monitor/.*.rego";
/// `NSM_REGISTRY_CLIENT_POLICIES`' default in cmd-forwarder-sriov.
pub const DEFAULT_REGISTRY_CLIENT_SPEC: &str =
    "etc/nsm/opa/common/.*.rego,etc/nsm/opa/registry/.*.rego,etc/nsm/opa/client/.*.rego";

/// Signature checking for `io.jwt.verify_es256`, which regorus does not
/// implement. The forwarder implements it with its identity crate; tests
/// with a fake.
pub trait TokenCheck: Send + Sync {
    /// Whether `token` is a compact JWS whose ES256 signature verifies with
    /// the public key of the X.509 certificate `certificate_der`. Any
    /// malformed token or certificate is `false`.
    fn signed_by(&self, token: &str, certificate_der: &[u8]) -> bool;
}

struct Policy {
    name: String,
    compiled: regorus::CompiledPolicy,
}

/// A list of compiled policies, each a Rego module whose `valid` rule must be
/// `true` for a call to pass. Compiled once; [`Policies::check`] takes `&self`
/// and runs concurrently.
pub struct Policies {
    policies: Vec<Policy>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Policies {
    /// Loads and compiles what `spec` names (NSM's syntax: see
    /// [the crate docs](crate)). An empty spec is no policy: every check passes.
    pub fn load(spec: &str, tokens: Arc<dyn TokenCheck>) -> Result<Self, PolicyError> {
        Self::compile(spec::resolve(spec)?, &tokens)
    }

    /// As [`Policies::load`], for a spec already split into masks (what
    /// `sriov-config` gives for `NSM_REGISTRY_CLIENT_POLICIES`).
    pub fn load_masks<I>(masks: I, tokens: Arc<dyn TokenCheck>) -> Result<Self, PolicyError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::compile(spec::resolve_masks(masks)?, &tokens)
    }

    /// Compiles policies given as `(name, rego)` pairs.
    pub fn from_sources<I, N, T>(
        sources: I,
        tokens: Arc<dyn TokenCheck>,
    ) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<String>,
    {
        let sources = sources.into_iter().map(|(name, text)| Source {
            name: name.into(),
            text: text.into(),
        });
        Self::compile(sources, &tokens)
    }

    /// The shipped Request/Close policies: `tokens_valid`, `tokens_expired`,
    /// `tokens_chained`, `prev_token_signed`.
    pub fn defaults_server(tokens: Arc<dyn TokenCheck>) -> Result<Self, PolicyError> {
        Self::load(DEFAULT_SERVER_SPEC, tokens)
    }

    /// The shipped `MonitorConnections` policy: `service_connection`.
    pub fn defaults_monitor(tokens: Arc<dyn TokenCheck>) -> Result<Self, PolicyError> {
        Self::load(DEFAULT_MONITOR_SPEC, tokens)
    }

    /// The shipped registry client policies, `NSM_REGISTRY_CLIENT_POLICIES`'
    /// default: the common token rules, `client_allowed`, `next_token_signed`.
    pub fn defaults_registry_client(tokens: Arc<dyn TokenCheck>) -> Result<Self, PolicyError> {
        Self::load(DEFAULT_REGISTRY_CLIENT_SPEC, tokens)
    }

    /// The policies' names in evaluation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name.as_str())
    }

    /// Whether there is no policy (every check passes).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Passes if every policy's `valid` is `true` for `input`; otherwise the
    /// first refusing policy, in order. Undefined, non-boolean and failed
    /// evaluations refuse.
    pub fn check(&self, input: &Input) -> Result<(), Denied> {
        for policy in &self.policies {
            let reason = match policy.compiled.eval_with_input(input.document()) {
                Ok(regorus::Value::Bool(true)) => continue,
                Ok(regorus::Value::Bool(false)) => "valid is false".to_owned(),
                Ok(regorus::Value::Undefined) => "valid is undefined".to_owned(),
                Ok(other) => format!("valid is not a boolean but {other}"),
                Err(e) => format!("evaluation failed: {e}"),
            };
            return Err(Denied {
                policy: policy.name.clone(),
                reason,
            });
        }
        Ok(())
    }

    fn compile(
        sources: impl IntoIterator<Item = Source>,
        tokens: &Arc<dyn TokenCheck>,
    ) -> Result<Self, PolicyError> {
        let policies = sources
            .into_iter()
            .map(|source| compile_one(source, tokens))
            .collect::<Result<_, _>>()?;
        Ok(Self { policies })
    }
}

/// One engine per policy: NSM's policies all declare `package nsm` and a
/// `valid` rule, and are evaluated each on its own.
fn compile_one(source: Source, tokens: &Arc<dyn TokenCheck>) -> Result<Policy, PolicyError> {
    let Source { name, text } = source;
    let failed = |e: anyhow::Error| PolicyError::Compile {
        name: name.clone(),
        cause: e.to_string(),
    };
    let mut engine = regorus::Engine::new();
    // NSM's policies (and so an operator's) are Rego v0 (`valid { ... }`);
    // ours opt into v1 with `import rego.v1`.
    engine.set_rego_v0(true);
    let package = engine.add_policy(name.clone(), text).map_err(failed)?;
    add_builtins(&mut engine, tokens).map_err(failed)?;
    let rule: regorus::Rc<str> = format!("{package}.valid").into();
    let compiled = engine.compile_with_entrypoint(&rule).map_err(failed)?;
    Ok(Policy { name, compiled })
}

/// OPA's builtins that NSM's policies use and regorus does not provide
/// (`io.jwt.*`), and `time.now_ns`, so regorus' `time` feature (chrono and a
/// timezone database) stays out of the binary. Each answers undefined where
/// OPA raises an error, which OPA (non-strict) turns into undefined too.
fn add_builtins(engine: &mut regorus::Engine, tokens: &Arc<dyn TokenCheck>) -> anyhow::Result<()> {
    engine.add_extension(
        "io.jwt.decode".to_owned(),
        1,
        Box::new(|args: Vec<regorus::Value>| {
            let decoded = match args.first() {
                Some(regorus::Value::String(token)) => jwt::decode(token),
                _ => None,
            };
            Ok(decoded.map_or(regorus::Value::Undefined, |d| {
                regorus::Value::from(vec![
                    regorus::Value::from(d.header),
                    regorus::Value::from(d.claims),
                    regorus::Value::from(d.signature_hex),
                ])
            }))
        }),
    )?;
    let tokens = Arc::clone(tokens);
    engine.add_extension(
        "io.jwt.verify_es256".to_owned(),
        2,
        Box::new(move |args: Vec<regorus::Value>| {
            let signed = match (args.first(), args.get(1)) {
                (Some(regorus::Value::String(token)), Some(regorus::Value::String(pem))) => {
                    jwt::pem_decode(pem).is_some_and(|der| tokens.signed_by(token, &der))
                }
                _ => false,
            };
            Ok(regorus::Value::from(signed))
        }),
    )?;
    engine.add_extension(
        "time.now_ns".to_owned(),
        0,
        Box::new(|_: Vec<regorus::Value>| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            Ok(regorus::Value::from(now))
        }),
    )?;
    Ok(())
}
