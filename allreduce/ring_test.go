package allreduce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// runAll calls f for every rank concurrently and returns the errors by rank.
func runAll(comms []Communicator, f func(c Communicator) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for i, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(c)
		}()
	}
	wg.Wait()
	return errs
}

func closeAll(comms []Communicator) {
	for _, c := range comms {
		c.Close()
	}
}

// checkNoLeak fails if goroutines started during the test are still running.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

// randInputs gives every rank integer-valued floats, so sums are exact.
func randInputs(rng *rand.Rand, n, L int) (in [][]float32, sum []float32) {
	in = make([][]float32, n)
	sum = make([]float32, L)
	for r := range in {
		in[r] = make([]float32, L)
		for i := range in[r] {
			v := float32(rng.IntN(2001) - 1000)
			in[r][i] = v
			sum[i] += v
		}
	}
	return in, sum
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// Property: random world sizes and lengths (also shorter than the world) give
// the exact sum on every rank, bitwise identical across ranks.
func TestAllReduceMemProperty(t *testing.T) {
	checkNoLeak(t)
	rng := rand.New(rand.NewPCG(5, 6))
	ctx := context.Background()
	for iter := 0; iter < 150; iter++ {
		n := 1 + rng.IntN(8)
		L := rng.IntN(3000)
		if iter%5 == 0 {
			L = rng.IntN(n + 1)
		}
		sub := 64 << rng.IntN(4) // small sub-chunks: many pipeline steps
		comms := NewMemGroup(n, Options{SubChunkBytes: sub, Timeout: 10 * time.Second})
		in, sum := randInputs(rng, n, L)
		// Two collectives in a row on the same ring: the sequence numbers advance.
		for rep := 0; rep < 2; rep++ {
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = append([]float32(nil), in[r]...)
			}
			errs := runAll(comms, func(c Communicator) error { return c.AllReduce(ctx, bufs[c.Rank()], Sum) })
			for r, err := range errs {
				if err != nil {
					t.Fatalf("n=%d L=%d rank %d: %v", n, L, r, err)
				}
				if !sameBits(bufs[r], sum) {
					t.Fatalf("n=%d L=%d sub=%d rank %d: wrong sum", n, L, sub, r)
				}
			}
		}
		closeAll(comms)
	}
}

func TestAllReduceMemAvgAndFP16(t *testing.T) {
	checkNoLeak(t)
	rng := rand.New(rand.NewPCG(7, 8))
	ctx := context.Background()
	for iter := 0; iter < 40; iter++ {
		n := 1 + rng.IntN(8)
		L := rng.IntN(5000)
		comms := NewMemGroup(n, Options{SubChunkBytes: 256})
		for _, op := range []Op{Avg, Sum | FP16, Avg | FP16} {
			in := make([][]float32, n)
			exact := make([]float64, L)
			for r := range in {
				in[r] = make([]float32, L)
				for i := range in[r] {
					in[r][i] = float32(rng.NormFloat64())
					exact[i] += float64(in[r][i])
				}
			}
			errs := runAll(comms, func(c Communicator) error { return c.AllReduce(ctx, in[c.Rank()], op) })
			for r, err := range errs {
				if err != nil {
					t.Fatalf("%v n=%d rank %d: %v", op, n, r, err)
				}
				if !sameBits(in[r], in[0]) {
					t.Fatalf("%v n=%d: rank %d differs from rank 0", op, n, r)
				}
			}
			for i, v := range in[0] {
				want := exact[i]
				if op&Avg != 0 {
					want /= float64(n)
				}
				tol := 1e-5 * float64(n)
				if op&FP16 != 0 && n > 1 {
					// fp16 has an 11-bit significand; partial sums are rounded
					// once per hop, with magnitudes up to ~n*3.
					tol = float64(n) * float64(n) * 3 * math.Pow(2, -11)
				}
				if d := math.Abs(float64(v) - want); d > tol {
					t.Fatalf("%v n=%d elem %d: got %g want %g (|diff| %g > %g)", op, n, i, v, want, d, tol)
				}
			}
		}
		closeAll(comms)
	}
}

func TestBroadcastGatherBarrierMem(t *testing.T) {
	checkNoLeak(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	for n := 1; n <= 6; n++ {
		comms := NewMemGroup(n, Options{SubChunkBytes: 100})
		for root := 0; root < n; root++ {
			L := rng.IntN(1000)
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = make([]float32, L)
				for i := range bufs[r] {
					bufs[r][i] = float32(r*1000 + i)
				}
			}
			want := append([]float32(nil), bufs[root]...)
			payload := []byte(fmt.Sprintf("optimizer state from %d %s", root, bytes.Repeat([]byte("x"), rng.IntN(500))))
			got := make([][]byte, n)
			gathered := make([][]uint64, n)
			errs := runAll(comms, func(c Communicator) error {
				r := c.Rank()
				if err := c.Broadcast(ctx, bufs[r], root); err != nil {
					return err
				}
				var data []byte
				if r == root {
					data = payload
				}
				var err error
				if got[r], err = c.BroadcastBytes(ctx, data, root); err != nil {
					return err
				}
				if gathered[r], err = c.AllGatherUint64(ctx, uint64(r*r+7)); err != nil {
					return err
				}
				return c.Barrier(ctx)
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("n=%d root=%d rank %d: %v", n, root, r, err)
				}
				if !sameBits(bufs[r], want) {
					t.Fatalf("n=%d root=%d rank %d: broadcast differs", n, root, r)
				}
				if !bytes.Equal(got[r], payload) {
					t.Fatalf("n=%d root=%d rank %d: BroadcastBytes got %d bytes", n, root, r, len(got[r]))
				}
				for q, v := range gathered[r] {
					if v != uint64(q*q+7) {
						t.Fatalf("n=%d rank %d: gathered[%d] = %d", n, r, q, v)
					}
				}
			}
		}
		closeAll(comms)
	}
}

// A rank that closes mid-operation makes every other rank fail, with a
// PeerError naming a neighbour and the generation, long before the timeout.
func TestAllReduceMemKilledRank(t *testing.T) {
	checkNoLeak(t)
	for n := 2; n <= 6; n++ {
		comms := NewMemGroup(n, Options{SubChunkBytes: 64, Timeout: 20 * time.Second})
		victim := n / 2
		bufs := make([][]float32, n)
		for r := range bufs {
			bufs[r] = make([]float32, 1<<16)
		}
		start := time.Now()
		errs := runAll(comms, func(c Communicator) error {
			if c.Rank() == victim {
				time.Sleep(5 * time.Millisecond)
				return c.Close()
			}
			return c.AllReduce(context.Background(), bufs[c.Rank()], Sum)
		})
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("n=%d: failure took %v", n, el)
		}
		for r, err := range errs {
			if r == victim {
				continue
			}
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Generation != 1 {
				t.Fatalf("n=%d rank %d: err = %v, want a PeerError of generation 1", n, r, err)
			}
			if !errors.Is(err, ErrPeerDown) {
				t.Fatalf("n=%d rank %d: err = %v, want ErrPeerDown", n, r, err)
			}
			// The ring is broken for good.
			if err := comms[r].AllReduce(context.Background(), bufs[r], Sum); !errors.Is(err, ErrBroken) {
				t.Fatalf("n=%d rank %d: second call err = %v, want ErrBroken", n, r, err)
			}
		}
		closeAll(comms)
	}
}

// A rank that never joins makes the others time out, naming a neighbour.
func TestAllReduceMemStalledRank(t *testing.T) {
	checkNoLeak(t)
	n := 4
	comms := NewMemGroup(n, Options{Timeout: 200 * time.Millisecond})
	start := time.Now()
	errs := runAll(comms, func(c Communicator) error {
		if c.Rank() == 2 {
			return nil // stalls: never calls AllReduce
		}
		return c.AllReduce(context.Background(), make([]float32, 1000), Sum)
	})
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("stall detected after %v", el)
	}
	for r, err := range errs {
		if r == 2 {
			continue
		}
		var pe *PeerError
		if !errors.As(err, &pe) {
			t.Fatalf("rank %d: err = %v, want PeerError", r, err)
		}
		if r == 1 || r == 3 { // the stalled rank's neighbours time out on it
			if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrPeerDown) {
				t.Fatalf("rank %d: err = %v", r, err)
			}
		}
		t.Logf("rank %d: %v", r, err)
	}
	closeAll(comms)
}

func TestAllReduceContextCancel(t *testing.T) {
	checkNoLeak(t)
	comms := NewMemGroup(3, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := comms[0].AllReduce(ctx, make([]float32, 100), Sum)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	closeAll(comms)
}

// Ranks that disagree on the collective get ErrDesync, not garbage.
func TestDesync(t *testing.T) {
	checkNoLeak(t)
	comms := NewMemGroup(2, Options{Timeout: time.Second})
	errs := runAll(comms, func(c Communicator) error {
		if c.Rank() == 0 {
			return c.AllReduce(context.Background(), make([]float32, 10), Sum)
		}
		return c.AllReduce(context.Background(), make([]float32, 10), FP16)
	})
	if !errors.Is(errs[0], ErrDesync) && !errors.Is(errs[1], ErrDesync) {
		t.Fatalf("errs = %v, want ErrDesync", errs)
	}
	closeAll(comms)
}

func BenchmarkAllReduceMem(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("world%d-4MiB", n), func(b *testing.B) {
			comms := NewMemGroup(n, Options{})
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = make([]float32, 1<<20)
			}
			b.SetBytes(4 << 20)
			b.ReportAllocs()
			ctx := context.Background()
			// Ranks 1..n-1 run in their own goroutines; rank 0 is timed.
			var wg sync.WaitGroup
			for r := 1; r < n; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < b.N; i++ {
						comms[r].AllReduce(ctx, bufs[r], Sum)
					}
				}()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := comms[0].AllReduce(ctx, bufs[0], Sum); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			closeAll(comms)
		})
	}
}

// A right neighbour that got everything and closed while this rank still
// waits for its left neighbour's last frame is no failure: in a ring of two
// that frame comes from the very rank that closed, and its clean close can
// overtake its last frame (a race CI hit in internal/ddpbench).
func TestGatherRightClosesBeforeLastFrameArrives(t *testing.T) {
	out, in := make(chan frame, 4), make(chan frame, 4)
	outDown, inDown := newDown(), newDown()
	pool := &bufPool{}
	p := pipe{out: out, in: in, outDown: outDown.ch, inDown: inDown.ch,
		outErr: outDown.reason, inErr: inDown.reason, pool: pool}
	end := &memEnd{in: make(chan frame), down: make(chan struct{})}
	r := newRing(0, 2, 1, nil, p, Options{Timeout: 5 * time.Second}, end)
	defer r.Close()

	res := make(chan error, 1)
	var got []uint64
	go func() {
		var err error
		got, err = r.AllGatherUint64(context.Background(), 7)
		res <- err
	}()
	sent := <-out // rank 0 handed its value over and now waits in recv
	if sent.owner != nil {
		sent.owner.release()
	}
	time.Sleep(20 * time.Millisecond)
	outDown.fail(cleanClose("right neighbour closed the stream"))
	time.Sleep(20 * time.Millisecond)
	fb := pool.Get(headerSize + 8)
	PutHeader(*fb, Header{Kind: KindGather, DType: DTypeU64, Generation: 1, Seq: 1, Step: 0, Sub: 0, PayloadLen: 8, From: 1})
	binary.LittleEndian.PutUint64((*fb)[headerSize:], 9)
	in <- frame{b: fb}
	if err := <-res; err != nil {
		t.Fatalf("allgather failed after a clean close of the right neighbour: %v", err)
	}
	if got[0] != 7 || got[1] != 9 {
		t.Fatalf("allgather = %v, want [7 9]", got)
	}
}
