//! Connections of the driver's NSM client to the forwarder: mTLS and the
//! nsmgr's token on every call in secure mode (`crate::spire`), fds for
//! namespaces sent with a Request.

use std::path::Path;
use std::time::Duration;

use sriov_api::nsm::networkservice::network_service_client::NetworkServiceClient;
use sriov_nsm::NsmUrl;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::spire::Tokens;

/// The driver's NetworkService client: in secure mode over mTLS, every
/// call carrying the NSM manager's token (`crate::spire`).
pub(crate) type Nsc = NetworkServiceClient<InterceptedService<Channel, Tokens>>;

pub(crate) async fn connect(socket: &Path) -> Result<Nsc, String> {
    connect_with_fds(socket).await.map(|(c, _)| c)
}

/// [`connect`], and the connection's fd sender: a client namespace sent on
/// it before a Request is named by its `inode://` URL, as the NSM manager
/// sends it (grpcfd).
pub(crate) async fn connect_with_fds(
    socket: &Path,
) -> Result<(Nsc, sriov_nsm::ChannelFds), String> {
    let url = NsmUrl::parse(&format!("unix://{}", socket.display())).map_err(|e| e.to_string())?;
    let dialed = sriov_nsm::dial_secure(&url, Duration::from_secs(2), &crate::spire::security())
        .await
        .map_err(|e| e.to_string())?;
    let client =
        NetworkServiceClient::with_interceptor(dialed.channel, Tokens::for_server(dialed.server));
    Ok((client, dialed.fds))
}

/// Queues the namespace at `path` on the connection and returns the
/// `inode://` URL naming it, for the next Request on that connection.
pub(crate) fn send_netns(fds: &sriov_nsm::ChannelFds, path: &Path) -> Result<String, String> {
    let sender = fds
        .current()
        .ok_or("the forwarder connection is gone; nothing to send the namespace on")?;
    let (dev, ino) = sender
        .send_file(path)
        .map_err(|e| format!("sending {} by fd: {e}", path.display()))?;
    Ok(sriov_grpcfd::inode_url(dev, ino))
}

/// A client of a forwarder that is (re)starting: retries for up to 30 s
/// until it listens.
pub(crate) async fn reconnect(socket: &Path) -> Result<Nsc, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match connect(socket).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("the forwarder never listened: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
