//! Restart and upgrade without a refused connect (`weiche --upgrade`, `proxy.upgrade_socket`).
//! The running process listens on a unix socket (mode 0600, and only a peer of its own uid is
//! served). A new process started with `--upgrade` connects, receives the listening sockets
//! (proxy, admin, http) as file descriptors (SCM_RIGHTS), starts accepting on them, and says
//! "ready". Only then does the old process stop accepting and stop as on SIGTERM: its sessions
//! finish their running command, idle ones are closed between commands, so clients reconnect
//! cleanly, to the new process. The sockets never close in between, so connects queued in them
//! are taken by the new process, and none is refused.

use crate::server::Listeners;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

const HELLO: &str = "weiche-upgrade-1";
/// How long the old process waits for the new one to say it is ready.
const READY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("--upgrade needs proxy.upgrade_socket in the configuration")]
    NoSocket,
    #[error("cannot reach the running Weiche at {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("the running Weiche did not hand its sockets over: {0}")]
    Handover(String),
}

/// The new process's line to the old one, kept until it is accepting (`ready`).
static HANDOVER: Mutex<Option<UnixStream>> = Mutex::new(None);

/// Send `data` with `fds` attached.
fn send_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call,
    // and the control buffer is CMSG_SPACE bytes, room for one header and `fds`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the descriptors"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receive up to `buf.len()` bytes and at most `max` descriptors (close-on-exec).
fn recv_fds(sock: &UnixStream, buf: &mut [u8], max: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let bytes = max * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: as in send_fds; the kernel writes at most msg_controllen bytes of control data,
    // and each header CMSG_NXTHDR yields lies inside it.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        n as usize
    };
    Ok((n, fds))
}

/// The peer's uid is ours.
fn same_user(sock: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing, len is cred's size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: getuid cannot fail.
    r == 0 && cred.uid == unsafe { libc::getuid() }
}

/// The new process: take the listening sockets from the running one.
pub fn take_over(path: Option<&Path>) -> Result<Listeners, UpgradeError> {
    let path = path.ok_or(UpgradeError::NoSocket)?;
    let bad = |e: String| UpgradeError::Handover(e);
    let sock = UnixStream::connect(path).map_err(|source| UpgradeError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    (&sock)
        .write_all(format!("{HELLO}\n").as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let mut buf = [0u8; 256];
    let (n, mut fds) = recv_fds(&sock, &mut buf, 3).map_err(|e| bad(e.to_string()))?;
    let header = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    let mut words = header.split(' ');
    if words.next() != Some(HELLO) {
        return Err(bad(format!("unexpected answer '{header}'")));
    }
    let names: Vec<&str> = words.collect();
    if names.len() != fds.len() || names.first() != Some(&"proxy") {
        return Err(bad(format!("{} descriptors for '{header}'", fds.len())));
    }
    let mut take = |name: &str| -> Option<std::net::TcpListener> {
        let i = names.iter().position(|n| *n == name)?;
        let l = std::net::TcpListener::from(fds.remove(i));
        let _ = l.set_nonblocking(true);
        Some(l)
    };
    // Taken in reverse order of position so the indices stay right.
    let http = take("http");
    let admin = take("admin");
    let proxy = take("proxy").ok_or_else(|| bad("no proxy socket".into()))?;
    *HANDOVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sock);
    Ok(Listeners { proxy, admin, http })
}

/// The new process accepts now: the old one may stop.
pub fn ready() {
    let sock = HANDOVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut s) = sock {
        if let Err(e) = s.write_all(b"ready\n") {
            tracing::warn!("upgrade: could not tell the old process it may stop: {e}");
        } else {
            tracing::info!("upgrade: took the sockets over; the old process finishes its sessions");
        }
    }
}

/// The running process: serve handovers on `path` until one completes; then `done` fires.
/// `fds`: (name, descriptor) of the listening sockets, proxy first.
pub fn serve(
    path: &Path,
    fds: Vec<(&'static str, RawFd)>,
) -> io::Result<tokio::sync::oneshot::Receiver<()>> {
    use std::os::unix::fs::PermissionsExt;
    // A socket file left by an earlier process (or by the one we took over from) is stale.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("weiche-upgrade".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(sock) = conn else { continue };
                if !same_user(&sock) {
                    tracing::warn!("upgrade: refused a handover to another user");
                    continue;
                }
                match hand_over(&sock, &fds) {
                    Ok(()) => {
                        let _ = tx.send(());
                        return;
                    }
                    Err(e) => tracing::warn!("upgrade: handover failed ({e}); still serving"),
                }
            }
            tracing::warn!("upgrade: {} stopped accepting", path.display());
        })?;
    Ok(rx)
}

fn hand_over(sock: &UnixStream, fds: &[(&'static str, RawFd)]) -> io::Result<()> {
    sock.set_read_timeout(Some(READY_WAIT))?;
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut hello = String::new();
    reader.by_ref().take(64).read_line(&mut hello)?;
    if hello.trim() != HELLO {
        return Err(io::Error::other(format!(
            "unexpected greeting '{}'",
            hello.trim()
        )));
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| *n).collect();
    let raw: Vec<RawFd> = fds.iter().map(|(_, f)| *f).collect();
    send_fds(
        sock,
        format!("{HELLO} {}\n", names.join(" ")).as_bytes(),
        &raw,
    )?;
    tracing::info!("upgrade: sockets handed to a new process; waiting for it to accept");
    let mut ready = String::new();
    reader.take(64).read_line(&mut ready)?;
    if ready.trim() != "ready" {
        return Err(io::Error::other("the new process did not become ready"));
    }
    Ok(())
}
