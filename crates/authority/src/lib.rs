//! gRPC on unix sockets for every client, whatever `:authority` it sends.
//!
//! A gRPC client derives `:authority` from its dial target, and for a unix
//! socket each stack picks its own: grpc-go (and kubelet since 1.26,
//! kubernetes/kubernetes#112597) sends `localhost`, older kubelets the bare
//! socket path (`/var/lib/kubelet/device-plugins/x.sock`), Java and other
//! stacks the path or the `unix:` target as given. The `h2` crate under
//! tonic refuses such values as malformed authorities and resets the
//! stream with PROTOCOL_ERROR before any handler runs (hyperium/tonic#243),
//! so those clients cannot call us at all.
//!
//! [`incoming`] accepts on a unix socket and relays every connection
//! through [`relay`]: the client's HTTP/2 frames pass unchanged except
//! header blocks, which are HPACK-decoded (tracking the client's dynamic
//! table), get an unparsable `:authority` replaced by `localhost`, and are
//! re-encoded as literals without indexing, so the server's decoder never
//! depends on a table the client built. Server-to-client bytes are copied
//! untouched. An authority `h2` accepts is left as it is.
//!
//! [`incoming_with`] first passes each accepted stream through the caller's
//! upgrade (fd passing, TLS), in that connection's own task and bounded by a
//! handshake timeout; what the upgrade learnt (the fds the peer sent, its
//! identity) reaches every handler as [`ConnInfo`] in the request's
//! extensions.
//!
//! Every socket the daemons serve goes through it: the kubelet device
//! plugins' (`sriov-deviceplugin`) and the forwarder's NSM socket with its
//! health service (`sriov-nsm`'s `listen_unix`).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(router: tonic::transport::server::Router) {
//! let listener = tokio::net::UnixListener::bind("/run/x.sock").unwrap();
//! let incoming = sriov_authority::incoming(listener, std::future::pending());
//! router.serve_with_incoming(incoming).await.unwrap();
//! # }
//! ```

// This crate reads client input: a panic here is a denial of service of a
// node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[doc(hidden)]
pub mod fuzzing;
mod incoming;
mod relay;
#[cfg(feature = "testing")]
pub mod testing;

pub use incoming::{
    ConnInfo, Connection, DEFAULT_HANDSHAKE_TIMEOUT, Incoming, incoming, incoming_with,
    incoming_with_timeout,
};
pub use relay::{RelayError, relay};
