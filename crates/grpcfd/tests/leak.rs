#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No descriptor outlives its connection. Alone in its binary: it counts
//! this process's open fds, which other tests running beside it would move.

use sriov_grpcfd::{FdStream, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tests here count fds: one at a time, each runtime (whose epoll and
/// wake-up fds would move the count) made and dropped while holding this.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone(test: impl std::future::Future<Output = ()>) {
    let _alone = ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_thousand_connections_passing_fds_leave_no_fd_open() {
    alone(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        // Warm up whatever the runtime opens once.
        let _ = connect(&path).await.unwrap();
        let _ = listener.accept().await.unwrap();
        let before = open_fds();
        for _ in 0..1000 {
            let ((mut client, sender), accepted) =
                tokio::join!(async { connect(&path).await.unwrap() }, listener.accept());
            let mut server = FdStream::new(accepted.unwrap().0);
            sender.send_file(&file).unwrap();
            sender
                .send_file(std::path::Path::new("/proc/self/ns/net"))
                .unwrap();
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            let table = server.table();
            assert_eq!(table.len(), 2);
            drop(client);
            drop(server);
            assert!(table.is_empty());
        }
        assert_eq!(open_fds(), before);
    });
}

#[test]
fn a_peer_over_the_limit_is_cut_and_its_fds_closed() {
    alone(async {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut client = FdStream::new(a);
        let mut server = FdStream::new(b).with_limit(2);
        let dir = tempfile::tempdir().unwrap();
        let sender = client.sender();
        let before = open_fds();
        for n in 0..3 {
            let p = dir.path().join(n.to_string());
            std::fs::write(&p, "x").unwrap();
            sender.send_file(&p).unwrap();
        }
        client.write_all(b"three").await.unwrap();
        let mut got = [0u8; 5];
        let err = server.read_exact(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("more than 2"), "{err}");
        assert!(server.table().is_empty());
        // The three sent are closed on both sides; the streams themselves are still open.
        assert_eq!(sender.queued(), 0);
        assert_eq!(open_fds(), before);
    });
}
