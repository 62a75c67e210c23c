//! systemd integration: the notify protocol over a real Unix datagram socket (path and abstract),
//! and the shipped unit file checked by `systemd-analyze verify`.
//!
//! `r1_daemon::notify` reads its environment, so each notify case runs in a child process (this
//! test binary again, filtered to `child_sends_notifications`) with `NOTIFY_SOCKET` and friends
//! set for it alone; the parent receives and checks what arrived.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use r1_daemon::notify;

/// Set in the child: which notifications to send.
const CHILD_ENV: &str = "R1_NOTIFY_TEST_CHILD";

/// Not a test of its own: in the child process it sends what `CHILD_ENV` asks for and prints
/// `watchdog_interval()`; in the parent (variable unset) it returns at once.
#[test]
fn child_sends_notifications() {
    let Ok(plan) = std::env::var(CHILD_ENV) else {
        return;
    };
    for action in plan.split(',').filter(|a| !a.is_empty()) {
        match action {
            "ready" => notify::ready(),
            "status" => notify::status("step 7/100\nreward 0.5"),
            "watchdog" => notify::watchdog_ping(),
            "stopping" => notify::stopping(),
            other => panic!("unknown child action {other}"),
        }
    }
    println!("R1-WATCHDOG {:?}", notify::watchdog_interval());
}

/// Runs `child_sends_notifications` in a child with `env` set (and `NOTIFY_SOCKET`,
/// `WATCHDOG_USEC`, `WATCHDOG_PID` removed unless given).
fn run_child(plan: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "--exact",
            "child_sends_notifications",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, plan)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("running the child test process");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the child printed for `watchdog_interval()`.
fn watchdog_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest may print "test child_sends_notifications ... " on the same line first.
        .find_map(|l| {
            l.split_once("R1-WATCHDOG ")
                .map(|(_, v)| v.trim().to_owned())
        })
        .expect("the child prints its watchdog interval")
}

/// Every datagram waiting on `socket`.
fn received(socket: &UnixDatagram) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    messages
}

#[test]
fn notifications_reach_a_path_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
    let out = run_child(
        "ready,status,watchdog,stopping",
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8 temp path"))],
    );
    assert_eq!(
        received(&socket),
        [
            "READY=1",
            "STATUS=step 7/100 reward 0.5",
            "WATCHDOG=1",
            "STOPPING=1"
        ]
    );
    assert_eq!(watchdog_line(&out), "None", "no WATCHDOG_USEC: no watchdog");
}

#[test]
fn notifications_reach_an_abstract_socket() {
    let name = format!("r1-notify-test-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let socket = UnixDatagram::bind_addr(&address).expect("binding the abstract socket");
    run_child("ready", &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    assert_eq!(received(&socket), ["READY=1"]);
}

#[test]
fn watchdog_interval_follows_watchdog_usec_and_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let _socket = UnixDatagram::bind(&path).expect("binding the notify socket");
    let socket = path.to_str().expect("utf-8 temp path");

    let out = run_child(
        "",
        &[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", "30000000")],
    );
    assert_eq!(watchdog_line(&out), "Some(30s)");

    // WATCHDOG_PID naming another process: the variable was inherited, not meant for us.
    let out = run_child(
        "",
        &[
            ("NOTIFY_SOCKET", socket),
            ("WATCHDOG_USEC", "30000000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert_eq!(watchdog_line(&out), "None");

    for bad in ["0", "soon", ""] {
        let out = run_child("", &[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", bad)]);
        assert_eq!(watchdog_line(&out), "None", "WATCHDOG_USEC={bad:?}");
    }

    // Without NOTIFY_SOCKET a ping could not reach systemd: no watchdog.
    let out = run_child("", &[("WATCHDOG_USEC", "30000000")]);
    assert_eq!(watchdog_line(&out), "None");
}

#[test]
fn without_notify_socket_or_with_a_bad_one_nothing_fails() {
    run_child("ready,status,watchdog,stopping", &[]);
    run_child(
        "ready,stopping",
        &[("NOTIFY_SOCKET", "/nonexistent/r1-notify.sock")],
    );
    run_child("ready", &[("NOTIFY_SOCKET", "relative/path")]);
}

/// The shipped unit, with its `ExecStart` pointed at the r1d this test built (verify requires
/// the binary to exist), passes `systemd-analyze verify`.
#[test]
fn the_systemd_unit_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd/r1d.service");
    let unit = std::fs::read_to_string(&unit_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", unit_path.display()));
    let shipped = "ExecStart=/usr/local/bin/r1d ";
    assert!(
        unit.contains(shipped),
        "{} has {shipped}",
        unit_path.display()
    );
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "StateDirectory=r1d",
        "StateDirectoryMode=0700",
        "--state-dir ${STATE_DIRECTORY}",
        "DeviceAllow=char-nvidia",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            unit.contains(needed),
            "{} lacks {needed}",
            unit_path.display()
        );
    }
    assert!(
        !unit
            .lines()
            .any(|l| l.trim_start().starts_with("PrivateDevices=yes")),
        "PrivateDevices would hide /dev/nvidia*"
    );
    assert!(
        !unit
            .lines()
            .any(|l| l.trim_start().starts_with("RestrictNamespaces=")),
        "RestrictNamespaces would stop bubblewrap"
    );

    let r1d = env!("CARGO_BIN_EXE_r1d");
    let dir = tempfile::tempdir().expect("temp dir");
    let copy: PathBuf = dir.path().join("r1d.service");
    std::fs::write(&copy, unit.replace(shipped, &format!("ExecStart={r1d} ")))
        .expect("writing the unit copy");
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(error) => panic!(
            "systemd-analyze not runnable ({error}): run scripts/install-deps.sh, which installs \
             Debian's `systemd` package"
        ),
    };
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Verify also loads the units this one names (After=network-online.target, …) from the
    // host; lines about r1d.service itself are what this test judges.
    let about_ours: Vec<&str> = said.lines().filter(|l| l.contains("r1d.service")).collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify {}: {}\n{said}",
        copy.display(),
        out.status
    );
}
