#!/usr/bin/env bash
# model/check_queue.sh -- model-check ShmQueue's protocol (model/queue.pml) with spin.
#
# Every run is exhaustive (bounded by `timeout` and pan's -DMEMLIM) and has an expected verdict:
#   pass      no counterexample: every property holds in that configuration
#   fail:Qn   spin must find a counterexample violating Qn (a seeded mutant); Q4/Q5 stalls
#             show as a Q4 assertion (NOSLICE: Watch) or an invalid end state (END)
# Exit status: 0 all verdicts as expected; 1 otherwise; 77 spin or a C compiler is missing.
# Usage: model/check_queue.sh [REGEX]    Environment: JOBS (default 2), RUN_TIMEOUT (s, 300),
#   MEMLIM (MB, 1500), CHECK_OUT (trails, default model/out), CC (gcc).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL="$HERE/queue.pml"
JOBS=${JOBS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MEMLIM=${MEMLIM:-1500}
OUT=${CHECK_OUT:-$HERE/out}
CC=${CC:-gcc}
FILTER=${1:-}

command -v spin >/dev/null 2>&1 || { echo "check_queue.sh: SKIP: spin is not installed"; exit 77; }
command -v "$CC" >/dev/null 2>&1 || { echo "check_queue.sh: SKIP: no C compiler ($CC)"; exit 77; }

# NAME | EXPECT | MODE | SPIN FLAGS | WHAT       (MODE safety: DFS; bfs: shortest trail)
P21="-DNP=2 -DNC=1"          # two producers race for slots, one consumer
P12="-DNP=1 -DNC=2"          # two consumers race for messages (and for orphans)
RUNS=$(cat <<EOF
q-p2c1|pass|safety|$P21|2 producers x 1 msg, 1 consumer, cap 2: Q1-Q3, Q5 (no deaths)
q-p1c2|pass|safety|$P12|1 producer, 2 consumers: Q1-Q3, Q5
q-p1c2-nm2|pass|safety|$P12 -DNM=2|1 producer x 2 msgs, 2 consumers
q-cap1-p2c1|pass|safety|$P21 -DCAP=1|capacity 1: producers sleep on a full queue
q-wake-p2c1|pass|safety|$P21 -DCAP=1 -DNOSLICE|no slices: Q4 no lost wake-up (producers and consumer sleep)
q-wake-p1c2|pass|safety|$P12 -DNOSLICE|no slices: Q4, two sleeping consumers
q-pkill|pass|safety|$P21 -DPKILL=1|a producer SIGKILLed at any step: Q2 for the others, Q5 (skip)
q-pkill-cap1|pass|safety|$P21 -DPKILL=1 -DCAP=1|... capacity 1
q-ckill|pass|safety|$P12 -DCKILL=1|a consumer SIGKILLed at any step: its message redelivered (Q2), Q5
q-kill-both|pass|safety|$P12 -DPKILL=1 -DCKILL=1 -DCAP=1 -DSLICES=2|a producer and a consumer killed
q-early-fin|pass|safety|$P21 -DEARLY_FIN|finish() while producers still put: refused puts are not committed
q-early-fin-c2|pass|safety|$P12 -DEARLY_FIN|... 2 consumers
q-wake-fin|pass|safety|$P12 -DNOSLICE -DEARLY_FIN|no slices, finish() at any moment: Q4 at the end of stream
mut-claim-no-cas|fail:Q[123]|bfs|$P21 -DMUT_CLAIM_NO_CAS|producer claim as load-then-store
mut-take-no-cas|fail:Q1|bfs|$P12 -DMUT_TAKE_NO_CAS|consumer take as load-then-store: a message twice
mut-publish-early|fail:Q3|bfs|$P12 -DMUT_PUBLISH_EARLY|publish before the second half is written
mut-release-early|fail:Q3|bfs|$P21 -DMUT_RELEASE_EARLY -DCAP=1|release the slot before the copy ends
mut-no-recheck|fail:Q4|bfs|$P21 -DCAP=1 -DNOSLICE -DMUT_NO_RECHECK|sleeper does not re-check after announcing
mut-no-skip|fail:END|bfs|$P21 -DPKILL=1 -DMUT_NO_SKIP|reaper does not skip a dead producer's slot: stall (Q5)
mut-no-orphan|fail:END|bfs|$P12 -DCKILL=1 -DMUT_NO_ORPHAN|reaper does not reclaim a dead consumer's slot: stall (Q5)
mut-no-eos-wake|fail:Q4|safety|$P12 -DNOSLICE -DEARLY_FIN -DMUT_NO_EOS_WAKE|release after finish() does not wake consumers waiting for the end
mut-no-fin-recheck|fail:Q2|bfs|$P21 -DEARLY_FIN -DMUT_NO_FIN_RECHECK|put does not re-check FINISHED after claiming: loss
EOF
)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ctshm-qmodel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

run_one() {  # run_one NAME EXPECT MODE FLAGS -> $WORK/NAME/result
    local name=$1 expect=$2 mode=$3 flags=$4
    local d="$WORK/$name" ccf
    mkdir -p "$d" && cp "$MODEL" "$d/queue.pml" && cd "$d" || return
    case $mode in
        safety) ccf="-DSAFETY -DCOLLAPSE" ;;
        bfs)    ccf="-DSAFETY -DBFS" ;;
    esac
    local verdict="" note="" states="-" secs="-"
    if ! spin $flags -a queue.pml >spin.log 2>&1; then
        verdict="ERROR"; note="spin -a failed: $(tail -n 3 spin.log | tr '\n' ' ')"
    elif ! $CC -O2 -w -DMEMLIM="$MEMLIM" $ccf -o pan pan.c >cc.log 2>&1; then
        verdict="ERROR"; note="$CC failed: $(tail -n 3 cc.log | tr '\n' ' ')"
    else
        local t0 t1 rc errors incomplete="" found=""
        t0=$(date +%s.%N)
        timeout "$RUN_TIMEOUT" ./pan -m3000000 >pan.out 2>&1
        rc=$?
        t1=$(date +%s.%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
        states=$(awk '/states, stored/ { print $1; exit }' pan.out)
        errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | head -n 1)
        [ "$rc" = 124 ] && incomplete="timed out after ${RUN_TIMEOUT}s"
        grep -q "reached -DMEMLIM bound" pan.out && incomplete="memory bound (${MEMLIM} MB) reached"
        grep -q "max search depth too small" pan.out && incomplete="search depth too small"
        [ -z "$errors" ] && [ -z "$incomplete" ] && incomplete="no verdict from pan (rc $rc)"
        if [ -n "$errors" ] && [ "$errors" -gt 0 ] && [ -f queue.pml.trail ]; then
            spin $flags -t -p -g -l queue.pml >trail.txt 2>&1
            if grep -q "^pan:[0-9]*: invalid end state" pan.out; then
                found="END"; note="invalid end state (a stall)"
            else
                local line
                line=$(sed -n 's/^spin: queue.pml:\([0-9]*\), Error: assertion violated.*/\1/p' trail.txt | head -n 1)
                if [ -n "$line" ]; then
                    found=$(sed -n "${line}p" queue.pml | grep -o 'Q[0-9]' | head -n 1)
                    note="$(sed -n 's/^spin: text of failed assertion: //p' trail.txt | head -n 1) (queue.pml:$line)"
                else
                    note=$(grep -m1 "violated" pan.out)
                fi
            fi
            note="$note; trail: $(grep -c '^ *[0-9]*:.*proc' trail.txt) steps"
            cp trail.txt "$OUT/$name.trail.txt"
        fi
        if [ -n "$incomplete" ]; then
            verdict="INCOMPLETE"; note="$incomplete"
        elif [ "$expect" = pass ]; then
            if [ "$errors" = 0 ]; then verdict="ok"; else verdict="UNEXPECTED"; fi
        else
            local want=${expect#fail:}
            if [ "$errors" = 0 ]; then
                verdict="MISSED"; note="no counterexample found"
            elif [[ "$found" =~ ^($want)$ ]]; then
                verdict="ok"
            else
                verdict="UNEXPECTED"; note="violated ${found:-?} instead of $want: $note"
            fi
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$expect" "$mode" "$verdict" \
        "${states:--}" "${secs:--}" "$note" >"$d/result"
}

names=()
running=0
start_all=$(date +%s)
while IFS='|' read -r name expect mode flags what; do
    [ -z "$name" ] && continue
    if [ -n "$FILTER" ] && ! [[ "$name" =~ $FILTER ]]; then continue; fi
    names+=("$name")
    echo "$what" >"$WORK/$name.what"
    ( run_one "$name" "$expect" "$mode" "$flags" ) &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done <<<"$RUNS"
wait

status=0
printf '%-20s %-12s %-6s %-10s %10s %8s  %s\n' RUN EXPECT MODE VERDICT STATES "TIME(s)" NOTE
for name in "${names[@]}"; do
    if [ -f "$WORK/$name/result" ]; then
        IFS=$'\t' read -r n e m v s t note <"$WORK/$name/result"
    else
        e="?"; m="?"; v="ERROR"; s="-"; t="-"; note="no result"
    fi
    [ "$v" = ok ] || status=1
    printf '%-20s %-12s %-6s %-10s %10s %8s  %s\n' "$name" "$e" "$m" "$v" "$s" "$t" \
        "${note:-$(cat "$WORK/$name.what")}"
done
echo "check_queue.sh: ${#names[@]} runs in $(( $(date +%s) - start_all )) s (JOBS=$JOBS)"
if [ "$status" = 0 ]; then
    echo "check_queue.sh: PASS -- every verdict as expected"
else
    echo "check_queue.sh: FAIL -- some verdicts were not as expected (see above)"
fi
exit $status
