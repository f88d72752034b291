#!/bin/sh
# The GPIO real-kernel test's script INSIDE the VM (busybox sh), baked into the initramfs by
# Tests/IntegrationTests/GPIOKernelTests.swift. The kernel's gpio-sim makes two chips through
# configfs (labels rg-main, and rg-late only once the daemon runs); `railgate run` (url = "none")
# watches seven barriers on them; the script moves the simulated switches (a line's pull), waits
# for each state in `railgate status`, then stops the daemon and prints the buffer. Lines:
#   GV-API <railgate --version>         GV-PASS name / GV-FAIL name: detail
#   GV-GPIOINFO <gpioinfo line>          GV-RGINFO <railgate gpio info --json>
#   GV-WATCH <railgate gpio watch line>  GV-MON <gpiomon line: R|F offset>
#   GV-REC <buffer dump line>            GV-TIME <seconds of checks in the VM>
# The host (the Swift test) checks the event sequences and the lines above.
SOCK=/run/railgate-control.sock
up() { cut -d' ' -f1 /proc/uptime; }
t0=$(up)
pass() { echo "GV-PASS $1"; }
fail() { echo "GV-FAIL $1: $2"; }
version=$(railgate --version)
echo "GV-API $version"
echo "GV-KERNEL $(uname -r)"
case "$version" in *"v2 API"*) API=2 ;; *) API=1 ;; esac

# gpio-sim: a device with one bank of LINES named lines, live; prints the chip name (gpiochipN).
make_chip() {  # LABEL LINES
  d=/sys/kernel/config/gpio-sim/$1
  mkdir "$d" "$d/bank0" || return 1
  echo "$2" > "$d/bank0/num_lines"
  echo "$1" > "$d/bank0/label"
  i=0
  while [ $i -lt "$2" ]; do mkdir "$d/bank0/line$i"; echo "$1-L$i" > "$d/bank0/line$i/name"; i=$((i + 1)); done
  if [ -n "$3" ]; then  # a line the kernel itself holds (a hog named rg-hog), like a driver would
    mkdir "$d/bank0/line$3/hog" && echo rg-hog > "$d/bank0/line$3/hog/name" && echo input > "$d/bank0/line$3/hog/direction"
  fi
  echo 1 > "$d/live" || return 1
  cat "$d/bank0/chip_name"
}
# set CHIP LINE 0|1: the simulated switch's physical level (the line's pull)
set_line() { if [ "$3" = 1 ]; then echo pull-up; else echo pull-down; fi > "/sys/bus/gpio/devices/$1/sim_gpio$2/pull"; }
gate_field() {  # GATE FIELD: from the daemon's status document
  railgate status --socket $SOCK --json 2>/dev/null | tr '{' '\n' | grep "\"name\":\"$1\"" |
    grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4
}
wait_state() {  # GATE STATE SECONDS
  end=$(awk -v u="$(up)" -v s="$3" 'BEGIN { print u + s }')
  while :; do
    s=$(gate_field "$1" state)
    [ "$s" = "$2" ] && { pass "$1 reached $2"; return 0; }
    if awk -v u="$(up)" -v e="$end" 'BEGIN { exit !(u > e) }'; then
      fail "$1 reached $2" "state '$s' after $3 s; error '$(gate_field "$1" error)'"; return 1
    fi
    usleep 50000
  done
}
wait_used() {  # CHIP LINE CONSUMER: until the line is held by CONSUMER (max 20 s)
  i=0
  until gpioinfo_chip "$1" | grep "line *$2:" | grep -q "$3"; do
    i=$((i + 1)); [ $i -gt 400 ] && return 1; usleep 50000
  done
}
if [ $API = 2 ]; then
  gpioinfo_chip() { gpioinfo -c "$1"; }
  monitor() { gpiomon --num-events="$3" --format='%e %o' -c "$1" "$2"; }   # %e: 1 rising, 2 falling
else
  gpioinfo_chip() { gpioinfo "$1"; }
  monitor() { gpiomon --num-events="$3" --format='%e %o' "$1" "$2"; }      # %e: 1 rising, 0 falling
fi

MAIN=$(make_chip rg-main 16 14) || { fail setup "gpio-sim rg-main"; exit 1; }
echo "GV-CHIP rg-main $MAIN"
# Initial levels: every barrier closed (closed switch active), line 12 for the watch checks low.
for l in 0 2 6 8 10 12 13; do set_line $MAIN $l 0; done
for l in 1 3 7 9 11; do set_line $MAIN $l 1; done
set_line $MAIN 4 1; set_line $MAIN 5 0     # g-low is active-low: physical 0 = active
# Another process holds g-busy's open line before the daemon starts.
if [ $API = 2 ]; then gpiomon -c $MAIN 10 > /dev/null 2>&1 & else gpiomon $MAIN 10 > /dev/null 2>&1 & fi
holder=$!
wait_used $MAIN 10 gpiomon || fail holder "gpiomon did not take line 10"

mkdir -p /tmp/state
cat > /tmp/gates.toml <<TOML
[gateway]
id = "VM-GPIO"
state_dir = "/tmp/state"
control_socket = "$SOCK"
log_level = "info"
[upstream]
url = "none"
[buffer]
sync_interval_ms = 100
[[gate]]
name = "g-cycle"
chip = "rg-main"
open_line = 0
closed_line = 1
debounce_ms = 20
travel_timeout_ms = 20000
[[gate]]
name = "g-bounce"
chip = "rg-main"
open_line = 2
closed_line = 3
debounce_ms = 300
travel_timeout_ms = 20000
[[gate]]
name = "g-low"
chip = "rg-main"
open_line = 4
closed_line = 5
active_low = true
debounce_ms = 20
travel_timeout_ms = 20000
[[gate]]
name = "g-jam"
chip = "rg-main"
open_line = 6
closed_line = 7
debounce_ms = 20
travel_timeout_ms = 1500
[[gate]]
name = "g-both"
chip = "rg-main"
open_line = 8
closed_line = 9
debounce_ms = 20
travel_timeout_ms = 20000
[[gate]]
name = "g-busy"
chip = "rg-main"
open_line = 10
closed_line = 11
debounce_ms = 20
[[gate]]
name = "g-hog"
chip = "rg-main"
open_line = 14
closed_line = 15
[[input]]
name = "door"
chip = "rg-main"
line = 13
active_low = true
debounce_ms = 300
priority = "alarm"
[[gate]]
name = "g-late"
chip = "rg-late"
open_line = 0
closed_line = 1
debounce_ms = 20
TOML
railgate run --config /tmp/gates.toml > /tmp/daemon.log 2>&1 &
daemon=$!
echo "GV-DAEMON started uptime=$(up)"
wait_state g-cycle closed 60 || { cat /tmp/daemon.log; }
for g in g-bounce g-low g-jam g-both; do wait_state $g closed 10; done

# A line held by another process, a chip not there yet: named in status, the rest runs on.
err=$(gate_field g-busy error)
case "$err" in *"held by 'gpiomon'"*) pass "g-busy names gpiomon" ;; *) fail "g-busy names gpiomon" "error '$err'" ;; esac
err=$(gate_field g-hog error)
case "$err" in *"line 14 is busy, held by 'rg-hog'"*) pass "g-hog names the kernel's hog" ;; *) fail "g-hog names the kernel's hog" "error '$err'" ;; esac
err=$(gate_field g-late error)
case "$err" in *"'rg-late' not found"*) pass "g-late chip not found" ;; *) fail "g-late chip not found" "error '$err'" ;; esac

# The full cycle.
set_line $MAIN 1 0; wait_state g-cycle opening 10
set_line $MAIN 0 1; wait_state g-cycle open 10
set_line $MAIN 0 0; wait_state g-cycle closing 10
set_line $MAIN 1 1; wait_state g-cycle closed 10

# Bounce shorter than debounce_ms (300 ms): closed switch off and on again at once.
set_line $MAIN 3 0; set_line $MAIN 3 1
usleep 1500000
s=$(gate_field g-bounce state); [ "$s" = closed ] && pass "g-bounce short bounce ignored" || fail "g-bounce short bounce ignored" "state '$s'"
# Longer than debounce_ms: off for 1 s, then on again.
set_line $MAIN 3 0; usleep 1000000; wait_state g-bounce opening 10
set_line $MAIN 3 1; wait_state g-bounce closed 10

# active_low: physical 1 = inactive.
set_line $MAIN 5 1; wait_state g-low opening 10
set_line $MAIN 4 0; wait_state g-low open 10

# A jam: the barrier leaves closed and reaches no limit within travel_timeout_ms (1500).
# (no wait for opening: 1.5 s is a few status polls in a TCG guest; the events show it)
set_line $MAIN 7 0; wait_state g-jam fault 20
[ "$(gate_field g-jam fault)" = travel_timeout ] && pass "g-jam travel_timeout" || fail "g-jam travel_timeout" "$(gate_field g-jam fault)"

# Both limits at once.
set_line $MAIN 8 1; wait_state g-both fault 10
[ "$(gate_field g-both fault)" = both_limits ] && pass "g-both both_limits" || fail "g-both both_limits" "$(gate_field g-both fault)"

# [[input]]: a door contact, active-low: a bounce shorter than debounce_ms, then opened for 1 s.
input_state() {
  railgate status --socket $SOCK --json 2>/dev/null | tr '{' '\n' | grep '"name":"door"' | grep -o '"state":"[a-z]*"' | cut -d'"' -f4
}
wait_input() {  # STATE
  i=0
  until [ "$(input_state)" = "$1" ]; do
    i=$((i + 1)); [ $i -gt 200 ] && { fail "door reached $1" "state '$(input_state)'"; return 1; }; usleep 50000
  done
  pass "door reached $1"
}
wait_input active
set_line $MAIN 13 1; set_line $MAIN 13 0
usleep 1500000
[ "$(input_state)" = active ] && pass "door short bounce ignored" || fail "door short bounce ignored" "$(input_state)"
set_line $MAIN 13 1; usleep 1000000; wait_input inactive
set_line $MAIN 13 0; wait_input active

# The holder lets go: the daemon takes the lines at its next retry (every 5 s).
kill $holder; wait $holder 2>/dev/null
wait_state g-busy closed 30

# The late chip appears.
LATE=$(make_chip rg-late 4) || fail setup "gpio-sim rg-late"
echo "GV-CHIP rg-late $LATE"
set_line $LATE 0 0; set_line $LATE 1 1
wait_state g-late closed 30

# gpio info against gpioinfo, while the daemon holds its lines.
gpioinfo_chip $MAIN | sed 's/^/GV-GPIOINFO /'
echo "GV-RGINFO $(railgate gpio info --chip $MAIN --json)"
echo "GV-RGINFO-LABEL $(railgate gpio info --chip rg-main --json | grep -o '"chip":"[^"]*"')"

# gpio watch against gpiomon: the same four edges on line 12 for each.
edges() { for v in 1 0 1 0; do set_line $MAIN 12 $v; usleep 100000; done; }
echo "GV-WATCH-START uptime=$(up)"
railgate gpio watch --chip $MAIN --line 12 --num-events 4 --json > /tmp/watch.out 2>&1 &
w=$!
wait_used $MAIN 12 railgate-watch || fail watch "railgate gpio watch did not take line 12"
edges
i=0; while kill -0 $w 2>/dev/null; do i=$((i + 1)); [ $i -gt 200 ] && { kill $w; break; }; usleep 50000; done
echo "GV-WATCH-END uptime=$(up)"
sed 's/^/GV-WATCH /' /tmp/watch.out
monitor $MAIN 12 4 > /tmp/mon.out 2>&1 &
m=$!
wait_used $MAIN 12 gpiomon || fail gpiomon "gpiomon did not take line 12"
edges
i=0; while kill -0 $m 2>/dev/null; do i=$((i + 1)); [ $i -gt 200 ] && { kill $m; break; }; usleep 50000; done
while read -r e o; do
  case "$e" in 1) echo "GV-MON R $o" ;; *) echo "GV-MON F $o" ;; esac
done < /tmp/mon.out

kill -TERM $daemon; wait $daemon; echo "GV-DAEMON-EXIT $?"
sed 's/^/GV-LOG /' /tmp/daemon.log | tail -n 40
railgate buffer dump --state-dir /tmp/state | sed 's/^/GV-REC /'
echo "GV-TIME $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }')"
exit 0
