//! systemd's notify protocol, for `Type=notify` units: readiness, stopping, a status line and
//! the watchdog.
//!
//! Each message is one datagram of `KEY=VALUE` lines sent to the socket named by `NOTIFY_SOCKET`
//! (a path, or an abstract socket written `@name`). Without `NOTIFY_SOCKET` (r1d started by hand,
//! or in a test) every call does nothing. A failure to send is logged and otherwise ignored: a
//! daemon that cannot reach systemd keeps training, and systemd's own timeouts then say so.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Tells systemd that start-up is complete: the state is open and the HTTP API listens.
pub fn ready() {
    send("READY=1");
}

/// Tells systemd that r1d is shutting down (finishing the step, checkpointing).
pub fn stopping() {
    send("STOPPING=1");
}

/// Sets the one-line status `systemctl status r1d` shows. Line breaks in `text` would start new
/// protocol assignments, so they become spaces.
pub fn status(text: &str) {
    let line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    send(&format!("STATUS={line}"));
}

/// Tells systemd's watchdog that r1d is alive; send it more often than [`watchdog_interval`].
pub fn watchdog_ping() {
    send("WATCHDOG=1");
}

/// How often systemd expects a [`watchdog_ping`], from `WATCHDOG_USEC`; `None` when the
/// watchdog is off, when `WATCHDOG_PID` names another process (the variable was inherited), or
/// without `NOTIFY_SOCKET` (a ping could not reach systemd anyway). Ping at half this interval.
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let micros = std::env::var("WATCHDOG_USEC").ok()?;
    let micros: u64 = match micros.trim().parse() {
        Ok(0) => return None,
        Ok(micros) => micros,
        Err(_) => {
            tracing::warn!(WATCHDOG_USEC = %micros, "WATCHDOG_USEC is not a number of microseconds; watchdog off");
            return None;
        }
    };
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(micros))
}

/// Sends `message` to `NOTIFY_SOCKET`, if there is one.
fn send(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_to(&socket, message) {
        tracing::warn!(
            socket = %socket.to_string_lossy(),
            message,
            %error,
            "could not notify systemd"
        );
    }
}

/// One datagram to the path or abstract socket `socket`.
fn send_to(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let sender = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => sender.send_to(message.as_bytes(), socket)?,
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            sender.send_to_addr(message.as_bytes(), &address)?
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract socket (@name)",
            ))
        }
    };
    if sent != message.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}
