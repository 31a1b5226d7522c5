# Sourced by the bench scripts (needs OUT, a scratch directory, and GNU time).
#
# measure NAME COMMAND...: wall seconds and peak RSS (KiB) of the command and its children, its
# output discarded. Measured again under the same NAME, WALL[NAME] is the median of the runs,
# RUNS[NAME] lists them all and RSS[NAME] is the largest; CPU[NAME] is the median of the user +
# system CPU seconds of the command and its children.
declare -A WALL RSS RUNS CPU CPU_RUNS
median() { echo "$1" | tr -d '/' | tr -s ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {
  local name="$1" wall rss user sys; shift
  sync
  /usr/bin/time -f '%e %M %U %S' -o "$OUT/time" "$@" >/dev/null
  read -r wall rss user sys < "$OUT/time"
  RUNS[$name]="${RUNS[$name]:+${RUNS[$name]} / }$wall"
  WALL[$name]="$(median "${RUNS[$name]}")"
  CPU_RUNS[$name]="${CPU_RUNS[$name]:+${CPU_RUNS[$name]} / }$(python3 -c "print(f'{$user + $sys:.2f}')")"
  CPU[$name]="$(median "${CPU_RUNS[$name]}")"
  [ "$rss" -gt "${RSS[$name]:-0}" ] && RSS[$name]="$rss"
  echo "  $name: $wall s, peak RSS $((rss / 1024)) MiB" >&2
}

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
