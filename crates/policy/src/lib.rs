//! NSM's authorization policies, evaluated with [regorus].
//!
//! NSM authorizes every NetworkService Request and Close, the connection
//! monitor and its registry calls with OPA Rego policies: each a module whose
//! `valid` rule must be `true`. This crate ships our own policies with NSM's
//! names and meaning (`policies/`), loads an operator's instead from a spec in
//! NSM's syntax, and checks an [`Input`] built in NSM's field names, so an
//! operator's NSM policy runs unchanged.
//!
//! # Specs
//!
//! A comma-separated list of masks, as `NSM_REGISTRY_CLIENT_POLICIES` is
//! written. A mask naming an existing file loads it. Any other mask is an
//! anchored regular expression over the files below the mask's last
//! directory written without regex syntax (walked recursively, dot-directories
//! and symlinked directories skipped; `.*` crosses `/`) and over the shipped
//! policies, named `etc/nsm/opa/<group>/<name>.rego` as NSM names its embedded
//! ones: `common/{tokens_valid,tokens_expired,tokens_chained}`,
//! `server/prev_token_signed`, `client/next_token_signed`,
//! `monitor/service_connection`, `registry/client_allowed`. A mask matching
//! nothing is an error (NSM loads nothing: authorization silently off).
//!
//! # Input documents
//!
//! - Request/Close ([`Input::network_service`]): `index`, `path_segments`
//!   (`name`, `id`, `token`, `expires: {seconds, nanos}`, `metrics`) cut to
//!   `[..=index]`, `auth_info.certificate` (peer certificate PEM or `""`).
//! - Monitor ([`Input::monitor`]): `spiffe_id_connection_map`,
//!   `selector_connection_ids`, `service_spiffe_id`, `auth_info`.
//! - Registry client ([`Input::registry`]): `resource_id`, `resource_name`,
//!   `resource_path_ids_map`, `path_segments: [{token}]`, `index`, `auth_info`.
//!
//! regorus lacks OPA's `io.jwt.decode` and `io.jwt.verify_es256`; this crate
//! provides both (and `time.now_ns`) to every policy: decoding here,
//! signature checks through the caller's [`TokenCheck`]. `verify_es256`
//! accepts a PEM certificate as its key (what NSM passes), not a JWKS.
//! regorus is built without its optional builtin groups (`regex.*`, `glob.*`,
//! `time.*` but `now_ns`, `net.*`, encodings, `http.send`, ...): a policy
//! calling one still loads, and is denied at evaluation with a reason naming
//! the missing function.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use sriov_api::nsm::connection::Path;
//! use sriov_policy::{Input, Peer, Policies, TokenCheck};
//!
//! struct NoSignatures;
//! impl TokenCheck for NoSignatures {
//!     fn signed_by(&self, _token: &str, _certificate_der: &[u8]) -> bool {
//!         false
//!     }
//! }
//!
//! let policies = Policies::defaults_server(Arc::new(NoSignatures))?;
//! let path = Path { index: 1, path_segments: vec![Default::default(); 2] };
//! let denied = policies.check(&Input::network_service(&path, &Peer::default())).unwrap_err();
//! assert_eq!(denied.policy, "etc/nsm/opa/common/tokens_chained.rego");
//! # Ok::<(), sriov_policy::PolicyError>(())
//! ```

mod error;
mod input;
mod jwt;
mod policy;
mod spec;

pub use error::{Denied, PolicyError};
pub use input::{ConnectionOwners, Input, Peer, previous_connection_id};
pub use policy::{
    DEFAULT_MONITOR_SPEC, DEFAULT_REGISTRY_CLIENT_SPEC, DEFAULT_SERVER_SPEC, Policies, TokenCheck,
};
