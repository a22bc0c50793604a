//! systemd's readiness protocol (sd_notify): one datagram to the socket
//! named by `$NOTIFY_SOCKET`, for a `gyrofs mount -f` run by a
//! `Type=notify` service. Without the variable nothing is sent.

use std::os::unix::net::UnixDatagram;

/// The variable systemd sets for a `Type=notify` service.
pub const SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Send `state` (`READY=1`, `STOPPING=1`, `STATUS=...`) to systemd, if it
/// is listening. Failures are logged, never fatal: the mount works without.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    if let Err(e) = send(&path, state) {
        log::warn!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // `@NAME`: a socket in the abstract namespace (Linux).
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("notify");
        let listener = UnixDatagram::bind(&at).unwrap();
        send(at.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("gyrofs-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
