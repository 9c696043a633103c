//! What can go wrong with the uevent socket.

/// A uevent socket error; each names the step and prints its cause once.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    /// `socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)` or registering it with the runtime failed.
    #[error("cannot open a kernel uevent socket: {cause}")]
    Socket {
        /// Why.
        cause: std::io::Error,
    },
    /// Binding to the kernel's uevent group failed.
    #[error("cannot join the kernel uevent group: {cause}")]
    Bind {
        /// Why.
        cause: std::io::Error,
    },
    /// Receiving failed (other than lost events, which are a [`Notice::Lost`](crate::Notice)).
    #[error("cannot receive kernel uevents: {cause}")]
    Recv {
        /// Why.
        cause: std::io::Error,
    },
}
