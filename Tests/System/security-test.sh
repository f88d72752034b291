#!/usr/bin/env bash
# The unit's exposure score: `systemd-analyze security --offline=true` must rate
# Systemd/railgate.service 2.5 or better. Also fails if the unit loses one of the settings the
# gateway's access to serial ports and GPIO chips depends on.
# Usage: Tests/System/security-test.sh [UNIT] (default Systemd/railgate.service).
set -euo pipefail
cd "$(dirname "$0")/../.."
unit=${1:-Systemd/railgate.service}
limit=2.5

command -v systemd-analyze >/dev/null || { echo "SKIP security-test: systemd-analyze missing"; exit 0; }
report=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
    printf '%s\n' "$report"
    echo "FAIL security-test: no exposure score in systemd-analyze's output"
    exit 1
fi
if ! awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }'; then
    printf '%s\n' "$report" | grep -v '✓'
    echo "FAIL security-test: exposure $score is above $limit"
    exit 1
fi
for setting in 'DevicePolicy=closed' 'DeviceAllow=char-ttyS rw' 'DeviceAllow=char-ttyUSB rw' \
    'DeviceAllow=char-ttyACM rw' 'DeviceAllow=char-gpiochip rw' 'SupplementaryGroups=dialout' \
    'CapabilityBoundingSet=' 'WatchdogSec=' 'Type=notify'; do
    grep -q "^$setting" "$unit" || { echo "FAIL security-test: $unit lacks $setting"; exit 1; }
done
if grep -q '^PrivateDevices=yes' "$unit"; then
    echo "FAIL security-test: PrivateDevices=yes hides the serial ports and GPIO chips"
    exit 1
fi
echo "ok security-test: exposure $score (limit $limit)"
