#!/bin/sh
# The power-cut test's script INSIDE the VM (busybox sh), baked into the initramfs by
# Tests/IntegrationTests/PowerCutTests.swift. /dev/vda (ext4) is mounted on /data and holds
# state_dir; the buffer carries over from boot to boot on the same image.
#  1. Before the daemon starts, what the read-only tools see of the buffer the last cut left:
#       PC-STATS <`railgate buffer stats --json`>      (or PC-STATS none on the first boot)
#       PC-DUMP lines=<n> md5=<md5 of `railgate buffer dump`>
#     so the host can compare the guest kernel's view of the disk with the one it checked.
#  2. Starts `railgate-sim wagon` on 127.0.0.1 and `railgate run` (url = "none"), then
#     reports over the console, as fast as `railgate status --json` answers:
#       PC-STATUS handed=<next_seq - 1> durable=<durable_seq>
#     and once, as soon as the first record of this run is in the segment file:
#       PC-FIRST seq=<the first seq this run handed out>
#  3. Runs until the host SIGKILLs qemu (the power cut). With `powercut.final` on the kernel
#     command line it stops the daemon with SIGTERM after PC-FIRST and one more PC-STATUS
#     instead (PC-FINAL status=<its exit status>) and powers off; with `powercut.nofsync` (the negative control) the daemon runs under
#     libeatmydata, so its fsync and fdatasync do nothing.
S=/data/state
SOCK=/run/railgate-control.sock
up() { cut -d' ' -f1 /proc/uptime; }
# One PC-STATUS line from the daemon's status document (nothing while it does not answer).
report_status() {
  handed=""; durable=""
  for pair in $(railgate status --socket $SOCK --json 2>/dev/null | grep -oE '"(next|durable)_seq":[0-9]+'); do
    case $pair in
      *next_seq*) handed=$((${pair#*:} - 1)) ;;
      *durable_seq*) durable=${pair#*:} ;;
    esac
  done
  [ -n "$handed" ] && [ -n "$durable" ] && echo "PC-STATUS handed=$handed durable=$durable"
}
final=0; grep -q 'powercut.final' /proc/cmdline && final=1
preload=""; grep -q 'powercut.nofsync' /proc/cmdline && preload=$(ls /usr/lib/x86_64-linux-gnu/libeatmydata.so*)
grep -q " /data " /proc/mounts || { echo "PC-ERROR: /dev/vda is not mounted on /data"; exit 1; }
echo "PC-BOOT uptime=$(up) write_cache=$(cat /sys/block/vda/queue/write_cache)"

last=0
if [ -d $S/buffer ]; then
  stats=$(railgate buffer stats --state-dir $S --json) || { echo "PC-ERROR: buffer stats failed"; exit 1; }
  echo "PC-STATS $stats"
  railgate buffer dump --state-dir $S > /tmp/dump.jsonl || { echo "PC-ERROR: buffer dump failed"; exit 1; }
  echo "PC-DUMP lines=$(wc -l < /tmp/dump.jsonl) md5=$(md5sum < /tmp/dump.jsonl | cut -d' ' -f1)"
  last=$(tail -n1 /tmp/dump.jsonl | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p')
  last=${last:-0}
  rm -f /tmp/dump.jsonl
else
  echo "PC-STATS none"
fi
echo "PC-LAST seq=$last uptime=$(up)"

railgate-sim wagon --profile axle-bearing-sensor --profile-path /etc/railgate/profiles \
  --tcp 127.0.0.1:15020 --units 1-2 > /tmp/sim.log 2>&1 &
i=0
until grep -q serving /tmp/sim.log; do
  i=$((i + 1)); [ $i -le 600 ] || { echo "PC-ERROR: the simulator did not start"; cat /tmp/sim.log; exit 1; }
  usleep 50000
done
LD_PRELOAD=$preload railgate run --config /etc/railgate/powercut.toml > /tmp/daemon.log 2>&1 &
daemon=$!
echo "PC-DAEMON started uptime=$(up)${preload:+ with $preload}"

first=""
n=0
while :; do
  if ! kill -0 $daemon 2>/dev/null; then echo "PC-ERROR: the daemon exited"; cat /tmp/daemon.log; exit 1; fi
  report_status
  if [ -z "$first" ]; then
    first=$(railgate buffer dump --state-dir $S --from $((last + 1)) --limit 1 2>/dev/null |
      sed -n 's/^{"seq":\([0-9]*\),.*/\1/p')
    [ -n "$first" ] && echo "PC-FIRST seq=$first uptime=$(up)"
  fi
  if [ -n "$first" ] && [ $final -eq 1 ]; then
    # the last seq handed out before the stop: a clean stop makes everything up to it durable
    report_status
    kill -TERM $daemon
    wait $daemon
    echo "PC-FINAL status=$? uptime=$(up)"
    exit 0
  fi
  n=$((n + 1))
  # the daemon's latest log lines now and then, for a failure's post-mortem
  [ $((n % 50)) -eq 0 ] && tail -n 2 /tmp/daemon.log | sed 's/^/PC-LOG /'
done
