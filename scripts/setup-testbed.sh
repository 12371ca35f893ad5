#!/usr/bin/env bash
# Installs the real runtimes crgpu's tests drive: runc, CRIU 4.1+, runsc, iptables,
# busybox-static (FACTS.md §3), and a second, newer runc (1.3+) under /opt/crgpu-testbed.
# Idempotent; runs on Debian 12 (takes the runtimes from Debian 13) and Debian 13+.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
TESTBED=${CRGPU_TESTBED:-/opt/crgpu-testbed}

. /etc/os-release
codename=${VERSION_CODENAME:-}
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

if [ "$codename" = "bookworm" ]; then
  # bookworm's CRIU 3.17 cannot dump on kernels 6.13+ (vdso bounds): take trixie's, pinned low
  # so nothing else moves to trixie unless asked for with -t.
  if [ ! -f /etc/apt/sources.list.d/crgpu-trixie.sources ]; then
    cat >/etc/apt/sources.list.d/crgpu-trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >/etc/apt/preferences.d/crgpu-trixie
  fi
  target=(-t trixie)
else
  target=()
fi
if [ ! -f /etc/apt/sources.list.d/crgpu-sid.sources ]; then
  cat >/etc/apt/sources.list.d/crgpu-sid.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  printf 'Package: *\nPin: release n=sid\nPin-Priority: 50\n' >/etc/apt/preferences.d/crgpu-sid
fi

apt-get update -q
# criu's python3-pycriu brings Debian 13's python3 (3.13) onto a Debian 12 machine: its venv needs
# the pip wheel of the same release (Debian 12's pip 23.0 fails in ensurepip under 3.13).
apt-get install "${apt_opts[@]}" "${target[@]}" criu runc runsc iptables busybox-static python3-venv python3-pip-whl
# The engines that own containers on real nodes, and checkpointctl (../shared/research/engines.md):
# podman 5.4 and checkpointctl 1.3 from Debian 13, containerd 2.1 from sid (its runc stays Debian's).
apt-get install "${apt_opts[@]}" "${target[@]}" podman conmon checkpointctl zstd containernetworking-plugins iproute2
apt-get install "${apt_opts[@]}" -t sid containerd
# dockerd 26 (docker.io) and its CLI from Debian 13, for the Docker tests (they start a private
# daemon). Its package would start a system dockerd where no init forbids it: denied while it
# installs, so nothing else holds Docker's exec root /run/docker.
if ! command -v dockerd >/dev/null || [ ! -x /usr/bin/docker ]; then
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install "${apt_opts[@]}" --no-install-recommends "${target[@]}" docker.io docker-cli
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# For the tests of the shell completions and man pages, and the static memory hog (benchmarks/hog.c).
apt-get install "${apt_opts[@]}" zsh fish groff-base gcc libc6-dev

# A second runc, newer than 1.3, beside the system one: unpacked from sid, never installed.
if [ ! -x "$TESTBED/runc-new/usr/sbin/runc" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q runc/sid 2>/dev/null || apt-get download -q -t sid runc)
  mkdir -p "$TESTBED/runc-new"
  dpkg -x "$tmp"/runc_*.deb "$TESTBED/runc-new"
  rm -rf "$tmp"
fi
# Debian's docker-registry (a registry on 127.0.0.1 for the Kubernetes tests: containerd restores a
# kubelet archive onto its base image by digest, pulled from a registry): unpacked, so no service
# is installed or started.
if [ ! -x "$TESTBED/registry/usr/bin/docker-registry" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q docker-registry)
  mkdir -p "$TESTBED/registry"
  dpkg -x "$tmp"/docker-registry_*.deb "$TESTBED/registry"
  rm -rf "$tmp"
fi
# Print what was installed; whole outputs captured (head on a pipe would SIGPIPE under pipefail).
for tool in runc "$TESTBED/runc-new/usr/sbin/runc" criu runsc podman containerd dockerd; do
  out=$("$tool" --version 2>&1 || true)
  echo "$tool: ${out%%$'\n'*}"
done
echo "checkpointctl: $(command -v checkpointctl)"  # it has no version flag
