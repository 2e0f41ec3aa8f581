#!/usr/bin/env bash
# model/check_queue.sh -- model-check ShmQueue's protocol (model/queue.pml) with spin, through
# model/check.sh's runner (same verdicts, options and exit status: 0 every verdict as expected,
# 1 otherwise, 77 spin or a C compiler missing).
#   pass      no counterexample: every property holds in that configuration
#   fail:Qn   spin must find a counterexample violating Qn (a seeded mutant); Q4/Q5 stalls
#             show as a Q4 assertion (NOSLICE: Watch) or an invalid end state (END)
# Usage: model/check_queue.sh [REGEX]    Environment: as model/check.sh (JOBS, RUN_TIMEOUT,
#   MEMLIM, CHECK_OUT, CC).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# NAME | EXPECT | MODE | CC EXTRA | SPIN FLAGS | WHAT   (MODE safety: DFS; bfs: shortest trail)
P21="-DNP=2 -DNC=1"          # two producers race for slots, one consumer
P12="-DNP=1 -DNC=2"          # two consumers race for messages (and for orphans)
CHECK_RUNS=$(cat <<RUNS
q-p2c1|pass|safety|-DCOLLAPSE|$P21|2 producers x 1 msg, 1 consumer, cap 2: Q1-Q3, Q5 (no deaths)
q-p1c2|pass|safety|-DCOLLAPSE|$P12|1 producer, 2 consumers: Q1-Q3, Q5
q-p1c2-nm2|pass|safety|-DCOLLAPSE|$P12 -DNM=2|1 producer x 2 msgs, 2 consumers
q-cap1-p2c1|pass|safety|-DCOLLAPSE|$P21 -DCAP=1|capacity 1: producers sleep on a full queue
q-wake-p2c1|pass|safety|-DCOLLAPSE|$P21 -DCAP=1 -DNOSLICE|no slices: Q4 no lost wake-up (producers and consumer sleep)
q-wake-p1c2|pass|safety|-DCOLLAPSE|$P12 -DNOSLICE|no slices: Q4, two sleeping consumers
q-pkill|pass|safety|-DCOLLAPSE|$P21 -DPKILL=1|a producer SIGKILLed at any step: Q2 for the others, Q5 (skip)
q-pkill-cap1|pass|safety|-DCOLLAPSE|$P21 -DPKILL=1 -DCAP=1|... capacity 1
q-ckill|pass|safety|-DCOLLAPSE|$P12 -DCKILL=1|a consumer SIGKILLed at any step: its message redelivered (Q2), Q5
q-kill-both|pass|safety|-DCOLLAPSE|$P12 -DPKILL=1 -DCKILL=1 -DCAP=1 -DSLICES=2|a producer and a consumer killed
q-early-fin|pass|safety|-DCOLLAPSE|$P21 -DEARLY_FIN|finish() while producers still put: refused puts are not committed
q-early-fin-c2|pass|safety|-DCOLLAPSE|$P12 -DEARLY_FIN|... 2 consumers
q-wake-fin|pass|safety|-DCOLLAPSE|$P12 -DNOSLICE -DEARLY_FIN|no slices, finish() at any moment: Q4 at the end of stream
q-room|pass|safety|-DCOLLAPSE|-DNP=1 -DNC=1 -DNM=3 -DROOM=2 -DNOSLICE|a get wakes the producer only when the queue is empty (ROOM = CAP): no lost wake-up (Q4)
q-room-c2|pass|safety|-DCOLLAPSE|-DNP=1 -DNC=2 -DNM=3 -DROOM=2 -DNOSLICE|... 2 consumers (the TAIL estimate with a release out of order)
q-batch-p2c1|pass|safety|-DCOLLAPSE|$P21 -DBATCH|get_many's batched claim: 2 producers, 1 consumer claiming a range
q-batch-p1c2|pass|safety|-DCOLLAPSE|$P12 -DNM=2 -DBATCH|... 2 batching consumers race for 2 messages
q-batch-wake|pass|safety|-DCOLLAPSE|$P21 -DBATCH -DNOSLICE|... no slices: Q4
q-batch-ckill|pass|safety|-DCOLLAPSE|$P12 -DNM=2 -DBATCH1 -DCKILL=1 -DCKILL_RANGE|... a consumer killed holding a range: each slot redelivered
q-batch-pkill|pass|safety|-DCOLLAPSE|$P21 -DBATCH -DPKILL=1|... a producer killed: its slot skipped, never in a range
mut-batch-no-owner|fail:END|safety|-DCOLLAPSE|$P12 -DNM=2 -DBATCH -DCKILL=1 -DCKILL_RANGE -DMUT_BATCH_NO_OWNER|range slots not named: a killed consumer's range is never reclaimed (Q5)
mut-no-idle-wake|fail:Q4|safety|-DCOLLAPSE|-DNP=1 -DNC=2 -DNM=3 -DROOM=2 -DNOSLICE -DMUT_NO_IDLE_WAKE|a consumer with nothing to take does not wake a producer: an out-of-order release leaves it asleep
mut-batch-writing|fail:Q3|bfs||$P21 -DBATCH -DMUT_BATCH_WRITING|the range takes an unpublished (WRITING) slot: partial read
mut-claim-no-cas|fail:Q[123]|bfs||$P21 -DMUT_CLAIM_NO_CAS|producer claim as load-then-store
mut-take-no-cas|fail:Q1|bfs||$P12 -DMUT_TAKE_NO_CAS|consumer take as load-then-store: a message twice
mut-publish-early|fail:Q3|bfs||$P12 -DMUT_PUBLISH_EARLY|publish before the second half is written
mut-release-early|fail:Q3|bfs||$P21 -DMUT_RELEASE_EARLY -DCAP=1|release the slot before the copy ends
mut-no-recheck|fail:Q4|bfs||$P21 -DCAP=1 -DNOSLICE -DMUT_NO_RECHECK|sleeper does not re-check after announcing
mut-no-skip|fail:END|bfs||$P21 -DPKILL=1 -DMUT_NO_SKIP|reaper does not skip a dead producer's slot: stall (Q5)
mut-no-orphan|fail:END|bfs||$P12 -DCKILL=1 -DMUT_NO_ORPHAN|reaper does not reclaim a dead consumer's slot: stall (Q5)
mut-no-eos-wake|fail:Q4|safety|-DCOLLAPSE|$P12 -DNOSLICE -DEARLY_FIN -DMUT_NO_EOS_WAKE|release after finish() does not wake consumers waiting for the end
mut-no-fin-recheck|fail:Q2|bfs||$P21 -DEARLY_FIN -DMUT_NO_FIN_RECHECK|put does not re-check FINISHED after claiming: loss
RUNS
)
export CHECK_RUNS
export CHECK_TAGS='Q[0-9]' CHECK_DEPTH=3000000
CHECK_MODEL="$HERE/queue.pml" exec bash "$HERE/check.sh" "$@"
