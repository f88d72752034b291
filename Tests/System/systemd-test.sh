#!/usr/bin/env bash
# The .deb under a real systemd: a Debian 12 tree made by debootstrap (cached in
# .build/systemd-test/rootfs-base) gets the package with `dpkg -i`, the shipped example
# configuration adapted to simulated devices and a broker on the host's loopback (the container
# shares the host's network), and is booted with systemd-nspawn; commands run in it through
# nsenter into its PID 1's namespaces. Checks, in order:
#   1. railgate is active within 30 s of the container's systemd answering;
#   2. telemetry from all three devices arrives at the broker;
#   3. the main process runs as the railgate user with no capabilities;
#   4. `systemctl reload` keeps the seqs contiguous;
#   5. `kill -9` of the main pid: systemd restarts it, telemetry goes on, no seq is reused;
#   6. a stalled bus loop (the RAILGATE_TEST_HOOK_STALL_FILE test hook, set by a drop-in with
#      WatchdogSec=10s) stops the watchdog pings and systemd restarts the service;
#   -. `dpkg -i` of the package again (an upgrade) restarts it, seqs still contiguous;
#   7. `systemctl stop` ends with status 0 and {"state":"offline"} retained on the status topic;
#   -. `dpkg -r` keeps /etc/railgate and /var/lib/railgate, `dpkg --purge` deletes them.
# Prints the idle RSS of the main process. Skips (exit 0, with the reason) without root,
# debootstrap or systemd-nspawn. Usage: Tests/System/systemd-test.sh PATH.deb
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
deb=$(realpath "${1:?usage: systemd-test.sh PATH.deb}")

skip() { echo "SKIP systemd-test: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, debootstrap)"
command -v debootstrap >/dev/null || skip "debootstrap missing (apt-get install debootstrap)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn missing (apt-get install systemd-container)"
for tool in mosquitto mosquitto_sub python3 nsenter; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || skip "$tool missing"
done

started_at=$(date +%s)
cache=$repo/.build/systemd-test
base=$cache/rootfs-base
work=$cache/work
scratch=$(mktemp -d /tmp/railgate-systemd-test.XXXXXX)
chmod 0755 "$scratch"
gateway_id=KZ-WAG-00042
# Debian's packages only; the runtime libraries railgate's Depends: name are in the tree from the start.
include=systemd,systemd-sysv,dbus,libmodbus5,libmosquitto1,libgpiod2,zlib1g,libstdc++6

pids=()
nspawn_pid=
passed=no
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true # nspawn asks the container's systemd to power off
        for _ in $(seq 1 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
    # The booted copy stays after a failure, for its journal (journalctl -D $work/var/log/journal).
    if [ "$passed" = yes ] && ! { [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; }; then rm -rf "$work"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL systemd-test: $*"
    if [ -n "${leader:-}" ]; then
        echo "--- journal of railgate.service in the container (last 60 lines)"
        inside journalctl -u railgate --no-pager -n 60 2>&1 || true
        inside systemctl status railgate --no-pager 2>&1 | head -20 || true
    fi
    echo "--- nspawn console (last 30 lines)"
    tail -30 "$scratch/nspawn.log" 2>/dev/null || true
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within $seconds s"
        sleep 0.5
    done
}

# --- The tree: debootstrapped once, cached; each run works on a fresh copy.
if [ ! -f "$base/.railgate-include" ] || [ "$(cat "$base/.railgate-include")" != "$include" ]; then
    echo "systemd-test: debootstrap bookworm into $base (about a minute; cached afterwards)"
    rm -rf "$base" "$base.tmp"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" http://deb.debian.org/debian \
        >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log"; fail "debootstrap failed"; }
    echo "$include" >"$base.tmp/.railgate-include"
    mv "$base.tmp" "$base"
fi
rm -rf "$work"
cp -a --reflink=auto "$base" "$work"

# --- Host side: a broker on loopback and two simulated RS-485 devices served over Modbus TCP.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker_port=$(free_port)
cat >"$scratch/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
max_queued_messages 0
persistence false
CONF
chmod 0644 "$scratch/mosquitto.conf"
/usr/sbin/mosquitto -c "$scratch/mosquitto.conf" >"$scratch/mosquitto.log" 2>&1 &
pids+=($!)
broker_up() { python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$broker_port"; }
wait_for 20 "mosquitto listening on $broker_port" broker_up
mosquitto_sub -h 127.0.0.1 -p "$broker_port" -q 1 -v -t "railgate/$gateway_id/#" >"$scratch/messages" 2>&1 &
pids+=($!)

sim=$(dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$scratch" ./usr/bin/railgate-sim && echo "$scratch/usr/bin/railgate-sim")
# Started here, not in a command substitution's subshell, so that cleanup knows their pids.
start_sim() { # PROFILE UNITS OUTFILE
    "$sim" wagon --profile "$1" --profile-path "$repo/Firmware-config/profiles" --tcp 127.0.0.1:0 --units "$2" \
        >"$3" 2>&1 &
    pids+=($!)
}
sim_port() { # PROFILE OUTFILE
    wait_for 20 "railgate-sim serving $1" grep -q "serving" "$2"
    sed -n 's/.*on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$2" | head -1
}
start_sim axle-bearing-sensor 7-8 "$scratch/sim-axle.log"
start_sim brake-load-sensor 12-12 "$scratch/sim-brake.log"
axle_port=$(sim_port axle-bearing-sensor "$scratch/sim-axle.log")
brake_port=$(sim_port brake-load-sensor "$scratch/sim-brake.log")

# --- The package, and the shipped example configuration adapted to this test bench.
cp "$deb" "$work/srv/"
systemd-nspawn -q --register=no --keep-unit -D "$work" dpkg -i "/srv/$(basename "$deb")" >"$scratch/dpkg.log" 2>&1 ||
    { cat "$scratch/dpkg.log"; fail "dpkg -i failed"; }
[ "$(stat -c '%U:%a' "$work/etc/railgate/railgate.toml")" = "root:640" ] || fail "railgate.toml is not root-owned 0640"
railgate_gid=$(sed -n 's/^railgate:x:\([0-9]*\):.*/\1/p' "$work/etc/group")
[ "$(stat -c %g "$work/etc/railgate/railgate.toml")" = "$railgate_gid" ] || fail "railgate.toml's group is not railgate"
[ -L "$work/etc/systemd/system/multi-user.target.wants/railgate.service" ] || fail "dpkg -i did not enable the unit"
python3 - "$work/etc/railgate/railgate.toml" "$broker_port" "$axle_port" "$brake_port" <<'PY'
import re, sys
path, broker, axle, brake = sys.argv[1:]
text = open(path).read()
text = text.replace('url = "mqtts://telemetry.example.net:8883"', f'url = "mqtt://127.0.0.1:{broker}"')
text = re.sub(r'(?m)^(username|password_file|ca_file|max_bytes_per_s) = .*\n', '', text)
text = text.replace('compression = "gzip"', 'compression = "none"')
text = text.replace('batch_interval_ms = 5000', 'batch_interval_ms = 500')
text = re.sub(r'(?m)^(baud|parity|data_bits|stop_bits) = .*\n', '', text)
text = text.replace('transport = "rtu"\ndevice = "/dev/ttyS1"', f'transport = "tcp"\nhost = "127.0.0.1"\nport = {axle}')
# brake-load answers on its own simulated endpoint: a second bus.
head, brake_device = text.rsplit('[[device]]\nname = "brake-load"\nbus = "wagon-rs485"', 1)
text = (head + f'[[bus]]\nname = "brake-tcp"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {brake}\ntimeout_ms = 500\n\n'
        + '[[device]]\nname = "brake-load"\nbus = "brake-tcp"' + brake_device)
assert 'mqtts' not in text and '/dev/ttyS1' not in text
open(path, 'w').write(text)
PY
# The test hook and a shorter watchdog, for this bench only (a drop-in, as an administrator would).
mkdir -p "$work/etc/systemd/system/railgate.service.d"
cat >"$work/etc/systemd/system/railgate.service.d/test.conf" <<'CONF'
[Service]
Environment=RAILGATE_TEST_HOOK_STALL_FILE=/run/railgate/stall-test-hook
WatchdogSec=10s
CONF

# --- Boot.
systemd-nspawn --register=no --keep-unit --console=passive -D "$work" -b >"$scratch/nspawn.log" 2>&1 &
nspawn_pid=$!
leader=
container_leader() {
    local child
    for child in $(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null); do
        if [ "$(cat /proc/"$child"/comm 2>/dev/null)" = systemd ]; then
            leader=$child
            return 0
        fi
    done
    return 1
}
wait_for 60 "the container's systemd as PID 1" container_leader
inside() { nsenter --target "$leader" --mount --uts --ipc --pid --cgroup -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
system_answers() { inside systemctl is-system-running 2>/dev/null | grep -qvE 'offline|^$'; }
wait_for 90 "the container's systemd answering" system_answers
booted_at=$(date +%s)
wait_for 30 "railgate active after boot" inside systemctl is-active --quiet railgate
echo "ok 1 railgate active $(($(date +%s) - booted_at)) s after the container's systemd answered"

# --- 2. Telemetry from every device.
# seqs.py prints a report of the telemetry received so far; see its checks. Batches are
# compact/1 by default: they are read with the decoder CONTRACT.md gives consumers, as written there.
python3 - "$repo/CONTRACT.md" >"$scratch/seqs.py" <<'PY'
import sys
contract = open(sys.argv[1]).read()
start = contract.index("```python\n", contract.index("A complete decoder")) + len("```python\n")
print(contract[start:contract.index("```", start)])
PY
cat >>"$scratch/seqs.py" <<'PY'
import json, sys
messages, mode = sys.argv[1], sys.argv[2]
records = {}
sources = set()
reused = []
for line in open(messages, errors="replace"):
    topic, _, payload = line.rstrip("\n").partition(" ")
    if not topic.endswith("/telemetry"):
        continue
    for record in decode_batch(payload.encode())["records"]:
        seq = record["seq"]
        sources.add(record.get("source"))
        if seq in records and records[seq] != record:
            reused.append(seq)
        records[seq] = record
seqs = sorted(records)
if mode == "max":
    print(seqs[-1] if seqs else 0)
elif mode == "sources":
    print(" ".join(sorted(s for s in sources if s)))
elif mode == "check":
    # A gap is allowed only where a records_lost event says those seqs will never arrive (a
    # kill -9 skips the rest of the reserved seq block, so that none is ever handed out twice).
    lost = [(r["from_seq"], r["to_seq"]) for r in records.values() if r.get("event") == "records_lost"]
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:])
            if b != a + 1 and not any(low <= a + 1 and b - 1 <= high for low, high in lost)]
    print(f"{len(seqs)} records, seq {seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}, gaps {gaps[:5]}, reused {reused[:5]}")
    sys.exit(1 if gaps or reused or not seqs else 0)
PY
seqs() { python3 "$scratch/seqs.py" "$scratch/messages" "$@"; }
all_sources() { [ "$(seqs sources)" = "axlebox-bogie-a axlebox-bogie-b brake-load" ]; }
wait_for 60 "telemetry from axlebox-bogie-a, axlebox-bogie-b and brake-load" all_sources
echo "ok 2 telemetry at the broker: $(seqs check)"
status_text() { inside systemctl show -p StatusText --value railgate | grep -q "^3/3 devices answering, uplink connected, buffer"; }
wait_for 20 "STATUS= saying 3/3 devices answering and the uplink connected" status_text
echo "   STATUS: $(inside systemctl show -p StatusText --value railgate)"

# --- 3. The railgate user, no capabilities.
main_pid() { inside systemctl show -p MainPID --value railgate; }
pid=$(main_pid)
[ "$pid" -gt 0 ] || fail "no main pid"
status=$(inside cat "/proc/$pid/status")
uid=$(printf '%s\n' "$status" | awk '/^Uid:/ { print $2 }')
[ "$(inside id -u railgate)" = "$uid" ] || fail "main process runs as uid $uid, not railgate"
for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
    value=$(printf '%s\n' "$status" | awk -v c="$cap:" '$1 == c { print $2 }')
    [ "$value" = 0000000000000000 ] || fail "$cap is $value, not empty"
done
echo "ok 3 main pid $pid runs as railgate (uid $uid) with no capabilities"

# --- 4. Reload keeps the seqs contiguous.
before=$(seqs max)
inside systemctl reload railgate || fail "systemctl reload failed"
more_than() { [ "$(seqs max)" -gt "$1" ]; }
wait_for 30 "telemetry after the reload" more_than $((before + 6))
[ "$(main_pid)" = "$pid" ] || fail "reload changed the main pid"
inside journalctl -u railgate --no-pager -o cat | grep -q "reloading the configuration" || fail "railgate did not reload"
seqs check >/dev/null || fail "seqs not contiguous after the reload: $(seqs check)"
echo "ok 4 reload: $(seqs check)"
# Idle RSS of the daemon in its steady state (3 devices polled, uplink connected, reloaded once).
rss_kb=$(inside cat "/proc/$pid/status" | awk '/^VmRSS:/ { print $2 }')
threads=$(inside cat "/proc/$pid/status" | awk '/^Threads:/ { print $2 }')
echo "   idle RSS ${rss_kb} kB, $threads threads"

# --- 5. kill -9: restarted, no seq reused; the skipped rest of the seq block is reported lost.
restarts() { inside systemctl show -p NRestarts --value railgate; }
restarts_before=$(restarts)
inside sh -c "kill -9 $pid" # the shell's kill: the tree has no procps
restarted() { [ "$(restarts)" -gt "$restarts_before" ] && inside systemctl is-active --quiet railgate; }
wait_for 30 "a restart after kill -9" restarted
new_pid=$(main_pid)
[ "$new_pid" != "$pid" ] || fail "same main pid after kill -9"
before=$(seqs max)
wait_for 30 "telemetry after the restart" more_than $((before + 6))
seqs_hold() { seqs check >/dev/null; }
wait_for 15 "every gap in seqs covered by a records_lost event" seqs_hold || fail "after kill -9: $(seqs check)"
echo "ok 5 kill -9 of $pid: restarted as $new_pid, $(seqs check)"


# --- 6. A stalled bus loop: no more watchdog pings, systemd restarts the service.
pid=$new_pid
restarts_before=$(restarts)
inside touch /run/railgate/stall-test-hook
inside chown railgate:railgate /run/railgate/stall-test-hook
stall_taken() { inside test ! -e /run/railgate/stall-test-hook; }
wait_for 20 "a bus loop taking the stall hook" stall_taken
stall_at=$(date +%s)
wait_for 90 "a restart after the stall" restarted
journal=$(inside journalctl -u railgate --no-pager -o cat)
printf '%s\n' "$journal" | grep -q "made no progress" || fail "railgate did not log the stalled loop"
printf '%s\n' "$journal" | grep -qi "watchdog timeout" || fail "systemd did not report a watchdog timeout"
[ "$(main_pid)" != "$pid" ] || fail "same main pid after the watchdog"
before=$(seqs max)
wait_for 30 "telemetry after the watchdog restart" more_than $((before + 6))
seqs check >/dev/null || fail "after the watchdog restart: $(seqs check)"
echo "ok 6 stalled bus loop: watchdog restart $(($(date +%s) - stall_at)) s after the stall, $(seqs check)"

# --- An upgrade (the same package again, with systemd running): postinst restarts the service.
pid=$(main_pid)
inside dpkg -i "/srv/$(basename "$deb")" >"$scratch/dpkg-upgrade.log" 2>&1 || { cat "$scratch/dpkg-upgrade.log"; fail "dpkg -i (upgrade) failed"; }
upgraded() { [ "$(main_pid)" != "$pid" ] && [ "$(main_pid)" != 0 ] && inside systemctl is-active --quiet railgate; }
wait_for 30 "railgate restarted by the upgrade" upgraded
before=$(seqs max)
wait_for 30 "telemetry after the upgrade" more_than $((before + 6))
seqs check >/dev/null || fail "after the upgrade: $(seqs check)"
echo "ok upgrade: dpkg -i restarted railgate ($pid -> $(main_pid)), $(seqs check)"

# --- 7. Stop: exit 0 and offline on the status topic.
inside systemctl stop railgate || fail "systemctl stop failed"
code=$(inside systemctl show -p ExecMainStatus --value railgate)
result=$(inside systemctl show -p Result --value railgate)
[ "$code" = 0 ] && [ "$result" = success ] || fail "stop: exit status $code, result $result"
offline=$(mosquitto_sub -h 127.0.0.1 -p "$broker_port" -t "railgate/$gateway_id/status" -C 1 -W 10)
[ "$offline" = '{"state":"offline"}' ] || fail "retained status after stop is $offline"
# The journal carries railgate's own priorities (<N> prefixes): its notice lines are priority 5.
inside journalctl -u railgate --no-pager -p notice -o cat | grep -q "signal 15: stopping" ||
    fail "the stop line is not in the journal at priority notice"
echo "ok 7 systemctl stop: exit 0, status topic $offline"
seqs check >/dev/null || fail "final: $(seqs check)"

# --- Remove keeps the buffer and the configuration; purge deletes them.
inside dpkg -r railgate >"$scratch/dpkg-remove.log" 2>&1 || { cat "$scratch/dpkg-remove.log"; fail "dpkg -r failed"; }
[ -f "$work/etc/railgate/railgate.toml" ] || fail "dpkg -r removed the configuration"
ls "$work/var/lib/railgate" | grep -q . || fail "dpkg -r removed the buffer"
[ ! -e "$work/usr/bin/railgate" ] || fail "dpkg -r left /usr/bin/railgate"
inside dpkg --purge railgate >"$scratch/dpkg-purge.log" 2>&1 || { cat "$scratch/dpkg-purge.log"; fail "dpkg --purge failed"; }
[ ! -e "$work/etc/railgate" ] || fail "dpkg --purge left /etc/railgate"
[ ! -e "$work/var/lib/railgate" ] || fail "dpkg --purge left /var/lib/railgate"
! inside dpkg-statoverride --list /etc/railgate/railgate.toml >/dev/null || fail "purge left the stat override"
echo "ok remove kept /etc/railgate and /var/lib/railgate; purge deleted them"
passed=yes
echo "ok systemd-test: $(seqs check); $(($(date +%s) - started_at)) s"
