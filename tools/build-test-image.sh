#!/usr/bin/env bash
# Build Stratus's CirrOS-like test guest purely from Debian packages.
#
#   tools/build-test-image.sh OUTDIR
#
# Nothing is installed on the host: guest packages are fetched with
# `apt-get download` (through a private apt config under OUTDIR/.cache/apt, so
# neither /etc/apt nor the host's lists are touched) and unpacked with
# `dpkg-deb -x`. The .debs and their extraction are cached in OUTDIR/.cache, so
# a rebuild takes seconds (REFRESH=1 re-downloads).
#
# Outputs (variant "a", the default test image):
#   OUTDIR/vmlinuz OUTDIR/initrd.img OUTDIR/cmdline.txt OUTDIR/disk.qcow2 OUTDIR/MANIFEST.txt
# and a second, distinguishable image (variant "b": other banner and
# /etc/stratus-image) for rebuild tests:
#   OUTDIR/b/{vmlinuz,initrd.img,cmdline.txt,disk.qcow2,MANIFEST.txt}
# VARIANTS="a" builds only the first one.
#
# Host tools needed (scripts/install-host-packages.sh installs them):
# apt-get, dpkg-deb, cpio, gzip, objcopy, mkfs.fat, syslinux (mtools), mcopy,
# sfdisk, qemu-img, openssl.
#
# WARNING: the guest scripts written below call busybox applets directly
# (Debian's busybox prefers its applets over PATH). Never run them on the host,
# not even with stub commands on PATH: the udhcpc script would reconfigure the
# host's network and hostname.
#
# Guest behaviour (see also HOST-FACTS §3): /init mounts devtmpfs and re-attaches
# stdio to /dev/console, busybox init runs /etc/init.d/rcS which insmods the
# virtio modules (dependency order from each .ko's .modinfo, since Debian ships
# no modules.dep), reads a config drive (ISO9660 `config-2`) if attached, runs
# udhcpc (option 121 + MTU), fetches metadata, starts dropbear (ed25519 host
# key) and busybox acpid (power button -> poweroff), then getty on ttyS0/tty1
# (cirros/gocubsgo). Console markers all start with "stratus-guest: ".
# Kernel arguments: stratus.heartbeat=N prints the uptime every N seconds,
# stratus.rootshell gives a root shell on ttyS0 instead of getty.
set -euo pipefail

die() { printf 'build-test-image: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-test-image: %s\n' "$*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
CACHE=$OUT/.cache
VARIANTS=${VARIANTS:-a b}
KERNEL_META=${KERNEL_META:-linux-image-cloud-amd64}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export SOURCE_DATE_EPOCH LC_ALL=C

for t in apt-get dpkg-deb cpio gzip objcopy mkfs.fat syslinux mcopy sfdisk qemu-img openssl; do
    command -v "$t" >/dev/null ||
        die "'$t' not found; run scripts/install-host-packages.sh (as root) first"
done
MBR_BIN=""
for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/syslinux/mbr.bin /usr/share/syslinux/mbr.bin; do
    [ -r "$f" ] && { MBR_BIN=$f; break; }
done
[ -n "$MBR_BIN" ] || die "syslinux mbr.bin not found; run scripts/install-host-packages.sh"

start=$(date +%s.%N)

# ---------------------------------------------------------------- private apt
APT_DIR=$CACHE/apt
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$APT_DIR/parts" "$APT_DIR/etc"
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
        /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "cannot find the Debian mirror in /etc/apt"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$APT_DIR/etc/sources.list" <<SRC
deb [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bookworm-updates main
deb [signed-by=$keyring] ${mirror%/debian}/debian-security bookworm-security main
SRC
cat >"$APT_DIR/apt.conf" <<CONF
Dir::Etc::sourcelist "$APT_DIR/etc/sources.list";
Dir::Etc::sourceparts "$APT_DIR/parts";
Dir::State::lists "$APT_DIR/lists";
Dir::State::status "$APT_DIR/status";
Dir::Cache "$APT_DIR/cache";
Dir::Cache::archives "$APT_DIR/archives";
APT::Sandbox::User "root";
APT::Architecture "amd64";
CONF
touch "$APT_DIR/status"
mkdir -p "$APT_DIR/cache"
apt_() { APT_CONFIG=$APT_DIR/apt.conf apt-get -q -o APT::Sandbox::User=root "$@"; }
apt_update_if_needed() {
    if [ -z "$(find "$APT_DIR/lists/.updated" -mtime -7 2>/dev/null)" ] || [ "${REFRESH:-0}" = 1 ]; then
        log "apt-get update (private lists in $APT_DIR)"
        apt_ update >&2
        touch "$APT_DIR/lists/.updated"
    fi
}

# ---------------------------------------------------------------- downloads
DEBS=$CACHE/debs
mkdir -p "$DEBS"
[ "${REFRESH:-0}" = 1 ] && rm -f "$DEBS"/*.deb

# Resolve the kernel metapackage once and remember it (so cached rebuilds need no apt).
if [ ! -s "$CACHE/kernel-package" ] || [ "${REFRESH:-0}" = 1 ]; then
    apt_update_if_needed
    kpkg=$(APT_CONFIG=$APT_DIR/apt.conf apt-cache depends "$KERNEL_META" |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$kpkg" ] || die "cannot resolve $KERNEL_META to a linux-image package"
    echo "$kpkg" >"$CACHE/kernel-package"
fi
KPKG=$(cat "$CACHE/kernel-package")

GUEST_PKGS=("$KPKG" busybox-static dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g)
need=()
for p in "${GUEST_PKGS[@]}"; do
    compgen -G "$DEBS/${p}_*.deb" >/dev/null || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt_update_if_needed
    log "downloading ${need[*]}"
    (cd "$DEBS" && apt_ download "${need[@]}" >&2)
fi
deb_of() { local f; f=$(compgen -G "$DEBS/${1}_*.deb" | sort -V | tail -n1); [ -n "$f" ] || die "no .deb for $1"; echo "$f"; }

# ---------------------------------------------------------------- extraction
# Kernel in its own tree; userland packages merged into one sysroot.
extract() { # deb dir
    local stamp; stamp="$2/.$(basename "$1").extracted"
    [ -e "$stamp" ] && return 0
    mkdir -p "$2"
    dpkg-deb -x "$1" "$2"
    touch "$stamp"
}
KROOT=$CACHE/kernel-root
SYSROOT=$CACHE/sysroot
extract "$(deb_of "$KPKG")" "$KROOT"
for p in "${GUEST_PKGS[@]:1}"; do extract "$(deb_of "$p")" "$SYSROOT"; done

VMLINUZ=$(compgen -G "$KROOT/boot/vmlinuz-*" | head -n1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in $KPKG"
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$KROOT/lib/modules/$KVER

# ---------------------------------------------------------------- modules
# modules.dep is not shipped (depmod runs at install time), so read `depends=`
# from each module's .modinfo section and emit a dependency-ordered load list.
declare -A MODPATH=() SEEN=()
while IFS= read -r ko; do
    n=${ko##*/}; n=${n%.ko}; n=${n//-/_}
    MODPATH[$n]=$ko
done < <(find "$MODDIR" -name '*.ko' | sort)
modinfo_depends() {
    objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null |
        tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}
ORDER=()
visit() { # name required(1|0)
    local n=$1 d
    [ -n "${SEEN[$n]:-}" ] && return 0
    if [ -z "${MODPATH[$n]:-}" ]; then
        [ "$2" = 1 ] && die "module $n not found in $KPKG"
        return 0 # built in, or absent from this kernel
    fi
    SEEN[$n]=1
    for d in $(modinfo_depends "${MODPATH[$n]}"); do visit "$d" 1; done
    ORDER+=("$n")
}
for m in virtio_pci virtio_net virtio_blk virtio_rng button evdev; do visit "$m" 1; done
# Nice to have: SCSI/IDE disks, CD-ROM and ISO9660 for config drives.
for m in virtio_scsi sd_mod ata_piix sr_mod isofs; do visit "$m" 0; done
log "kernel $KVER, modules: ${ORDER[*]}"

# ---------------------------------------------------------------- initramfs
build_initrd() { # variant stagingdir
    local variant=$1 R=$2 image_name="stratus-test-$1"
    rm -rf "$R"
    mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib64,lib/x86_64-linux-gnu,etc/init.d,etc/dropbear,etc/udhcpc,etc/acpi/PWRF,root,home/cirros,dev,proc,sys,run,tmp,var/log,var/run,mnt/config}
    chmod 1777 "$R/tmp"
    chmod 700 "$R/root"

    # busybox-static, every applet linked
    cp "$SYSROOT/bin/busybox" "$R/bin/busybox"
    local a
    while IFS= read -r a; do
        [ "$a" = bin/busybox ] && continue
        [ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /bin/busybox "$R/$a"
    done < <("$R/bin/busybox" --list-full)
    [ -L "$R/bin/sh" ] || ln -s busybox "$R/bin/sh"

    # dropbear + its libraries, resolved with the packaged dynamic loader
    cp "$SYSROOT/usr/sbin/dropbear" "$R/usr/sbin/"
    cp "$SYSROOT/usr/bin/dropbearkey" "$R/usr/bin/"
    local ld=$SYSROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    local libpath=$SYSROOT/lib/x86_64-linux-gnu:$SYSROOT/usr/lib/x86_64-linux-gnu
    local bin line lib
    for bin in "$R/usr/sbin/dropbear" "$R/usr/bin/dropbearkey"; do
        "$ld" --library-path "$libpath" --list "$bin" >"$CACHE/ldd.txt" ||
            die "cannot resolve the libraries of $bin"
        if grep -q 'not found' "$CACHE/ldd.txt"; then
            cat "$CACHE/ldd.txt" >&2; die "missing library for $bin"
        fi
        while read -r line; do
            lib=$(awk '$2 == "=>" { print $3 }' <<<"$line")
            [ -n "$lib" ] && cp -L "$lib" "$R/lib/x86_64-linux-gnu/"
        done <"$CACHE/ldd.txt"
    done
    cp -L "$ld" "$R/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"

    # kernel modules in load order
    local m
    : >"$R/lib/modules/load-order"
    for m in "${ORDER[@]}"; do
        cp "${MODPATH[$m]}" "$R/lib/modules/$m.ko"
        echo "$m" >>"$R/lib/modules/load-order"
    done

    # users: root is key-only, cirros/gocubsgo
    local hash
    hash=$(openssl passwd -6 -salt stratustestimage gocubsgo)
    cat >"$R/etc/passwd" <<'X'
root:x:0:0:root:/root:/bin/sh
cirros:x:1000:1000:cirros:/home/cirros:/bin/sh
X
    cat >"$R/etc/group" <<'X'
root:x:0:
cirros:x:1000:
X
    printf 'root:*:19000:0:99999:7:::\ncirros:%s:19000:0:99999:7:::\n' "$hash" >"$R/etc/shadow"
    chmod 600 "$R/etc/shadow"
    printf '/bin/sh\n/bin/ash\n' >"$R/etc/shells"
    printf 'name=%s\nvariant=%s\nkernel=%s\n' "$image_name" "$variant" "$KVER" >"$R/etc/stratus-image"
    if [ "$variant" = a ]; then
        banner="Stratus test image A (CirrOS-like)"
    else
        banner="Stratus test image B (CirrOS-like, rebuild target)"
    fi
    printf '%s\nlogin as cirros / gocubsgo\n\n' "$banner" >"$R/etc/issue"
    echo stratus >"$R/etc/hostname"
    printf '127.0.0.1 localhost\n' >"$R/etc/hosts"

    cat >"$R/init" <<'X'
#!/bin/sh
# PID 1 of the initramfs: there is no /dev/console in the cpio, so mount
# devtmpfs first and re-attach stdio to the console (HOST-FACTS pitfall 7).
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/console ] || /bin/busybox mknod /dev/console c 5 1
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
if grep -qw stratus.rootshell /proc/cmdline; then
    sed -i 's|^ttyS0::.*|ttyS0::respawn:-/bin/sh|' /etc/inittab
fi
exec /bin/busybox init
X
    cat >"$R/etc/inittab" <<'X'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/getty 38400 tty1
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
X

    cat >"$R/etc/init.d/rcS" <<'X'
#!/bin/sh
# Boot sequence of the Stratus test guest. Every line meant for test harnesses
# starts with "stratus-guest: " so that it can be grepped from console.log.
say() { echo "stratus-guest: $*" >/dev/console; }
. /etc/stratus-image
read up _ </proc/uptime
say "init started image=$name uptime=$up"
hostname -F /etc/hostname
ip link set lo up

for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko 2>/dev/null
done
say "modules loaded"
chown -R cirros:cirros /home/cirros

# heartbeat (kernel arg stratus.heartbeat=N): lets tests follow guest uptime
hb=$(sed -n 's/.*stratus\.heartbeat=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$hb" ] && [ "$hb" -gt 0 ]; then
    ( while sleep "$hb"; do read up _ </proc/uptime; say "heartbeat uptime=$up"; done ) &
fi

# config drive first (like cloud-init's ConfigDrive source), then DHCP
/usr/sbin/stratus-configdrive

if [ -e /sys/class/net/eth0 ]; then
    udhcpc -i eth0 -s /etc/udhcpc/default.script -O staticroutes -O mtu \
        -t 5 -T 1 -b -p /run/udhcpc.eth0.pid >/dev/null 2>&1
else
    say "no eth0, skipping DHCP"
fi

# ssh host key (virtio-rng makes the crng ready early) + fingerprints
key=/etc/dropbear/dropbear_ed25519_host_key
dropbearkey -t ed25519 -f $key >/dev/null 2>&1
{
    echo "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
    dropbearkey -y -f $key | sed -n 's/^Fingerprint: //p'
    echo "-----END SSH HOST KEY FINGERPRINTS-----"
    echo "-----BEGIN SSH HOST KEY KEYS-----"
    dropbearkey -y -f $key | grep '^ssh-'
    echo "-----END SSH HOST KEY KEYS-----"
} >/dev/console
dropbear -r $key -p 22 -g -P /run/dropbear.pid
say "dropbear started on :22"

# acpid opens /dev/input/event* after it forks: wait until it holds one, so
# that a power button pressed right after the "up" marker is not missed.
acpid -f -c /etc/acpi -l /var/log/acpid.log &
acpid_pid=$!
i=0
while [ $i -lt 40 ] && ! ls -l /proc/$acpid_pid/fd 2>/dev/null | grep -q /dev/input/event; do
    sleep 0.05; i=$((i + 1))
done
say "acpid started"

# metadata service in the background (it needs the lease)
[ -e /sys/class/net/eth0 ] && [ ! -e /run/configdrive ] && /usr/sbin/stratus-metadata &

read up _ </proc/uptime
say "up image=$name uptime=$up"
X
    cat >"$R/etc/init.d/rcK" <<'X'
#!/bin/sh
echo "stratus-guest: shutting down" >/dev/console
[ -f /run/udhcpc.eth0.pid ] && kill "$(cat /run/udhcpc.eth0.pid)" 2>/dev/null
X

    cat >"$R/etc/udhcpc/default.script" <<'X'
#!/bin/sh
# udhcpc event script (passed with -s: Debian's default path is elsewhere).
# `set -- $staticroutes` below clobbers $1, so keep the event name first.
event=$1
say() { echo "stratus-guest: $*" >/dev/console; }
case "$event" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ${broadcast:+broadcast $broadcast} up
    while ip route del default dev "$interface" 2>/dev/null; do :; done
    if [ -n "$staticroutes" ]; then
        # RFC 3442: with option 121 the router option is ignored
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then
                ip route replace "$1" dev "$interface"
            else
                ip route replace "$1" via "$2" dev "$interface"
            fi
            shift 2
        done
    elif [ -n "$router" ]; then
        for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    fi
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    [ -n "$hostname" ] && [ ! -e /run/hostname-from-metadata ] && hostname "$hostname"
    [ "$event" = bound ] && say "DHCP bound $interface ip=$ip mask=${mask:-?} router=${router:-none} mtu=${mtu:-default} routes=${staticroutes:-none}"
    ;;
leasefail|nak)
    say "DHCP $event on $interface"
    ;;
esac
exit 0
X

    cat >"$R/usr/sbin/stratus-install-key" <<'X'
#!/bin/sh
# stratus-install-key FILE: authorize the key for root and cirros
[ -s "$1" ] || exit 0
for h in /root /home/cirros; do
    mkdir -p $h/.ssh
    cat "$1" >$h/.ssh/authorized_keys
    chmod 700 $h/.ssh
    chmod 600 $h/.ssh/authorized_keys
done
chown -R cirros:cirros /home/cirros/.ssh
X

    cat >"$R/usr/sbin/stratus-run-userdata" <<'X'
#!/bin/sh
# stratus-run-userdata FILE: run user-data when it is a script (#!)
say() { echo "stratus-guest: $*" >/dev/console; }
[ -s "$1" ] || exit 0
if [ "$(head -c 2 "$1")" = "#!" ]; then
    cp "$1" /run/user-data; chmod 700 /run/user-data
    say "running user-data"
    /run/user-data >/dev/console 2>&1
    say "user-data exit=$?"
else
    say "user-data is not a script, ignored"
fi
X

    cat >"$R/usr/sbin/stratus-metadata" <<'X'
#!/bin/sh
# Fetch EC2-style metadata from 169.254.169.254 (route pushed by DHCP option 121).
# Debian's busybox `wget -T` segfaults, so every request is wrapped in `timeout`.
say() { echo "stratus-guest: $*" >/dev/console; }
base=http://169.254.169.254/2009-04-04
get() { timeout 10 wget -q -O "$2" "$base/$1" 2>/dev/null; }
i=0
until get meta-data/instance-id /run/instance-id; do
    i=$((i + 1))
    if [ $i -ge 30 ]; then say "metadata service unreachable"; exit 0; fi
    sleep 1
done
say "metadata instance-id=$(cat /run/instance-id)"
if get meta-data/hostname /run/md-hostname && [ -s /run/md-hostname ]; then
    h=$(cut -d. -f1 /run/md-hostname); hostname "$h"; echo "$h" >/etc/hostname
    touch /run/hostname-from-metadata
    say "hostname=$h"
fi
if get meta-data/public-keys/0/openssh-key /run/md-key && [ -s /run/md-key ]; then
    /usr/sbin/stratus-install-key /run/md-key
    say "ssh key installed"
fi
get user-data /run/md-user-data && /usr/sbin/stratus-run-userdata /run/md-user-data
say "metadata done"
X

    cat >"$R/usr/sbin/stratus-configdrive" <<'X'
#!/bin/sh
# Read an OpenStack config drive (ISO9660 labelled config-2) if one is attached.
say() { echo "stratus-guest: $*" >/dev/console; }
# Debian's busybox has no blkid: read the ISO9660 primary volume descriptor
# (sector 16: "CD001" at offset 1, volume id at offset 40, 32 bytes).
label_of() {
    [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
    dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' '
}
dev=""
for b in /sys/class/block/*; do
    [ -e "$b/partition" ] && continue
    n=${b##*/}
    case $n in sr*|vd*|sd*|hd*) ;; *) continue ;; esac
    if [ "$(label_of /dev/$n)" = config-2 ]; then dev=/dev/$n; break; fi
done
[ -n "$dev" ] || exit 0
mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null ||
    mount -o ro "$dev" /mnt/config 2>/dev/null || { say "config drive $dev: mount failed"; exit 0; }
md=/mnt/config/openstack/latest/meta_data.json
[ -r "$md" ] || { say "config drive $dev has no meta_data.json"; exit 0; }
touch /run/configdrive
json_str() { tr -d '\n' <"$md" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }
uuid=$(json_str uuid)
say "config drive $dev uuid=$uuid"
echo "$uuid" >/run/instance-id
h=$(json_str hostname | cut -d. -f1)
if [ -n "$h" ]; then hostname "$h"; echo "$h" >/etc/hostname; touch /run/hostname-from-metadata; say "hostname=$h"; fi
# public_keys: {"name": "ssh-... comment\n", ...}
tr -d '\n' <"$md" | sed -n 's/.*"public_keys": *{\([^}]*\)}.*/\1/p' |
    sed 's/", *"/"\n"/g' | sed -n 's/^ *"[^"]*": *"\([^"]*\)".*/\1/p' | sed 's/\\n$//' >/run/cd-keys
if [ -s /run/cd-keys ]; then /usr/sbin/stratus-install-key /run/cd-keys; say "ssh key installed"; fi
/usr/sbin/stratus-run-userdata /mnt/config/openstack/latest/user_data
X

    cat >"$R/etc/acpi/PWRF/00000080" <<'X'
#!/bin/sh
echo "stratus-guest: ACPI power button pressed -> poweroff" >/dev/console
poweroff
X
    chmod 755 "$R/init" "$R/etc/init.d/rcS" "$R/etc/init.d/rcK" "$R/etc/udhcpc/default.script" \
        "$R"/usr/sbin/stratus-* "$R/etc/acpi/PWRF/00000080"

    # reproducible cpio: fixed mtimes, sorted names, root-owned, no gzip timestamp
    find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$R" && find . -mindepth 1 | sort |
        cpio --quiet -o -H newc --reproducible -R 0:0) | gzip -n -9
}

# ---------------------------------------------------------------- disk
build_disk() { # vmlinuz initrd out.qcow2 workdir
    local W=$4 total_mib part_mib
    local ksz isz
    ksz=$(stat -c %s "$1"); isz=$(stat -c %s "$2")
    part_mib=$(( (ksz + isz) / 1048576 + 4 ))
    total_mib=$(( part_mib + 1 ))
    rm -f "$W/part.img" "$W/disk.raw"
    cat >"$W/syslinux.cfg" <<'X'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=tty0 console=ttyS0,115200n8
X
    mkfs.fat -F 16 -h 2048 -n STRATUS -i 53545254 -C "$W/part.img" $((part_mib * 1024)) >/dev/null
    syslinux --install "$W/part.img"
    mcopy -m -i "$W/part.img" "$W/syslinux.cfg" "$1" ::/
    mcopy -m -i "$W/part.img" "$2" ::/initrd.img
    truncate -s "${total_mib}M" "$W/disk.raw"
    printf 'label: dos\nlabel-id: 0x53545254\nstart=2048, type=e, bootable\n' |
        sfdisk -q --no-reread --no-tell-kernel "$W/disk.raw" >/dev/null
    dd if="$MBR_BIN" of="$W/disk.raw" bs=440 count=1 conv=notrunc status=none
    dd if="$W/part.img" of="$W/disk.raw" bs=1M seek=1 conv=notrunc status=none
    qemu-img convert -f raw -O qcow2 "$W/disk.raw" "$3.tmp"
    mv "$3.tmp" "$3"
    rm -f "$W/part.img" "$W/disk.raw"
}

manifest() { # dir variant
    {
        echo "# Stratus test image, built $(date -u +%FT%TZ) by tools/build-test-image.sh"
        echo "image=stratus-test-$2"
        echo "kernel=$KVER"
        echo "cmdline=$(cat "$1/cmdline.txt")"
        echo "modules=${ORDER[*]}"
        echo "min_ram_mib=96"
        echo "login=cirros/gocubsgo"
        echo "# packages"
        for p in "${GUEST_PKGS[@]}"; do
            dpkg-deb -W --showformat='${Package} ${Version}\n' "$(deb_of "$p")"
        done
        echo "# files (sha256 size name)"
        for f in vmlinuz initrd.img disk.qcow2; do
            echo "$(sha256sum "$1/$f" | cut -d' ' -f1) $(stat -c %s "$1/$f") $f"
        done
        qemu-img info "$1/disk.qcow2" | sed -n 's/^virtual size: /disk.qcow2 virtual size: /p'
    } >"$1/MANIFEST.txt"
}

for v in $VARIANTS; do
    case $v in
        a) dir=$OUT ;;
        b) dir=$OUT/b ;;
        *) die "unknown variant $v (a or b)" ;;
    esac
    mkdir -p "$dir"
    cp "$VMLINUZ" "$dir/vmlinuz.tmp" && mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
    build_initrd "$v" "$CACHE/initrd-$v" >"$dir/initrd.img.tmp"
    mv "$dir/initrd.img.tmp" "$dir/initrd.img"
    echo "console=ttyS0,115200n8" >"$dir/cmdline.txt"
    build_disk "$dir/vmlinuz" "$dir/initrd.img" "$dir/disk.qcow2" "$CACHE"
    manifest "$dir" "$v"
    log "variant $v: $dir ($(du -h "$dir/disk.qcow2" | cut -f1) disk.qcow2)"
done
end=$(date +%s.%N)
log "done in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
