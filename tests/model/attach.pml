/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * Promela model of qbd's attach, write and recovery for one chunk
 * (docs/protocol.md, sections 3, 4 and 7), checked exhaustively by spin:
 * three replicas, write quorum 2, three writers with epochs 1, 2, 3 that run
 * at the same time (older ones never learn that they were replaced), any
 * replica may miss any message, and every interleaving of the two writers
 * and the replicas is explored.
 *
 * Every write carries a unique value; replicas keep (version, value).
 * Checked, as assertions:
 *  - lost: an attach that completes merges a version at least as new as
 *    every write acknowledged, and every value served to a reader, before
 *    it; at the same version, the same value (no two writes share one);
 *  - fenced: once a writer has attached, a writer with an older epoch gets
 *    no write acknowledged that the newer one did not see.
 * A writer serves a read of the merged value once recovery has put it on
 * W replicas (a read the writer's client may then rely on).
 * A replica step (promise, apply a write, take a copy) is one atomic
 * action, as it is in qbd-chunkd: one loop thread, versions checked and
 * changed per request.
 *
 * Versions are EPOCH * 8 + n: the epoch in the high part, as in the core.
 * Build variants break one mechanism each (tests/model/run expects spin to
 * find a counterexample):
 *   -DBROKEN_QUORUM   attach with 1 promise instead of max(W, R - W + 1)
 *   -DBROKEN_MAX      merge takes the first answer, not the highest
 *   -DBROKEN_VERSION  versions without the epoch (plain counter)
 *   -DBROKEN_RECOVERY no copy of a version held by fewer than W replicas
 */

#define R 3
#define W 2
#ifdef BROKEN_QUORUM
#define A 1
#else
#define A 2            /* max(W, R - W + 1) */
#endif
#define WRITES 1       /* writes per writer */
#define WRITERS 3

byte promised[R];      /* replica: highest epoch promised */
byte ver[R];           /* replica: the chunk's version */
byte val[R];           /* replica: which write the bytes come from */
byte hi_ver, hi_val;   /* ghost: newest version acknowledged or served */
byte merged_epoch;     /* ghost: highest epoch whose attach completed */
byte merged_v;         /* ghost: the version that attach merged */

inline commit(v, x)
{
	if
	:: v > hi_ver -> hi_ver = v; hi_val = x
	:: else
	fi
}

proctype writer(byte E)
{
	byte got[R];       /* 1: replica promised and answered */
	byte seen[R];      /* its version */
	byte sval[R];      /* and value */
	byte n = 0, r, holders, V, X, expected, nv, ok, w;
	byte snap_ver, snap_val;   /* ghost: newest commit when the quorum formed */
	bool snap = false;         /* ghost: all A promises held at that moment */
	byte k, q;
	bool first = true;

	/* ---- attach: OPEN to every replica; any of them may not answer ---- */
	r = 0;
	do
	:: r < R ->
		if
		:: atomic { E >= promised[r] -> promised[r] = E; got[r] = 1;
			    seen[r] = ver[r]; sval[r] = val[r]; n++;
			    if
			    :: n == A ->
				/* still holding every promise? (a newer writer
				 * may have taken one over meanwhile) */
				q = 0;
				k = 0;
				do
				:: k < R -> if :: got[k] && promised[k] == E -> q++ :: else fi; k++
				:: else -> break
				od;
				snap = q == A;
				snap_ver = hi_ver; snap_val = hi_val;
				q = 0; k = 0
			    :: else
			    fi }
		:: skip    /* no answer: down, partitioned, or promised newer */
		fi;
		r++
	:: else -> break
	od;
	if
	:: n < A -> goto done   /* refused: not enough promises */
	:: else
	fi;

	/* ---- merge: each chunk's version is the highest answered ---- */
	V = 0;
	r = 0;
	do
	:: r < R ->
		if
		:: got[r] ->
#ifdef BROKEN_MAX
			if :: first -> V = seen[r]; X = sval[r]; first = false :: else fi
#else
			if :: seen[r] > V -> V = seen[r]; X = sval[r] :: else fi
#endif
		:: else
		fi;
		r++
	:: else -> break
	od;

	/* ---- recovery: bring V to W replicas before serving it ---- */
	holders = 0;
	r = 0;
	do
	:: r < R -> if :: got[r] && seen[r] == V -> holders++ :: else fi; r++
	:: else -> break
	od;
#ifndef BROKEN_RECOVERY
	r = 0;
	do
	:: holders < W && r < R ->
		if
		:: got[r] && seen[r] != V ->
			/* RESYNC at the target: only under our epoch */
			if
			:: atomic { promised[r] == E -> ver[r] = V; val[r] = X;
				    seen[r] = V; sval[r] = X; holders++ }
			:: skip
			fi
		:: else
		fi;
		r++
	:: else -> break
	od;
	if
	:: holders < W -> goto done   /* cannot recover now: serve nothing */
	:: else
	fi;
#endif
	/* lost: a write acknowledged or served before the promise quorum
	 * formed is missing from the merge */
	assert(!snap || V > snap_ver || (V == snap_ver && X == snap_val));
	atomic {
		if :: E > merged_epoch -> merged_epoch = E; merged_v = V :: else fi;
		/* A read of it is served while the read lease holds: A
		 * replicas still accept our epoch (the core's pings). */
		n = 0;
		r = 0;
		do
		:: r < R -> if :: promised[r] == E -> n++ :: else fi; r++
		:: else -> break
		od;
		if
		:: n >= A ->
			assert(V > hi_ver || (V == hi_ver && X == hi_val));
			commit(V, X)
		:: else
		fi
	}

	/* ---- writes: to every replica, acknowledged at W successes ---- */
	w = 0;
	do
	:: w < WRITES ->
		expected = V;
#ifdef BROKEN_VERSION
		nv = V + 1;
#else
		if
		:: V / 8 < E -> nv = E * 8 + 1
		:: else -> nv = V + 1
		fi;
#endif
		ok = 0;
		r = 0;
		do
		:: r < R ->
			if
			:: atomic { promised[r] == E && ver[r] == expected -> ver[r] = nv;
				    val[r] = E * 8 + w + 1; ok++ }
			:: atomic { promised[r] == E && ver[r] == nv -> ok++ }  /* a retry */
			:: skip    /* lost, refused (older epoch or stale) */
			fi;
			r++
		:: else -> break
		od;
		V = nv;
		X = E * 8 + w + 1;
		if
		:: ok >= W ->
			atomic {
				/* fenced: a newer writer that already attached must
				 * have seen this write */
				assert(merged_epoch <= E || nv <= merged_v);
				commit(nv, X)
			}
		:: else -> goto done       /* EIO: this writer stops */
		fi;
		w++
	:: else -> break
	od;
done:
	skip
}

init {
	atomic {
		run writer(1);
		run writer(2);
		run writer(3)
	}
}
