/*
 * model/ring.pml -- Promela model of ctshm's ShmTraceRing protocol AS IMPLEMENTED in
 * ctshm/ring.py (issue 7).  Checked with spin by model/check.sh; see model/README.md.
 *
 * One producer process; one consumer process (an "incarnation") whose NTHR threads hold
 * guards and release them out of order; restarts of the consumer process (CKILL); a killable
 * producer (PKILL); notify_crash from a signal handler / another thread (SIGCRASH); the
 * producer's abort path; finite access() timeouts (TMO); EINTR on the producer's wait.
 *
 * Granularity: every model step is ONE shared action of ring.py -- a load or store of one
 * header word, a compare-exchange, a sem_post, a successful sem_trywait/sem_timedwait, a
 * sem_timedwait that returns ETIMEDOUT -- bundled (atomic/d_step) with the thread-local
 * computation and ghost bookkeeping around it.  So any two shared actions of different
 * threads/processes interleave in every possible order, and a kill can fall between any two.
 * Comments cite the ring.py function and code each step stands for.  "ghost" variables only
 * record what happened, for the assertions; they are not part of ring.py.
 *
 * Semaphores: counting; post = +1; a wait takes a token when the count is > 0; a timed wait
 * (LIVENESS_SLICE slices, or the caller's deadline) may return ETIMEDOUT when the count is 0
 * (a timeout that races with a post is the same as timing out just before it).  EINTR is
 * retried by NamedSemaphore.acquire with the time left: a wait that returns early and starts
 * again (modelled on the producer, where the seed got it wrong).
 *
 * Configuration (-D flags; all optional):
 *   CAP NMSG NTHR NTHR2 HOLD ABORTS EINTRS TMO   sizes and budgets (defaults below)
 *   PKILL=1      the producer may be killed at any step once registered (first acquire)
 *   PKILL_EARLY  ... also before its first acquire() (see README: expect_producer())
 *   EXPECT_PRODUCER=1  the consumer side called expect_producer(pid) before the producer ran
 *   NOFINISH=1   the producer may return without mark_finished() (the consumer sees a death)
 *   CKILL=n      the consumer process may die n times, at any step; a new one then starts
 *   SIGCRASH=1   a crash handler runs notify_crash() at any step of the producer, then the
 *                process dies
 *   SIGCRASH=2   ... or the handler returns into the interrupted code (or another producer
 *                thread calls notify_crash(): it takes no lock)
 *   REOPEN=1     the producer process may open() the ring again between messages
 *   LTL_TERM     include the liveness claim `term` (compile without -DSAFETY, pan -a -f)
 *   FAST         the ring is in fast mode (briefs/fast-design.md, README "Fast mode"): no
 *                token per message; C_SLEEP / P_SLEEP sleep words, wake / wake_all / sleep /
 *                withdraw; the waker's store of W (producer) or R (consumer) goes to a store
 *                buffer (drained by the Drain process at any later step, by a FENCE, by a
 *                locked RMW of the same process or by its death)
 *   NOSLICE=1    (FAST) semaphore waits never time out: no liveness slices (no kills, TMO 0);
 *                a lost wake-up is then a global block, caught by P13
 *   FAST_WITHDRAW_FIX  (FAST) withdraw's wait for the owed token gives up (after a slice)
 *                only when no waker can still post it (README "Fast mode", finding F-1):
 *                consumer side: the producer is dead and no thread of this process is in a
 *                wake_all; producer side: the consumer registered at the announce is dead
 *   FAST_EMPTY_CAP  (FAST) `empty` starts with `capacity` tokens as in compat (finding F-0)
 * The races the model found in ring.py (README, "Findings") were fixed in ring.py: BUG-1 by
 * b213613, BUG-2..7 by d08ac82, BUG-8 by 8c3b673.  The model follows the fixed code; each OLD_*
 * flag puts one piece of the code before the fix back (spin must then find the counterexample
 * again):
 *   OLD_CORRUPT_CHECK  _claim raises CorruptRingError at the first w - res > capacity  BUG-1
 *   OLD_CLAIM_ORDER    _claim loads `finished` after reserved_idx / write_idx          BUG-2
 *   OLD_TOKEN_ONLY     the producer writes whenever it holds an `empty` token           BUG-3
 *   OLD_CHECK_ORDER    _check_producer_alive does not re-read `finished` after death   BUG-4
 *   OLD_FINISH_STORE   mark_finished: load `finished`, then store 1                     BUG-5
 *   OLD_NOTIFY_STORE   notify_crash: store `finished` = 2 unconditionally, no crash_w   BUG-6
 *   OLD_NO_CRASH_W     no crash record (crash_w): consumers stop at write_idx           BUG-7
 *   OLD_NO_CLAIM_RECHECK  _claim does not re-read `finished` after write_idx            BUG-8
 * Property switches (to prove the others while a known failure is reachable):
 *   SKIP_P5 SKIP_P6 SKIP_P7 SKIP_P8 SKIP_P9 SKIP_P10 SKIP_P11
 * Mutants (seed bugs re-introduced; spin must find a counterexample for each):
 *   MUTANT_NONATOMIC_RESERVE MUTANT_COMMIT_ON_ERROR MUTANT_OPENER_RECOVERY
 *   MUTANT_CRASH_FIRST MUTANT_EINTR_AS_TOKEN MUTANT_LEN_AFTER_PUBLISH
 *   MUTANT_RELEASE_UNORDERED MUTANT_NO_LIVENESS_CHECK MUTANT_NO_SELFHEAL
 * Batches (-DBATCH, FAST): put_many publishes several messages in one lock section and fences
 * and wakes once, after the last (the consumer's batch, get_many, is already the model's
 * steps: claims, then an in-order release of several slots with one fence and wake-up, as a
 * thread holding HOLD=2 guards releases them):
 *   MUTANT_BATCH_WHEN_FULL  the batch also goes on (unwoken consumer) when no slot is free
 * Fast-mode mutants (the design's (a)-(e)):
 *   MUTANT_FAST_NO_FENCE (a) the waker's W / R store stays buffered past its sleep-word load
 *   MUTANT_FAST_NO_RECHECK (b) the sleeper does not re-check ready() after announcing
 *   MUTANT_FAST_ANNOUNCE_STORE (c) the announce is a plain buffered store (no fence)
 *   MUTANT_FAST_WITHDRAW_NO_CONSUME (d) withdraw finding the word 0 does not take the token
 *   MUTANT_FAST_WAKE_NO_CAS (e) wake posts without decrementing the word
 *
 * Properties (assertion ids; README has the full statements):
 *   P0 _claim / _register_consumer never raise CorruptRingError on a healthy ring
 *   P1 a consumer only sees a slot completely written with its message, not being written,
 *      with the message's length record (written before write_idx was published)
 *   P2 a live consumer receives 0,1,2,...: no loss, duplicate or reordering (a restarted
 *      consumer starts again at read_idx: at-least-once across a restart)
 *   P3 the producer only writes a slot that no guard holds and whose message was released
 *   P4 read_idx advances one by one over released slots; R <= RES <= W <= R + CAP always
 *   P5 Finished / Crashed only once every committed message was handed out (RES == W)
 *   P6 at the end of a clean run every committed message was released (R == W)
 *   P7 Crashed carries notify_crash's details, or the dead producer's pid if it never called it
 *   P8 no `empty` token is lost: after a clean run empty >= CAP - (W - R)
 *   P9 no message published after notify_crash set the crash flag is delivered (the
 *      docstring: an outstanding ProducerGuard is never delivered, even if its commit() was
 *      in progress)
 *   P10 a notify_crash is never overwritten by mark_finished (reported as Finished)
 *   P11 all threads of one consumer process get the same end (Finished or Crashed)
 *   P12 (FAST) accounting: at the end of a run without deaths C_SLEEP == P_SLEEP == 0 and
 *      both semaphores are 0 (no stray token, no phantom sleeper)
 *   P13 (FAST) no lost wake-up: the system never blocks (spin's `timeout`) before every
 *      process ended -- meaningful with NOSLICE (waits that never time out)
 *   L1 (ltl term) under weak fairness every process ends: no deadlock, no livelock, every
 *      consumer thread gets Finished/Crashed -- in particular a dead producer is reported
 *   Valid end states (pan's deadlock check): no process is stuck at a blocking step.
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef NMSG
#define NMSG 3          /* messages the producer commits (<= 7: bit sets are bytes) */
#endif
#ifndef NTHR
#define NTHR 2          /* threads of the first consumer process (1..3) */
#endif
#ifndef NTHR2
#define NTHR2 NTHR      /* threads of a restarted consumer process (1..3) */
#endif
#ifndef HOLD
#define HOLD 1          /* guards one consumer thread may hold at once (1 or 2) */
#endif
#ifndef ABORTS
#define ABORTS 1        /* ProducerGuard.abort() calls (an exception while writing) */
#endif
#ifndef EINTRS
#define EINTRS 1        /* EINTRs delivered to the producer's wait */
#endif
#ifndef TMO
#define TMO 0           /* access(timeout) calls per consumer thread whose deadline passes */
#endif
#ifndef PKILL
#define PKILL 0
#endif
#ifndef NOFINISH
#define NOFINISH 0
#endif
#ifndef CKILL
#define CKILL 0
#endif
#ifndef SIGCRASH
#define SIGCRASH 0
#endif
#ifndef REOPEN
#define REOPEN 0
#endif
#ifndef EXPECT_PRODUCER
#define EXPECT_PRODUCER 0
#endif
#ifndef NOSLICE
#define NOSLICE 0
#endif

#define NONE 255
#define SIG 11          /* the signal number notify_crash reports */

/* P4's invariant, asserted at every write of an index */
#define INV assert(R <= RES && RES <= W && W <= R + CAP)
/* what a consumer must have handed out before Crashed / Finished: write_idx, capped by the
   crash record (the messages from crash_w - 1 on "do not exist") */
#define LIMIT(f) ((f) == 2 && crash_w != 0 && crash_w - 1 < W -> crash_w - 1 : W)
#define HELD(i, s) held[(i) * CAP + (s)]

/* ---- shared header words (RingHeader + ctshm extension) ---- */
byte W;                 /* write_idx    (_W)   */
byte R;                 /* read_idx     (_R)   */
byte RES;               /* reserved_idx (_RES) */
byte FIN;               /* finished     (_FIN): 0 running, 1 finished, 2 crashed */
byte crash_sig;         /* crash.signal at _CRASH_OFF (addr, operation go with it) */
bool dead_pid;          /* _DEAD_PID != 0 */
byte crash_w;           /* _CRASH_W: write_idx + 1 when the crash was recorded, 0 unknown */
bool p_reg = EXPECT_PRODUCER;  /* _PRODUCER_PID != 0 (with _PRODUCER_START) */
byte c_pid;             /* _CONSUMER_PID: the registered consumer incarnation, 0 none */
byte tag[CAP];          /* length record k: tag = seq + 1 (nbytes is stored just before) */

/* ---- the named semaphores: counts ---- */
byte sem_filled;        /* /X_t_filled, initial 0 */
#if defined(FAST) && !defined(FAST_EMPTY_CAP)
byte sem_empty;         /* /X_t_empty: FAST: initial 0 (its tokens only carry wake-ups; see
                           README "Fast mode", finding F-0; FAST_EMPTY_CAP: capacity) */
#else
byte sem_empty = CAP;   /* /X_t_empty,  initial capacity */
#endif

#ifdef FAST
/* ---- fast mode: the sleep words (ctshm extension) and the store buffers ---- */
byte C_SLEEP;           /* consumer threads announced asleep on `filled` */
byte P_SLEEP;           /* producer threads announced asleep on `empty` (0 or 1) */
bool pwb; byte Wb;      /* the producer's store buffer: a store of W not yet visible */
bool cwb; byte Rb;      /* the consumer process's store buffer: a store of R not yet visible
                           (one live consumer process at a time: a dead one's buffer drained) */
byte csb; byte psb;     /* MUTANT_FAST_ANNOUNCE_STORE: buffered announces (increments) */
byte cwk[4];            /* FAST_WITHDRAW_FIX: threads of consumer process i between a
                           wake_all's exchange and its last post (process-local count) */
/* The store becomes visible (TSO: in order; a one-entry buffer -- a second store drains the
   first).  DRAIN_P also keeps P9's ghost: a W that becomes visible after the crash flag. */
#define DRAIN_P if :: pwb -> W = Wb; pwb = false; \
                   if :: FIN == 2 -> lateb = lateb | (1 << (Wb - 1)) :: else fi; Wb = 0 \
                :: else fi
#define DRAIN_C if :: cwb -> R = Rb; cwb = false; Rb = 0 :: else fi
#define PWV (pwb -> Wb : W)  /* W as the producer's own thread sees it (store forwarding) */
#define DRAIN_P_ DRAIN_P;
#define DRAIN_C_ DRAIN_C;
#else
/* compat: nothing (so the compat model is statement for statement the one before FAST) */
#define DRAIN_P_
#define DRAIN_C_
#endif

/* ---- processes ---- */
bool p_alive = true;    /* the producer process exists: _liveness.is_alive(ppid, start) */
bool c_alive[4];        /* consumer incarnation i exists */
byte cur_inc = 1;       /* the newest consumer incarnation */

/* ---- consumer-process-local state (its ShmTraceRing handle) ---- */
bool c_reg[4];          /* self._consumer_registered */
byte lk[4];             /* self._lock: owner thread, 0 free */
byte pend[4];           /* self._pending (the min-heap), as a bit set of message indices */

/* ---- ghosts ---- */
byte content[CAP];      /* seq + 1 of the message the slot's bytes hold, 0 = garbage */
bool writing[CAP];      /* the producer holds a ProducerGuard on this slot */
byte held[4 * CAP];     /* HELD(i, s): ConsumerGuards incarnation i's threads hold on slot s */
byte nexp[4];           /* the next message index incarnation i must receive */
bool notified;          /* notify_crash stored FIN = 2 */
byte lateb;             /* messages whose write_idx store came after FIN = 2 (bit set) */
bool in_handler;        /* SIGCRASH=1: the crash handler interrupted the producer for good */
byte endres[4];         /* the end incarnation i's threads got: 0, 1 Finished, 2 Crashed */
byte nproc = 1;         /* processes that have not ended (for L1; 1: init starting them) */

#ifdef LTL_TERM
ltl term { <> (nproc == 0) }
#endif

/* ============================================================================================
 * The producer: acquire() + _wait_space(), the application writing g.buf, _commit() or
 * _abort(), mark_finished().
 * ========================================================================================== */
proctype Producer() {
    byte w, s, k;
    byte ab = ABORTS, eintr = EINTRS;
#ifdef FAST
    byte ret;
    byte snap;                                  /* FAST_WITHDRAW_FIX: the consumer at announce */
#endif
{
    do
    :: k < NMSG ->
#if REOPEN
        /* ShmTraceRing.open() by the producer process (a second handle): ring.py's open()
           and _try_open() run no recovery; the seed's init() rewinds reserved_idx for every
           opener that is not the owner. */
        if
        :: skip
        :: skip ->
#ifdef MUTANT_OPENER_RECOVERY
            s = R;                              /* committed = read_idx.load(Acquire)      */
            w = RES;                            /* reserved = reserved_idx.load(Acquire)   */
            atomic {
                if
                :: w > s -> RES = s             /* reserved_idx.store(committed, Release)  */
                :: else
                fi;
                s = 0; w = 0
            }
#else
            skip
#endif
        fi;
#endif
        /* acquire(): with self._lock: fin = self._load(_FIN); if fin: raise RuntimeError */
        /* (FAST: taking the lock is a locked RMW: the producer's store buffer drains) */
        atomic { DRAIN_P_ if :: FIN != 0 -> goto exit :: else fi };  /* (written as a test) */
        /* if not self._producer_registered: self._register_producer()
               -> self._set_peer(_PRODUCER_PID, pid, start): pid 0, start, pid */
        atomic { if :: !p_reg -> p_reg = true :: else fi };
#ifdef FAST
#ifdef BATCH
        goto pwait;
pbatch:
        /* put_many's next message, still inside the batch's lock section (no lock taken:
           nothing drains; `finished` was checked once, at the batch's start) */
        skip;
#endif
pwait:
        /* fast acquire: under the lock, space = W - R < capacity (header loads; no trywait;
           the producer's own W through store forwarding: PWV) */
        atomic { if :: PWV - R < CAP -> goto pslot :: else fi };
        /* sleep(P_SLEEP, empty, space, slice):
           1. CAS-increment P_SLEEP (a locked RMW: the producer's buffer drains) */
#ifndef MUTANT_FAST_ANNOUNCE_STORE
        atomic { DRAIN_P; P_SLEEP++; snap = cur_inc };
#else
        psb++;                                  /* mutant (c): a plain store, buffered */
#endif
#ifndef MUTANT_FAST_NO_RECHECK
        /* 2./3. re-check ready(): if space: withdraw(); go (one load of R) */
        atomic { if :: W - R < CAP -> ret = 0; goto pwd :: else fi };
#endif
        /* 4. got = empty.acquire(slice) */
        if
        :: atomic { sem_empty > 0 -> sem_empty--; goto pwait }  /* got: the waker decremented */
#if !NOSLICE
        :: atomic { sem_empty == 0 -> ret = 1 }  /* timed out: withdraw(), "slice over" */
#endif
        fi;
pwd:
        /* withdraw(P_SLEEP, empty): c = load; if c > 0 and CAS(c, c - 1) == c: return
           (the load and the CAS in one step: a CAS that fails only loops -- no effect) */
        if
        :: atomic { P_SLEEP > 0 -> P_SLEEP--; goto pwdone }
        :: atomic { P_SLEEP == 0 -> skip }      /* c == 0: a waker took our unit: its token */
#ifdef MUTANT_FAST_WITHDRAW_NO_CONSUME
            ; goto pwdone                       /* mutant (d): the owed token is not taken */
#endif
            ;
            if
            :: atomic { sem_empty > 0 -> sem_empty--; goto pwdone }
#if !NOSLICE
#ifndef FAST_WITHDRAW_FIX
            :: atomic { sem_empty == 0 -> goto pwdone }   /* the owed token's wait timed out */
#else
            /* fix: after a slice without the token, give up only if the consumer registered
               at the announce is dead (else wait another slice: its waker is alive) */
            :: atomic { sem_empty == 0 && !c_alive[snap] -> goto pwdone }
#endif
#endif
            fi
        fi;
pwdone:
        atomic { if :: ret == 0 -> goto pwait :: else -> ret = 0 fi };
        /* the slice is over: cpid = self._dead_peer(_CONSUMER_PID): raise ConsumerGone */
        if
        :: atomic { c_pid != 0 && !c_alive[c_pid] -> skip };
            if
            :: goto pwait                       /* the application retries acquire() */
            :: goto exit                        /* ... or ConsumerGone ends the process */
            fi
        :: atomic { c_pid == 0 || c_alive[c_pid] -> goto pwait }
        fi;
#else
pwait:
        /* if self._trywait(self._h_empty) == 0 and self._space():
               return self._new_producer_guard(size)
           ... if not self._wait_space(timeout): raise TimeoutError
           (put()'s fast path does the same steps without the second `finished` check in
           _commit: covered -- that check only removes behaviours)
           _wait_space: a spin on `hq[_W] - hq[_R] < cap` then empty.try_acquire() (the same
           effect as a try_acquire), then `if empty.acquire(chunk): return True` in slices */
        if
        :: atomic { sem_empty > 0 -> sem_empty--;
#ifndef OLD_TOKEN_ONLY
               goto pcheck      /* `... == 0 and self._space()`: a token is only a hint */
#else
               goto pslot
#endif
           }
        :: atomic { sem_empty == 0 -> skip }    /* empty.acquire(chunk) returned False */
#ifndef OLD_TOKEN_ONLY
            /* if self._space(): return True  -- free, but its token never came: a consumer
               killed between storing read_idx and posting `empty` lost it for good */
            atomic { if :: W - R < CAP -> goto pslot :: else fi };
#endif
            /* cpid = self._dead_peer(_CONSUMER_PID); if cpid: raise ConsumerGone(...)
               (_set_peer's transient pid 0 reads as "no consumer": keep waiting, the same as
               for a live one) */
            if
            :: atomic { c_pid != 0 && !c_alive[c_pid] -> skip };
                if
                :: goto pwait                   /* the application retries acquire() */
                :: goto exit                    /* ... or ConsumerGone ends the process */
                fi
            :: atomic { c_pid == 0 || c_alive[c_pid] -> goto pwait }
            fi;
#ifndef OLD_TOKEN_ONLY
pcheck:
            /* _space(): hq[_W] - hq[_R] < self.capacity  -- else the token was a surplus one
               (its slot was taken without it, above): dropped */
            atomic {
                if
                :: W - R < CAP -> goto pslot
                :: else -> goto pwait
                fi
            }
#endif
        :: atomic { eintr > 0 -> eintr--;
#ifdef MUTANT_EINTR_AS_TOKEN
               goto pslot   /* seed: acquire() ignores sem_wait()'s -1/EINTR: no token */
#else
               goto pwait   /* NamedSemaphore.acquire: EINTR is retried with the time left */
#endif
           }
        fi;
#endif
pslot:
        /* _new_producer_guard(size), under self._lock: w = hq[_W]; slot = w % capacity
           (_reserve: posix_fallocate; on ENOSPC `self._empty.post()` and raise -- the same
           as the abort below); g = ProducerGuard(self, w, v[:size]) */
        atomic {
#ifdef FAST
            w = PWV;                            /* (store forwarding: a batch's own W) */
#else
            w = W;
#endif
            s = w % CAP;
            assert(HELD(cur_inc, s) == 0);      /* P3: no (live) ConsumerGuard holds the slot */
            assert(w < R + CAP);                /* P3: the slot's last message was released */
            writing[s] = true;
            content[s] = 0                      /* the application writes g.buf ... */
        };
        if
        :: /* ... completely; then guard.commit(nbytes) -> _commit():
              with self._lock: if self._load(_FIN) == _CRASHED:
                  guard._done = True; raise RuntimeError(... it is not published) */
            atomic {
                content[s] = w + 1;
                if
                :: FIN == 2 -> writing[s] = false; goto exit
                :: else
                fi
            };
#ifdef FAST
            /* fast commit: length record, then store W+1 -- into the store buffer (the record
               before it: TSO keeps store order, so writing it straight to memory is exact) */
            atomic {
                writing[s] = false;
                tag[s] = w + 1;
                DRAIN_P;
                Wb = w + 1; pwb = true;
                assert(R <= RES && RES <= w + 1 && w + 1 <= R + CAP)  /* P4 */
            };
#ifdef BATCH
            /* put_many (ctshm/_batch.py): while messages are left and the next slot is free
               now, the next message goes on inside the same lock section -- no fence, no
               wake-up check (R only grows: the slot stays free).  The batch's last message,
               or one that finds no free slot, fences and wakes as put() does. */
            if
#ifndef MUTANT_BATCH_WHEN_FULL
            :: atomic { k + 1 < NMSG && w + 1 - R < CAP -> k++; w = 0; s = 0; goto pbatch }
#else
            :: atomic { k + 1 < NMSG -> k++; w = 0; s = 0; goto pbatch }  /* mutant: also
                                                   when full: it then waits for space unwoken */
#endif
            :: skip
            fi;
#endif
            /* release the lock = FENCE (drains the buffer), then wake(C_SLEEP, filled):
               c = load(C_SLEEP); if c == 0: return; if CAS(c, c - 1) == c: post
               (fence and load in one step: the buffer may also drain at any earlier step, by
               the Drain process; load + CAS in one step: a failed CAS only loops) */
            atomic {
#ifndef MUTANT_FAST_NO_FENCE
                DRAIN_P;
#endif
                if
                :: C_SLEEP > 0 ->
#ifndef MUTANT_FAST_WAKE_NO_CAS
                    C_SLEEP--
#else
                    skip                        /* mutant (e): post without the CAS */
#endif
                :: else -> k++; w = 0; s = 0; goto pnext
                fi
            };
            atomic { sem_filled++; k++; w = 0; s = 0 }  /* filled.post() */
#else
#ifndef MUTANT_LEN_AFTER_PUBLISH
            /* guard._done = True; buf.release()
               hq[k + 1] = nbytes; hq[k] = idx + 1   (the length record)
               hq[_W] = idx + 1   (release: the slot and its record first)
               (one step: the record is read only after write_idx covers it, and a kill
               between the two stores is the same as a kill before both) */
            atomic {
                writing[s] = false;
                tag[s] = w + 1;
                W = w + 1;
                INV;  /* P4 */
                if                              /* ghost: published after the crash flag */
                :: FIN == 2 -> lateb = lateb | (1 << w)
                :: else
                fi
            };
#else
            atomic { writing[s] = false; W = w + 1; INV };  /* P4: mutant: write_idx first ... */
            tag[s] = w + 1;                     /* ... the length record after it */
#endif
            atomic { sem_filled++; k++; w = 0; s = 0 }  /* self._filled.post() (after the lock) */
#endif
        :: atomic { ab > 0 -> ab-- };           /* an exception in the with-block: */
#ifndef MUTANT_COMMIT_ON_ERROR
            /* __exit__ -> abort() -> _abort(): guard._done = True; buf.release();
               self._empty.post(): the half-written slot is never published
               (FAST: no token was taken, none is given back) */
#ifdef FAST
            atomic { writing[s] = false; w = 0; s = 0 }
#else
            atomic { writing[s] = false; sem_empty++; w = 0; s = 0 }
#endif
#else
            /* seed: ProducerGuard::drop always publishes, a half-written slot too:
               write_idx.fetch_add(1, Release); sem_filled.post() */
            atomic { writing[s] = false; W = w + 1; INV };  /* P4 */
            atomic { sem_filled++; k++; w = 0; s = 0 }
#endif
        fi
#ifdef FAST
        ;
pnext:                                          /* (after a commit without a wake) */
        skip
#endif
    :: k == NMSG -> break
    od;
    if
    :: /* mark_finished(): with self._lock: (no guard outstanding)
              fin = self._cas(self._a_fin, 0, _FINISHED); if fin: raise RuntimeError
          self._filled.post() */
#ifdef OLD_FINISH_STORE
        /* before d08ac82: fin = self._load(_FIN); if fin: raise; self._store(_FIN, _FINISHED) */
        atomic { if :: FIN != 0 -> goto exit :: else fi };
        atomic {
#ifndef SKIP_P10
            assert(FIN != 2 || !notified);      /* P10: this store would erase a crash */
#endif
            FIN = 1
        };
#else
        if
        :: atomic { FIN == 0 -> DRAIN_P_ FIN = 1 }   /* (FAST: a locked RMW drains) */
        :: atomic { FIN != 0 -> goto exit }
        fi;
#endif
#ifdef FAST
        /* wake_all(C_SLEEP, filled): c = load; CAS(c, 0) (one step); post c times */
        atomic { k = C_SLEEP; C_SLEEP = 0 };
        do
        :: atomic { k > 0 -> sem_filled++; k-- }
        :: else -> break
        od
#else
        sem_filled++
#endif
    :: NOFINISH -> skip                         /* the producer returns without finishing */
    fi;
exit:
    atomic { DRAIN_P_ p_alive = false }         /* the process exits (FAST: its buffer drains) */
} unless { !p_alive || in_handler };
    nproc--
}

/* A kill of the producer process (SIGKILL, OOM) at any step. */
proctype PKiller() {
    if
#ifdef PKILL_EARLY
    :: atomic { p_alive -> DRAIN_P_ p_alive = false }
#else
    :: atomic { p_alive && p_reg -> DRAIN_P_ p_alive = false }
#endif
    :: skip
    fi;
    nproc--
}

/* notify_crash(signal, addr, operation, message), run by a signal handler of the producer or
   by another producer thread: it takes no lock (async-signal-safe), so it interleaves with any
   step.  SIGCRASH=1: the handler runs in the interrupted thread, which never resumes. */
proctype Signal() {
    byte k;
#ifdef FAST
    bool oth;   /* SIGCRASH=2: notify_crash from another thread (its loads do not see the
                   producer's buffered W, its CAS does not drain it); else the handler runs in
                   the producer's thread */
#endif
    if
    :: p_alive ->
        {
#if defined(FAST) && SIGCRASH >= 2
            if :: oth = true :: skip fi;
#endif
#ifndef OLD_NOTIFY_STORE
            /* if self._load(_FIN): return   (already finished or crashed: the first end wins) */
            atomic { in_handler = (SIGCRASH == 1); if :: FIN != 0 -> goto sigdone :: else fi };
#ifndef OLD_NO_CRASH_W
#ifdef FAST
            k = (oth -> W : PWV);               /* self._store(_CRASH_W, self._load(_W) + 1) */
#else
            k = W;                              /* self._store(_CRASH_W, self._load(_W) + 1) */
#endif
            crash_w = k + 1;
#endif
            crash_sig = SIG;                    /* the message; _CRASH.pack_into(...) */
                                                /* self._fence(): details before the flag */
            atomic {                            /* if self._cas(self._a_fin, 0, _CRASHED) == 0: */
                if
                :: FIN == 0 ->
#ifdef FAST
                    if :: !oth -> DRAIN_P :: else fi;   /* the thread's own RMW drains */
#endif
                    FIN = 2; notified = true
                :: else -> goto sigdone
                fi
            };
#ifdef FAST
            /* wake_all(C_SLEEP, filled): exchange to 0, then post c times (no lock) */
            atomic { k = C_SLEEP; C_SLEEP = 0 };
            do
            :: atomic { k > 0 -> sem_filled++; k-- }
            :: else -> break
            od;
#else
            sem_filled++;                       /*     self._filled.post() */
#endif
#else
            /* before d08ac82: details, fence, self._store(_FIN, _CRASHED), post */
            atomic { crash_sig = SIG; in_handler = (SIGCRASH == 1) };
            atomic { FIN = 2; notified = true };
            sem_filled++;
#endif
sigdone:
#if SIGCRASH >= 2
            if
            :: atomic { DRAIN_P_ p_alive = false }  /* the handler then ends the process */
            :: skip                             /* ... or returns into the interrupted code */
            fi
#else
            atomic { DRAIN_P_ p_alive = false } /* the handler then ends the process */
#endif
        } unless { !p_alive }
    :: skip
    fi;
    nproc--
}

/* ============================================================================================
 * A consumer thread: access(None or timeout) in a loop, holding up to HOLD guards and releasing
 * them in any order.  access() / _register_consumer() / _claim() / _data() /
 * _check_producer_alive() / _on_timeout() / _crashed(); ConsumerGuard.release() -> _complete().
 * ========================================================================================== */
proctype CThread(byte inc; byte t) {
    byte res, w, fin, idx, k, ret, t2;
#ifdef FAST
    byte r0;                                    /* _complete: read_idx before the advance */
#endif
    byte g0 = NONE, g1 = NONE;                  /* the guards this thread holds */
    byte tmo = TMO;
    bool ending;
{
    /* access(): if not self._consumer_registered: self._register_consumer()
       _register_consumer(): with self._lock: if self._consumer_registered: return */
    if
    :: atomic { c_reg[inc] -> goto wait }
    :: atomic { lk[inc] == 0 && !c_reg[inc] -> lk[inc] = t }
    fi;
#ifndef MUTANT_OPENER_RECOVERY
    /* pid, start = _liveness.me(); old = self._load(_CONSUMER_PID); if old and old != pid:
           if _liveness.is_alive(old, ...): raise RuntimeError(... already has a live consumer) */
    atomic {
        if
        :: c_pid != 0 && c_pid != inc -> assert(!c_alive[c_pid])  /* MODEL: (restarts follow deaths) */
        :: else -> goto registered
        fi
    };
    k = R;                                      /* r, res = self._load(_R), ... */
    res = RES;                                  /* ...      self._load(_RES) */
    /* if not r <= res <= r + self.capacity: raise CorruptRingError */
    assert(k <= res && res <= k + CAP);         /* P0 */
    if
    :: res > k ->
        atomic { RES = k; INV };                /* P4: self._store(_RES, r) */
#ifndef FAST
        do                                      /* for _ in range(res - r): */
        :: atomic { res > k -> sem_filled++; res-- }   /* self._filled.post() */
        :: else -> break
        od
#else
        res = 0                                 /* FAST: no tokens re-posted */
#endif
    :: else
    fi;
#ifdef FAST
    /* FAST: store C_SLEEP = 0 (the dead process's announced sleepers are gone) */
    atomic { C_SLEEP = 0; k = 0; res = 0 };
#endif
#else
    /* seed init(): every opener (not the owner) rewinds, without a liveness check and
       without re-posting the tokens */
    k = R;
    res = RES;
    atomic {
        if
        :: res > k -> RES = k
        :: else
        fi
    };
#endif
registered:
    /* self._set_peer(_CONSUMER_PID, pid, start): pid 0, start, pid (the transient 0 reads as
       "no consumer" to the producer: it keeps waiting, as for a live consumer -- one step)
       self._consumer_registered = True (and the lock is released) */
    atomic { c_pid = inc; nexp[inc] = RES; c_reg[inc] = true; lk[inc] = 0; k = 0; res = 0 };

wait:
#ifdef FAST
    /* fast access(): claim first (under the lock); sleep only when there is nothing */
    goto claim;
fsleep:
    /* sleep(C_SLEEP, filled, ready, slice):
       1. CAS-increment C_SLEEP (a locked RMW: the process's store buffer drains) */
#ifndef MUTANT_FAST_ANNOUNCE_STORE
    atomic { DRAIN_C; C_SLEEP++ };
#else
    csb++;                                      /* mutant (c): a plain store, buffered */
#endif
#ifndef MUTANT_FAST_NO_RECHECK
    /* 2./3. re-check ready(): RES < W or FIN (header loads; one step: W and FIN only grow,
       so two loads give the result of one load at the first or at the second: both are
       explored); if ready: withdraw(); "go claim" */
    atomic { if :: RES < W || FIN != 0 -> ret = 0; goto cwd :: else fi };
#endif
    /* 4. got = filled.acquire(slice) */
    if
    :: atomic { sem_filled > 0 -> sem_filled--; goto claim }  /* got: go claim */
#if !NOSLICE
    :: atomic { sem_filled == 0 -> ret = 1 }    /* the slice timed out: withdraw() */
#endif
    :: atomic { tmo > 0 -> tmo--; ret = 2 }     /* the access() deadline: withdraw() */
    fi;
cwd:
    /* withdraw(C_SLEEP, filled) (load + CAS in one step, as in the producer's) */
    if
    :: atomic { C_SLEEP > 0 -> C_SLEEP--; goto cwdone }
    :: atomic { C_SLEEP == 0 -> skip }          /* a waker took our unit: take its token */
#ifdef MUTANT_FAST_WITHDRAW_NO_CONSUME
        ; goto cwdone                           /* mutant (d) */
#endif
        ;
        if
        :: atomic { sem_filled > 0 -> sem_filled--; goto cwdone }
#if !NOSLICE
#ifndef FAST_WITHDRAW_FIX
        :: atomic { sem_filled == 0 -> goto cwdone }  /* the owed token's wait timed out */
#else
        /* fix: after a slice without the token, give up only if the producer is dead and no
           thread of this process is in a wake_all (else its waker is alive: wait again) */
        :: atomic { sem_filled == 0 && !p_alive && cwk[inc] == 0 -> goto cwdone }
#endif
#endif
        fi
    fi;
cwdone:
    atomic { if :: ret == 0 -> goto claim :: else fi };  /* "go claim"; else "slice over" */
    goto check;
#endif
    /* access(): `self._trywait(self._h_filled)`, the spin (`if ready and
       filled.try_acquire()`) and `filled.acquire(chunk)` each take a token when there is
       one -> r = self._claim() */
    if
    :: atomic { sem_filled > 0 -> sem_filled--; goto claim }
    :: atomic { sem_filled == 0 -> ret = 1; goto check }   /* the slice timed out */
    :: atomic { tmo > 0 -> tmo--; ret = 2; goto check }    /* chunk <= 0: _on_timeout() */
    fi;

check:
    /* _check_producer_alive():
           if self._load(_FIN): return
           ppid = self._dead_peer(_PRODUCER_PID): pid = self._load(word); if not pid: 0
               start = self._load(word + 1); if self._load(word) != pid or
               _liveness.is_alive(pid, start): 0;  else pid
           if not ppid: return
       (PRODUCER_PID is written once, before anything else the producer does, so reading it
       with the neighbouring word loses no behaviour) */
#ifdef MUTANT_NO_LIVENESS_CHECK
    goto checked;
#endif
    atomic { if :: FIN != 0 || !p_reg -> goto checked :: else fi };
    atomic { if :: p_alive -> goto checked :: else fi };
#ifndef OLD_CHECK_ORDER
    /* if self._load(_FIN): return  -- again: dead for sure, so a notify_crash (or
       mark_finished) it made just before dying is visible now */
    atomic { if :: FIN != 0 -> goto checked :: else fi };
#endif
#ifndef OLD_NO_CRASH_W
    k = W;                                      /* self._store(_CRASH_W, self._load(_W) + 1) */
    crash_w = k + 1;
    k = 0;
#endif
    dead_pid = true;                            /* self._store(_DEAD_PID, ppid) */
    crash_sig = 0;                              /* _CRASH.pack_into(self._hv, _CRASH_OFF, 0, 0, 0)
                                                   struct.pack_into("<I", self._hv, MSG_OFF, 0)
                                                   self._fence() */
    atomic {                                    /* if self._cas(self._a_fin, 0, _CRASHED) == 0: */
        if
        :: FIN == 0 -> DRAIN_C_ FIN = 2
        :: else -> goto checked
        fi
    };
#ifdef FAST
    /* wake_all(C_SLEEP, filled) */
    atomic { k = C_SLEEP; C_SLEEP = 0; cwk[inc]++ };
    do
    :: atomic { k > 0 -> sem_filled++; k-- }
    :: else -> break
    od;
    cwk[inc]--;
#else
    sem_filled++;                               /*     self._filled.post() */
#endif
checked:
    /* back in access(): (or in _on_timeout(), below)
       Self-healing: if self._load(_RES) < self._load(_W) or self._load(_FIN): self._claim() */
    atomic {
        if
        :: ret == 2 -> ret = 0; goto ontimeout
        :: else -> ret = 0
        fi;
#ifdef MUTANT_NO_SELFHEAL
        goto wait
#endif
    };
    /* (one step: the guard's only effect is whether _claim() runs; _claim() loads every word
       again and, when it finds nothing to do, has no effect -- so reading the three words at
       once loses no behaviour) */
    atomic {
        if
        :: RES < W || FIN != 0 -> goto claim
#ifdef FAST
        :: else -> goto fsleep                  /* the wait loop: sleep again */
#else
        :: else -> goto wait
#endif
        fi
    };

ontimeout:
    /* _on_timeout(): (self._check_producer_alive(), above)
           fin = self._load(_FIN)
           if fin: res, w = self._load(_RES), self._load(_W)
                   if fin == _CRASHED: w = self._crash_limit(w)
                   if res >= w: return self._crashed() / _FINISHED_RESULT
           return Timeout()  -- and the application calls access() again */
    atomic { fin = FIN; if :: fin == 0 -> goto use :: else fi };
    res = RES;
    w = W;
    atomic {
#ifndef OLD_NO_CRASH_W
        if                                      /* _crash_limit(w): cw = self._load(_CRASH_W) */
        :: fin == 2 && crash_w != 0 && crash_w - 1 < w -> w = crash_w - 1
        :: else
        fi;
#endif
        if
        :: res >= w ->
#ifndef SKIP_P5
            assert(RES >= LIMIT(fin));          /* P5 */
#endif
            res = 0; w = 0;
            if
            :: fin == 2 -> fin = 0; goto crashed
            :: else -> fin = 0; goto finished
            fi
        :: else -> res = 0; w = 0; fin = 0; goto use
        fi
    };

claim:
    /* _claim(): while True: */
#ifdef FAST
    /* FAST: _claim runs under the handle lock (taking it: a locked RMW, the buffer drains);
       the first load with it (the lock is process-local) */
    atomic { lk[inc] == 0 -> lk[inc] = t; DRAIN_C; fin = FIN };
    goto claimres;
claimre:
    fin = FIN;
claimres:
#else
#ifdef MUTANT_CRASH_FIRST
    /* seed claim_read_slot(): `if finished == 2 { post; return Crashed }` before any data */
    atomic { if :: FIN == 2 -> fin = 2; goto endcheck :: else fi };
#endif
#ifndef OLD_CLAIM_ORDER
    fin = FIN;                                  /* fin = hq[_FIN]  (first: then write_idx is
                                                   final once fin is set) */
#endif
#endif
#ifndef MUTANT_NONATOMIC_RESERVE
    res = RES;                                  /* res, w = hq[_RES], hq[_W] */
#ifdef OLD_NO_CLAIM_RECHECK
    /* before 8c3b673: no second load of `finished` */
    atomic {
        w = W;
        if
        :: fin == 2 -> skip                     /* if fin == _CRASHED: w = self._crash_limit(w) */
        :: else -> goto decide
        fi
    };
#else
    w = W;
    /* if (hq[_FIN] if plain else self._load(_FIN)) != fin: continue
       -- `finished` is then the same before and after write_idx was read, so a write_idx read
       with fin == 0 was published before any crash flag (OLD_CLAIM_ORDER: there is no first
       load to compare with, so no second one either) */
    atomic {
        if
#ifdef FAST
        :: FIN != fin -> res = 0; w = 0; fin = 0; goto claimre
        :: FIN == fin && fin == 2 -> skip
        :: FIN == fin && fin != 2 -> goto decide
#elif !defined(OLD_CLAIM_ORDER)
        :: FIN != fin -> res = 0; w = 0; fin = 0; goto claim
        :: FIN == fin && fin == 2 -> skip       /* if fin == _CRASHED: w = self._crash_limit(w) */
        :: FIN == fin && fin != 2 -> goto decide
#else
        :: fin == 2 -> skip
        :: else -> goto decide
#endif
        fi
    };
#endif
#ifndef OLD_NO_CRASH_W
    atomic {                                    /* cw = self._load(_CRASH_W); min(w, cw - 1) */
        if
        :: crash_w != 0 && crash_w - 1 < w -> w = crash_w - 1
        :: else
        fi
    };
#endif
decide:
    atomic {
        if
        :: res >= w -> goto nodata              /* if res < w: ... */
        :: w - res > CAP -> goto corrupt        /* if w - res > self.capacity and ... */
        :: else
        fi
    };
cas:
    atomic {                                    /* if cas(a_res, res, res + 1) == res: */
        if                                      /* (FAST: a plain store RES = res + 1 under
                                                   the lock: the "CAS" always succeeds) */
        :: RES == res ->
            RES = res + 1;
#ifdef FAST
            lk[inc] = 0; DRAIN_C;               /* (the with-block ends: the lock release) */
#endif
            INV;  /* P4 */
            /* return self._data(res): the view of slot res % cap; `if hq[k] == idx + 1:
               n = int(hq[k + 1])` (the length record) */
            k = res % CAP;
            assert(!writing[k] && content[k] == res + 1);   /* P1 */
            assert(tag[k] == res + 1);                      /* P1 */
            assert(res == nexp[inc]);                       /* P2 */
#ifndef SKIP_P9
            assert((lateb & (1 << res)) == 0);              /* P9 */
#endif
            nexp[inc]++;
            HELD(inc, k)++;
            if
            :: g0 == NONE -> g0 = res
            :: else -> g1 = res
            fi;
            k = 0; res = 0; w = 0; fin = 0;
            goto use                                        /* Data(guard) */
#ifdef FAST
        :: else -> assert(false)                            /* P4: RES moved under the lock */
#else
        :: else -> res = 0; w = 0; goto claim               /* continue */
#endif
        fi
    };
corrupt:
#ifndef OLD_CORRUPT_CHECK
    /* ... self._indices_corrupt(): w = self._load(_W); res = self._load(_RES)
           return w - res > self.capacity          (write first, then reserved) */
    t2 = W;
    atomic {
        if
        :: t2 - RES > CAP -> assert(false)      /* P0: raise CorruptRingError on a good ring */
        :: else -> t2 = 0; goto cas             /* not corrupt: the CAS fails and we loop */
        fi
    };
#else
    /* before b213613: the check as first written -- raise at once */
    assert(false);                              /* P0 */
#endif
#else
    /* seed claim_read_slot(): w = write_idx.load(); current_reserved = reserved_idx.load()
       if w == current_reserved { ...finished checks... }
       my_idx = reserved_idx.fetch_add(1) */
    w = W;
    atomic {
        res = RES;
        if
        :: w != res
        :: else -> goto nodata
        fi
    };
    atomic {
        res = RES;                              /* fetch_add: the old value */
        RES = res + 1;
        k = res % CAP;
        assert(res < W);                        /* P1: a committed slot */
        assert(!writing[k] && content[k] == res + 1);       /* P1 */
        assert(tag[k] == res + 1);                          /* P1 */
        assert(res == nexp[inc]);                           /* P2 */
        nexp[inc]++;
        HELD(inc, k)++;
        if
        :: g0 == NONE -> g0 = res
        :: else -> g1 = res
        fi;
        k = 0; res = 0; w = 0;
        goto use
    };
#endif
nodata:
#ifdef OLD_CLAIM_ORDER
    fin = FIN;                                  /* before d08ac82: fin = self._load(_FIN) here */
#endif
endcheck:
    atomic {
        if
        :: fin != 0 ->
#ifndef SKIP_P5
            assert(RES >= LIMIT(fin))           /* P5: every committed slot was handed out */
#else
            skip
#endif
#ifdef FAST
        :: else -> res = 0; w = 0; lk[inc] = 0; DRAIN_C; goto fsleep   /* return None: sleep */
#else
        :: else -> res = 0; w = 0; goto wait    /* return None: the token is dropped */
#endif
        fi;
        res = 0; w = 0
    };
#ifdef FAST
    /* return Finished / Crashed: the lock released, then wake_all(C_SLEEP, filled) so every
       other consumer thread sees the end */
    atomic { lk[inc] = 0; DRAIN_C; k = C_SLEEP; C_SLEEP = 0; cwk[inc]++ };
    do
    :: atomic { k > 0 -> sem_filled++; k-- }
    :: else -> break
    od;
    atomic {
        cwk[inc]--;
        if
        :: fin == 2 -> fin = 0; goto crashed
        :: else -> fin = 0; goto finished
        fi
    };
#else
    /* if fin == _CRASHED: self._filled.post(); return self._crashed()
       if fin == _FINISHED: self._filled.post(); return _FINISHED_RESULT  (wakes the others) */
    atomic {
        sem_filled++;
        if
        :: fin == 2 -> fin = 0; goto crashed
        :: else -> fin = 0; goto finished
        fi
    };
#endif

crashed:
    /* _crashed(): signal, addr, operation = _CRASH.unpack_from(self._hv, _CRASH_OFF)
                   dead = self._load(_DEAD_PID); msg = (the crash message at MSG_OFF)
                   return Crashed(CrashDetails(...), dead or None, msg) */
    k = crash_sig;
    atomic {
#ifndef SKIP_P7
        if                                      /* P7 */
        :: notified -> assert(k == SIG && !dead_pid)  /* P7: Crashed(details, None) */
        :: else -> assert(k == 0 && dead_pid)         /* P7: Crashed(zeros, pid) */
        fi;
#endif
#ifndef SKIP_P11
        assert(endres[inc] != 1);               /* P11 */
#endif
        endres[inc] = 2;
        k = 0;
        ending = true;
        goto use
    };

finished:
    atomic {
#ifndef SKIP_P11
        assert(endres[inc] != 2);               /* P11 */
#endif
        endres[inc] = 1;
        ending = true
    };

use:
    /* The application: releases a guard (any of those it holds), or calls access() again
       while it holds fewer than HOLD; after Finished / Crashed it releases all and stops.
       ConsumerGuard.release() -> _complete(idx, guard): with self._lock: guard._done = True;
       buf.release() ... (the buffer half, a ghost step here) */
    if
    :: d_step { g0 != NONE -> idx = g0; g0 = NONE;
                k = idx % CAP; assert(!writing[k] && content[k] == idx + 1);  /* P1 */
                HELD(inc, k)--; k = 0 }
    :: d_step { g1 != NONE -> idx = g1; g1 = NONE;
                k = idx % CAP; assert(!writing[k] && content[k] == idx + 1);  /* P1 */
                HELD(inc, k)--; k = 0 }
    :: atomic { !ending && (g0 == NONE) + (g1 == NONE) > 2 - HOLD -> goto wait }
    :: atomic { ending && g0 == NONE && g1 == NONE -> goto out }
    fi;
    /* _complete(idx, guard), continued: */
#ifndef MUTANT_RELEASE_UNORDERED
    /* ... cur = hq[_R]; `if idx == cur and not pending:` (the fast path: store R, post
       empty) is the same as the heap loop below doing one round; heappush(pending, idx) */
    /* (read_idx is only ever written under this lock -- the previous consumer process is
       dead -- so reading it as the lock is taken loses no behaviour) */
#ifdef FAST
    atomic {
        lk[inc] == 0 -> lk[inc] = t; DRAIN_C;
        pend[inc] = pend[inc] | (1 << idx);
        k = R; r0 = k                           /* cur = hq[_R] */
    };
    do
    :: atomic {                                 /* while pending and pending[0] == cur: */
           (pend[inc] & (1 << k)) != 0 && (pend[inc] & ((1 << k) - 1)) == 0 ->
           DRAIN_C;                             /* (one-entry buffer: the older store first) */
           pend[inc] = pend[inc] & ~(1 << k);   /*     heapq.heappop(pending) */
           k++;                                 /*     cur += 1 */
           assert(R + 1 == k && k <= RES);      /* P4: one by one, over reserved slots */
           Rb = k; cwb = true;                  /*     self._store(_R, cur): buffered */
           assert(k <= RES && RES <= W && W <= k + CAP)  /* P4 */
       }                                        /*     (no post) */
    :: atomic {
           !((pend[inc] & (1 << k)) != 0 && (pend[inc] & ((1 << k) - 1)) == 0) ->
           lk[inc] = 0; idx = NONE;             /* the with-block ends: release = FENCE */
#ifndef MUTANT_FAST_NO_FENCE
           DRAIN_C;
#endif
           if
           :: k == r0 -> k = 0; r0 = 0; goto use   /* read_idx did not move: no wake */
           :: else -> k = 0; r0 = 0
           fi
       };
       /* wake(P_SLEEP, empty): load + CAS in one step, then post */
       atomic {
           if
           :: P_SLEEP > 0 ->
#ifndef MUTANT_FAST_WAKE_NO_CAS
               P_SLEEP--
#else
               skip
#endif
           :: else -> goto use
           fi
       };
       atomic { sem_empty++; goto use }
    od;
#else
    atomic {
        lk[inc] == 0 -> lk[inc] = t;
        pend[inc] = pend[inc] | (1 << idx);
        k = R                                   /* cur = hq[_R] (or self._load(_R)) */
    };
    do
    :: atomic {                                 /* while pending and pending[0] == cur: */
           (pend[inc] & (1 << k)) != 0 && (pend[inc] & ((1 << k) - 1)) == 0 ->
           pend[inc] = pend[inc] & ~(1 << k);   /*     heapq.heappop(pending) */
           k++;                                 /*     cur += 1 */
           assert(R + 1 == k && k <= RES);      /* P4: one by one, over reserved slots */
           R = k;                               /*     self._store(_R, cur) */
           INV  /* P4 */
       };
       sem_empty++                              /*     self._empty.post() */
    :: atomic {
           !((pend[inc] & (1 << k)) != 0 && (pend[inc] & ((1 << k) - 1)) == 0) ->
           lk[inc] = 0; k = 0; idx = NONE;      /* (end of the with-block) */
           goto use
       }
    od;
#endif
#else
    /* mutant: each release advances read_idx at once (no reorder buffer) */
    atomic { R = R + 1; INV };  /* P4 */
    atomic { sem_empty++; idx = NONE; goto use };
#endif

out:
    skip
} unless { !c_alive[inc] };                    /* the consumer process was killed */
    nproc--
}

/* Kills the consumer process (any step of any of its threads) up to CKILL times; each time a
   new consumer process starts (it registers on its first access(): _register_consumer). */
proctype CKiller() {
    byte i = 1;
    do
    :: i <= CKILL ->
        atomic {
            DRAIN_C_                            /* (FAST) the dead process's buffer drains */
            c_alive[i] = false;
            i++;
            c_alive[i] = true;
            cur_inc = i;
            nproc = nproc + NTHR2;
            run CThread(i, 1);
#if NTHR2 >= 2
            run CThread(i, 2);
#endif
#if NTHR2 >= 3
            run CThread(i, 3);
#endif
        }
    :: break
    od;
    nproc--
}

#ifdef FAST
/* The store buffers drain at any later step (TSO: a store becomes visible eventually). */
proctype Drain() {
end:
    do
    :: atomic { pwb -> DRAIN_P; INV }           /* P4 */
    :: atomic { cwb -> DRAIN_C; INV }           /* P4 */
#ifdef MUTANT_FAST_ANNOUNCE_STORE
    :: atomic { csb > 0 -> csb--; C_SLEEP++ }
    :: atomic { psb > 0 -> psb--; P_SLEEP++ }
#endif
    od
}

/* P13: spin's `timeout` holds when no process can move: then every process must have ended.
   With NOSLICE (semaphore waits that never time out) a lost wake-up is such a state. */
proctype Watch() {
end:
    timeout -> assert(nproc == 0)               /* P13: no lost wake-up (nothing blocks forever) */
}
#endif

init {
    atomic {
        c_alive[1] = true;
        nproc = 1 + NTHR;
        run Producer();
        run CThread(1, 1);
#if NTHR >= 2
        run CThread(1, 2);
#endif
#if NTHR >= 3
        run CThread(1, 3);
#endif
#if PKILL || defined(PKILL_EARLY)
        nproc++; run PKiller();
#endif
#if SIGCRASH
        nproc++; run Signal();
#endif
#if CKILL
        nproc++; run CKiller();
#endif
#ifdef FAST
        run Drain();
        run Watch();
#endif
    }
    /* The end of a run: every process ended. */
    nproc == 0;
#ifdef FAST
    atomic {
        DRAIN_P; DRAIN_C;                       /* (the processes' exits drained them) */
#if !PKILL && !CKILL && !SIGCRASH && !NOFINISH && !defined(PKILL_EARLY) && !defined(SKIP_P12)
        /* P12: a run without deaths leaves no announced sleeper and no token */
        assert(C_SLEEP == 0 && P_SLEEP == 0 && sem_filled == 0 && sem_empty == 0);  /* P12 */
#endif
        skip
    };
#endif
    if
    :: FIN == 1 ->                              /* a clean run */
#ifndef SKIP_P6
        assert(R == W && RES == W);             /* P6: everything handed out and released */
        assert(nexp[cur_inc] == W);             /* P6: ... to the live consumer */
#endif
#if !defined(SKIP_P8) && !defined(FAST) && (defined(OLD_TOKEN_ONLY) || CKILL == 0)
        /* P8: no `empty` token was lost: one per slot not holding an unreleased message.
           (Since d08ac82 a token a dead consumer lost is not restored -- nobody can know it
           is missing -- but the producer no longer needs it: with consumer deaths the model
           is judged by L1 instead; OLD_TOKEN_ONLY shows the loss.) */
        assert(sem_empty + (W - R) >= CAP);     /* P8 */
#endif
    :: else
    fi
}
