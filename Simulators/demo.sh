#!/usr/bin/env bash
# The railgate demo: a local Mosquitto, two simulated wagon sensor boxes on Modbus TCP, a
# simulated border-gate barrier, and the gateway with Firmware-config/examples/demo.toml. Shows
# what reaches the broker as one line per record (values with their units; alarms and gate events
# stand out), the gateway's own log lines as they are written, and `railgate status`, until
# Ctrl-C; then stops everything and ends with exit 0.
set -euo pipefail
bin=${1:-.build/debug}
work=/tmp/railgate-demo
broker_port=18830
mkdir -p "$work"
rm -rf "$work/state"
pids=()
stopping=false
cleanup() {
    $stopping && return
    stopping=true
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
# Ctrl-C reaches every process of the demo at once (the gateway stops itself cleanly on it);
# the script then tidies up and ends with 0, so make reports no error.
stop() {
    echo
    echo "demo: stopping"
    cleanup
    echo "demo: stopped. The gateway's buffer stays in $work/state: railgate buffer stats --state-dir $work/state"
    exit 0
}
trap stop INT TERM
trap cleanup EXIT

cat > "$work/mosquitto.conf" <<CONF
listener $broker_port 127.0.0.1
allow_anonymous true
max_queued_messages 0
persistence false
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
"$bin/railgate-sim" wagon --profile axle-bearing-sensor --tcp 127.0.0.1:15020 --units 1-2 \
    --scenario Simulators/scenarios/hot-box.toml > "$work/sim-axle.log" 2>&1 &
pids+=($!)
"$bin/railgate-sim" wagon --profile brake-load-sensor --tcp 127.0.0.1:15021 --unit 3 > "$work/sim-brake.log" 2>&1 &
pids+=($!)
"$bin/railgate-sim" gate --socket "$work/gate.sock" --scenario Simulators/scenarios/gate-demo.toml > "$work/sim-gate.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    if grep -q serving "$work/sim-axle.log" && grep -q serving "$work/sim-brake.log" && grep -q serving "$work/sim-gate.log"; then break; fi
    sleep 0.1
done
# A fixed port already taken (another demo, a leftover broker) must stop the demo, not leave it
# running against whatever listens there.
for index in 0 1 2 3; do
    if ! kill -0 "${pids[$index]}" 2>/dev/null; then
        log=("$work/mosquitto.log" "$work/sim-axle.log" "$work/sim-brake.log" "$work/sim-gate.log")
        echo "demo: $(basename "${log[$index]}" .log) did not start (a port of 18830, 15020, 15021 taken? ss -ltnp):" >&2
        sed 's/^/  /' "${log[$index]}" >&2
        exit 1
    fi
done

echo "demo: broker on 127.0.0.1:$broker_port, wagon sensors on 127.0.0.1:15020 (units 1-2) and :15021 (unit 3),"
echo "demo: a border-gate barrier on sim:$work/gate.sock (a truck every 20 s); axlebox-2 runs a hot box after a minute"
echo "demo: one line per record as it reaches the broker; ALARM and GATE lines stand out, 'gateway |' lines are its log"

# What shows the records: the broker's side of the link, one line per record with units
# (railgate-sim records formats the batches and takes the units from the birth message). To show
# what the daemon sees instead, replace this with a command that prints records as JSON lines
# piped into `railgate-sim records`. stdbuf: mosquitto_sub's output is a pipe, flush every line.
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p $broker_port -t 'railgate/#' -F '%t %p' \
    > >("$bin/railgate-sim" records) &
pids+=($!)
# The gateway's log lines, prefixed, each as soon as it is written (sed -u: no buffering).
"$bin/railgate" run --config Firmware-config/examples/demo.toml 2> >(sed -u 's/^/gateway | /' >&2) &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$work/control.sock" ] && break
    sleep 0.1
done
sleep 3
echo "demo: railgate status --socket $work/control.sock"
"$bin/railgate" status --socket "$work/control.sock" | sed 's/^/  /' || true
echo "demo: telemetry keeps flowing; Ctrl-C to stop"
wait || true
echo "demo: everything stopped by itself"
