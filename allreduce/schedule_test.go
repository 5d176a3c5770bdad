package allreduce

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestChunkSpan(t *testing.T) {
	tests := []struct {
		length, n int
		want      []Span
	}{
		{10, 3, []Span{{0, 4}, {4, 3}, {7, 3}}},
		{9, 3, []Span{{0, 3}, {3, 3}, {6, 3}}},
		{2, 4, []Span{{0, 1}, {1, 1}, {2, 0}, {2, 0}}},
		{0, 2, []Span{{0, 0}, {0, 0}}},
		{5, 1, []Span{{0, 5}}},
		{7, 2, []Span{{0, 4}, {4, 3}}},
	}
	for _, tt := range tests {
		var got []Span
		for c := 0; c < tt.n; c++ {
			got = append(got, ChunkSpan(tt.length, tt.n, c))
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ChunkSpan(%d, %d, *) = %v, want %v", tt.length, tt.n, got, tt.want)
		}
	}
}

func TestSchedule(t *testing.T) {
	c := func(i int) Span { return ChunkSpan(10, 3, i) }
	tests := []struct {
		name            string
		rank, n, length int
		want            []Step
	}{
		{"world 1 has no steps", 0, 1, 5, []Step{}},
		{"world 2 rank 0", 0, 2, 7, []Step{
			{SendChunk: 0, RecvChunk: 1, Send: Span{0, 4}, Recv: Span{4, 3}, Reduce: true},
			{SendChunk: 1, RecvChunk: 0, Send: Span{4, 3}, Recv: Span{0, 4}, Reduce: false},
		}},
		{"world 3 rank 0", 0, 3, 10, []Step{
			{0, 2, c(0), c(2), true},
			{2, 1, c(2), c(1), true},
			{1, 0, c(1), c(0), false},
			{0, 2, c(0), c(2), false},
		}},
		{"world 3 rank 2", 2, 3, 10, []Step{
			{2, 1, c(2), c(1), true},
			{1, 0, c(1), c(0), true},
			{0, 2, c(0), c(2), false},
			{2, 1, c(2), c(1), false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Schedule(tt.rank, tt.n, tt.length)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Schedule(%d, %d, %d) =\n%v\nwant\n%v", tt.rank, tt.n, tt.length, got, tt.want)
			}
		})
	}
}

func TestScheduleInvariants(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for r := 0; r < n; r++ {
			steps := Schedule(r, n, 100)
			for g, st := range steps {
				// What rank r sends at step g, its right neighbour receives at step g.
				rs := StepAt(mod(r+1, n), n, 100, g)
				if rs.RecvChunk != st.SendChunk || rs.Recv != st.Send {
					t.Fatalf("n=%d r=%d g=%d: sends chunk %d, right neighbour receives %d", n, r, g, st.SendChunk, rs.RecvChunk)
				}
				if g > 0 && st.SendChunk != steps[g-1].RecvChunk {
					t.Fatalf("n=%d r=%d g=%d: sends chunk %d, but received %d at step %d", n, r, g, st.SendChunk, steps[g-1].RecvChunk, g-1)
				}
			}
			if n > 1 && steps[n-2].RecvChunk != OwnedChunk(r, n) {
				t.Fatalf("n=%d r=%d: last reduce step receives %d, owned chunk %d", n, r, steps[n-2].RecvChunk, OwnedChunk(r, n))
			}
		}
	}
}

func TestSubSpan(t *testing.T) {
	tests := []struct {
		s    Span
		sub  int
		want []Span
	}{
		{Span{10, 7}, 3, []Span{{10, 3}, {13, 3}, {16, 1}}},
		{Span{0, 6}, 3, []Span{{0, 3}, {3, 3}}},
		{Span{5, 0}, 3, nil},
		{Span{5, 2}, 8, []Span{{5, 2}}},
	}
	for _, tt := range tests {
		var got []Span
		for k := 0; k < NumSub(tt.s.Len, tt.sub); k++ {
			got = append(got, SubSpan(tt.s, tt.sub, k))
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SubSpan(%v, %d, *) = %v, want %v", tt.s, tt.sub, got, tt.want)
		}
	}
}

func TestSendReady(t *testing.T) {
	tests := []struct {
		g, k, recvG, recvK int
		want               bool
	}{
		{0, 5, 0, 0, true},  // own data
		{1, 0, 0, 0, false}, // nothing received yet
		{1, 0, 0, 1, true},  // sub 0 of step 0 received
		{1, 2, 0, 2, false}, // sub 2 of step 0 not yet
		{1, 2, 1, 0, true},  // step 0 complete
		{3, 0, 1, 9, false},
		{3, 0, 2, 1, true},
	}
	for _, tt := range tests {
		if got := SendReady(tt.g, tt.k, tt.recvG, tt.recvK); got != tt.want {
			t.Errorf("SendReady(%d, %d, %d, %d) = %v, want %v", tt.g, tt.k, tt.recvG, tt.recvK, got, tt.want)
		}
	}
}

// TestScheduleSimulated runs the pure schedule in lock-step over plain
// slices, without any transport, and checks the sums.
func TestScheduleSimulated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		n := 1 + rng.IntN(8)
		L := rng.IntN(40)
		bufs := make([][]float32, n)
		want := make([]float32, L)
		for r := range bufs {
			bufs[r] = make([]float32, L)
			for i := range bufs[r] {
				v := float32(rng.IntN(100))
				bufs[r][i] = v
				want[i] += v
			}
		}
		for g := 0; g < NumSteps(n); g++ {
			// Every rank sends at once: snapshot first.
			sent := make([][]float32, n)
			for r := range bufs {
				s := StepAt(r, n, L, g).Send
				sent[r] = append([]float32(nil), bufs[r][s.Off:s.End()]...)
			}
			for r := range bufs {
				st := StepAt(r, n, L, g)
				from := sent[mod(r-1, n)]
				for i, v := range from {
					if st.Reduce {
						bufs[r][st.Recv.Off+i] += v
					} else {
						bufs[r][st.Recv.Off+i] = v
					}
				}
			}
		}
		for r := range bufs {
			if !reflect.DeepEqual(bufs[r], want) && L > 0 {
				t.Fatalf("n=%d L=%d rank %d: got %v want %v", n, L, r, bufs[r], want)
			}
		}
	}
}
