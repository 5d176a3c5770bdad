package allreduce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// listeners opens n loopback listeners and returns them with their addresses.
func listeners(t testing.TB, n int) ([]net.Listener, []string) {
	t.Helper()
	ls := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[i], addrs[i] = l, l.Addr().String()
	}
	return ls, addrs
}

type dialFunc func(context.Context, RingConfig) (Communicator, error)

type netTransport struct {
	name string
	dial dialFunc
}

// netTransports are the networked transports every network test runs on.
func netTransports() []netTransport {
	return []netTransport{{"grpc", DialRing}, {"tcp", DialRingTCP}}
}

func dialByName(name string) dialFunc {
	for _, tr := range netTransports() {
		if tr.name == name {
			return tr.dial
		}
	}
	panic("unknown transport " + name)
}

// grpcGroup forms a gRPC ring of n ranks inside this process.
func grpcGroup(t testing.TB, n int, gen uint64, opt Options) []Communicator {
	return netGroup(t, DialRing, n, gen, opt)
}

// netGroup forms a ring of n ranks inside this process.
func netGroup(t testing.TB, dial dialFunc, n int, gen uint64, opt Options) []Communicator {
	t.Helper()
	ls, addrs := listeners(t, n)
	comms := make([]Communicator, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			comms[i], errs[i] = dial(ctx, RingConfig{Rank: i, Addrs: addrs, Generation: gen, Listener: ls[i], Options: opt})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, c := range comms {
				if c != nil {
					c.Close()
				}
			}
			t.Fatalf("rank %d: DialRing: %v", i, err)
		}
	}
	return comms
}

func TestAllReduceNetProperty(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) { xTestAllReduceNetProperty(t, tr.dial, tr.name) })
	}
}

func xTestAllReduceNetProperty(t *testing.T, dial dialFunc, trName string) {
	checkNoLeak(t)
	rng := rand.New(rand.NewPCG(11, 12))
	ctx := context.Background()
	for iter := 0; iter < 8; iter++ {
		n := 1 + rng.IntN(8)
		sub := []int{256, 4 << 10, 40 << 10, 512 << 10}[rng.IntN(4)]
		comms := netGroup(t, dial, n, uint64(iter+1), Options{SubChunkBytes: sub, Timeout: 10 * time.Second})
		for rep := 0; rep < 4; rep++ {
			L := rng.IntN(20000)
			if rep == 3 {
				L = rng.IntN(1 << 20) // sub-chunks left in gRPC's buffers
			}
			if rep == 0 {
				L = rng.IntN(n + 1)
			}
			in, sum := randInputs(rng, n, L)
			errs := runAll(comms, func(c Communicator) error { return c.AllReduce(ctx, in[c.Rank()], Sum) })
			for r, err := range errs {
				if err != nil {
					t.Fatalf("n=%d L=%d rank %d: %v", n, L, r, err)
				}
				if !sameBits(in[r], sum) {
					t.Fatalf("n=%d L=%d rank %d: wrong sum", n, L, r)
				}
			}
		}
		// The other collectives over the same streams.
		data := []byte("state")
		errs := runAll(comms, func(c Communicator) error {
			got, err := c.BroadcastBytes(ctx, data, n-1)
			if err == nil && string(got) != "state" {
				err = fmt.Errorf("BroadcastBytes got %q", got)
			}
			if err == nil {
				var vals []uint64
				vals, err = c.AllGatherUint64(ctx, uint64(c.Rank()+100))
				if err == nil && vals[n-1] != uint64(n+99) {
					err = fmt.Errorf("AllGatherUint64 got %v", vals)
				}
			}
			if err == nil {
				err = c.Barrier(ctx)
			}
			return err
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("n=%d rank %d: %v", n, r, err)
			}
		}
		closeAll(comms)
	}
}

// Ranks that close right after their last collective, while others are
// still finishing theirs, do not make anyone fail: Close is graceful.
func TestNetCloseAfterLastCollective(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) { xTestNetCloseAfterLastCollective(t, tr.dial, tr.name) })
	}
}

func xTestNetCloseAfterLastCollective(t *testing.T, dial dialFunc, trName string) {
	checkNoLeak(t)
	rng := rand.New(rand.NewPCG(15, 16))
	for iter := 0; iter < 5; iter++ {
		n := 2 + rng.IntN(4)
		comms := netGroup(t, dial, n, 1, Options{SubChunkBytes: 4096})
		delays := make([]time.Duration, n)
		for r := range delays {
			delays[r] = time.Duration(rng.IntN(20)) * time.Millisecond
		}
		in, sum := randInputs(rng, n, 200000)
		errs := runAll(comms, func(c Communicator) error {
			time.Sleep(delays[c.Rank()])
			err := c.AllReduce(context.Background(), in[c.Rank()], Sum)
			c.Close()
			return err
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("n=%d rank %d: %v", n, r, err)
			}
			if !sameBits(in[r], sum) {
				t.Fatalf("n=%d rank %d: wrong sum", n, r)
			}
		}
	}
}

// A rank of another generation is refused at the handshake.
func TestNetGenerationMismatch(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) { xTestNetGenerationMismatch(t, tr.dial, tr.name) })
	}
}

func xTestNetGenerationMismatch(t *testing.T, dial dialFunc, trName string) {
	checkNoLeak(t)
	ls, addrs := listeners(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	errs := make([]error, 2)
	comms := make([]Communicator, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			comms[i], errs[i] = dial(ctx, RingConfig{Rank: i, Addrs: addrs, Generation: uint64(5 + i), Listener: ls[i]})
		}()
	}
	wg.Wait()
	// Whoever's hello is refused first gets ErrGeneration; the other one may
	// instead see its peer gone (it shuts down on failure).
	gens := 0
	for i, err := range errs {
		if err == nil {
			comms[i].Close()
			t.Fatalf("rank %d: DialRing succeeded across generations", i)
		}
		if errors.Is(err, ErrGeneration) {
			gens++
		}
		t.Logf("rank %d: %v", i, err)
	}
	if gens == 0 {
		t.Fatal("no rank reported ErrGeneration")
	}
}

func TestRingConfigValidate(t *testing.T) {
	tests := []struct {
		cfg RingConfig
		ok  bool
	}{
		{RingConfig{Rank: 0, Addrs: []string{"a:1"}}, true},
		{RingConfig{Rank: 1, Addrs: []string{"a:1"}}, false},
		{RingConfig{Rank: 0}, false},
		{RingConfig{Rank: 0, Addrs: []string{"a:1", ""}}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v", tt.cfg, err)
		}
	}
}

// ---- real processes ----

const childEnv = "RINGTRAIN_ALLREDUCE_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childRank())
	}
	os.Exit(m.Run())
}

// childRank is a rank in its own process: it forms the ring, says READY,
// then all-reduces until an error, which it prints.
func childRank() int {
	rank, _ := strconv.Atoi(os.Getenv("AR_RANK"))
	addrs := strings.Split(os.Getenv("AR_ADDRS"), ",")
	timeout, _ := time.ParseDuration(os.Getenv("AR_TIMEOUT"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := dialByName(os.Getenv("AR_TRANSPORT"))(ctx, RingConfig{Rank: rank, Addrs: addrs, Generation: 7, Options: Options{Timeout: timeout}})
	cancel()
	if err != nil {
		fmt.Println("DIALERR", err)
		return 2
	}
	defer c.Close()
	buf := make([]float32, 4<<20)
	for i := range buf {
		buf[i] = 1
	}
	fmt.Println("READY")
	for i := 0; ; i++ {
		if err := c.AllReduce(context.Background(), buf, Avg); err != nil {
			fmt.Printf("OPERR %d %v\n", i, err)
			return 1
		}
	}
}

type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startRanks(t *testing.T, trName string, n int, timeout time.Duration) []*child {
	t.Helper()
	ls, addrs := listeners(t, n)
	for _, l := range ls {
		l.Close() // the children listen on these ports
	}
	kids := make([]*child, n)
	for i := range kids {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", fmt.Sprintf("AR_RANK=%d", i),
			"AR_ADDRS="+strings.Join(addrs, ","), "AR_TIMEOUT="+timeout.String(), "AR_TRANSPORT="+trName)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		k := &child{cmd: cmd, lines: make(chan string, 16)}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				k.lines <- sc.Text()
			}
			close(k.lines)
		}()
		kids[i] = k
	}
	t.Cleanup(func() {
		for _, k := range kids {
			k.cmd.Process.Kill()
			k.cmd.Wait()
		}
	})
	for i, k := range kids {
		select {
		case l := <-k.lines:
			if l != "READY" {
				t.Fatalf("rank %d: %s", i, l)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("rank %d never became ready", i)
		}
	}
	return kids
}

// expectErrors waits for every rank but victim to report an error naming a
// peer and generation 7 within limit.
func expectErrors(t *testing.T, kids []*child, victim int, limit time.Duration, want string) {
	t.Helper()
	deadline := time.After(limit)
	for i, k := range kids {
		if i == victim {
			continue
		}
		select {
		case l, ok := <-k.lines:
			if !ok || !strings.HasPrefix(l, "OPERR") || !strings.Contains(l, "ring generation 7: peer rank") || !strings.Contains(l, want) {
				t.Fatalf("rank %d: got %q, want OPERR naming a peer, generation 7 and %q", i, l, want)
			}
			t.Logf("rank %d: %s", i, l)
		case <-deadline:
			t.Fatalf("rank %d: no error within %v", i, limit)
		}
	}
}

// A rank killed mid-operation makes every other rank fail fast.
func TestNetKilledProcess(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) { xTestNetKilledProcess(t, tr.dial, tr.name) })
	}
}

func xTestNetKilledProcess(t *testing.T, dial dialFunc, trName string) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const n, victim = 4, 2
	kids := startRanks(t, trName, n, 5*time.Second)
	time.Sleep(300 * time.Millisecond) // let a few all-reduces run
	start := time.Now()
	kids[victim].cmd.Process.Kill()
	expectErrors(t, kids, victim, 5*time.Second, "peer")
	t.Logf("all survivors failed %v after the kill", time.Since(start))
}

// A stalled rank (SIGSTOP) makes every other rank fail within the timeout.
func TestNetStalledProcess(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) { xTestNetStalledProcess(t, tr.dial, tr.name) })
	}
}

func xTestNetStalledProcess(t *testing.T, dial dialFunc, trName string) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const n, victim = 3, 1
	timeout := 1500 * time.Millisecond
	kids := startRanks(t, trName, n, timeout)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := kids[victim].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer kids[victim].cmd.Process.Signal(syscall.SIGCONT)
	expectErrors(t, kids, victim, timeout+3*time.Second, "")
	t.Logf("all survivors failed %v after the stall", time.Since(start))
}

func BenchmarkAllReduceNet(b *testing.B) {
	for _, tr := range netTransports() {
		for _, n := range []int{2, 4} {
			b.Run(fmt.Sprintf("%s-world%d-16MiB", tr.name, n), func(b *testing.B) {
				comms := netGroup(b, tr.dial, n, 1, Options{})
				defer closeAll(comms)
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, 4<<20)
				}
				ctx := context.Background()
				step := func() {
					errs := runAll(comms, func(c Communicator) error { return c.AllReduce(ctx, bufs[c.Rank()], Sum) })
					for _, err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				step() // warm the pools
				b.SetBytes(16 << 20)
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime()
				for i := 0; i < b.N; i++ {
					step()
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A rank whose links fail (not Close) must not look like a neighbour that
// finished: both neighbours get a failure, not a clean close, and at once.
func TestNetFailedPeerIsNotCleanClose(t *testing.T) {
	for _, tr := range netTransports() {
		t.Run(tr.name, func(t *testing.T) {
			checkNoLeak(t)
			comms := netGroup(t, tr.dial, 3, 1, Options{Timeout: 20 * time.Second})
			defer closeAll(comms)
			start := time.Now()
			errs := runAll(comms, func(c Communicator) error {
				if c.Rank() == 1 {
					time.Sleep(20 * time.Millisecond)
					c.(*ring).t.shutdown(errors.New("injected link failure"))
					return nil
				}
				_, err := c.AllGatherUint64(context.Background(), uint64(c.Rank()))
				return err
			})
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("the failure took %v to reach the neighbours", el)
			}
			for _, r := range []int{0, 2} {
				if errs[r] == nil || !errors.Is(errs[r], ErrPeerDown) {
					t.Fatalf("rank %d: err = %v, want ErrPeerDown", r, errs[r])
				}
				if errors.Is(errs[r], errCleanClose) {
					t.Fatalf("rank %d: a failed neighbour read as a clean close: %v", r, errs[r])
				}
			}
			// Whichever link reported first, a link to the failed rank that
			// went down must carry a failure: rank 0's right one, rank 2's
			// left one.
			for _, l := range []struct {
				rank      int
				down      <-chan struct{}
				why       func() error
				whichLink string
			}{{0, comms[0].(*ring).p.outDown, comms[0].(*ring).p.outErr, "right"},
				{2, comms[2].(*ring).p.inDown, comms[2].(*ring).p.inErr, "left"}} {
				select {
				case <-l.down:
				case <-time.After(2 * time.Second):
					continue // the rank stopped first and no longer watches it (TCP)
				}
				if err := l.why(); errors.Is(err, errCleanClose) {
					t.Fatalf("rank %d: its %s link to the failed rank reads as a clean close (%v)", l.rank, l.whichLink, err)
				}
			}
		})
	}
}
