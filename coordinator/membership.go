package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Member is a worker as registered in etcd under /ringtrain/<job>/members/<id>.
type Member struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // host:port of its all-reduce endpoint
	// Incarnation is the etcd create revision of the member key. A worker
	// that dies and registers again under the same ID is a new incarnation:
	// it lost its in-memory state, so it is a joiner, not a survivor.
	Incarnation int64 `json:"incarnation,omitempty"`
}

// Ring is one immutable generation of the training ring: rank i is
// Members[i]. A membership change is always a new Ring with a higher
// Generation; a published Ring is never edited.
type Ring struct {
	Job        string    `json:"job"`
	Generation uint64    `json:"generation"` // 0: no ring formed yet
	Members    []Member  `json:"members"`
	StartStep  int64     `json:"start_step"` // last completed step when formed; training resumes after it
	Formed     time.Time `json:"formed"`
}

// Rank returns id's rank in the ring, or -1 if it is not a member.
func (r Ring) Rank(id string) int {
	for i, m := range r.Members {
		if m.ID == id {
			return i
		}
	}
	return -1
}

// IDs lists member ids in rank order.
func (r Ring) IDs() []string {
	ids := make([]string, len(r.Members))
	for i, m := range r.Members {
		ids[i] = m.ID
	}
	return ids
}

// RingInput is everything NextRing decides from. It holds no clock of its
// own: Now is injected so that decisions replay identically.
type RingInput struct {
	Job      string
	Current  Ring     // the ring in force; Generation 0 if none
	Live     []Member // members whose leases are alive, any order
	MinWorld int      // training waits below this many members (values < 1 mean 1)
	MaxWorld int      // at most this many members; 0 = unbounded
	// AtStepBoundary says the current generation has completed a step since
	// it was formed (or training has not started). Joiners are admitted only
	// then, so that a stream of joiners cannot starve training; a departure
	// breaks the ring and is handled at once regardless.
	AtStepBoundary bool
	Step           int64 // last completed step, becomes the new ring's StartStep
	Now            time.Time
}

// RingDecision is NextRing's verdict.
type RingDecision struct {
	Ring    Ring     // the ring to publish if Changed, else Current
	Changed bool     // a new generation must be published
	Waiting bool     // fewer than MinWorld usable members: training is paused
	Left    []string // ids of Current that are gone (dead, re-incarnated or cut by MaxWorld)
	Joined  []string // ids admitted into the new ring
	Pending []string // live ids not admitted (no step boundary yet, or over MaxWorld)
	Reason  string   // one line for logs and events
}

// NextRing decides the next ring generation. Rules, in order:
//   - survivors (members of Current still live with the same incarnation)
//     keep their relative order, so most ranks stay put;
//   - joiners (live but not in Current) are admitted when Current is broken
//     by a departure, when no ring exists yet, or at a step boundary;
//   - the ring is cut to MaxWorld, dropping the latest joiners (by
//     incarnation) first, then the tail of survivors;
//   - admitted joiners are appended after the survivors in id order;
//   - if fewer than MinWorld members remain, no ring is published (training
//     waits for joiners) and Waiting is set;
//   - otherwise a changed member list is published as Generation+1.
//
// NextRing does not modify its input.
func NextRing(in RingInput) RingDecision {
	minWorld := max(in.MinWorld, 1)
	live := dedupeLive(in.Live)
	byID := make(map[string]Member, len(live))
	for _, m := range live {
		byID[m.ID] = m
	}

	var d RingDecision
	survivors := make([]Member, 0, len(in.Current.Members))
	isSurvivor := make(map[string]bool, len(in.Current.Members))
	for _, m := range in.Current.Members {
		if lm, ok := byID[m.ID]; ok && lm.Incarnation == m.Incarnation {
			survivors = append(survivors, lm)
			isSurvivor[m.ID] = true
		} else {
			d.Left = append(d.Left, m.ID)
		}
	}
	var joiners []Member
	for _, m := range live {
		if !isSurvivor[m.ID] {
			joiners = append(joiners, m)
		}
	}
	slices.SortFunc(joiners, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Incarnation, b.Incarnation), cmp.Compare(a.ID, b.ID))
	})

	broken := len(d.Left) > 0
	admit := broken || in.Current.Generation == 0 || in.AtStepBoundary
	next := survivors
	if admit {
		next = append(next, joiners...)
	}
	if in.MaxWorld > 0 && len(next) > in.MaxWorld {
		for _, m := range next[in.MaxWorld:] {
			if isSurvivor[m.ID] {
				d.Left = append(d.Left, m.ID)
			}
		}
		next = next[:in.MaxWorld]
	}
	// Joiners were admitted first come, first served; among themselves they
	// take ranks in id order, so a fresh ring of worker-0..n has rank i = worker-i.
	if nsurv := min(len(survivors), len(next)); nsurv < len(next) {
		slices.SortFunc(next[nsurv:], func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	}
	inNext := make(map[string]bool, len(next))
	for _, m := range next {
		inNext[m.ID] = true
	}
	for _, m := range joiners {
		if inNext[m.ID] {
			d.Joined = append(d.Joined, m.ID)
		} else {
			d.Pending = append(d.Pending, m.ID)
		}
	}

	d.Ring = in.Current
	if len(next) < minWorld {
		d.Waiting = true
		d.Joined = nil
		d.Pending = idsOf(joiners)
		d.Reason = fmt.Sprintf("waiting: %d usable members, need world.min %d", len(next), minWorld)
		return d
	}
	if !broken && len(d.Joined) == 0 && len(d.Left) == 0 {
		d.Reason = "unchanged"
		if len(d.Pending) > 0 {
			d.Reason = fmt.Sprintf("unchanged: %d joiners pending", len(d.Pending))
		}
		return d
	}
	d.Changed = true
	d.Ring = Ring{
		Job:        in.Job,
		Generation: in.Current.Generation + 1,
		Members:    slices.Clone(next),
		StartStep:  in.Step,
		Formed:     in.Now,
	}
	d.Reason = fmt.Sprintf("generation %d: %d members, %d joined, %d left", d.Ring.Generation, len(next), len(d.Joined), len(d.Left))
	return d
}

// dedupeLive sorts live members by id and keeps one per id (the lowest
// incarnation, the older registration), so input order never matters.
func dedupeLive(live []Member) []Member {
	out := slices.Clone(live)
	slices.SortFunc(out, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Incarnation, b.Incarnation))
	})
	return slices.CompactFunc(out, func(a, b Member) bool { return a.ID == b.ID })
}

func idsOf(ms []Member) []string {
	if len(ms) == 0 {
		return nil
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}
