/*
 * model/broadcast.pml -- Promela model of ctshm's ShmBroadcast protocol (ctshm/broadcast.py,
 * layout in ctshm/_bcast_layout.py).  Checked with spin by model/check_broadcast.sh.
 *
 * One writer process puts NMSG messages into a ring of CAP slots.  NR reader slots; reader
 * process i uses slot i and runs NINC incarnations one after the other (a process that joins,
 * reads, leaves early or is killed (RKILL), and a new process that joins again).  The writer
 * waits for the slowest ACTIVE reader; between sleep slices it evicts a laggard whose process
 * is dead (and, with XEVICT, may evict a live laggard: the explicit evict() call).
 *
 * Granularity: every step is one shared action of broadcast.py (a load or store of one word,
 * a compare-exchange, a sem_post, a successful sem wait, a wait slice that times out), with
 * the thread-local computation around it.  Memory is sequentially consistent: the code puts a
 * full fence (a compare-exchange, or the handle lock's release on x86_64 / an explicit fence
 * elsewhere) between each waker's store and its load of the sleep word, and each sleeper
 * announces with a compare-exchange; the two mutants MUTANT_NO_RECHECK / MUTANT_WWAKE_EARLY
 * stand for getting that order wrong.
 *
 * The words (ctshm/_bcast_layout.py):
 *   W         messages published (the writer's release store after the payload and length)
 *   FIN       mark_finished() was called (stored after the last W)
 *   st[i]     reader slot i: FREE, ACTIVE(inc), EVICTED(inc)   (inc: which process; the
 *             code packs generation, pid and kind in one word and changes it by CAS only)
 *   R[i]      next message reader i reads: messages < R[i] are released by it
 *   rmask     one bit per reader slot: announced asleep on its semaphore rsem[i]
 *   wsleep    the writer announced asleep on wsem
 * Ghosts: seq[k] the message in slot k (+1), rd[k]/torn[k] readers copying slot k / whose copy
 * a write overlapped, writing[k],
 * running[i] the incarnation of reader i whose process is alive (0: dead).
 *
 * Properties:
 *   P1  a reader delivers message r only from a slot that holds r, fully written, and that
 *       no write touched while it copied (no overwrite of an unread slot, nothing partial)
 *   P2  per-reader order, exactly once, nothing lost: a reader delivers j, j+1, ... from its
 *       join point j (structural: r is local and only incremented) and sees the end
 *       (finished) only after the last message (r == NMSG)
 *   P3  no lost wake-up: the system never blocks (spin's `timeout`) before every process
 *       ended (with NOSLICE=1 the writer's waits have no slices: a lost wake-up blocks)
 *   L1  progress after a reader dies (ltl term, weak fairness): every process ends, so the
 *       writer puts every message although readers die at any step
 *
 * Design findings (the model found them in the first draft; FINDING_* puts the draft back):
 *   FINDING_JOIN_NO_WAKE   a joiner's claim makes the slot's stale R (its previous
 *       occupant's) count for the writer; storing its join point without waking the writer
 *       loses the wake-up the writer waits for (P3)
 *   FINDING_LEAVE_NO_WAKE  the same for close(): the freed slot no longer holds the writer
 *
 * Configuration (-D): CAP NMSG NR NINC, LEAVE_ANY=1, RKILL=n (n reader deaths at any step), XEVICT=1,
 * NOSLICE=1, LTL_TERM; mutants: MUTANT_RELEASE_EARLY (P1), MUTANT_JOIN_LOAD_FIRST (P1),
 * MUTANT_NO_EVICT_CHECK (P1, with XEVICT), MUTANT_FINISH_AFTER (P2), MUTANT_NO_RECHECK (P3),
 * MUTANT_WWAKE_EARLY (P3), MUTANT_NO_EVICT (L1, with RKILL).
 */

#ifndef CAP
#define CAP 1
#endif
#ifndef NMSG
#define NMSG 3
#endif
#ifndef NR
#define NR 2
#endif
#ifndef NINC
#define NINC 2
#endif
#ifndef RKILL
#define RKILL 0
#endif
#ifndef XEVICT
#define XEVICT 0
#endif
#ifndef NOSLICE
#define NOSLICE 0
#endif
#ifndef LEAVE_ANY
#define LEAVE_ANY 0     /* 1: the last incarnation may close() early too (else it reads all) */
#endif

#define FREE 0
#define ACTIVE 1
#define EVICTED 2
#define KIND(s) ((s) % 4)
#define INC(s) ((s) / 4)
#define MK(n, k) ((n) * 4 + (k))

byte W;
bit fin;
byte st[NR];
byte R[NR];
byte rmask;
byte rsem[NR];
bit wsleep;
byte wsem;
/* ghosts */
byte seq[CAP];
byte rd[CAP];      /* readers copying slot k (bits) */
byte torn[CAP];    /* readers whose copy of slot k a write overlapped (bits) */
bit writing[CAP];
byte running[NR];
bit kill_req[NR];  /* the Killer's SIGKILL, taken at the reader's next step */
bit wdone;
byte rdone;

#ifdef LTL_TERM
ltl term { <> (wdone && rdone == NR) }
#endif

/* The writer's scan (_Writer._scan): the limit below which it may write, from every ACTIVE
 * reader's R (a reader joining meanwhile is seen by a later scan: see the join). */
inline scan() {
    lim = m + CAP;
    i = 0;
    do
    :: i < NR ->
        s = st[i];
        if
        :: KIND(s) == ACTIVE ->
            r = R[i];
            if
            :: r + CAP < lim -> lim = r + CAP
            :: else -> skip
            fi
        :: else -> skip
        fi;
        i++
    :: else -> atomic { i = 0; s = 0; r = 0 }; break
    od
}

/* Wake every announced reader (_wake_readers): take all bits by CAS, post one per bit. */
inline wake_readers() {
    bits = rmask;
    if
    :: bits != 0 ->
        atomic { bits = rmask; rmask = 0 };
        i = 0;
        do
        :: i < NR ->
            if
            :: bits & (1 << i) -> rsem[i]++
            :: else -> skip
            fi;
            i++
        :: else -> atomic { i = 0; bits = 0 }; break
        od
    :: else -> skip
    fi
}

/* A reader after advancing R (get, join) or freeing its slot (close): after the fence, wake
 * the writer if it announced (_wake_writer: CAS wsleep 1 -> 0, then post). */
inline wake_writer() {
    if
    :: wsleep == 1 ->
        atomic { if :: wsleep == 1 -> wsleep = 0; owe = 1 :: else -> owe = 0 fi };
        if
        :: owe -> atomic { wsem++; owe = 0 }
        :: else -> skip
        fi
    :: else -> skip
    fi
}

/* Between sleep slices (_Writer._evict_dead): a laggard whose process is dead is freed; with
 * XEVICT the user's evict() may also mark a live laggard EVICTED. */
inline evict_pass() {
    i = 0;
    do
    :: i < NR ->
        s = st[i];
        if
        :: KIND(s) == ACTIVE ->
            r = R[i];
            if
            :: r + CAP <= m ->
                if
                :: running[i] != INC(s) ->          /* _liveness.is_alive(pid, start) is False */
                    atomic { if :: st[i] == s -> st[i] = FREE :: else -> skip fi }
#if XEVICT
                :: running[i] == INC(s) ->
                    atomic { if :: st[i] == s -> st[i] = MK(INC(s), EVICTED) :: else -> skip fi }
#endif
                :: else -> skip
                fi
            :: else -> skip
            fi
        :: else -> skip
        fi;
        i++
    :: else -> atomic { i = 0; s = 0; r = 0 }; break
    od
}

active proctype Writer() {
    byte m = 0, lim = 0, i, s, r, k, bits;
    bit owed, to;
    do
    :: m == NMSG -> break
    :: m < NMSG ->
        do  /* _Writer._wait_space: spin / sliced sleep until m < lim */
        :: m < lim -> break
        :: else ->
            scan();
            if
            :: m < lim -> break
            :: else -> skip
            fi;
            wsleep = 1;                           /* announce: CAS 0 -> 1 (full fence) */
            scan();                               /* re-check */
            to = 0;
            if
            :: m < lim -> skip
            :: else ->
                if
                :: atomic { wsem > 0 -> wsem-- }  /* woken */
#if !NOSLICE
                :: to = 1                         /* the slice ended */
#endif
                fi
            fi;
            /* withdraw (a no-op when a waker took the flag; an owed token not yet posted
             * stays a stray token: one spurious wake-up later, never a lost one) */
            atomic { if :: wsleep == 1 -> wsleep = 0; owed = 0 :: else -> owed = 1 fi };
            if
            :: owed -> atomic { if :: wsem > 0 -> wsem-- :: else -> skip fi; owed = 0 }
            :: else -> skip
            fi;
#ifndef MUTANT_NO_EVICT
            if
            :: to -> evict_pass()
            :: else -> skip
            fi
#else
            skip
#endif
        od;
        k = m % CAP;
        atomic { writing[k] = 1; torn[k] = torn[k] | rd[k] };  /* copy the payload in ... */
        atomic { seq[k] = m + 1; writing[k] = 0 };/* ... and its length */
        W = m + 1;                                /* publish */
        wake_readers();
        m++
    od;
    fin = 1;                                      /* mark_finished */
    wake_readers();
    wdone = 1
}

proctype Reader(byte i) {
    byte inc = 0, s, j, r, w, k, c0, q;
    bit f, tw, owe, leaving;
    do
    :: inc == NINC -> break
    :: inc < NINC ->
        inc++;
        running[i] = inc;
        {
#ifdef MUTANT_JOIN_LOAD_FIRST
            j = W;
#endif
            atomic { st[i] = MK(inc, ACTIVE) };  /* claim: CAS FREE (or a dead process's) -> ours */
#ifndef MUTANT_JOIN_LOAD_FIRST
            j = W;                                /* the join point: loaded after the claim */
#endif
            R[i] = j;
#ifndef FINDING_JOIN_NO_WAKE
            wake_writer();                        /* a stale R of the slot may block the writer */
#endif
            atomic { rsem[i] = 0 };               /* drain stray tokens (trywait loop) */
            r = j;
            do
            :: (inc < NINC || LEAVE_ANY) && r > j && !leaving -> leaving = 1; goto leave   /* close() */
            :: true ->
#ifndef MUTANT_FINISH_AFTER
                f = fin;                          /* FIN first, then W */
                w = W;
#else
                w = W;
                f = fin;
#endif
                if
                :: r < w ->
                    k = r % CAP;
#ifdef MUTANT_RELEASE_EARLY
                    R[i] = r + 1;
#endif
                    atomic { rd[k] = rd[k] | (1 << i); torn[k] = torn[k] & ~(1 << i);
                             q = seq[k]; tw = writing[k] };                 /* copy starts */
                    atomic { rd[k] = rd[k] & ~(1 << i); c0 = torn[k] & (1 << i);
                             torn[k] = torn[k] & ~(1 << i) };               /* copy ends */
#ifndef MUTANT_NO_EVICT_CHECK
                    s = st[i];                    /* still ours?  else ReaderEvicted */
                    if
                    :: s != MK(inc, ACTIVE) -> goto evicted
                    :: else -> skip
                    fi;
#endif
                    atomic { assert(c0 == 0 && q == r + 1 && !tw); c0 = 0; q = 0; tw = 0; s = 0 }   /* P1 */
                    r++;
#ifdef MUTANT_WWAKE_EARLY
                    wake_writer();                /* before the store: the writer may miss it */
#endif
                    R[i] = r;                     /* release the slot */
#ifndef MUTANT_WWAKE_EARLY
                    wake_writer();
#endif
                :: r == w && f ->
                    assert(r == NMSG);            /* P2: nothing lost before the end */
                    goto leave
                :: r == w && !f ->
                    atomic { rmask = rmask | (1 << i) };   /* announce: CAS (full fence) */
#ifndef MUTANT_NO_RECHECK
                    f = fin;
                    w = W;
#endif
                    if
                    :: r < w || f -> skip
                    :: else -> atomic { rsem[i] > 0 -> rsem[i]-- }   /* sleep */
                    fi;
                    /* withdraw: clear our bit; if a waker took it, try to take its token */
                    atomic { if :: rmask & (1 << i) -> rmask = rmask & ~(1 << i); owe = 0
                             :: else -> owe = 1 fi };
                    if
                    :: owe -> atomic { if :: rsem[i] > 0 -> rsem[i]-- :: else -> skip fi; owe = 0 }
                    :: else -> skip
                    fi
                fi
            od;
evicted:
leave:      /* close(): ACTIVE or EVICTED of ours -> FREE (CAS) */
            atomic { if :: st[i] == MK(inc, ACTIVE) || st[i] == MK(inc, EVICTED) -> st[i] = FREE
                     :: else -> skip fi };
#ifndef FINDING_LEAVE_NO_WAKE
            wake_writer();                        /* a freed slot may unblock the writer */
#endif
            leaving = 0
        } unless { atomic { kill_req[i] && running[i] == inc -> kill_req[i] = 0; running[i] = 0;
                            leaving = 0 } }
    od;
    rdone++
}

init {
    byte n = 0;
    atomic {
        do
        :: n < NR -> run Reader(n); n++
        :: else -> break
        od
    }
}

#if RKILL
/* RKILL SIGKILLs, each to any reader at any moment (an `unless` escape has priority, so the
 * moment is chosen here: the reader dies at its next step once the request is set). */
active proctype Killer() {
    byte n = RKILL, v;
    do
    :: n > 0 ->
        v = 0;
        do
        :: v < NR - 1 -> v++
        :: break
        od;
        kill_req[v] = 1;
        n--
    :: else -> break
    od
}
#endif

/* P3: spin's `timeout` holds when no process can move: then every process must have ended. */
active proctype Watch() {
    timeout -> assert(wdone && rdone == NR)      /* P3: no lost wake-up (nothing blocks forever) */
}
