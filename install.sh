#!/usr/bin/env bash
# Install everything qiot needs on a Debian 12 machine, as root. Idempotent: running it twice is harmless.
#   bash install.sh            -> apt packages, .venv (able to import Mininet), pip install -e ., start OVS
# Why a venv from /usr/bin/python3: Debian's mininet module lives in Debian's dist-packages and is only
# visible to Debian's own interpreter (see shared/platform-notes.md).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh must run as root (it installs apt packages and starts Open vSwitch)." >&2
  exit 1
fi

# chromium: headless rendering of `qiot report` pages in the tests (tests/unit/test_report.py).
APT_PACKAGES=(
  mininet openvswitch-switch mosquitto mosquitto-clients bridge-utils ethtool iptables iproute2
  iputils-ping nftables tcpdump libnetfilter-queue-dev build-essential python3-dev python3-venv procps psmisc
  kmod util-linux git chromium
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Installing mosquitto must not leave a system broker on port 1883: qiot starts its own brokers.
if command -v service >/dev/null && pgrep -x mosquitto >/dev/null 2>&1; then
  service mosquitto stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import mininet.net' 2>/dev/null; then
  echo "[install] creating .venv from /usr/bin/python3 (with system site-packages for Mininet)"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
echo "[install] pip install -e .[test]"
.venv/bin/python -m pip install -q -e '.[test]'

# Open vSwitch: no systemd here, so start it through ovs-ctl if it is not already up.
if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  echo "[install] starting Open vSwitch"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null
fi
echo "[install] done: $(.venv/bin/qiot --version 2>/dev/null || echo 'qiot installed')"
