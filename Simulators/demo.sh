#!/usr/bin/env bash
# The railgate demo: a local Mosquitto, two simulated wagon sensor boxes on Modbus TCP, and the
# gateway with Firmware-config/examples/demo.toml. Shows the telemetry and the birth message as
# they reach the broker, and the gateway's status, until Ctrl-C; then cleans up.
set -euo pipefail
bin=${1:-.build/debug}
work=/tmp/railgate-demo
broker_port=18830
mkdir -p "$work"
rm -rf "$work/state"
pids=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "demo: stopping"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

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
mosquitto_sub -h 127.0.0.1 -p $broker_port -t 'railgate/#' -v &
pids+=($!)
"$bin/railgate" run --config Firmware-config/examples/demo.toml 2> >(sed 's/^/gateway: /' >&2) &
pids+=($!)
sleep 5
echo "demo: railgate status --socket $work/control.sock"
"$bin/railgate" status --socket "$work/control.sock" || true
echo "demo: telemetry keeps flowing; Ctrl-C to stop"
wait
