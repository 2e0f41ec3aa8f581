#!/usr/bin/env bash
# model/check.sh -- model-check ctshm's ring protocol (model/ring.pml) with spin.
#
# Runs every configuration exhaustively (each bounded by `timeout` and pan's -DMEMLIM), prints
# state counts, memory and times, and checks the expected verdict of each run:
#   pass      the model satisfies every property checked
#   fail:Pn   spin must find a counterexample, and it must violate property Pn (a bug
#             reproduced: old code put back, a seeded mutant, or a design finding)
# Exit status: 0 all verdicts as expected; 1 otherwise; 77 spin or a C compiler is missing and
# cannot be installed (the caller may skip).
#
# Usage: model/check.sh [REGEX]       run only the runs whose name matches REGEX
# Environment: JOBS (parallel runs, default 2), RUN_TIMEOUT (s per run, default 300),
#   MEMLIM (MB per run, default 2000), CHECK_OUT (trail directory, default model/out),
#   CC (default gcc).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# CHECK_MODEL / CHECK_RUNS: another model and its runs table (model/check_broadcast.sh,
# model/check_queue.sh); CHECK_TAGS: the regex of its property tags; CHECK_DEPTH: pan -m.
MODEL="${CHECK_MODEL:-$HERE/ring.pml}"
PML=$(basename "$MODEL")
TAGS=${CHECK_TAGS:-P[0-9][0-9]*}
DEPTH=${CHECK_DEPTH:-2000000}
JOBS=${JOBS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MEMLIM=${MEMLIM:-2000}
OUT=${CHECK_OUT:-$HERE/out}
CC=${CC:-gcc}
FILTER=${1:-}

# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------
apt_install() {  # apt_install PACKAGE: non-interactive, with `apt-get update` if needed
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
        sudo="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "check.sh: installing $1 with apt-get ..." >&2
    $sudo apt-get install -y -q "$1" >/dev/null 2>&1 && return 0
    $sudo apt-get update -q >/dev/null 2>&1
    $sudo apt-get install -y -q "$1" >/dev/null 2>&1
}

if ! command -v spin >/dev/null 2>&1; then
    apt_install spin
fi
if ! command -v spin >/dev/null 2>&1; then
    echo "check.sh: SKIP: spin is not installed and could not be installed (apt-get install spin)"
    exit 77
fi
if ! command -v "$CC" >/dev/null 2>&1; then
    apt_install gcc
fi
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "check.sh: SKIP: no C compiler ($CC) to build spin's verifier"
    exit 77
fi
command -v timeout >/dev/null 2>&1 || { echo "check.sh: needs timeout (coreutils)"; exit 1; }

# --------------------------------------------------------------------------------------------
# The runs: NAME | EXPECT | MODE | CC EXTRA | SPIN FLAGS | WHAT
#   MODE safety: DFS, assertions + invalid end states;  bfs: the same breadth-first (shortest
#   counterexample);  live: the LTL claim `term` (L1) with weak fairness (pan -a -f).
# --------------------------------------------------------------------------------------------
SMALL="-DABORTS=0 -DEINTRS=0"
# fast mode (README "Fast mode"): FN = waits never time out (no slices, no deaths: a lost
# wake-up blocks the system, P13); FS = liveness slices, with the proposed fix of finding F-1.
FN="-DFAST -DNOSLICE=1"
FS="-DFAST -DFAST_WITHDRAW_FIX"
# Unless listed: capacity 2, 3 messages, 2 consumer threads holding 1 guard each, 1 abort,
# 1 EINTR.  ring-*: ring.py as it is (HEAD); regress-*: one piece of the code before the fixes
# (b213613, d08ac82, 8c3b673) put back; mutant-*: seeded bugs (the Rust seed's and others).
# fast-*: fast mode (-DFAST, README "Fast mode"); finding-fast-*: the design v1 problems the
# model found (F-0, F-1); mutant-fast-*: the design's mutants (a)-(e).
RUNS=$(cat <<EOF
ring-base|pass|safety|||default configuration
ring-base-L1|pass|live|||the same, liveness under weak fairness
ring-3threads|pass|safety|-DCOLLAPSE|-DNTHR=3 $SMALL|3 consumer threads
ring-cap3-hold2|pass|safety||-DCAP=3 -DNMSG=4 -DHOLD=2 $SMALL|cap 3, 4 messages, 2 guards per thread
ring-hold2-timeout|pass|safety|-DCOLLAPSE|-DHOLD=2 -DTMO=1 $SMALL|2 guards per thread, finite access() timeouts
ring-pkill|pass|safety||-DPKILL=1 -DNOFINISH=1 -DTMO=1 -DNMSG=2 $SMALL|producer killed at any step / exits unfinished
ring-pkill-L1|pass|live||-DPKILL=1 -DNOFINISH=1 -DNMSG=2 $SMALL|... a dead producer is always reported
ring-sigcrash|pass|safety||-DSIGCRASH=1 -DNMSG=2 $SMALL|notify_crash at any step, then death
ring-sigcrash-L1|pass|live||-DSIGCRASH=1 -DNMSG=2 $SMALL|... the crash is always reported
ring-sigreturn|pass|safety|-DCOLLAPSE|-DSIGCRASH=2 -DNMSG=2 $SMALL|notify_crash may return into the producer
ring-ckill|pass|safety|-DCOLLAPSE|-DCKILL=1 -DNTHR2=1 -DNMSG=2 $SMALL|consumer killed at any step + restart
ring-ckill-hold2|pass|safety||-DCKILL=1 -DNTHR=1 -DHOLD=2 -DNTHR2=1 $SMALL|... 1 thread holding 2 guards, 3 messages
ring-ckill-L1|pass|live||-DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|consumer death + restart, liveness
ring-ckill-cap1-L1|pass|live||-DCAP=1 -DNMSG=2 -DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|... capacity 1
ring-expect-producer-L1|pass|live||-DPKILL_EARLY -DEXPECT_PRODUCER=1 -DNMSG=2 $SMALL|death before the 1st acquire, expect_producer()
limit-early-death|fail:L1|live||-DPKILL_EARLY -DNMSG=2 $SMALL|... no record (a Rust producer, no expect_producer()): never reported
regress-corrupt-check|fail:P0|bfs||-DOLD_CORRUPT_CHECK|BUG-1 back: spurious CorruptRingError
regress-claim-order|fail:P5|bfs||-DOLD_CLAIM_ORDER|BUG-2 back: Finished before a committed message
regress-claim-order-loss|fail:P6|safety||-DOLD_CLAIM_ORDER -DSKIP_P5|BUG-2 back: ... the message is lost
regress-token-only|fail:P8|bfs||-DOLD_TOKEN_ONLY -DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|BUG-3 back: a killed consumer loses an empty token
regress-token-only-hang|fail:L1|live||-DOLD_TOKEN_ONLY -DSKIP_P8 -DCAP=1 -DNMSG=2 -DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|BUG-3 back: ... capacity 1 hangs
regress-check-order|fail:P7|bfs||-DOLD_CHECK_ORDER -DSIGCRASH=1 -DNMSG=2 $SMALL|BUG-4 back: crash details overwritten
regress-finish-store|fail:P10|bfs||-DOLD_FINISH_STORE -DSIGCRASH=2 -DSKIP_P9 -DNMSG=2 $SMALL|BUG-5 back: mark_finished erases a crash
regress-notify-store|fail:P11|bfs||-DOLD_NOTIFY_STORE -DSIGCRASH=1 -DNMSG=2 $SMALL|BUG-6 back: notify_crash after finish
regress-no-crash-w|fail:P[59]|bfs||-DOLD_NO_CRASH_W -DSIGCRASH=2 -DNMSG=2 $SMALL|BUG-7 back: no crash record
regress-claim-recheck|fail:P9|bfs||-DOLD_NO_CLAIM_RECHECK -DSIGCRASH=2 -DNMSG=2 $SMALL|BUG-8 back: a commit racing notify_crash is delivered
mutant-nonatomic-reserve|fail:P[124]|bfs||-DMUTANT_NONATOMIC_RESERVE|seed: check-then-fetch_add reservation
mutant-commit-on-error|fail:P1|bfs||-DMUTANT_COMMIT_ON_ERROR|seed: Drop publishes a half-written slot
mutant-opener-recovery|fail:P[24]|bfs||-DMUTANT_OPENER_RECOVERY -DREOPEN=1 $SMALL|seed: every opener rewinds reserved_idx
mutant-crash-first|fail:P5|bfs||-DMUTANT_CRASH_FIRST -DSIGCRASH=1 -DNMSG=2 $SMALL|seed: Crashed before committed data
mutant-eintr-as-token|fail:P3|bfs||-DMUTANT_EINTR_AS_TOKEN|seed: sem_wait EINTR taken as a token
mutant-len-after-publish|fail:P1|bfs||-DMUTANT_LEN_AFTER_PUBLISH|length record written after write_idx
mutant-release-unordered|fail:P[34]|bfs||-DMUTANT_RELEASE_UNORDERED|read_idx advanced per release, unordered
mutant-no-liveness-check|fail:L1|live||-DMUTANT_NO_LIVENESS_CHECK -DPKILL=1 -DNMSG=2 $SMALL|no _check_producer_alive
mutant-no-selfheal|fail:L1|live||-DMUTANT_NO_SELFHEAL -DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|no self-healing claim
fast-base|pass|safety||$FN -DEINTRS=0|fast mode, waits never time out (P13: no lost wake-up)
fast-base-L1|pass|live||$FN -DEINTRS=0|... termination, everything delivered
fast-cap1|pass|safety||$FN -DCAP=1 $SMALL|... capacity 1
fast-cap1-1thr-L1|pass|live||$FN -DCAP=1 -DNTHR=1 $SMALL|... capacity 1, 1 thread, liveness
fast-3threads|pass|safety||$FN -DNTHR=3 $SMALL|... 3 consumer threads
fast-slices|pass|safety||$FS -DHOLD=2 -DCAP=3 -DTMO=1 $SMALL|liveness slices + access() deadlines, no deaths (P12 with F-1 fix)
fast-slices-L1|pass|live||$FS $SMALL|... liveness
fast-sigcrash|pass|safety||$FS -DSIGCRASH=1 -DNMSG=2 $SMALL|fast: notify_crash at any step, then death
fast-sigcrash-L1|pass|live||$FS -DSIGCRASH=1 -DNMSG=2 -DNTHR=1 $SMALL|... the crash is always reported
fast-sigreturn|pass|safety||$FS -DSIGCRASH=2 -DNMSG=2 -DNTHR=1 $SMALL|fast: notify_crash may return / another thread
fast-pkill|pass|safety||$FS -DPKILL=1 -DNOFINISH=1 -DTMO=1 -DNMSG=2 $SMALL|fast: producer killed at any step / unfinished
fast-pkill-L1|pass|live||$FS -DPKILL=1 -DNOFINISH=1 -DNMSG=2 -DNTHR=1 $SMALL|... a dead producer is always reported
fast-ckill|pass|safety||$FS -DCKILL=1 -DNTHR=1 -DNTHR2=1 -DNMSG=2 $SMALL|fast: consumer killed at any step + restart, 1 thread
fast-ckill-cap1-L1|pass|live||$FS -DCAP=1 -DNMSG=2 -DCKILL=1 -DNTHR=1 -DNTHR2=1 $SMALL|... liveness, capacity 1
fast-batch|pass|safety||$FN -DBATCH -DEINTRS=0|put_many: a batch publishes several messages, one fence + wake-up
fast-batch-L1|pass|live||$FN -DBATCH -DEINTRS=0|... termination, everything delivered
fast-batch-hold2|pass|safety||$FS -DBATCH -DCAP=3 -DNMSG=4 -DHOLD=2 $SMALL|... cap 3, 4 messages, consumers holding 2 guards (slices: with 2 guards held a consumer may wait on itself)
fast-batch-slices|pass|safety||$FS -DBATCH -DPKILL=1 -DNOFINISH=1 -DNMSG=2 $SMALL|... liveness slices, producer killed at any step
fast-batch-sigcrash|pass|safety||$FS -DBATCH -DSIGCRASH=2 -DNMSG=3 -DNTHR=1 $SMALL|... notify_crash at any step of a batch (may return into it)
mutant-fast-batch-when-full|fail:P13|bfs||$FN -DBATCH -DMUTANT_BATCH_WHEN_FULL -DCAP=1 -DNMSG=2 $SMALL|a batch that goes on when the ring is full
fast-v1-slices|pass|safety||-DFAST -DSKIP_P12 $SMALL|design v1 (no F-1 fix): all but P12 hold
finding-fast-withdraw-timeout|fail:P12|bfs||-DFAST $SMALL|F-1: v1 withdraw gives up on a live, slow waker
finding-fast-empty-cap|fail:P12|bfs||$FN -DFAST_EMPTY_CAP $SMALL|F-0: empty created with capacity tokens
mutant-fast-no-fence|fail:P13|bfs||$FN -DMUTANT_FAST_NO_FENCE -DCAP=1 -DNMSG=2 $SMALL|(a) waker's store buffered past its load
mutant-fast-no-recheck|fail:P13|bfs||$FN -DMUTANT_FAST_NO_RECHECK $SMALL|(b) no re-check after announcing
mutant-fast-announce-store|fail:P13|bfs||$FN -DMUTANT_FAST_ANNOUNCE_STORE $SMALL|(c) announce is a buffered plain store
mutant-fast-withdraw-no-consume|fail:P12|bfs||$FN -DMUTANT_FAST_WITHDRAW_NO_CONSUME $SMALL|(d) withdraw skips the owed token
mutant-fast-wake-no-cas|fail:P12|bfs||$FN -DMUTANT_FAST_WAKE_NO_CAS $SMALL|(e) wake posts without the CAS
EOF
)
[ -n "${CHECK_RUNS:-}" ] && RUNS=$CHECK_RUNS

# --------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ctshm-model.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

run_one() {  # run_one NAME EXPECT MODE CCEXTRA SPINFLAGS  -> writes $WORK/NAME/result
    local name=$1 expect=$2 mode=$3 ccx=$4 flags=$5
    local d="$WORK/$name" ccf panf
    mkdir -p "$d" && cp "$MODEL" "$d/$PML" && cd "$d" || return
    case $mode in
        safety) ccf="-DSAFETY"; panf="-m$DEPTH" ;;
        bfs)    ccf="-DSAFETY -DBFS"; panf="" ;;
        live)   ccf="-DNFAIR=3"; panf="-m$DEPTH -a -f -N term"; flags="$flags -DLTL_TERM" ;;
    esac
    local verdict="" note="" states="-" secs="-" mem="-"
    if ! spin $flags -a "$PML" >spin.log 2>&1; then
        verdict="ERROR"; note="spin -a failed: $(tail -n 3 spin.log | tr '\n' ' ')"
    elif ! $CC -O2 -w -DMEMLIM="$MEMLIM" $ccf $ccx -o pan pan.c >cc.log 2>&1; then
        verdict="ERROR"; note="$CC failed: $(tail -n 3 cc.log | tr '\n' ' ')"
    else
        local t0 t1 rc
        t0=$(date +%s.%N)
        timeout "$RUN_TIMEOUT" ./pan $panf >pan.out 2>&1
        rc=$?
        t1=$(date +%s.%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
        states=$(awk '/states, stored/ { print $1; exit }' pan.out)
        mem=$(awk '/total actual memory usage/ { printf "%.0f", $1; exit }' pan.out)
        local errors
        errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | head -n 1)
        local incomplete=""
        [ "$rc" = 124 ] && incomplete="timed out after ${RUN_TIMEOUT}s"
        grep -q "reached -DMEMLIM bound" pan.out && incomplete="memory bound (${MEMLIM} MB) reached"
        grep -q "max search depth too small" pan.out && incomplete="search depth too small"
        [ -z "$errors" ] && [ -z "$incomplete" ] && incomplete="no verdict from pan (rc $rc)"
        local found=""
        if [ -n "$errors" ] && [ "$errors" -gt 0 ] && [ -f "$PML.trail" ]; then
            # Replay the counterexample; name the violated property from the model's tags.
            spin $flags -t -p -g -l "$PML" >trail.txt 2>&1
            if grep -q "^pan:[0-9]*: acceptance cycle" pan.out; then
                found="L1"; note="acceptance cycle (a fair run where not every process ends)"
            elif grep -q "^pan:[0-9]*: invalid end state" pan.out; then
                found="END"; note="invalid end state (deadlock)"
            else
                local line
                line=$(sed -n "s/^spin: $PML:\([0-9]*\), Error: assertion violated.*/\1/p" trail.txt | head -n 1)
                if [ -n "$line" ]; then
                    found=$(sed -n "${line}p" "$PML" | grep -o "$TAGS" | head -n 1)
                    note="$(sed -n 's/^spin: text of failed assertion: //p' trail.txt | head -n 1) ($PML:$line)"
                else
                    note=$(grep -m1 "violated" pan.out)
                fi
            fi
            note="$note; trail: $(grep -c '^ *[0-9]*:.*proc' trail.txt) steps"
            cp trail.txt "$OUT/$name.trail.txt"
            cp "$PML.trail" "$OUT/$name.pml.trail"
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
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$expect" "$mode" "$verdict" \
        "${states:--}" "${secs:--}" "${mem:--}" "$note" >"$d/result"
}

names=()
running=0
start_all=$(date +%s)
while IFS='|' read -r name expect mode ccx flags what; do
    [ -z "$name" ] && continue
    if [ -n "$FILTER" ] && ! [[ "$name" =~ $FILTER ]]; then continue; fi
    names+=("$name")
    echo "$what" >"$WORK/$name.what"
    ( run_one "$name" "$expect" "$mode" "$ccx" "$flags" ) &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done <<<"$RUNS"
wait

status=0
printf '%-26s %-12s %-6s %-10s %12s %8s %7s  %s\n' RUN EXPECT MODE VERDICT STATES "TIME(s)" "MEM(MB)" NOTE
for name in "${names[@]}"; do
    if [ -f "$WORK/$name/result" ]; then
        IFS=$'\t' read -r n e m v s t mm note <"$WORK/$name/result"
    else
        e="?"; m="?"; v="ERROR"; s="-"; t="-"; mm="-"; note="no result"
    fi
    [ "$v" = ok ] || status=1
    printf '%-26s %-12s %-6s %-10s %12s %8s %7s  %s\n' "$name" "$e" "$m" "$v" "$s" "$t" "$mm" \
        "${note:-$(cat "$WORK/$name.what")}"
done
echo "check.sh: ${#names[@]} runs in $(( $(date +%s) - start_all )) s (JOBS=$JOBS); counterexample trails in $OUT"
if [ "$status" = 0 ]; then
    if [ -z "${CHECK_MODEL:-}" ]; then
        echo "check.sh: PASS -- every verdict as expected (ring.py's model passes; every bug and mutant yields its counterexample)"
    else
        echo "check.sh: PASS -- every verdict as expected ($PML: every configuration passes; every mutant yields its counterexample)"
    fi
else
    echo "check.sh: FAIL -- some verdicts were not as expected (see above)"
fi
exit $status
