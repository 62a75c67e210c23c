#!/usr/bin/env bash
# Installs what r1's tests need on a fresh Debian machine (run as root, or with sudo available).
# Idempotent: does nothing for what is already there.
#
# The code sandbox needs bubblewrap, Debian's own /usr/bin/python3 (a python3 earlier on PATH, such
# as a pyenv shim under /root, is invisible inside the sandbox), and unprivileged user namespaces:
# as root the judge starts bubblewrap under an unprivileged uid, because root ignores RLIMIT_NPROC.
# The observability tests run Debian's `prometheus` package (the `prometheus` server and
# `promtool`) and `systemd-analyze` (package `systemd`) on the shipped configs.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -x /usr/bin/python3 ] || need+=(python3)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# docs/quickstart.md scrapes /metrics with curl, and the docs harness (ctl/tests/docs.rs) runs it.
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  # No recommends: the prometheus package would otherwise pull in node-exporter and its timers.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Unprivileged user namespaces: switched off by some kernels and distributions.
sysctl_value() { cat "/proc/sys/$1" 2>/dev/null || true; }
if [ "$(sysctl_value kernel/unprivileged_userns_clone)" = "0" ]; then
  echo "install-deps: enabling kernel.unprivileged_userns_clone for the code sandbox" >&2
  $SUDO sysctl -qw kernel.unprivileged_userns_clone=1 || true
fi
if [ "$(sysctl_value kernel/apparmor_restrict_unprivileged_userns)" = "1" ]; then
  echo "install-deps: allowing unprivileged user namespaces under AppArmor for the code sandbox" >&2
  $SUDO sysctl -qw kernel.apparmor_restrict_unprivileged_userns=0 || true
fi
if [ "$(sysctl_value user/max_user_namespaces)" = "0" ]; then
  echo "install-deps: raising user.max_user_namespaces for the code sandbox" >&2
  $SUDO sysctl -qw user.max_user_namespaces=10000 || true
fi

# Smoke test with the flags the judge uses, under the uid it uses when run as root. A failure is
# reported, not fatal: the judge itself refuses to start (fail closed) and says why.
smoke=(bwrap --unshare-user --unshare-pid --unshare-net --unshare-ipc --unshare-uts
  --unshare-cgroup-try --disable-userns --ro-bind /usr /usr --symlink usr/lib /lib
  --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev-bind /dev/null /dev/null
  --size 1048576 --tmpfs /tmp --remount-ro / --die-with-parent --new-session --clearenv
  /usr/bin/python3 -I -c pass)
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
  smoke=(setpriv --reuid=65534 --regid=65534 --clear-groups "${smoke[@]}")
fi
if ! out=$(cd / && "${smoke[@]}" 2>&1); then
  echo "install-deps: WARNING: the bubblewrap sandbox does not work here; code rewards will refuse" >&2
  echo "install-deps: to start and their tests will fail. bubblewrap said: $out" >&2
fi
