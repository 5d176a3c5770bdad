// Package arbench measures ring all-reduce on loopback the way NCCL-tests
// report it: time per operation, algbw = bytes/time and
// busbw = algbw * 2(n-1)/n. With the grpc and tcp transports every rank is a
// separate process (this binary re-executed with the rank subcommand); the
// mem transport runs the ranks as goroutines. The same run measures one raw
// loopback TCP stream (1 MiB writes) as the link's practical limit.
package arbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
)

// Config is one benchmark run.
type Config struct {
	World     int
	Size      int64 // bytes of float32 per rank
	Transport string
	Iters     int
	Warmup    int
	FP16      bool
	SubChunk  int
	Timeout   time.Duration
	RawTCP    bool // also measure one raw loopback TCP stream
	JSON      bool
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.World < 1:
		return fmt.Errorf("bench allreduce: world %d < 1", c.World)
	case c.Size < 4 || c.Size%4 != 0:
		return fmt.Errorf("bench allreduce: size %d bytes is not a positive multiple of 4", c.Size)
	case c.Transport != "grpc" && c.Transport != "tcp" && c.Transport != "mem":
		return fmt.Errorf("bench allreduce: transport %q, want grpc, tcp or mem", c.Transport)
	case c.Iters < 1 || c.Warmup < 0:
		return fmt.Errorf("bench allreduce: iters %d, warmup %d", c.Iters, c.Warmup)
	}
	return nil
}

// Result is what a run measured.
type Result struct {
	Transport  string  `json:"transport"`
	World      int     `json:"world"`
	Bytes      int64   `json:"bytes"`
	FP16       bool    `json:"fp16"`
	Iters      int     `json:"iters"`
	Seconds    float64 `json:"seconds_per_op"`
	AlgBW      float64 `json:"algbw_gib_s"`
	BusBW      float64 `json:"busbw_gib_s"`
	RawTCPGiBs float64 `json:"raw_tcp_gib_s,omitempty"`
	// CPU seconds (user+system, all ranks) per GiB reduced, and per GiB of
	// the raw TCP stream: an efficiency measure that survives a busy machine.
	CPUPerGiB       float64 `json:"cpu_s_per_gib,omitempty"`
	RawTCPCPUPerGiB float64 `json:"raw_tcp_cpu_s_per_gib,omitempty"`
}

// BusFactor is NCCL-tests' all-reduce bus bandwidth factor 2(n-1)/n.
func BusFactor(n int) float64 { return 2 * float64(n-1) / float64(n) }

func newResult(cfg Config, sec float64) Result {
	alg := float64(cfg.Size) / (1 << 30) / sec
	return Result{Transport: cfg.Transport, World: cfg.World, Bytes: cfg.Size, FP16: cfg.FP16, Iters: cfg.Iters,
		Seconds: sec, AlgBW: alg, BusBW: alg * BusFactor(cfg.World)}
}

// ParseSize reads "64MiB", "1GiB", "512KiB", "1MB" or a plain byte count.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suf string
		mul int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suf); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("size %q: not a number of %s", s, u.suf)
			}
			return int64(v * float64(u.mul)), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want e.g. 64MiB or a byte count", s)
	}
	return v, nil
}

type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}
func (f sizeFlag) Set(s string) error {
	v, err := ParseSize(s)
	if err == nil {
		*f.v = v
	}
	return err
}

// NewFlagSet returns the flags of "bench allreduce" bound to a Config.
func NewFlagSet(name string) (*flag.FlagSet, *Config) {
	cfg := &Config{World: 2, Size: 64 << 20, Transport: "grpc", Iters: 5, Warmup: 2, Timeout: 60 * time.Second, RawTCP: true}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.IntVar(&cfg.World, "world", cfg.World, "number of ranks")
	fs.Var(sizeFlag{&cfg.Size}, "size", "bytes all-reduced per rank (64MiB, 1GiB, ...)")
	fs.StringVar(&cfg.Transport, "transport", cfg.Transport, "grpc or tcp (one process per rank), or mem (goroutines)")
	fs.IntVar(&cfg.Iters, "iters", cfg.Iters, "timed iterations")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "untimed iterations first")
	fs.BoolVar(&cfg.FP16, "fp16", cfg.FP16, "send fp16 on the wire")
	fs.IntVar(&cfg.SubChunk, "subchunk", cfg.SubChunk, "pipelining unit in bytes (0: default)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "peer timeout")
	fs.BoolVar(&cfg.RawTCP, "raw-tcp", cfg.RawTCP, "also measure one raw loopback TCP stream")
	fs.BoolVar(&cfg.JSON, "json", cfg.JSON, "print the result as JSON")
	return fs, cfg
}

// EnvDefaults sets every flag not given on the command line from
// RINGTRAIN_<FLAG_NAME> (upper snake case), e.g. RINGTRAIN_WORLD=4.
func EnvDefaults(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := "RINGTRAIN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok && !set[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	})
	return err
}

// Main runs "bench allreduce". rankCmd is how to re-execute this binary as
// one rank (e.g. [exe, "bench", "allreduce-rank"]).
func Main(ctx context.Context, args []string, rankCmd []string, stdout, stderr io.Writer) error {
	fs, cfg := NewFlagSet("bench allreduce")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := EnvDefaults(fs); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var res Result
	var err error
	if cfg.Transport == "mem" {
		res, err = runMem(ctx, *cfg, stderr)
	} else {
		res, err = runProcesses(ctx, *cfg, rankCmd, stderr)
	}
	if err != nil {
		return err
	}
	if cfg.RawTCP {
		if res.RawTCPGiBs, res.RawTCPCPUPerGiB, err = RawTCP(ctx, 1<<30); err != nil {
			return err
		}
	}
	if cfg.JSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	wire := "fp32"
	if res.FP16 {
		wire = "fp16"
	}
	fmt.Fprintf(stdout, "ringtrain allreduce transport=%s world=%d size=%s wire=%s: %.1f ms, algbw %.2f GiB/s, busbw %.2f GiB/s\n",
		res.Transport, res.World, human(res.Bytes), wire, res.Seconds*1e3, res.AlgBW, res.BusBW)
	if res.RawTCPGiBs > 0 {
		fmt.Fprintf(stdout, "raw loopback TCP stream (1 MiB writes): %.2f GiB/s; busbw / raw = %.0f%%\n",
			res.RawTCPGiBs, 100*res.BusBW/res.RawTCPGiBs)
	}
	if res.CPUPerGiB > 0 {
		fmt.Fprintf(stdout, "cpu: %.2f core-s per GiB all-reduced (all ranks, incl. start-up)", res.CPUPerGiB)
		if res.RawTCPCPUPerGiB > 0 {
			fmt.Fprintf(stdout, "; raw TCP %.2f core-s per GiB streamed", res.RawTCPCPUPerGiB)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

func human(b int64) string {
	switch {
	case b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", b)
}

func (c Config) op() allreduce.Op {
	if c.FP16 {
		return allreduce.Sum | allreduce.FP16
	}
	return allreduce.Sum
}

func (c Config) options() allreduce.Options {
	return allreduce.Options{Timeout: c.Timeout, SubChunkBytes: c.SubChunk}
}

// timeRank runs warmup and timed iterations on one rank, then checks the
// result of one more all-reduce of rank+1 everywhere: n(n+1)/2.
func timeRank(ctx context.Context, c allreduce.Communicator, cfg Config, progress io.Writer) (float64, error) {
	buf := make([]float32, cfg.Size/4)
	for i := range buf {
		buf[i] = 1
	}
	for i := 0; i < cfg.Warmup; i++ {
		if err := c.AllReduce(ctx, buf, cfg.op()); err != nil {
			return 0, fmt.Errorf("warmup %d: %w", i, err)
		}
	}
	if err := c.Barrier(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < cfg.Iters; i++ {
		t := time.Now()
		if err := c.AllReduce(ctx, buf, cfg.op()); err != nil {
			return 0, fmt.Errorf("iteration %d: %w", i, err)
		}
		if progress != nil {
			el := time.Since(start)
			eta := el / time.Duration(i+1) * time.Duration(cfg.Iters-i-1)
			fmt.Fprintf(progress, "iter %d/%d: %.1f ms (%.2f GiB/s algbw), ETA %v\n", i+1, cfg.Iters,
				time.Since(t).Seconds()*1e3, float64(cfg.Size)/(1<<30)/time.Since(t).Seconds(), eta.Round(time.Millisecond))
		}
	}
	if err := c.Barrier(ctx); err != nil {
		return 0, err
	}
	sec := time.Since(start).Seconds() / float64(cfg.Iters)
	for i := range buf {
		buf[i] = float32(c.Rank() + 1)
	}
	if err := c.AllReduce(ctx, buf, cfg.op()); err != nil {
		return 0, fmt.Errorf("check: %w", err)
	}
	want := float32(cfg.World * (cfg.World + 1) / 2)
	for i, v := range buf {
		if v != want {
			return 0, fmt.Errorf("check: element %d is %g, want %g", i, v, want)
		}
	}
	return sec, nil
}

func runMem(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	comms := allreduce.NewMemGroup(cfg.World, cfg.options())
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	secs := make([]float64, cfg.World)
	errs := make([]error, cfg.World)
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p io.Writer
			if r == 0 {
				p = progress
			}
			secs[r], errs[r] = timeRank(ctx, c, cfg, p)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	return newResult(cfg, secs[0]), nil
}

// runProcesses starts one process per rank. Each child listens on a free
// loopback port and prints "ADDR host:port"; the parent sends back the ring
// ("ADDRS a,b,c") on stdin; rank 0 prints "RESULT <seconds>".
func runProcesses(ctx context.Context, cfg Config, rankCmd []string, progress io.Writer) (Result, error) {
	if len(rankCmd) == 0 {
		return Result{}, errors.New("bench allreduce: no command to start ranks")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	kids := make([]*child, cfg.World)
	defer func() {
		for _, k := range kids {
			if k != nil {
				k.cmd.Process.Kill()
				k.cmd.Wait()
			}
		}
	}()
	addrs := make([]string, cfg.World)
	for r := range kids {
		args := append(append([]string(nil), rankCmd[1:]...),
			"-rank", strconv.Itoa(r), "-world", strconv.Itoa(cfg.World), "-size", strconv.FormatInt(cfg.Size, 10),
			"-iters", strconv.Itoa(cfg.Iters), "-warmup", strconv.Itoa(cfg.Warmup), "-subchunk", strconv.Itoa(cfg.SubChunk),
			"-timeout", cfg.Timeout.String(), "-fp16="+strconv.FormatBool(cfg.FP16), "-transport", cfg.Transport)
		cmd := exec.CommandContext(ctx, rankCmd[0], args...)
		cmd.Stderr = progress
		in, err := cmd.StdinPipe()
		if err != nil {
			return Result{}, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return Result{}, err
		}
		if err := cmd.Start(); err != nil {
			return Result{}, fmt.Errorf("bench allreduce: starting rank %d (%s): %w", r, rankCmd[0], err)
		}
		k := &child{cmd: cmd, stdin: in, lines: make(chan string, 4)}
		kids[r] = k
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				k.lines <- sc.Text()
			}
			close(k.lines)
		}()
	}
	next := func(r int) (string, error) {
		select {
		case l, ok := <-kids[r].lines:
			if !ok {
				return "", fmt.Errorf("bench allreduce: rank %d exited: %v", r, kids[r].cmd.Wait())
			}
			return l, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	for r := range kids {
		l, err := next(r)
		if err != nil {
			return Result{}, err
		}
		a, ok := strings.CutPrefix(l, "ADDR ")
		if !ok {
			return Result{}, fmt.Errorf("bench allreduce: rank %d said %q, want ADDR", r, l)
		}
		addrs[r] = a
	}
	for _, k := range kids {
		fmt.Fprintf(k.stdin, "ADDRS %s\n", strings.Join(addrs, ","))
	}
	l, err := next(0)
	if err != nil {
		return Result{}, err
	}
	s, ok := strings.CutPrefix(l, "RESULT ")
	if !ok {
		return Result{}, fmt.Errorf("bench allreduce: rank 0: %s", l)
	}
	sec, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Result{}, fmt.Errorf("bench allreduce: rank 0 result %q: %w", s, err)
	}
	var cpu time.Duration
	for r, k := range kids {
		if err := k.cmd.Wait(); err != nil {
			return Result{}, fmt.Errorf("bench allreduce: rank %d: %w", r, err)
		}
		cpu += k.cmd.ProcessState.UserTime() + k.cmd.ProcessState.SystemTime()
		kids[r] = nil
	}
	res := newResult(cfg, sec)
	// Whole-process CPU includes start-up, warmup and the check: count them
	// as operations too (a slight overestimate of start-up).
	ops := float64(cfg.Warmup + cfg.Iters + 1)
	res.CPUPerGiB = cpu.Seconds() / (ops * float64(cfg.Size) / (1 << 30))
	return res, nil
}

// RankMain is one rank process of runProcesses.
func RankMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, cfg := NewFlagSet("bench allreduce-rank")
	fs.SetOutput(stderr)
	rank := fs.Int("rank", 0, "this rank")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	dial := allreduce.DialRing
	if cfg.Transport == "tcp" {
		dial = allreduce.DialRingTCP
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ADDR %s\n", lis.Addr())
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil {
		lis.Close()
		return fmt.Errorf("rank %d: reading the ring from stdin: %w", *rank, err)
	}
	addrs := strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "ADDRS ")), ",")
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := dial(dctx, allreduce.RingConfig{Rank: *rank, Addrs: addrs, Generation: 1, Listener: lis, Options: cfg.options()})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	var progress io.Writer
	if *rank == 0 {
		progress = stderr
	}
	sec, err := timeRank(ctx, c, *cfg, progress)
	if err != nil {
		return fmt.Errorf("rank %d: %w", *rank, err)
	}
	if *rank == 0 {
		fmt.Fprintf(stdout, "RESULT %g\n", sec)
	}
	return nil
}

// RawTCP streams total bytes over one loopback TCP connection in 1 MiB
// writes and returns GiB/s and the CPU seconds this process spent per GiB.
func RawTCP(ctx context.Context, total int64) (gibs, cpuPerGiB float64, err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	cpu0 := processCPU()
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, 0, fmt.Errorf("raw tcp: %w", err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, 0, fmt.Errorf("raw tcp: %w", err)
	}
	gib := float64(total) / (1 << 30)
	return gib / time.Since(start).Seconds(), (processCPU() - cpu0).Seconds() / gib, nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
