package allreduce

// Span is a half-open range [Off, Off+Len) of elements in a buffer.
type Span struct {
	Off, Len int
}

// End returns Off+Len.
func (s Span) End() int { return s.Off + s.Len }

// ChunkSpan returns chunk c of a buffer of length elements split into n chunks
// as evenly as possible: the first length%n chunks hold one element more.
// Chunks may be empty when length < n.
func ChunkSpan(length, n, c int) Span {
	q, r := length/n, length%n
	if c < r {
		return Span{Off: c * (q + 1), Len: q + 1}
	}
	return Span{Off: r*(q+1) + (c-r)*q, Len: q}
}

// Step is what one rank does at one step of the ring all-reduce: it sends
// Send (a chunk) to its right neighbour and receives Recv from its left
// neighbour. In the reduce-scatter phase (Reduce true) the received values are
// added into Recv; in the all-gather phase they overwrite it.
type Step struct {
	SendChunk, RecvChunk int
	Send, Recv           Span
	Reduce               bool
}

// NumSteps is the number of steps of a ring all-reduce over n ranks:
// n-1 of reduce-scatter, then n-1 of all-gather.
func NumSteps(n int) int { return 2 * (n - 1) }

// StepAt returns step g (0 <= g < NumSteps(n)) of rank in a ring of n ranks
// over a buffer of length elements.
//
// At every step g rank r sends chunk (r-g) mod n and receives chunk
// (r-g-1) mod n, so the chunk a rank sends at step g is the one it received
// at step g-1. After the n-1 reduce-scatter steps rank r holds the full sum of
// chunk OwnedChunk(r, n); the all-gather steps then pass the sums around.
func StepAt(rank, n, length, g int) Step {
	send := mod(rank-g, n)
	recv := mod(rank-g-1, n)
	return Step{
		SendChunk: send,
		RecvChunk: recv,
		Send:      ChunkSpan(length, n, send),
		Recv:      ChunkSpan(length, n, recv),
		Reduce:    g < n-1,
	}
}

// Schedule returns all steps of rank, in order (StepAt for every g).
func Schedule(rank, n, length int) []Step {
	steps := make([]Step, NumSteps(n))
	for g := range steps {
		steps[g] = StepAt(rank, n, length, g)
	}
	return steps
}

// OwnedChunk is the chunk whose complete reduction rank holds after the
// reduce-scatter phase.
func OwnedChunk(rank, n int) int { return mod(rank+1, n) }

// NumSub is the number of sub-chunks of at most sub elements that a span of
// length elements is cut into for pipelining (0 for an empty span).
func NumSub(length, sub int) int { return (length + sub - 1) / sub }

// SubSpan returns sub-chunk k of s when s is cut into pieces of at most sub
// elements.
func SubSpan(s Span, sub, k int) Span {
	off := k * sub
	n := min(sub, s.Len-off)
	return Span{Off: s.Off + off, Len: n}
}

// SendReady reports whether sub-chunk k of step g may be sent, given that the
// receiver has completed every (step, sub-chunk) before (recvG, recvK) in
// lexicographic order. Step 0 sends the rank's own data; step g>0 forwards
// what arrived at step g-1, sub-chunk by sub-chunk, so sending, receiving and
// reducing overlap.
func SendReady(g, k, recvG, recvK int) bool {
	if g == 0 {
		return true
	}
	return recvG > g-1 || (recvG == g-1 && recvK > k)
}

func mod(a, n int) int {
	a %= n
	if a < 0 {
		a += n
	}
	return a
}
