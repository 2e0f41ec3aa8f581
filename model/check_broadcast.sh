#!/usr/bin/env bash
# model/check_broadcast.sh -- model-check ShmBroadcast's protocol (model/broadcast.pml) with
# spin, through model/check.sh's runner (same verdicts, options and exit status: 0 every
# verdict as expected, 1 otherwise, 77 spin or a C compiler missing).
#   pass      every property holds;   fail:Pn   spin must find a counterexample violating Pn
# Unless listed: capacity 1, 3 messages, 2 reader slots, 2 incarnations (processes) each.
# Usage: model/check_broadcast.sh [REGEX]
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NS="-DNOSLICE=1"
CHECK_RUNS=$(cat <<RUNS
bcast-2r|pass|safety|-DCOLLAPSE|$NS -DNMSG=2 -DNINC=1|2 readers, no wait slices: a lost wake-up blocks (P3)
bcast-leave|pass|safety||$NS -DNR=1 -DNINC=2 -DLEAVE_ANY=1|1 reader, every incarnation may close() early
bcast-join|pass|safety||$NS -DNR=1 -DNINC=3|1 reader joining, leaving, rejoining 3 times
bcast-join-cap2|pass|safety||$NS -DNR=1 -DNINC=3 -DCAP=2 -DNMSG=4|... capacity 2, 4 messages
bcast-slices|pass|safety||-DNR=1 -DNINC=3|sliced writer waits, join/leave
bcast-join-L1|pass|live||-DNR=1 -DNINC=3|join/leave, liveness under weak fairness
bcast-rkill|pass|safety||-DRKILL=2 -DNR=1 -DNINC=3|a reader killed at any step (twice), rejoins
bcast-rkill-L1|pass|live||-DRKILL=1 -DNR=1 -DNINC=2|progress after a reader dies (L1)
bcast-rkill-last-L1|pass|live||-DRKILL=1 -DNR=1 -DNINC=1|... no new reader replaces it: the writer evicts it
bcast-xevict|pass|safety||-DXEVICT=1 -DRKILL=1 -DNR=1 -DNINC=3|explicit eviction of a live laggard
finding-join-no-wake|fail:P3|bfs||$NS -DFINDING_JOIN_NO_WAKE -DNR=1 -DNINC=2|draft: the joiner does not wake the writer
finding-leave-no-wake|fail:P3|bfs||$NS -DFINDING_LEAVE_NO_WAKE -DNR=1 -DNINC=1 -DLEAVE_ANY=1|draft: close() does not wake the writer
mutant-release-early|fail:P1|bfs||-DMUTANT_RELEASE_EARLY -DNR=1 -DNINC=1|reader releases the slot before copying
mutant-join-load-first|fail:P1|bfs||-DMUTANT_JOIN_LOAD_FIRST -DNR=1 -DNINC=2|joiner loads W before it claims its slot
mutant-no-evict-check|fail:P1|bfs||-DMUTANT_NO_EVICT_CHECK -DXEVICT=1 -DNR=1 -DNINC=2|evicted reader does not re-check its slot
mutant-finish-after|fail:P2|bfs||-DMUTANT_FINISH_AFTER -DNR=1 -DNINC=1|reader loads W before FIN
mutant-no-recheck|fail:P3|bfs||$NS -DMUTANT_NO_RECHECK -DNR=1 -DNINC=1|reader sleeps without re-checking
mutant-wwake-early|fail:P3|bfs||$NS -DMUTANT_WWAKE_EARLY -DNR=1 -DNINC=1|reader checks the writer's flag before its store
mutant-no-evict|fail:L1|live||-DMUTANT_NO_EVICT -DRKILL=1 -DNR=1 -DNINC=1|writer never evicts a dead reader
RUNS
)
export CHECK_RUNS
CHECK_MODEL="$HERE/broadcast.pml" exec bash "$HERE/check.sh" "$@"
