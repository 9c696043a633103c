#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Descriptors over a real unix socket pair.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sriov_grpcfd::{FdStream, inode_url, parse_inode_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn pair() -> (FdStream, FdStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (FdStream::new(a), FdStream::new(b))
}

fn stat(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// Writes `msg` from `from` and reads it all on `to`.
async fn carry(from: &mut FdStream, to: &mut FdStream, msg: &[u8]) {
    from.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
}

#[tokio::test]
async fn files_sent_arrive_in_the_table_under_their_dev_and_ino() {
    let (mut client, mut server) = pair();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let sender = client.sender();
    let ka = sender.send_file(&a).unwrap();
    let kb = sender
        .send(OwnedFd::from(std::fs::File::open(&b).unwrap()))
        .unwrap();
    assert_eq!(ka, stat(&a));
    assert_eq!(kb, stat(&b));
    assert_eq!(sender.queued(), 2);
    carry(&mut client, &mut server, b"hello").await;
    assert_eq!(sender.queued(), 0);
    let table = server.table();
    assert_eq!(table.len(), 2);
    let fd = table.get(ka.0, ka.1).unwrap().expect("a was sent");
    let m = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!((m.dev(), m.ino()), ka);
    assert!(table.get(ka.0, ka.1 + 1_000_000).unwrap().is_none());
    // The same file again is not a second entry.
    sender.send_file(&a).unwrap();
    carry(&mut client, &mut server, b"again").await;
    assert_eq!(table.len(), 2);
    // The duplicate the caller took survives the connection; the table does not.
    drop(server);
    assert!(table.is_empty());
    assert!(table.get(ka.0, ka.1).unwrap().is_none());
    assert!(std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok());
}

#[tokio::test]
async fn a_network_namespace_sent_by_fd_resolves_to_that_namespace() {
    let (mut client, mut server) = pair();
    let ns = Path::new("/proc/self/ns/net");
    let (dev, ino) = client.sender().send_file(ns).unwrap();
    assert_eq!((dev, ino), stat(ns));
    let url = inode_url(dev, ino);
    carry(&mut client, &mut server, url.as_bytes()).await;
    let (dev, ino) = parse_inode_url(&url).unwrap();
    let fd = server
        .table()
        .get(dev, ino)
        .unwrap()
        .expect("namespace was sent");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert_eq!(link.to_string_lossy(), format!("net:[{ino}]"));
}

#[tokio::test]
async fn a_socket_sent_by_path_can_be_dialled_through_the_received_fd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (mut client, mut server) = pair();
    let (dev, ino) = client.sender().send_file(&path).unwrap();
    carry(&mut client, &mut server, b"register").await;
    let fd = server
        .table()
        .get(dev, ino)
        .unwrap()
        .expect("socket was sent");
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let (dialled, accepted) = tokio::join!(UnixStream::connect(&via), listener.accept());
    dialled.unwrap();
    accepted.unwrap();
}

#[tokio::test]
async fn a_sender_of_a_dropped_connection_refuses_to_queue() {
    let (client, _server) = pair();
    let sender = client.sender();
    drop(client);
    assert!(sender.is_closed());
    let err = sender.send_file(Path::new("/dev/null")).unwrap_err();
    assert!(matches!(err, sriov_grpcfd::SendError::Closed), "{err}");
}
