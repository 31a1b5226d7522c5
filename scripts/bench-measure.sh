# Sourced by the bench scripts (needs OUT, a scratch directory, and GNU time).
#
# measure NAME COMMAND...: wall seconds and peak RSS (KiB) of the command and its children, its
# output discarded. Measured again under the same NAME, WALL[NAME] is the median of the runs,
# RUNS[NAME] lists them all and RSS[NAME] is the largest.
declare -A WALL RSS RUNS
measure() {
  local name="$1" wall rss; shift
  sync
  /usr/bin/time -f '%e %M' -o "$OUT/time" "$@" >/dev/null
  read -r wall rss < "$OUT/time"
  RUNS[$name]="${RUNS[$name]:+${RUNS[$name]} / }$wall"
  WALL[$name]="$(echo "${RUNS[$name]}" | tr -d '/' | tr -s ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  [ "$rss" -gt "${RSS[$name]:-0}" ] && RSS[$name]="$rss"
  echo "  $name: $wall s, peak RSS $((rss / 1024)) MiB" >&2
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
