#!/usr/bin/env bash
# Image data path benchmark: upload and download a 1 GiB image through the image API
# (PUT/GET /image/v2/images/{id}/file over loopback HTTP, md5 + sha512 + format
# inspection + qemu-img check included), next to `cp` of the same file, with the
# server's RSS sampled every 50 ms during each transfer.
#
# Usage: bench/image.sh [size-in-MiB]   (default 1024)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MIB="${1:-1024}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The image crate's own code (batching, the generic parts of md5/sha512 instantiated in
# it) is built optimized as a release build would be; dev builds leave it at opt-level 0,
# which costs ~2x CPU per byte. BENCH_CARGO_ARGS="" measures the plain dev build.
BENCH_CARGO_ARGS="${BENCH_CARGO_ARGS---config profile.dev.package.stratus-image.opt-level=2}"
# shellcheck disable=SC2086
cargo build -q -p stratus-image --example bench_server $BENCH_CARGO_ARGS
BIN="$CARGO_TARGET_DIR/debug/examples/bench_server"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stratus-image-bench.XXXXXX")"
SERVER=""
SAMPLER=""
cleanup() {
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
  [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

head -c "$((MIB * 1024 * 1024))" /dev/urandom > "$WORK/src.img"
SIZE=$(stat -c %s "$WORK/src.img")
sync

"$BIN" "$WORK/data" > "$WORK/server.out" 2> "$WORK/server.err" &
SERVER=$!
for _ in $(seq 100); do grep -q LISTEN "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
URL="$(awk '/LISTEN/ {print $2}' "$WORK/server.out")/image"
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
sample() { # peak RSS (KiB) while running, written to $1
  local peak=0 r
  while true; do r=$(rss); ((r > peak)) && peak=$r && echo "$peak" > "$1"; sleep 0.05; done
}
now() { date +%s.%N; }
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$SERVER/stat"; } # server utime+stime, s
mbps() { awk -v b="$SIZE" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }

# Physical reference: cp (+ sync so the data reaches the disk as the upload's fsync does).
t0=$(now); cp "$WORK/src.img" "$WORK/copy.img"; sync; t1=$(now)
CP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
rm -f "$WORK/copy.img"

IDLE=$(rss)
H=(-H "X-Auth-Token: bench-token")
ID=$(curl -sf "${H[@]}" -H 'Content-Type: application/json' -d '{"name":"bench","disk_format":"raw","container_format":"bare"}' \
  "$URL/v2/images" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

echo "$IDLE" > "$WORK/peak.up"; sample "$WORK/peak.up" & SAMPLER=$!
c0=$(cpu); t0=$(now)
curl -sf "${H[@]}" -X PUT -H 'Content-Type: application/octet-stream' -T "$WORK/src.img" "$URL/v2/images/$ID/file"
t1=$(now)
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
UP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'); UP_CPU=$(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { print b - a }')

echo "$IDLE" > "$WORK/peak.down"; sample "$WORK/peak.down" & SAMPLER=$!
c0=$(cpu); t0=$(now)
curl -sf "${H[@]}" -D "$WORK/headers" -o "$WORK/dl.img" "$URL/v2/images/$ID/file"
t1=$(now)
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
DOWN_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'); DOWN_CPU=$(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { print b - a }')

SRC_MD5=$(md5sum "$WORK/src.img" | cut -d' ' -f1)
DL_MD5=$(md5sum "$WORK/dl.img" | cut -d' ' -f1)
HDR_MD5=$(awk -F': ' 'tolower($1)=="content-md5" {gsub("\r",""); print $2}' "$WORK/headers")
[[ $SRC_MD5 == "$DL_MD5" && $SRC_MD5 == "$HDR_MD5" ]] || { echo "checksum mismatch: $SRC_MD5 $DL_MD5 $HDR_MD5"; exit 1; }

printf 'image size           %d MiB\n' "$MIB"
printf 'cp + sync            %6.2f s  %5s MB/s\n' "$CP_S" "$(mbps "$CP_S")"
printf 'API upload (PUT)     %6.2f s  %5s MB/s  peak RSS %d MiB (idle %d MiB, +%d MiB)\n' \
  "$UP_S" "$(mbps "$UP_S")" "$(( $(cat "$WORK/peak.up") / 1024 ))" "$((IDLE / 1024))" "$(( ($(cat "$WORK/peak.up") - IDLE) / 1024 ))"
printf 'API download (GET)   %6.2f s  %5s MB/s  peak RSS %d MiB (idle %d MiB, +%d MiB)\n' \
  "$DOWN_S" "$(mbps "$DOWN_S")" "$(( $(cat "$WORK/peak.down") / 1024 ))" "$((IDLE / 1024))" "$(( ($(cat "$WORK/peak.down") - IDLE) / 1024 ))"
printf 'server CPU           upload %.1f s, download %.1f s (load average now: %s)\n' "$UP_CPU" "$DOWN_CPU" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'checksums            md5 %s (source = download = Content-MD5)\n' "$SRC_MD5"
