#!/usr/bin/env bash
# Prints each role's CPU time so far (utime+stime, in clock ticks of 10 ms) for the processes
# of scripts/distributed.sh and the engines: run it before and after a load and subtract
# (docs/BENCHMARKS.md, "Load", distributed).
for p in $(ls /proc | grep -E '^[0-9]+$'); do
  [ -r /proc/$p/stat ] || continue
  c=$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)
  t=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null)
  case "$c" in
    *"orderflow serve --role"*) n=$(echo "$c" | sed -E 's/.*--role ([a-z]+) --listen [0-9.]+:([0-9]+).*/\1-\2/');;
    *beam.smp*) n=rabbitmq;;
    *redis-server*) n=redis;;
    postgres*) n=postgres;;
    *"orderflow loadgen"*) n=loadgen;;
    *) continue;;
  esac
  echo "$n $t"
done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
