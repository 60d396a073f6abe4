#!/usr/bin/env bash
# Installs every Debian package chorus needs to build, run and test.
# Idempotent and quiet when everything is already present.  Run as root.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config clang libclang-rt-14-dev
    libuv1-dev libwebsockets-dev libwebsockets-evlib-uv
    liblz4-dev libjansson-dev libssl-dev
    python3 iproute2 nftables procps psmisc faketime gnuplot-nox
    chromium
)
# The browser test drives Debian's chromium with playwright-core from npm; use the
# machine's Node.js when it has one, Debian's otherwise.
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
BACKPORTS_PACKAGES=(libraft-dev)
RAFT_MIN_VERSION=0.22.1

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
raft_ok=0
if v=$(dpkg-query -W -f='${Version}' libraft-dev 2>/dev/null) && \
   dpkg --compare-versions "$v" ge "$RAFT_MIN_VERSION"; then
    raft_ok=1
fi
if [ ${#missing[@]} -eq 0 ] && [ $raft_ok -eq 1 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]} libraft-dev>=$RAFT_MIN_VERSION);" \
         "run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# bookworm-backports carries libraft-dev 0.22.1 (bookworm's 0.15.0 has a Raft
# commit-safety bug).  Reuse the URI of the machine's own Debian entry.
if [ $raft_ok -eq 0 ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list \
        /etc/apt/sources.list.d/; then
    uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
    fi
    if [ -z "$uri" ]; then
        echo "install-deps: cannot find the Debian mirror URI in apt's sources" >&2
        exit 1
    fi
    cat > /etc/apt/sources.list.d/chorus-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

echo "install-deps: installing ${missing[*]} libraft-dev (backports)" >&2
apt-get update -qq >/dev/null
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $raft_ok -eq 0 ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        "${BACKPORTS_PACKAGES[@]}" >/dev/null
fi
