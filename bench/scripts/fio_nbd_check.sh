#!/bin/bash
# Cross-check of the disk_io benchmark's own NBD client: fio's nbd engine
# (libnbd) drives qemu-nbd and a warm cownetdisk through the same rows
# (4 KiB random and 1 MiB sequential reads and writes, depth 1 and 16,
# 3 s each), every process pinned to CPU 0 as disk_io pins by default.
#
#   cargo build --release -p jettison-cli && bench/scripts/fio_nbd_check.sh
#
# Needs fio with the nbd engine (Debian's has it), qemu-nbd, taskset, bc.
# The last line says how much CPU time other processes used meanwhile.
set -euo pipefail
jettison=${JETTISON:-target/release/jettison}
port=${PORT:-7499}
busy() { awk '/^cpu /{print $2 + $3 + $4}' /proc/stat; }
b0=$(busy); t0=$(date +%s.%N)
d=$(mktemp -d); pids=""
trap 'kill $pids 2>/dev/null || true; rm -rf "$d"' EXIT

# The desktop's image, and qemu-nbd's copy written 4 KiB at a time as
# disk_io writes it (the page cache keeps the folio size a file was written in).
head -c $((256 << 20)) /dev/urandom > "$d/img.raw"
dd if="$d/img.raw" of="$d/copy.raw" bs=4k status=none
sync
taskset -c 0 qemu-nbd -f raw -x vm1 --cache=writeback --persistent --shared=4 -k "$d/q.sock" "$d/copy.raw" &
pids="$!"
# Each end its own key, each enrolled at the other.
"$jettison" enroll server "$("$jettison" pair --key "$d/server.key" 2> /dev/null)" --peers "$d/desktop-peers" > /dev/null
"$jettison" enroll desktop "$("$jettison" pair --key "$d/desktop.key" 2> /dev/null)" --peers "$d/server-peers" > /dev/null
taskset -c 0 "$jettison" diskserv --vm vm1 --image "$d/img.raw" --listen "127.0.0.1:$port" \
    --host-key "$d/desktop.key" --peers "$d/desktop-peers" 2> /dev/null &
pids="$pids $!"
sleep 0.5
taskset -c 0 "$jettison" cownetdisk --vm vm1 --desktop "127.0.0.1:$port" --host-key "$d/server.key" --peers "$d/server-peers" --state-dir "$d/state" \
    --unix "$d/c.sock" 2> /dev/null &
pids="$pids $!"
sleep 1

# One fio job; prints "IOPS, MB/s" (fio's terse format v3: read bandwidth
# and IOPS in fields 7-8, write in 48-49; bandwidth in KiB/s).
fio_row() {
    taskset -c 0 fio --name=t --ioengine=nbd --uri="nbd+unix:///vm1?socket=$1" --rw="$2" --bs="$3" --iodepth="$4" \
        --size=256m "${@:5}" --output-format=terse --terse-version=3 |
        awk -F';' -v rw="$2" '$1 == 3 { c = (rw ~ /write/) ? 48 : 7; printf "%.0f IOPS, %.1f MB/s", $(c + 1), $c * 1.024 / 1000 }'
}

echo "cownetdisk cold, the whole image read once to warm it, 1 MiB, depth 1: $(fio_row "$d/c.sock" read 1m 1)"
sync
for row in randread:4k:1 randread:4k:16 read:1m:1 read:1m:16 randwrite:4k:1 randwrite:4k:16 write:1m:1 write:1m:16; do
    IFS=: read -r rw bs depth <<< "$row"
    for server in q c; do
        name=$([ $server = q ] && echo qemu-nbd || echo "cownetdisk warm")
        echo "$name, $rw $bs, depth $depth: $(fio_row "$d/$server.sock" "$rw" "$bs" "$depth" --runtime=3 --time_based)"
    done
done

kill $pids 2> /dev/null || true
wait $pids 2> /dev/null || true
pids=""
b1=$(busy); t1=$(date +%s.%N)
times > "$d/times"
own=$(tail -1 "$d/times" | awk '{ split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
others=$(echo "($b1 - $b0) / $(getconf CLK_TCK) - $own" | bc -l)
printf 'other processes and kernel threads used %.2f CPU-s/s meanwhile\n' "$(echo "$others / ($t1 - $t0)" | bc -l)"
