#!/usr/bin/env bash
# Install what Stratus's real-VM path needs on a Debian 12 (bookworm) host.
#
# Idempotent: exits in well under a second when everything is already there.
#
# Why a private APT_CONFIG: some hosts of this kind ship qemu-utils 10.x from
# bookworm-backports. bookworm's own qemu-system-x86 (7.2) cannot coexist with it
# (qemu-utils 10 has `Breaks: qemu-system-common (<< 1:8.0+dfsg-5~)`), so a plain
# `apt-get install qemu-system-x86` would REMOVE qemu-utils. We therefore take
# qemu-system-x86 from bookworm-backports through a private sources list and
# lists directory, never touching /etc/apt. `--no-remove` makes apt refuse any
# plan that would remove a package.
#
# Environment:
#   STRATUS_APT_DIR  private apt state (default /var/cache/stratus/apt)
#   FORCE=1          run apt even if everything looks installed
set -euo pipefail

APT_DIR=${STRATUS_APT_DIR:-/var/cache/stratus/apt}

# Packages from bookworm-backports (must match the preinstalled qemu-utils, if any).
BPO_PKGS=(qemu-system-x86 qemu-utils)
# Packages from plain bookworm. isc-dhcp-client (dhclient) is the real DHCP client the
# network-agent tests run inside their own namespaces, with their own script (it never touches
# the host's configuration); arping sends floating IPs' gratuitous ARP; conntrack flushes flows
# a removed security group rule no longer allows; curl fetches metadata from test "guests";
# procps gives sysctl; novnc is the web VNC client the compute console proxy serves from
# /usr/share/novnc (Stratus is the websocket proxy; the package's websockify stays unused);
# ovmf is the UEFI firmware guests of images with hw_firmware_type=uefi boot with; dnsmasq-utils
# gives dhcp_release, with which the network agent frees a deleted port's lease for the next port;
# openssl generates the certificate of an x509 keypair the compute API makes for a user.
PLAIN_PKGS=(dnsmasq-base iproute2 nftables iputils-ping openssh-client openssl socat cpio
    syslinux syslinux-common mtools dosfstools fdisk genisoimage
    isc-dhcp-client iputils-arping conntrack curl procps novnc ovmf dnsmasq-utils)

log() { printf 'install-host-packages: %s\n' "$*" >&2; }

installed() { # pkg -> 0 when dpkg says "install ok installed"
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${BPO_PKGS[@]}" "${PLAIN_PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
# qemu-system-x86 must be the backports build (>= 8), not bookworm's 7.2.
if installed qemu-system-x86; then
    v=$(dpkg-query -W -f='${Version}' qemu-system-x86)
    if dpkg --compare-versions "$v" lt 1:8.0; then
        missing+=(qemu-system-x86)
    fi
fi
if [ ${#missing[@]} -eq 0 ] && [ "${FORCE:-0}" != 1 ]; then
    log "all present ($(qemu-system-x86_64 --version | head -n1))"
    exit 0
fi
log "missing: ${missing[*]}"

if [ "$(id -u)" != 0 ]; then
    log "must run as root (apt-get install)"; exit 1
fi

# Mirror: reuse the one the host is configured with (deb822 or one-line format).
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
        /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { log "cannot find the Debian mirror in /etc/apt"; exit 1; }
security=${mirror%/debian}/debian-security
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$APT_DIR/sources.list.d"
cat >"$APT_DIR/sources.list" <<SRC
deb [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bookworm-updates main
deb [signed-by=$keyring] $mirror bookworm-backports main
deb [signed-by=$keyring] $security bookworm-security main
SRC
cat >"$APT_DIR/apt.conf" <<CONF
Dir::Etc::sourcelist "$APT_DIR/sources.list";
Dir::Etc::sourceparts "$APT_DIR/sources.list.d";
Dir::State::lists "$APT_DIR/lists";
Dir::Cache::archives "$APT_DIR/archives";
APT::Sandbox::User "root";
CONF
export APT_CONFIG="$APT_DIR/apt.conf"
export DEBIAN_FRONTEND=noninteractive

# Refresh the private lists at most once a day.
stamp="$APT_DIR/lists/.stratus-updated"
if [ -z "$(find "$stamp" -mtime -1 2>/dev/null)" ]; then
    log "apt-get update (private lists in $APT_DIR)"
    apt-get -q -o DPkg::Lock::Timeout=600 update >&2
    touch "$stamp"
fi

apt_install() {
    apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends --no-remove "$@" >&2
}
log "installing ${BPO_PKGS[*]} from bookworm-backports"
apt_install -t bookworm-backports "${BPO_PKGS[@]}"
log "installing ${PLAIN_PKGS[*]} from bookworm"
apt_install "${PLAIN_PKGS[@]}"
log "done: $(qemu-system-x86_64 --version | head -n1)"
