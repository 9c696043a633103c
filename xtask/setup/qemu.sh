#!/usr/bin/env bash
# Setup for `cargo xtask vm-test` (run by `cargo xtask test`, xtask/src/setup.rs): QEMU with the emulated igb (82576) NIC,
# which needs QEMU >= 8.0 (bookworm ships 7.2; bookworm-backports has 10.x),
# and the host tools and libraries the harness copies into the guest initramfs.
# Idempotent: safe to run on every CI run.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
codename="${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
backports="${codename}-backports"
src=/etc/apt/sources.list.d/debian.sources
dst=/etc/apt/sources.list.d/${backports}.sources

# The backports entry copies URIs, components and keyring from the stanza that
# serves the release itself, so whatever mirror (or snapshot) this machine is
# configured for is the one used; no mirror is hard-coded.
if [ ! -e "$dst" ] && ! grep -rqs "^Suites:.*\b${backports}\b" /etc/apt/sources.list.d/; then
  if [ ! -r "$src" ]; then
    echo "setup qemu: $src not found; cannot derive a ${backports} entry" >&2
    exit 1
  fi
  awk -v want="$codename" -v bp="$backports" '
    function flush() {
      if (match_ && !done) {
        printf "Types: %s\nURIs: %s\nSuites: %s\nComponents: %s\n", types, uris, bp, comps
        if (signed != "") printf "Signed-By: %s\n", signed
        done = 1
      }
      types = ""; uris = ""; comps = ""; signed = ""; match_ = 0
    }
    /^[[:space:]]*$/ { flush(); next }
    /^#/ { next }
    /^Types:/      { sub(/^Types:[[:space:]]*/, "");      types = $0 }
    /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
    /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
    /^Signed-By:/  { sub(/^Signed-By:[[:space:]]*/, "");  signed = $0 }
    /^Suites:/     { n = split($0, s, /[[:space:]]+/); for (i = 2; i <= n; i++) if (s[i] == want) match_ = 1 }
    END { flush(); if (!done) exit 3 }
  ' "$src" > "$dst.tmp" || { rm -f "$dst.tmp"; echo "setup qemu: no stanza for suite $codename in $src" >&2; exit 1; }
  mv "$dst.tmp" "$dst"
  echo "setup qemu: wrote $dst:"
  cat "$dst"
fi

need_install=0
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 \
  || ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'; then
  need_install=1
fi
for tool in busybox insmod /usr/sbin/ip xz; do
  command -v "$tool" >/dev/null 2>&1 || need_install=1
done
[ -x /bin/busybox ] || need_install=1
# The guest's runc (fetched by the harness with apt-get download, not
# installed) is dynamically linked against libseccomp; the initramfs copies
# the host's.
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2 ' || need_install=1

if [ "$need_install" = 1 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t "$backports" qemu-system-x86
  # busybox-static gives the guest a shell and coreutils with no shared libs;
  # kmod and iproute2 binaries are copied into the guest with their libraries.
  apt-get install -y -q --no-install-recommends busybox-static kmod iproute2 xz-utils libseccomp2
fi

qemu-system-x86_64 --version | head -n1
if ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'; then
  echo "setup qemu: installed QEMU has no igb device (needs >= 8.0)" >&2
  exit 1
fi
