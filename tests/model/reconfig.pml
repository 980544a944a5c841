/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * Promela model of one membership change of one chunk (docs/protocol.md,
 * section 11), checked exhaustively by spin: voters S = {0, 1, 2}, write
 * quorum W = 2, node 3 replacing node 2 (S' = {0, 1, 3}); writer 1 drives
 * the change while writer 2 (a newer epoch) attaches at any point, reading
 * whichever configuration is current; writer 1 never learns that it was
 * replaced except through a failed compare-and-swap. Any replica may miss
 * any message.
 *
 * etcd is two shared variables, the epoch key and the configuration:
 *   0  (S)             1  (S, learner 3)
 *   2  (S, S') joint   3  (S')
 * An attach reads both, then compares both when it writes its epoch; a
 * change of configuration compares the epoch with the writer's own.
 * Writer 1 attaches, then: learner (CAS to 1, OPEN node 3, resync the
 * value to it), adopts the joint rule, CAS to joint once node 3 is
 * current (a flush is modelled as durable: no crash loses anything),
 * leave (CAS to 3) once the value is on W of S'. It may write once
 * under (S), once under the joint rule before and once after its CAS to
 * joint, once under (S'), and once more under the rule it holds when a
 * step fails. Writes go to every node it holds a promise of (node 3 from
 * the learner step on, node 2 even after leave); a quorum under the joint
 * rule is W (or A) in S and in S'. Writer 2 OPENs the voters of the
 * configuration it read, needs A promises in each of its sets, merges
 * the highest version, recovers it to W in each set, then writes once.
 * A writer's epoch is fixed: its CAS fails unless it is above the one
 * read (etcd's epoch + 1).
 *
 * Checked, as in attach.pml:
 *  - lost: an attach that completes merges a version at least as new as
 *    every write acknowledged before its promise quorum formed (the same
 *    value at the same version);
 *  - fenced: once writer 2 has attached, writer 1 gets no write
 *    acknowledged that writer 2 did not see.
 * Build variants break one mechanism each (tests/model/run expects spin
 * to find a counterexample):
 *   -DBROKEN_JOINT  the joint rule needs a quorum in S' only
 *   -DBROKEN_EARLY  joint and leave before node 3 holds the value
 *   -DBROKEN_CAS    the attach compares the epoch, not the configuration
 */

#define N 4            /* nodes: slots 0, 1, 2 and the newcomer 3 */
#define W 2
#define A 2            /* max(W, R - W + 1), R = 3 in each set */

byte ep;               /* etcd: the volume's epoch */
byte cfg;              /* etcd: the configuration (above) */
byte promised[N];      /* replica: highest epoch promised */
byte ver[N];           /* replica: the chunk's version */
byte val[N];           /* replica: which write the bytes come from */
byte hi_ver, hi_val;   /* ghost: newest version acknowledged */
byte merged_epoch;     /* ghost: highest epoch whose attach completed */
byte merged_v;         /* ghost: the version that attach merged */

/* the nodes marked in b are q or more in every set of configuration c */
#ifdef BROKEN_JOINT
#define INJOINT(b, q) (b[0] + b[1] + b[3] >= q)
#else
#define INJOINT(b, q) (b[0] + b[1] + b[2] >= q && b[0] + b[1] + b[3] >= q)
#endif
#define QUORUM(c, b, q) \
	((c) <= 1 && b[0] + b[1] + b[2] >= q || \
	 (c) == 2 && INJOINT(b, q) || \
	 (c) == 3 && b[0] + b[1] + b[3] >= q)
/* a voter of configuration c (the learner of 1 is not) */
#define MEMBER(c, r) ((r) < 2 || (r) == 2 && (c) <= 2 || (r) == 3 && (c) >= 2)

inline commit(v, x)
{
	if
	:: v > hi_ver -> hi_ver = v; hi_val = x
	:: else
	fi
}

/* one write to every node, acknowledged at W in each set of rule */
inline write(rule)
{
	expected = V;
	if
	:: V / 8 < E -> nv = E * 8 + 1
	:: else -> nv = V + 1
	fi;
	w++;
	r = 0;
	do
	:: r < N ->
		has[r] = 0;
		if
		:: atomic { promised[r] == E && ver[r] == expected -> ver[r] = nv;
			    val[r] = E * 8 + w; has[r] = 1 }
		:: skip    /* lost, refused (newer epoch or stale) */
		fi;
		r++
	:: else -> break
	od;
	V = nv;
	X = E * 8 + w;
	if
	:: QUORUM(rule, has, W) ->
		atomic {
			assert(merged_epoch <= E || nv <= merged_v);
			commit(nv, X)
		}
	:: else -> goto done    /* EIO: this writer stops */
	fi
}

/* bring V to node 3, the learner, under our epoch */
inline catch_up()
{
	if
	:: atomic { promised[3] == E -> ver[3] = V; val[3] = X; has[3] = 1 }
	:: skip
	fi
}

proctype writer(byte E)
{
	byte c, e;         /* the configuration and epoch read from etcd */
	byte got[N];       /* 1: replica promised and answered */
	byte hold[N];      /* scratch: promises still held */
	byte has[N];       /* 1: replica holds V */
	byte seen[N], sval[N];
	byte r, k, V, X, expected, nv, w = 0, rule;
	byte snap_ver, snap_val;
	bool snap = false, formed = false;

	/* ---- attach: read the record, CAS the epoch, OPEN the voters ---- */
	atomic { c = cfg; e = ep }
	atomic {
		if
#ifdef BROKEN_CAS
		:: ep == e && e < E -> ep = E
#else
		:: ep == e && e < E && cfg == c -> ep = E
#endif
		:: else -> goto done
		fi
	}
	r = 0;
	do
	:: r < N && MEMBER(c, r) ->
		if
		:: atomic { E >= promised[r] -> promised[r] = E; got[r] = 1;
			    seen[r] = ver[r]; sval[r] = val[r];
			    if
			    :: !formed ->
				k = 0;
				do
				:: k < N -> hold[k] = got[k] && promised[k] == E; k++
				:: else -> break
				od;
				k = 0;
				if
				:: QUORUM(c, hold, A) ->
					formed = true; snap = true;
					snap_ver = hi_ver; snap_val = hi_val
				:: else
				fi
			    :: else
			    fi }
		:: skip    /* no answer */
		fi;
		r++
	:: r < N && !MEMBER(c, r) -> r++
	:: else -> break
	od;
	if
	:: !QUORUM(c, got, A) -> goto done
	:: else
	fi;

	/* ---- merge the highest version; recover it to W of each set ---- */
	V = 0;
	X = 0;
	r = 0;
	do
	:: r < N ->
		if
		:: got[r] && seen[r] > V -> V = seen[r]; X = sval[r]
		:: else
		fi;
		r++
	:: else -> break
	od;
	r = 0;
	do
	:: r < N -> has[r] = got[r] && seen[r] == V; r++
	:: else -> break
	od;
	r = 0;
	do
	:: r < N && !QUORUM(c, has, W) ->
		if
		:: got[r] && !has[r] ->
			if
			:: atomic { promised[r] == E -> ver[r] = V; val[r] = X;
				    has[r] = 1 }
			:: skip
			fi
		:: else
		fi;
		r++
	:: else -> break
	od;
	if
	:: !QUORUM(c, has, W) -> goto done
	:: else
	fi;
	assert(!snap || V > snap_ver || (V == snap_ver && X == snap_val));
	atomic { if :: E > merged_epoch -> merged_epoch = E; merged_v = V :: else fi }
	rule = c;

	if
	:: E != 1 ->
		/* writer 2: one write under the configuration it read */
		write(rule);
		goto done
	:: else
	fi;

	/* ---- writer 1: replace node 2 by node 3 ---- */
	if :: write(rule) :: skip fi;
	atomic {
		if
		:: ep == E && cfg == 0 -> cfg = 1
		:: else -> goto stale
		fi
	}
	/* learner: OPEN(E) to node 3, then resync V to it */
	if
	:: atomic { E >= promised[3] -> promised[3] = E }
	:: skip -> goto stale
	fi;
	has[3] = ver[3] == V;   /* its OPEN reply */
	catch_up();
	/* joint: adopt the rule first, then CAS once node 3 is current */
	rule = 2;
	if :: write(rule) :: skip fi;
	if :: !has[3] -> catch_up() :: else fi;
#ifndef BROKEN_EARLY
	if
	:: !has[3] -> goto stale
	:: else
	fi;
#endif
	atomic {
		if
		:: ep == E && cfg == 1 -> cfg = 2
		:: else -> goto stale
		fi
	}
	if :: write(rule) :: skip fi;
	/* leave: V on W of S' (and flushed) */
#ifndef BROKEN_EARLY
	if
	:: has[0] + has[1] + has[3] < W -> goto stale
	:: else
	fi;
#endif
	atomic {
		if
		:: ep == E && cfg == 2 -> cfg = 3
		:: else -> goto stale
		fi
	}
	rule = 3;
	if :: write(rule) :: skip fi;
	goto done;
stale:
	/* the change stopped (a CAS failed: replaced, though all it learns
	 * is that the record changed; or node 3 lagged): one more write
	 * may still be tried under the rule it holds */
	if :: write(rule) :: skip fi;
done:
	skip
}

init {
	atomic {
		run writer(1);
		run writer(2)
	}
}
