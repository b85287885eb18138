#!/usr/bin/env bash
# Runs GPU work longer than one device call (10 minutes) on the warm device machine.
#   bash tools/device/bg.sh start 'CMD; CMD; ...'   starts the commands in their own session (setsid), so that
#                                                    they outlive this call; output and results go to /tmp/kvlab-bg
#   bash tools/device/bg.sh wait SECONDS            waits until they end or SECONDS pass, then copies
#                                                    /tmp/kvlab-bg to $OUT (what was written so far comes back)
# Each call must follow the previous one within ~30 s, or the machine goes cold and the work is lost.
# The commands see BG=/tmp/kvlab-bg: write JSON results there (benchmarks save after every round).
set -euo pipefail
cd "$(dirname "$0")/../.."
BG=/tmp/kvlab-bg
case "${1:-}" in
  start)
    [ $# -eq 2 ] || { echo "usage: bg.sh start 'COMMANDS'" >&2; exit 2; }
    if [ -f "$BG/pid" ] && kill -0 "$(cat "$BG/pid")" 2>/dev/null; then
      echo "bg.sh: work already running (pid $(cat "$BG/pid")); wait for it first" >&2; exit 2
    fi
    rm -rf "$BG" && mkdir -p "$BG"
    BG="$BG" setsid bash -c "source tools/device/env.sh; $2; echo \$? > $BG/rc" > "$BG/log" 2>&1 < /dev/null &
    echo $! > "$BG/pid"
    echo "bg.sh: started pid $(cat "$BG/pid"); log in $BG/log" ;;
  wait)
    [ $# -eq 2 ] || { echo "usage: bg.sh wait SECONDS" >&2; exit 2; }
    [ -f "$BG/pid" ] || { echo "bg.sh: nothing started on this machine (it may have gone cold)" >&2; exit 2; }
    end=$((SECONDS + $2))
    while [ ! -f "$BG/rc" ] && [ $SECONDS -lt $end ]; do sleep 5; done
    cp -r "$BG"/. "${OUT:?}/"
    if [ -f "$BG/rc" ]; then echo "bg.sh: done, exit $(cat "$BG/rc")"; else echo "bg.sh: still running"; fi
    grep -v " INFO \| WARNING \|^INFO\|^WARNING\|^(" "$BG/log" | tail -40 ;;
  *) echo "usage: bg.sh start 'COMMANDS' | wait SECONDS" >&2; exit 2 ;;
esac
