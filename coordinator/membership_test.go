package coordinator

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func mem(id string, inc int64) Member { return Member{ID: id, Addr: id + ":7000", Incarnation: inc} }

func ring(gen uint64, ms ...Member) Ring {
	return Ring{Job: "j", Generation: gen, Members: ms}
}

func TestNextRing(t *testing.T) {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	a, b, c, d := mem("a", 10), mem("b", 11), mem("c", 12), mem("d", 13)
	tests := []struct {
		name        string
		in          RingInput
		wantChanged bool
		wantWaiting bool
		wantGen     uint64
		wantIDs     []string
		wantLeft    []string
		wantJoined  []string
		wantPending []string
	}{
		{
			name:        "no ring, below min: wait",
			in:          RingInput{Live: []Member{a}, MinWorld: 2},
			wantWaiting: true, wantGen: 0, wantIDs: []string{}, wantPending: []string{"a"},
		},
		{
			name:        "no ring, min reached: first generation",
			in:          RingInput{Live: []Member{c, a, b}, MinWorld: 2},
			wantChanged: true, wantGen: 1, wantIDs: []string{"a", "b", "c"}, wantJoined: []string{"a", "b", "c"},
		},
		{
			name:        "admitted joiners take ranks in id order",
			in:          RingInput{Live: []Member{mem("z", 1), mem("y", 2)}, MinWorld: 1},
			wantChanged: true, wantGen: 1, wantIDs: []string{"y", "z"}, wantJoined: []string{"z", "y"},
		},
		{
			name:    "unchanged",
			in:      RingInput{Current: ring(3, a, b), Live: []Member{b, a}, MinWorld: 1, AtStepBoundary: true},
			wantGen: 3, wantIDs: []string{"a", "b"},
		},
		{
			name:        "member left: new generation at once, order kept",
			in:          RingInput{Current: ring(3, a, b, c), Live: []Member{c, a}, MinWorld: 1},
			wantChanged: true, wantGen: 4, wantIDs: []string{"a", "c"}, wantLeft: []string{"b"},
		},
		{
			name:    "joiner not at step boundary: pending",
			in:      RingInput{Current: ring(3, b, a), Live: []Member{a, b, c}, MinWorld: 1},
			wantGen: 3, wantIDs: []string{"b", "a"}, wantPending: []string{"c"},
		},
		{
			name:        "joiner at step boundary: appended, survivors keep ranks",
			in:          RingInput{Current: ring(3, b, a), Live: []Member{a, b, c}, MinWorld: 1, AtStepBoundary: true},
			wantChanged: true, wantGen: 4, wantIDs: []string{"b", "a", "c"}, wantJoined: []string{"c"},
		},
		{
			name:        "departure admits pending joiners too",
			in:          RingInput{Current: ring(3, a, b), Live: []Member{a, d, c}, MinWorld: 1},
			wantChanged: true, wantGen: 4, wantIDs: []string{"a", "c", "d"}, wantLeft: []string{"b"}, wantJoined: []string{"c", "d"},
		},
		{
			name:        "re-registered member is a new incarnation",
			in:          RingInput{Current: ring(5, a, b), Live: []Member{a, mem("b", 20)}, MinWorld: 1},
			wantChanged: true, wantGen: 6, wantIDs: []string{"a", "b"}, wantLeft: []string{"b"}, wantJoined: []string{"b"},
		},
		{
			name:        "below min after departure: wait, no new generation",
			in:          RingInput{Current: ring(2, a, b), Live: []Member{a}, MinWorld: 2},
			wantWaiting: true, wantGen: 2, wantIDs: []string{"a", "b"}, wantLeft: []string{"b"},
		},
		{
			name:        "back to min after waiting",
			in:          RingInput{Current: ring(2, a, b), Live: []Member{a, c}, MinWorld: 2},
			wantChanged: true, wantGen: 3, wantIDs: []string{"a", "c"}, wantLeft: []string{"b"}, wantJoined: []string{"c"},
		},
		{
			name:        "max world caps joiners",
			in:          RingInput{Current: ring(1, a), Live: []Member{a, b, c, d}, MinWorld: 1, MaxWorld: 3, AtStepBoundary: true},
			wantChanged: true, wantGen: 2, wantIDs: []string{"a", "b", "c"}, wantJoined: []string{"b", "c"}, wantPending: []string{"d"},
		},
		{
			name:        "max world admits the earliest joiners",
			in:          RingInput{Current: ring(1, a), Live: []Member{a, mem("x", 99), mem("y", 50), mem("z", 60)}, MinWorld: 1, MaxWorld: 3, AtStepBoundary: true},
			wantChanged: true, wantGen: 2, wantIDs: []string{"a", "y", "z"}, wantJoined: []string{"y", "z"}, wantPending: []string{"x"},
		},
		{
			name:    "max world full: joiner pending, unchanged",
			in:      RingInput{Current: ring(1, a, b), Live: []Member{a, b, c}, MinWorld: 1, MaxWorld: 2, AtStepBoundary: true},
			wantGen: 1, wantIDs: []string{"a", "b"}, wantPending: []string{"c"},
		},
		{
			name:        "max world lowered: tail survivors cut",
			in:          RingInput{Current: ring(1, a, b, c), Live: []Member{a, b, c}, MinWorld: 1, MaxWorld: 2},
			wantChanged: true, wantGen: 2, wantIDs: []string{"a", "b"}, wantLeft: []string{"c"},
		},
		{
			name:        "everyone gone",
			in:          RingInput{Current: ring(7, a, b), MinWorld: 1},
			wantWaiting: true, wantGen: 7, wantIDs: []string{"a", "b"}, wantLeft: []string{"a", "b"},
		},
		{
			name:        "duplicate live ids: older incarnation wins",
			in:          RingInput{Live: []Member{mem("a", 30), a}, MinWorld: 1},
			wantChanged: true, wantGen: 1, wantIDs: []string{"a"}, wantJoined: []string{"a"},
		},
		{
			name:        "min below 1 means 1",
			in:          RingInput{Live: []Member{a}, MinWorld: 0},
			wantChanged: true, wantGen: 1, wantIDs: []string{"a"}, wantJoined: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Job, tt.in.Now, tt.in.Step = "j", now, 42
			before := slices.Clone(tt.in.Current.Members)
			got := NextRing(tt.in)
			if got.Changed != tt.wantChanged || got.Waiting != tt.wantWaiting {
				t.Errorf("changed, waiting = %v, %v; want %v, %v (%s)", got.Changed, got.Waiting, tt.wantChanged, tt.wantWaiting, got.Reason)
			}
			if got.Ring.Generation != tt.wantGen {
				t.Errorf("generation = %d, want %d", got.Ring.Generation, tt.wantGen)
			}
			if ids := got.Ring.IDs(); !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("members = %v, want %v", ids, tt.wantIDs)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"left", got.Left, tt.wantLeft}, {"joined", got.Joined, tt.wantJoined}, {"pending", got.Pending, tt.wantPending}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
			if got.Changed {
				if got.Ring.StartStep != 42 || !got.Ring.Formed.Equal(now) || got.Ring.Job != "j" {
					t.Errorf("new ring metadata = %+v", got.Ring)
				}
			}
			if !slices.Equal(before, tt.in.Current.Members) {
				t.Errorf("NextRing modified its input: %v -> %v", before, tt.in.Current.Members)
			}
			if got.Reason == "" {
				t.Error("empty Reason")
			}
		})
	}
}

// A new ring never shares its Members array with the current one, so that a
// published generation stays immutable.
func TestNextRingDoesNotAlias(t *testing.T) {
	cur := ring(1, mem("a", 1), mem("b", 2))
	d := NextRing(RingInput{Current: cur, Live: []Member{mem("a", 1)}, MinWorld: 1})
	if !d.Changed {
		t.Fatal("expected a new generation")
	}
	d.Ring.Members[0].ID = "x"
	if cur.Members[0].ID != "a" {
		t.Fatal("new ring aliases the current ring's members")
	}
}

// Input order of Live never changes the decision.
func TestNextRingDeterministic(t *testing.T) {
	live := []Member{mem("d", 4), mem("b", 2), mem("a", 1), mem("c", 3)}
	want := NextRing(RingInput{Live: live, MinWorld: 2}).Ring.IDs()
	for i := range 10 {
		shuffled := slices.Clone(live)
		for j := range shuffled {
			k := (j*7 + i) % len(shuffled)
			shuffled[j], shuffled[k] = shuffled[k], shuffled[j]
		}
		got := NextRing(RingInput{Live: shuffled, MinWorld: 2}).Ring.IDs()
		if !slices.Equal(got, want) {
			t.Fatalf("order %v gave %v, want %v", shuffled, got, want)
		}
	}
}

func TestRingRank(t *testing.T) {
	r := ring(1, mem("a", 1), mem("b", 2))
	if r.Rank("b") != 1 || r.Rank("a") != 0 || r.Rank("zz") != -1 {
		t.Fatalf("Rank wrong: %d %d %d", r.Rank("a"), r.Rank("b"), r.Rank("zz"))
	}
}

func BenchmarkNextRing64(b *testing.B) {
	cur := Ring{Job: "j", Generation: 9}
	var live []Member
	for i := range 64 {
		m := Member{ID: fmt.Sprintf("worker-%03d", i), Addr: "10.0.0.1:7000", Incarnation: int64(100 + i)}
		live = append(live, m)
		if i != 17 && i < 60 {
			cur.Members = append(cur.Members, m)
		}
	}
	in := RingInput{Job: "j", Current: cur, Live: live, MinWorld: 8, MaxWorld: 64, AtStepBoundary: true}
	b.ReportAllocs()
	for b.Loop() {
		if d := NextRing(in); !d.Changed {
			b.Fatal("expected a change")
		}
	}
}
