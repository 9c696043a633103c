//! Network namespaces: parsing the URLs NSM hands us, opening them safely, and doing work inside
//! them on a dedicated OS thread.
//!
//! A namespace is only ever entered by a fresh `std::thread` that exits when the work is done, so
//! no thread of a shared pool (tokio workers, `spawn_blocking`) ever changes namespace. The usual
//! work is creating a netlink socket: a socket stays bound to the namespace it was created in, so
//! the thread hands it back and async code drives it from any thread.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};

/// Longest URL we look at; longer input is refused before any parsing.
const MAX_URL_LEN: usize = 4096;

/// Where a network namespace lives, as NSM passes it in a mechanism's parameters.
///
/// Accepted forms:
/// - `file:///proc/<pid>/ns/net`, `file:///var/run/netns/<name>`, or any other absolute `file://`
///   path; whatever it names must turn out to be an nsfs file of a *network* namespace when
///   opened.
/// - `inode://<dev>/<ino>`: the `st_dev`/`st_ino` pair of the namespace's nsfs inode, resolved by
///   scanning `/proc/*/ns/net` (and `/proc/*/task/*/ns/net`).
///
/// Refused: other schemes, a host part (`file://host/...`), relative paths, `.`/`..`/empty path
/// segments, query or fragment parts, percent-escapes (never decoded, so never smuggled), control
/// characters and whitespace, and anything over 4096 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetnsUrl {
    /// A path to an nsfs file (`file://` form).
    File(PathBuf),
    /// An nsfs inode to look for (`inode://` form).
    Inode {
        /// `st_dev` of the nsfs inode.
        dev: u64,
        /// `st_ino` of the nsfs inode.
        ino: u64,
    },
}

impl NetnsUrl {
    /// Parses and validates a URL; see the type docs for the accepted forms.
    pub fn parse(url: &str) -> Result<Self> {
        let refuse = |reason: &str| Error::InvalidNetnsUrl {
            url: url.chars().take(256).collect(),
            reason: reason.to_owned(),
        };
        if url.len() > MAX_URL_LEN {
            return Err(refuse("longer than 4096 bytes"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(refuse("contains control characters or whitespace"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| refuse("not a URL (expected file:// or inode://)"))?;
        if scheme.eq_ignore_ascii_case("file") {
            Self::parse_file(rest).map_err(refuse)
        } else if scheme.eq_ignore_ascii_case("inode") {
            Self::parse_inode(rest).map_err(refuse)
        } else {
            Err(refuse("unsupported scheme (expected file or inode)"))
        }
    }

    fn parse_file(rest: &str) -> Result<Self, &'static str> {
        if !rest.starts_with('/') {
            return Err("file URL must have an empty host and an absolute path");
        }
        if rest.contains(['?', '#']) {
            return Err("query and fragment parts are not allowed");
        }
        if rest.contains('%') {
            return Err("percent-escapes are not accepted");
        }
        if rest.len() > 1 && rest.ends_with('/') {
            return Err("path must name a file, not a directory");
        }
        for segment in rest.split('/').skip(1) {
            match segment {
                "" => return Err("empty path segment"),
                "." | ".." => return Err("'.' and '..' path segments are not allowed"),
                _ => {}
            }
        }
        if rest == "/" {
            return Err("path must name a file, not a directory");
        }
        Ok(NetnsUrl::File(PathBuf::from(rest)))
    }

    fn parse_inode(rest: &str) -> Result<Self, &'static str> {
        let (dev, ino) = rest.split_once('/').ok_or("expected inode://<dev>/<ino>")?;
        let number = |s: &str| -> Result<u64, &'static str> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err("dev and ino must be decimal numbers");
            }
            s.parse::<u64>()
                .map_err(|_| "dev or ino does not fit in 64 bits")
        };
        Ok(NetnsUrl::Inode {
            dev: number(dev)?,
            ino: number(ino)?,
        })
    }
}

impl FromStr for NetnsUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        NetnsUrl::parse(s)
    }
}

impl TryFrom<String> for NetnsUrl {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        NetnsUrl::parse(&s)
    }
}

impl From<NetnsUrl> for String {
    fn from(url: NetnsUrl) -> String {
        url.to_string()
    }
}

impl fmt::Display for NetnsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsUrl::File(path) => write!(f, "file://{}", path.display()),
            NetnsUrl::Inode { dev, ino } => write!(f, "inode://{dev}/{ino}"),
        }
    }
}

/// The identity of a network namespace: the `st_dev`/`st_ino` of its nsfs inode. Two handles
/// name the same namespace exactly when their ids are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NetnsId {
    /// `st_dev` of the nsfs inode.
    pub dev: u64,
    /// `st_ino` of the nsfs inode.
    pub ino: u64,
}

impl NetnsId {
    /// The `inode://` URL for this namespace.
    pub fn url(self) -> NetnsUrl {
        NetnsUrl::Inode {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inode://{}/{}", self.dev, self.ino)
    }
}

/// The namespaces no client may name as its own, recorded once at start.
///
/// The rule: a client's interface goes into the client's namespace, never into the forwarder's
/// own (where the VFs live and the forwarder's own links are) nor the host's (PID 1's, which
/// is also the forwarder's when it runs with `hostNetwork`). A request naming one of them is
/// refused before anything changes; both are identified by nsfs inode, so no other URL form
/// (`inode://`, a bind mount, another PID in the same namespace) gets around it.
#[derive(Clone, Debug, Default)]
pub struct NetnsGuard {
    forbidden: Vec<(NetnsId, &'static str)>,
}

/// The rule for the forwarder's own namespace.
pub const RULE_OWN_NETNS: &str = "it is the forwarder's own network namespace";
/// The rule for the host's namespace.
pub const RULE_HOST_NETNS: &str = "it is the host's network namespace (PID 1's)";

impl NetnsGuard {
    /// A guard that refuses nothing (tests that move links between their own namespaces).
    pub fn none() -> Self {
        Self::default()
    }

    /// Refuses `id` with `rule`.
    pub fn forbid(mut self, id: NetnsId, rule: &'static str) -> Self {
        if !self.forbidden.iter().any(|(f, _)| *f == id) {
            self.forbidden.push((id, rule));
        }
        self
    }

    /// The guard for a forwarder whose VFs live in `home`: refuses `home`, the calling
    /// thread's namespace and PID 1's (when it can be opened: without privilege it cannot,
    /// and then no link can be moved anywhere either).
    pub fn for_home(home: &Netns) -> Self {
        let mut guard = Self::none().forbid(home.id(), RULE_OWN_NETNS);
        if let Ok(own) = Netns::current() {
            guard = guard.forbid(own.id(), RULE_OWN_NETNS);
        }
        if let Ok(host) = Netns::open_path(Path::new("/proc/1/ns/net")) {
            guard = guard.forbid(host.id(), RULE_HOST_NETNS);
        }
        guard
    }

    /// The namespaces refused, with their rules.
    pub fn forbidden(&self) -> &[(NetnsId, &'static str)] {
        &self.forbidden
    }

    /// Refuses `ns` (opened from `named`) when it is a forbidden namespace.
    pub fn check(&self, ns: &Netns, named: &NetnsUrl) -> Result<()> {
        match self.forbidden.iter().find(|(id, _)| *id == ns.id()) {
            Some((_, rule)) => Err(Error::ForbiddenNetns {
                netns: named.to_string(),
                rule,
            }),
            None => Ok(()),
        }
    }
}

/// Opens a client's namespace on a blocking thread (the open walks the filesystem, and an
/// `inode://` URL scans `/proc`) and checks it against `guard`.
pub async fn open_client(url: &NetnsUrl, guard: &NetnsGuard) -> Result<Netns> {
    let owned = url.clone();
    let ns = tokio::task::spawn_blocking(move || Netns::open(&owned))
        .await
        .map_err(|e| Error::Thread {
            netns: url.to_string(),
            reason: e.to_string(),
        })??;
    guard.check(&ns, url)?;
    Ok(ns)
}

/// An open network namespace. Holding it keeps the namespace alive (the kernel destroys a
/// namespace when its last task, bind mount and open file are gone).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    id: NetnsId,
    path: PathBuf,
    pub(crate) shared: crate::socket::SharedRequest,
}

impl Netns {
    /// Opens the namespace a URL names.
    pub fn open(url: &NetnsUrl) -> Result<Self> {
        match url {
            NetnsUrl::File(path) => Self::open_path(path),
            NetnsUrl::Inode { dev, ino } => Self::find_inode(NetnsId {
                dev: *dev,
                ino: *ino,
            }),
        }
    }

    /// The namespace of the calling thread (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<Self> {
        // Our own path, not a client's: `thread-self` is a symlink, so it
        // cannot go through the no-symlink walk of `open_path`.
        let path = Path::new("/proc/thread-self/ns/net");
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| Error::NetnsOpen {
                path: path.to_owned(),
                source,
            })?;
        Self::from_fd(OwnedFd::from(file), path)
    }

    /// Opens a path that must be an nsfs file of a network namespace, without following a
    /// symlink anywhere on it.
    ///
    /// The path is walked one component at a time with `openat(O_PATH|O_NOFOLLOW)`, so a
    /// symlink planted anywhere (including inside a container's root reached through
    /// `/proc/<pid>/root`) is refused rather than followed; the one exception is the kernel's
    /// own `net` link inside a procfs `ns` directory (`/proc/<pid>/ns/net`), which is what
    /// NSM clients name. `/var/run` is read as `/run` when it is the usual symlink to it. The
    /// file found is checked with `fstatfs` (NSFS_MAGIC) before it is opened for reading, so a
    /// FIFO or a device node behind a hostile path is never opened, and its `/proc/self/fd`
    /// link (`net:[<ino>]`) must name a network namespace. From then on the fd is used, never
    /// the path again.
    ///
    /// Blocking (it walks the filesystem): call it from a blocking thread in async code.
    pub fn open_path(path: &Path) -> Result<Self> {
        let open_err = |source: io::Error| Error::NetnsOpen {
            path: path.to_owned(),
            source,
        };
        let walk = match walk_nofollow(path) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => match var_run_as_run(path) {
                Some(alias) => walk_nofollow(&alias),
                None => Err(e),
            },
            other => other,
        };
        let fd = walk.map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::NotANetns {
                    path: path.to_owned(),
                    reason: "a component of the path is a symlink, which is not followed".into(),
                }
            } else {
                open_err(e)
            }
        })?;
        Self::from_fd(fd, path)
    }

    /// A namespace a peer sent us by fd (SCM_RIGHTS) and named `named`: the same checks as a
    /// path (an nsfs file of a network namespace, `O_PATH` or open), and when `named` is an
    /// `inode://` URL the fd must be that very inode. Check it against the [`NetnsGuard`] before
    /// use, as for any client namespace.
    ///
    /// Blocking (the type check may enter the namespace on a throwaway thread): call it from a
    /// blocking thread in async code.
    pub fn from_received(fd: OwnedFd, named: &NetnsUrl) -> Result<Self> {
        let label = PathBuf::from(format!("{named} (received by fd)"));
        let ns = Self::from_fd(fd, &label)?;
        match named {
            NetnsUrl::Inode { dev, ino }
                if ns.id
                    != (NetnsId {
                        dev: *dev,
                        ino: *ino,
                    }) =>
            {
                Err(Error::NotANetns {
                    path: label,
                    reason: format!("the fd received is {}, not the namespace named", ns.id),
                })
            }
            _ => Ok(ns),
        }
    }

    /// Checks an fd (an `O_PATH` one or an open one) and makes it a [`Netns`].
    fn from_fd(fd: OwnedFd, path: &Path) -> Result<Self> {
        let open_err = |source: io::Error| Error::NetnsOpen {
            path: path.to_owned(),
            source,
        };
        let not_netns = |reason: String| Error::NotANetns {
            path: path.to_owned(),
            reason,
        };
        let fs = fstatfs(&fd).map_err(|e| open_err(e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(not_netns(format!(
                "filesystem magic {:#x} is not nsfs",
                fs.filesystem_type().0
            )));
        }
        // setns(2) refuses O_PATH fds: reopen the very inode we checked through our own fd's
        // link, which cannot be redirected by anyone else.
        let fd = reopen_readable(&fd).map_err(open_err)?;
        // Through /proc/<pid>/ns the fd link reads `<type>:[<ino>]`; through a bind mount
        // (/var/run/netns) it reads the mount path, and only entering it tells the type.
        let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(open_err)?;
        let link = link.to_string_lossy();
        if !link.starts_with("net:[") {
            if link.contains(":[") && !link.starts_with('/') {
                return Err(not_netns(format!("it is {link}")));
            }
            if probe_is_not_netns(&fd) {
                return Err(not_netns(
                    "setns(CLONE_NEWNET) refuses it: another kind of namespace".into(),
                ));
            }
        }
        let meta = nix::sys::stat::fstat(&fd).map_err(|e| open_err(e.into()))?;
        Ok(Netns {
            fd,
            id: NetnsId {
                dev: meta.st_dev,
                ino: meta.st_ino,
            },
            path: path.to_owned(),
            shared: Default::default(),
        })
    }

    /// Finds a task whose network namespace has this id and opens it through that task.
    ///
    /// Thread-group leaders are tried first, then every task, so namespaces held only by a
    /// thread (as in tests) are found too. The opened file is re-checked against the id, so a
    /// task exiting between the scan and the open cannot hand us a different namespace.
    pub fn find_inode(id: NetnsId) -> Result<Self> {
        let pids: Vec<String> = fs::read_dir("/proc")
            .map_err(|source| Error::NetnsOpen {
                path: PathBuf::from("/proc"),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let matches = |path: &Path| {
            fs::metadata(path)
                .map(|m| m.dev() == id.dev && m.ino() == id.ino)
                .unwrap_or(false)
        };
        let leaders = pids
            .iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
        let tasks = pids.iter().flat_map(|pid| {
            fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("ns/net"))
        });
        for path in leaders.chain(tasks) {
            if matches(&path)
                && let Ok(ns) = Self::open_path(&path)
                && ns.id == id
            {
                return Ok(ns);
            }
        }
        Err(Error::NetnsInodeNotFound {
            dev: id.dev,
            ino: id.ino,
        })
    }

    /// The namespace's identity.
    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The path it was opened through.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and waits for it.
    ///
    /// The thread ends with `f`, so its namespace never leaks into other work. Keep `f` short
    /// when calling from async code: the caller's thread blocks until it returns. A panic in `f`
    /// is resumed on the caller.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let netns = self.to_string();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
                        netns: netns.clone(),
                        source,
                    })?;
                    Ok(f())
                })
                .map_err(|e| Error::Thread {
                    netns: netns.clone(),
                    reason: e.to_string(),
                })?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A blocking `NETLINK_ROUTE` socket created inside this namespace; it stays bound there
    /// whichever thread uses it later.
    pub fn route_socket(&self) -> Result<Socket> {
        self.run(|| Socket::new(NETLINK_ROUTE))?
            .map_err(|source| Error::Socket {
                netns: self.to_string(),
                source,
            })
    }
}

/// Walks an absolute path from `/` one component at a time without following symlinks
/// (`O_PATH|O_NOFOLLOW`), except the kernel's namespace links in a procfs `ns` directory.
fn walk_nofollow(path: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    use std::path::Component;

    let nofollow = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd: OwnedFd = openat(
        nix::fcntl::AT_FDCWD,
        "/",
        nofollow | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut parent_is_proc_ns = false;
    let mut parts = path.components().peekable();
    while let Some(c) = parts.next() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            // NetnsUrl refuses these already; refuse them here too for direct callers.
            _ => return Err(io::Error::from_raw_os_error(nix::libc::EINVAL)),
        };
        let last = parts.peek().is_none();
        let flags = if last && parent_is_proc_ns {
            // The kernel's own magic link to a namespace: following it is the point.
            OFlag::O_PATH | OFlag::O_CLOEXEC
        } else {
            nofollow
        };
        let next = openat(&fd, name, flags, Mode::empty()).map_err(io::Error::from)?;
        // O_PATH|O_NOFOLLOW on a symlink opens the link itself: refuse it.
        let kind = SFlag::from_bits_truncate(
            fstat(&next).map_err(io::Error::from)?.st_mode & nix::libc::S_IFMT,
        );
        if kind == SFlag::S_IFLNK {
            return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
        }
        if !last && kind != SFlag::S_IFDIR {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOTDIR));
        }
        parent_is_proc_ns =
            name == "ns" && fstatfs(&next).is_ok_and(|f| f.filesystem_type() == PROC_SUPER_MAGIC);
        fd = next;
        if last {
            return Ok(fd);
        }
    }
    Err(io::Error::from_raw_os_error(nix::libc::EISDIR))
}

/// `/var/run/...` as `/run/...` when `/var/run` is the usual symlink to `/run` (systemd
/// distributions), so `file:///var/run/netns/<name>` works without following any link.
fn var_run_as_run(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix("/var/run").ok()?;
    let target = fs::read_link("/var/run").ok()?;
    (target == Path::new("/run") || target == Path::new("../run"))
        .then(|| Path::new("/run").join(rest))
}

/// Opens the inode an fd refers to for reading, through `/proc/self/fd/<fd>`.
fn reopen_readable(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(OwnedFd::from(file))
}

/// Enters `fd` as a network namespace on a throwaway thread. Only EINVAL (wrong namespace type)
/// counts as "not a netns"; other errors (no privilege) leave the verdict to the real use.
fn probe_is_not_netns(fd: &OwnedFd) -> bool {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-probe".into())
            .spawn_scoped(scope, || setns(fd, CloneFlags::CLONE_NEWNET))
            .ok()
            .and_then(|t| t.join().ok())
            .is_some_and(|r| r == Err(nix::errno::Errno::EINVAL))
    })
}

/// Two handles are equal when they name the same namespace, whatever they were opened through.
impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Netns {}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_urls_parse_to_their_path() {
        for (url, path) in [
            ("file:///proc/42/ns/net", "/proc/42/ns/net"),
            ("file:///var/run/netns/blue", "/var/run/netns/blue"),
            ("FILE:///run/netns/x-1_2", "/run/netns/x-1_2"),
        ] {
            assert_eq!(
                NetnsUrl::parse(url).unwrap(),
                NetnsUrl::File(PathBuf::from(path))
            );
        }
    }

    #[test]
    fn inode_urls_parse_to_dev_and_ino() {
        assert_eq!(
            NetnsUrl::parse("inode://4/4026531992").unwrap(),
            NetnsUrl::Inode {
                dev: 4,
                ino: 4026531992
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for url in ["file:///proc/1/ns/net", "inode://4/4026531992"] {
            assert_eq!(NetnsUrl::parse(url).unwrap().to_string(), url);
        }
    }

    #[test]
    fn hostile_and_foreign_urls_are_refused() {
        let long = format!("file:///{}", "a/".repeat(3000));
        let hostile = [
            "",
            "/proc/1/ns/net",
            "http://example.com/ns",
            "unix:///run/x",
            "file://",
            "file:///",
            "file://host/proc/1/ns/net",
            "file://proc/1/ns/net",
            "file:///proc/1/ns/../../etc/passwd",
            "file:///proc/./1/ns/net",
            "file:///proc//1/ns/net",
            "file:///var/run/netns/",
            "file:///proc/1/ns/net?x=1",
            "file:///proc/1/ns/net#frag",
            "file:///proc/1/ns/%2e%2e/net",
            "file:///proc/1/ns/net\0",
            "file:///proc/1/ns/n et",
            "file:///proc/1/ns/net\n",
            "inode://",
            "inode://4",
            "inode://4/",
            "inode:///4026531992",
            "inode://4/4026531992/x",
            "inode://-4/4026531992",
            "inode://+4/4026531992",
            "inode://0x4/4026531992",
            "inode://4/99999999999999999999999",
            "inode://4/ 1",
            &long,
        ];
        for url in hostile {
            let err = NetnsUrl::parse(url).unwrap_err();
            assert!(
                matches!(err, Error::InvalidNetnsUrl { .. }),
                "{url:?} gave {err}"
            );
        }
    }

    #[test]
    fn opening_a_regular_file_is_refused_as_not_nsfs() {
        let status = PathBuf::from(format!("/proc/{}/status", std::process::id()));
        let err = Netns::open_path(&status).unwrap_err();
        assert!(matches!(err, Error::NotANetns { .. }), "{err}");
    }

    #[test]
    fn opening_a_directory_or_device_is_refused_before_open() {
        for path in ["/proc/self", "/dev/null"] {
            let err = Netns::open_path(Path::new(path)).unwrap_err();
            assert!(matches!(err, Error::NotANetns { .. }), "{path}: {err}");
        }
    }

    #[test]
    fn opening_another_kind_of_namespace_is_refused() {
        let uts = PathBuf::from(format!("/proc/{}/ns/uts", std::process::id()));
        let err = Netns::open_path(&uts).unwrap_err();
        assert!(matches!(err, Error::NotANetns { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_open_error_naming_the_path() {
        let err = Netns::open_path(Path::new("/var/run/netns/does-not-exist-4711")).unwrap_err();
        assert!(err.to_string().contains("does-not-exist-4711"), "{err}");
    }

    #[test]
    fn current_namespace_is_found_again_by_inode() {
        let here = Netns::current().unwrap();
        let found = Netns::open(&here.id().url()).unwrap();
        assert_eq!(found.id(), here.id());
    }

    #[test]
    fn a_proc_pid_namespace_link_opens_as_the_same_namespace() {
        let here = Netns::current().unwrap();
        let path = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        assert_eq!(Netns::open_path(&path).unwrap().id(), here.id());
    }

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = format!("/proc/{}/ns/net", std::process::id());
        let link = tmp.path().join("ns-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dir_link = tmp.path().join("proc-link");
        std::os::unix::fs::symlink(format!("/proc/{}", std::process::id()), &dir_link).unwrap();
        for path in [
            link,
            dir_link.join("ns/net"),
            PathBuf::from("/proc/self/ns/net"),
        ] {
            let err = Netns::open_path(&path).unwrap_err();
            assert!(
                matches!(&err, Error::NotANetns { reason, .. } if reason.contains("symlink")),
                "{}: {err}",
                path.display()
            );
        }
    }

    #[test]
    fn the_guard_refuses_home_and_host_by_inode_whatever_the_url() {
        let here = Netns::current().unwrap();
        let guard = NetnsGuard::for_home(&here);
        for url in [
            here.id().url(),
            NetnsUrl::File(PathBuf::from(format!(
                "/proc/{}/ns/net",
                std::process::id()
            ))),
        ] {
            let ns = Netns::open(&url).unwrap();
            let err = guard.check(&ns, &url).unwrap_err();
            assert!(
                matches!(&err, Error::ForbiddenNetns { rule, .. } if *rule == RULE_OWN_NETNS || *rule == RULE_HOST_NETNS),
                "{url}: {err}"
            );
        }
        assert!(NetnsGuard::none().check(&here, &here.id().url()).is_ok());
    }

    #[test]
    fn a_received_fd_must_be_the_network_namespace_it_is_named_as() {
        let open = |p: &str| OwnedFd::from(fs::File::open(p).unwrap());
        let here = Netns::current().unwrap();
        let named = here.id().url();
        let ns = Netns::from_received(open("/proc/thread-self/ns/net"), &named).unwrap();
        assert_eq!(ns, here);
        let other = NetnsUrl::Inode {
            dev: here.id().dev,
            ino: here.id().ino + 1,
        };
        let err = Netns::from_received(open("/proc/thread-self/ns/net"), &other).unwrap_err();
        assert!(
            matches!(&err, Error::NotANetns { reason, .. } if reason.contains("not the namespace named")),
            "{err}"
        );
        for wrong in ["/proc/thread-self/ns/uts", "/dev/null"] {
            let err = Netns::from_received(open(wrong), &named).unwrap_err();
            assert!(matches!(err, Error::NotANetns { .. }), "{wrong}: {err}");
        }
    }

    #[test]
    fn an_unknown_inode_is_not_found() {
        let err = Netns::open(&NetnsUrl::Inode { dev: 1, ino: 1 }).unwrap_err();
        assert!(matches!(err, Error::NetnsInodeNotFound { dev: 1, ino: 1 }));
    }
}
