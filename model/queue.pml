/* model/queue.pml -- ctshm's ShmQueue protocol (ctshm/queue.py), many producers and many
 * consumers over one ring of slots, any of which may be SIGKILLed at any step.
 *
 * Each slot has one 64-bit word, the whole truth about it: (lap, state, owner).  A claim is a
 * compare-exchange of that word that records the claimer (a peer-table index + generation in
 * the code; a process number here), so a claim and its owner are one atomic fact and a death
 * at any step leaves a slot that names its dead owner.  TAIL and HEAD are hints (plain
 * load-compare-store, may lag); positions are claimed in order because a producer only moves
 * to position t+1 after seeing t claimed.
 *
 *   producer: walk from TAIL to the first slot (lap(t), EMPTY); CAS -> (lap(t), WRITING, me);
 *             hint; re-check FINISHED (set: turn the slot into SKIP, refuse); write the data;
 *             publish (lap(t), FULL) with a read-modify-write (a full fence); wake a consumer;
 *             if producers sleep and the slot at TAIL is free, wake one (the chain).
 *   consumer: walk from HEAD: (lap(h), FULL) -> CAS -> (lap(h), READING, me); hint; copy;
 *             release (lap(h)+1, EMPTY) (a read-modify-write); wake a producer if at most
 *             CAP - ROOM messages are left after it by the TAIL hint (ROOM: the code's
 *             capacity / 4, at least 1), or finished.  A performance rule: Q4 rests on the
 *             producers' chain and on the idle wake -- a consumer with nothing at HEAD wakes
 *             a producer if one sleeps and the slot at TAIL is free (MUT_NO_IDLE_WAKE: a
 *             release out of order leaves the producer asleep for good).
 *             (lap(h), SKIP) -> CAS -> (lap(h)+1, EMPTY) and go on.
 *             EMPTY / WRITING at lap(h): nothing ready -> orphans? end of stream? sleep.
 *   batched claim (BATCH, get_many): after its first claim a consumer walks on from h + 1 by
 *             the same rules and claims a second FULL slot the same way (CAS -> READING by
 *             itself: every slot of the range names its owner); it copies both, then releases
 *             both, and wakes one sleeping producer (not one per slot: the producer chain
 *             passes it on).  Killed anywhere in between, the reaper orphans each slot.
 *   reaper (any process whose sleep slice ended; also a janitor at any time): for each dead
 *             peer, every slot it owns: WRITING -> SKIP, READING -> ORPHAN (ORPHANS += 1
 *             first, so the count never under-states); then wake everyone.
 *   orphans:  a consumer that finds nothing at HEAD and ORPHANS > 0 scans for ORPHAN slots and
 *             takes one by CAS -> (lap, READING, me), then ORPHANS -= 1.
 *   end of stream: finish() sets FINISHED and wakes every consumer; a consumer that finds
 *             nothing ready, FINISHED set and every slot EMPTY ends.
 *   sleep/wake: ctshm/_waiting.py's fast-mode protocol (model/ring.pml -DFAST) on two
 *             counters C_SLEEP / P_SLEEP and two semaphores; a waker that took a sleeper's
 *             unit may die before posting, so a sleeper whose slice ends gives an owed token
 *             up (it stays a stray token: one spurious wake-up later, never a lost one).
 *
 * Properties (assertions carry their tag; check_queue.sh maps a failure to it):
 *   Q1 no duplicate: a message is returned by at most one get().
 *   Q2 no loss: at the end every message whose put() returned was returned by a get().
 *   Q3 no partial read: a get() returns both halves of one message.
 *   Q4 no lost wake-up (NOSLICE: sleeps never time out): when nothing can move, every
 *      process has ended (spin's `timeout`).
 *   Q5 progress when a peer dies (kills; sleeps end by slices, modelled by `timeout` with a
 *      budget): every live process ends -- a stall shows as an invalid end state.
 *
 * Configuration: NP producers x NM messages, NC consumers, CAP slots; BATCH: consumers claim
 * up to two slots before copying (get_many; BATCH1: only the first consumer); PKILL / CKILL: how many
 * producers / consumers the killer may SIGKILL (at any step: `unless`); NOSLICE: sleeps only
 * end by a token; JANITOR: a process that reaps at any moment (not in check_queue.sh: its
 * state space outgrows 1.5 GB; reaper races are covered by sleepers that time out together).
 * Mutants: MUT_*.
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef NP
#define NP 2
#endif
#ifndef NM
#define NM 1
#endif
#ifndef NC
#define NC 2
#endif
#ifndef PKILL
#define PKILL 0
#endif
#ifndef CKILL
#define CKILL 0
#endif
#ifndef SLICES
#define SLICES 3
#endif

#define NMSG (NP * NM)
#define NPROC (NP + NC)
#define NOBODY 255

#define EMPTY 0
#define WRITING 1
#define FULL 2
#define READING 3
#define SKIP 4
#define ORPHAN 5

/* the slot words and data (two halves, written and read one at a time) */
byte lap[CAP];
byte st[CAP];
byte own[CAP];
byte d1[CAP];
byte d2[CAP];

byte tail = 0;              /* hints */
byte head = 0;
byte orphans = 0;
bit fin = 0;

byte csleep = 0;            /* announced sleepers */
byte psleep = 0;
byte sem_items = 0;         /* semaphores (tokens) */
byte sem_space = 0;

bit alive[NPROC];
bit ended[NPROC];
byte pdone = 0;             /* producers ended or dead */

bit inrange[NPROC];         /* BATCH: the consumer holds a claimed range of two */
bit committed[NMSG + 1];    /* put() returned */
byte delivered[NMSG + 1];   /* get() returned */

#ifdef NOSLICE
#define SLICE_ENDS false
#else
#define SLICE_ENDS (timeout && slices > 0)   /* `slices`: each process's own budget */
#endif

#define ALL_LIVE_ENDED (ended[0] || !alive[0]) && (ended[1] || !alive[1]) && \
    (NPROC < 3 || ended[2] || !alive[2]) && (NPROC < 4 || ended[3] || !alive[3]) && \
    (NPROC < 5 || ended[4] || !alive[4]) && (NPROC < 6 || ended[5] || !alive[5])

/* end of stream: k == CAP iff every slot was seen EMPTY (one load each) */
#define EOS_SCAN \
    k = 0; \
    do \
    :: k == CAP -> break \
    :: k < CAP -> SNAP(k); if :: ws != EMPTY -> break :: else -> k++ fi \
    od

/* the slot word of s in one load */
#define SNAP(s) atomic { wl = lap[s]; ws = st[s]; wo = own[s] }

/* wake one sleeper of a side: c = load; c == 0: done; CAS(c, c - 1): post; else retry */
#define WAKE_ONE(cnt, sem) \
    c = cnt; \
    do \
    :: c == 0 -> break \
    :: c > 0 -> \
        if \
        :: atomic { cnt == c -> cnt = c - 1; ok = 1 } \
        :: atomic { else -> ok = 0 } \
        fi; \
        if \
        :: ok -> atomic { sem++; c = 0; ok = 0 }; break \
        :: else -> c = cnt \
        fi \
    od

#define WAKE_ALL(cnt, sem) \
    c = cnt; \
    do \
    :: c == 0 -> break \
    :: c > 0 -> \
        if \
        :: atomic { cnt == c -> cnt = 0; ok = 1 } \
        :: atomic { else -> ok = 0 } \
        fi; \
        if \
        :: ok -> atomic { sem = sem + c; c = 0; ok = 0 }; break \
        :: else -> c = cnt \
        fi \
    od

/* withdraw an announced unit after a slice: decrement if still there, else a waker took it
 * and owes a token: take it if it is there, else give it up (a stray token later). */
#define WITHDRAW(cnt, sem) \
    c = cnt; \
    do \
    :: c == 0 -> \
        if \
        :: atomic { sem > 0 -> sem-- } \
        :: skip \
        fi; \
        c = 0; ok = 0; \
        break \
    :: c > 0 -> \
        if \
        :: atomic { cnt == c -> cnt = c - 1; ok = 1 } \
        :: atomic { else -> ok = 0 } \
        fi; \
        if \
        :: ok -> atomic { c = 0; ok = 0 }; break \
        :: else -> c = cnt \
        fi \
    od

/* reap every dead peer: WRITING -> SKIP, READING -> ORPHAN; then wake everyone.  `me` is the
 * reaper (its own claims are never dead). */
#define REAP \
    r = 0; \
    do \
    :: r == CAP -> break \
    :: r < CAP -> \
        SNAP(r); \
        if \
        :: ws == WRITING && wo != NOBODY && !alive[wo] && !REAP_SKIP_OFF -> \
            atomic { if :: lap[r] == wl && st[r] == WRITING && own[r] == wo -> \
                          st[r] = SKIP; own[r] = NOBODY :: else fi } \
        :: ws == READING && wo != NOBODY && !alive[wo] && !REAP_ORPHAN_OFF -> \
            orphans++; \
            if \
            :: atomic { lap[r] == wl && st[r] == READING && own[r] == wo -> \
                        st[r] = ORPHAN; own[r] = NOBODY; ok = 1 } \
            :: atomic { else -> ok = 0 } \
            fi; \
            if :: !ok -> orphans-- :: else fi \
        :: else \
        fi; \
        atomic { r++; wl = 0; ws = 0; wo = 0; ok = 0 } \
    od; \
    r = 0; \
    WAKE_ALL(csleep, sem_items); \
    WAKE_ALL(psleep, sem_space)

#ifdef MUT_NO_SKIP
#define REAP_SKIP_OFF true
#else
#define REAP_SKIP_OFF false
#endif
#ifndef ROOM
#define ROOM 1                      /* the code: max(1, capacity / 4): 1 for CAP <= 7 */
#endif
#define WAKE_AT (CAP - ROOM + 1)    /* at most CAP - ROOM messages left after the release */
#ifdef BATCH1
#define BATCH 1
#define BATCH_ME (me == NP)
#else
#define BATCH_ME true
#endif
#ifdef MUT_BATCH_NO_OWNER
#define BATCH_OWNER NOBODY
#else
#define BATCH_OWNER me
#endif
#ifdef MUT_BATCH_WRITING
#define BATCH_WRITING true
#else
#define BATCH_WRITING false
#endif
#ifdef MUT_NO_ORPHAN
#define REAP_ORPHAN_OFF true
#else
#define REAP_ORPHAN_OFF false
#endif

proctype Producer(byte me) {
    byte j = 0, id, t, s, L, wl, ws, wo, c, r, slices = SLICES;
    bit ok;
    {
    do
    :: j == NM -> break
    :: j < NM ->
        id = me * NM + j + 1;
put:
        if :: fin -> break :: else fi;          /* put after finish(): refused */
        atomic { t = tail; c = 0; ok = 0 };
walk:
        atomic { s = t % CAP; L = t / CAP; wl = lap[s]; ws = st[s]; wo = own[s] };
        if
        :: wl == L && ws == EMPTY ->
#ifdef MUT_CLAIM_NO_CAS
            /* the claim as a check-then-store: two producers may take one slot */
            atomic { st[s] = WRITING; own[s] = me }; ok = 1;
#else
            if
            :: atomic { lap[s] == L && st[s] == EMPTY -> st[s] = WRITING; own[s] = me; ok = 1 }
            :: atomic { else -> ok = 0 }
            fi;
#endif
            if :: ok -> goto claimed :: else -> goto walk fi
        :: wl > L || (wl == L && ws != EMPTY) -> t++; goto walk
        :: wl < L -> goto pfull                  /* the previous lap is not consumed yet */
        fi;
claimed:
        if :: tail < t + 1 -> tail = t + 1 :: else fi;
#ifndef MUT_NO_FIN_RECHECK
        if
        :: fin -> atomic { st[s] = SKIP; own[s] = NOBODY }; WAKE_ONE(csleep, sem_items); break
        :: else
        fi;
#endif
        d1[s] = id;
#ifdef MUT_PUBLISH_EARLY
        atomic { st[s] = FULL; own[s] = NOBODY; committed[id] = 1 };
        d2[s] = id;
#else
        d2[s] = id;
        atomic { st[s] = FULL; own[s] = NOBODY; committed[id] = 1 };
#endif
        WAKE_ONE(csleep, sem_items);
        /* the wake-up chain: producers asleep and room at TAIL: wake one (a batched release
         * wakes one producer, not one per slot: each producer that puts passes it on).  Not
         * needed for Q4 (each put leads to a release that wakes a producer; checked without
         * the chain: NP=2 NM=2 BATCH NOSLICE passes), it wakes sleepers sooner. */
        if
        :: psleep > 0 ->
            atomic { s = tail % CAP; L = tail / CAP; wl = lap[s] };
            if :: wl >= L || fin -> WAKE_ONE(psleep, sem_space) :: else fi
        :: else
        fi;
        atomic { j++; t = 0; s = 0; L = 0; wl = 0; ws = 0; wo = 0 };
        goto next;
pfull:
        /* sleep: announce (CAS: a full fence), re-check, wait */
        atomic { psleep++ };
#ifndef MUT_NO_RECHECK
        SNAP(s);
        if
        :: !(wl < L) || fin -> WITHDRAW(psleep, sem_space); goto put
        :: else
        fi;
#endif
        if
        :: atomic { sem_space > 0 -> sem_space-- }
        :: atomic { SLICE_ENDS -> slices-- };
            WITHDRAW(psleep, sem_space);
            REAP
        fi;
        goto put;
next:
        skip
    od
    } unless { !alive[me] };
    atomic { if :: alive[me] -> ended[me] = 1 :: else fi; pdone++ }
}

proctype Consumer(byte me) {
    byte h, s, L, wl, ws, wo, c, r, v1, v2, k, slices = SLICES;
    bit ok;
#ifdef BATCH
    byte s2, L2, u1, u2;
    bit has2;
#endif
    {
    do
    :: true ->
get:
        atomic { h = head; c = 0; ok = 0; k = 0; r = 0; v1 = 0; v2 = 0 };
cwalk:
        atomic { s = h % CAP; L = h / CAP; wl = lap[s]; ws = st[s]; wo = own[s] };
        if
        :: wl == L && ws == FULL ->
#ifdef MUT_TAKE_NO_CAS
            atomic { st[s] = READING; own[s] = me }; ok = 1;
#else
            if
            :: atomic { lap[s] == L && st[s] == FULL -> st[s] = READING; own[s] = me; ok = 1 }
            :: atomic { else -> ok = 0 }
            fi;
#endif
            if :: ok -> goto claimed :: else -> goto cwalk fi
        :: wl == L && ws == SKIP ->
            if
            :: atomic { lap[s] == L && st[s] == SKIP -> lap[s] = L + 1; st[s] = EMPTY; ok = 1 }
            :: atomic { else -> ok = 0 }
            fi;
            if :: ok -> WAKE_ONE(psleep, sem_space) :: else fi;
#ifndef MUT_NO_EOS_WAKE
            if :: ok && fin -> WAKE_ALL(csleep, sem_items) :: else fi;
#endif
            h++; goto cwalk
        :: wl > L || (wl == L && (ws == READING || ws == ORPHAN)) -> h++; goto cwalk
        :: wl < L || (wl == L && (ws == EMPTY || ws == WRITING)) -> goto nothing
        fi;
claimed:
        if :: head < h + 1 -> head = h + 1 :: else fi;
#ifdef BATCH
        /* the batched claim: walk on from h + 1 by the same rules; claim a second FULL slot
         * by CAS with our name (MUT_BATCH_NO_OWNER: without it; MUT_BATCH_WRITING: also an
         * unpublished slot) */
        if :: !BATCH_ME -> goto copy :: else fi;     /* BATCH1: only the first consumer */
        atomic { h++; has2 = 0 };
bwalk:
        atomic { s2 = h % CAP; L2 = h / CAP; wl = lap[s2]; ws = st[s2]; wo = own[s2] };
        if
        :: wl == L2 && (ws == FULL || (BATCH_WRITING && ws == WRITING)) ->
            if
            :: atomic { lap[s2] == L2 && st[s2] == ws -> st[s2] = READING;
                        own[s2] = BATCH_OWNER; has2 = 1; inrange[me] = 1 }
            :: atomic { else -> has2 = 0 }
            fi;
            if :: has2 -> if :: head < h + 1 -> head = h + 1 :: else fi :: else -> goto bwalk fi
        :: wl == L2 && ws == SKIP ->
            if
            :: atomic { lap[s2] == L2 && st[s2] == SKIP -> lap[s2] = L2 + 1; st[s2] = EMPTY; ok = 1 }
            :: atomic { else -> ok = 0 }
            fi;
            if :: ok -> WAKE_ONE(psleep, sem_space) :: else fi;
            h++; goto bwalk
        :: wl > L2 || (wl == L2 && (ws == READING || ws == ORPHAN)) -> h++; goto bwalk
        :: wl < L2 || (wl == L2 && (ws == EMPTY || (!BATCH_WRITING && ws == WRITING))) -> skip
        fi;
        /* copy the range, then release it (as _try_get_many) */
        if
        :: has2 ->
            v1 = d1[s]; v2 = d2[s];
            u1 = d1[s2]; u2 = d2[s2];
            assert(v1 == v2 && v1 > 0 && u1 == u2 && u1 > 0);                 /* Q3 */
            atomic { assert(delivered[v1] == 0);                               /* Q1 */
                     lap[s] = L + 1; st[s] = EMPTY; own[s] = NOBODY; delivered[v1]++ };
            atomic { assert(delivered[u1] == 0);                               /* Q1 */
                     lap[s2] = L2 + 1; st[s2] = EMPTY; own[s2] = NOBODY; delivered[u1]++;
                     s = s2; wl = L2;                   /* the range's last position */
                     has2 = 0; s2 = 0; L2 = 0; u1 = 0; u2 = 0; ok = 0; wo = 0;
                     inrange[me] = 0 };
            goto released                        /* one wake-up for the range: the chain */
        :: else -> atomic { wl = L; ws = FULL; wo = 0; ok = 0; s2 = 0; L2 = 0 }  /* one claim */
        fi;
#endif
copy:
        v1 = d1[s];
#ifdef MUT_RELEASE_EARLY
        atomic { assert(v1 > 0 && delivered[v1] == 0);                        /* Q1 */
                 lap[s] = wl + 1; st[s] = EMPTY; own[s] = NOBODY; delivered[v1]++ };
        v2 = d2[s];
        assert(v1 == v2);                                                      /* Q3 */
#else
        v2 = d2[s];
        assert(v1 == v2 && v1 > 0);                                            /* Q3 */
        atomic { assert(delivered[v1] == 0);                                   /* Q1 */
                 lap[s] = wl + 1; st[s] = EMPTY; own[s] = NOBODY; delivered[v1]++ };
#endif
released:
        /* wake a producer once the queue has ROOM free slots by the TAIL hint (position
         * wl * CAP + s released; the chain wakes the others) */
        if
        :: fin || tail - (wl * CAP + s) <= WAKE_AT -> WAKE_ONE(psleep, sem_space)
        :: else
        fi;
#ifndef MUT_NO_EOS_WAKE
        if :: fin -> WAKE_ALL(csleep, sem_items) :: else fi;
#endif
        goto get;
nothing:
#ifndef MUT_NO_IDLE_WAKE
        /* nothing at HEAD: producers asleep and the slot at TAIL free: wake one (a release
         * out of order, or before the producer slept, may have left it asleep: ROOM) */
        if
        :: psleep > 0 ->
            atomic { s = tail % CAP; L = tail / CAP; wl = lap[s] };
            if :: wl >= L -> WAKE_ONE(psleep, sem_space) :: else fi;
            atomic { s = h % CAP; L = h / CAP; wl = 0 }
        :: else
        fi;
#endif
        /* orphans first (taken by CAS; the count is lowered after) */
        if
        :: orphans > 0 ->
            k = 0;
            do
            :: k == CAP -> break
            :: k < CAP ->
                SNAP(k);
                if
                :: ws == ORPHAN ->
                    if
                    :: atomic { lap[k] == wl && st[k] == ORPHAN -> st[k] = READING; own[k] = me; ok = 1 }
                    :: atomic { else -> ok = 0 }
                    fi;
                    if :: ok -> orphans--; s = k; goto copy :: else fi
                :: else
                fi;
                k++
            od
        :: else
        fi;
        /* end of stream: finished, and every slot empty */
        if
        :: fin -> EOS_SCAN; if :: k == CAP -> break :: else fi
        :: else
        fi;
        /* sleep: announce, re-check, wait */
        atomic { csleep++ };
#ifndef MUT_NO_RECHECK
        SNAP(s);
        if
        :: (wl == L && ws != EMPTY && ws != WRITING) || wl > L || orphans > 0 ->
            WITHDRAW(csleep, sem_items); goto get
        :: else
        fi;
        if
        :: fin -> EOS_SCAN; if :: k == CAP -> WITHDRAW(csleep, sem_items); goto get :: else fi
        :: else
        fi;
#endif
        if
        :: atomic { sem_items > 0 -> sem_items-- }
        :: atomic { SLICE_ENDS -> slices-- };
            WITHDRAW(csleep, sem_items);
            REAP
        fi;
        goto get
    od
    } unless { !alive[me] };
    atomic { if :: alive[me] -> ended[me] = 1 :: else fi }
}

/* finish(): once every producer ended or died (EARLY_FIN: at any moment, while producers
 * still put), FINISHED and wake every consumer */
proctype Finisher() {
    byte c;
    bit ok;
#ifndef EARLY_FIN
    pdone == NP;
#endif
    fin = 1;
    WAKE_ALL(csleep, sem_items)
}

/* SIGKILL: any producer (up to PKILL) and any consumer (up to CKILL), at any step
 * (CKILL_RANGE: a consumer only while it holds a claimed range, the batched claim's window) */
#ifdef CKILL_RANGE
#define CKILL_WHEN(x) inrange[x]
#else
#define CKILL_WHEN(x) true
#endif
proctype Killer() {
    byte pk = PKILL, ck = CKILL, x;
    do
    :: pk > 0 ->
        x = 0;
        do
        :: x < NP - 1 -> x++
        :: break
        od;
        if
        :: atomic { alive[x] && !ended[x] -> alive[x] = 0; pk-- }
        :: else -> break                        /* x ended: no more kills */
        fi
    :: ck > 0 ->
        x = NP;
        do
        :: x < NPROC - 1 -> x++
        :: break
        od;
        if
        :: atomic { alive[x] && !ended[x] && CKILL_WHEN(x) -> alive[x] = 0; ck-- }
        :: else -> break
        fi
    :: break
    od
}

#ifdef JANITOR
/* a process that reaps at any moment (a busy consumer's periodic check, `ctshm gc`) */
proctype Janitor() {
    byte wl, ws, wo, c, r;
    bit ok;
    byte n = JANITOR;
    do
    :: n > 0 -> n--; REAP
    :: break
    od
}
#endif

/* Q2 at the end: every live process ended; every committed message delivered once */
proctype Final() {
    byte i;
    ALL_LIVE_ENDED;                /* only live processes have to end */
    i = 1;
    do
    :: i > NMSG -> break
    :: i <= NMSG ->
        assert(!committed[i] || delivered[i] == 1);                             /* Q2 */
        i++
    od
}

#ifdef NOSLICE
/* Q4: when nothing can move, every process has ended */
proctype Watch() {
    timeout -> assert(ALL_LIVE_ENDED)                                            /* Q4 */
}
#endif

init {
    byte i;
    atomic {
        i = 0;
        do
        :: i < NPROC -> alive[i] = 1; i++
        :: i == NPROC -> break
        od;
        i = 0;
        do
        :: i < CAP -> own[i] = NOBODY; i++
        :: i == CAP -> break
        od;
        i = 0;
        do
        :: i < NP -> run Producer(i); i++
        :: i == NP -> break
        od;
        do
        :: i < NPROC -> run Consumer(i); i++
        :: i == NPROC -> break
        od;
        run Finisher();
        run Killer();
        run Final();
#ifdef JANITOR
        run Janitor();
#endif
#ifdef NOSLICE
        run Watch();
#endif
    }
}
