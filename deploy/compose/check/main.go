// Command check is the verifier scripts/compose_test.sh runs against a
// compose cluster:
//
//	check accounting -dir DIR -n 60000 -epochs 2
//	    reads every DIR/*.samples worker sample log and checks that each
//	    completed step was logged with one global batch and that, per epoch,
//	    every sample was trained exactly once.
//	check state -etcd URL -job J
//	    prints the job's status, progress, ring and live members from etcd
//	    as one JSON line (for the script's polling).
//	check wait -etcd URL -job J [-timeout 10m] [-stall 2m] COND
//	    polls every 100 ms on one connection until COND holds, then prints
//	    how long it took and the job's view; COND is one of step>=N, gen>=N, done,
//	    leader=ID, in-ring=ID, member-gone=ID. A progress line (step, rate,
//	    ETA) goes to stderr every 20 s.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/worker"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: check accounting|state [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "accounting":
		err = runAccounting(os.Args[2:])
	case "state":
		err = runState(os.Args[2:])
	case "wait":
		err = runWait(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (accounting, state)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
}

func runAccounting(args []string) error {
	fs := flag.NewFlagSet("accounting", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder of *.samples worker logs")
	n := fs.Int("n", 60000, "samples in the training split")
	epochs := fs.Int("epochs", 1, "epochs of the job")
	if err := fs.Parse(args); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(*dir, "*.samples"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no *.samples files in %q", *dir)
	}
	var recs []worker.SampleRecord
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		r, err := readSamples(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		recs = append(recs, r...)
	}
	sum, err := checkAccounting(recs, *n, *epochs)
	if err != nil {
		return err
	}
	fmt.Printf("accounting ok: %d files, %d records, %d distinct steps, every one of %d samples exactly once in each of %d epochs; steps per worker: %v\n",
		len(files), len(recs), sum.Steps, *n, *epochs, sum.PerWorker)
	return nil
}

// readSamples decodes JSON lines. A torn last line (the writer was killed
// mid-write) is dropped; a bad line elsewhere is an error.
func readSamples(r io.Reader) ([]worker.SampleRecord, error) {
	var recs []worker.SampleRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	var bad error
	line := 0
	for sc.Scan() {
		line++
		if bad != nil {
			return nil, bad
		}
		var rec worker.SampleRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			bad = fmt.Errorf("line %d: %w", line, err)
			continue
		}
		recs = append(recs, rec)
	}
	return recs, sc.Err()
}

// summary is what a passing accounting check found.
type summary struct {
	Steps     int
	PerWorker map[string]int // records per worker
}

// checkAccounting verifies that every distinct completed step was logged
// with one global batch and that, per epoch, every one of the n samples
// was trained exactly once.
func checkAccounting(recs []worker.SampleRecord, n, epochs int) (summary, error) {
	sum := summary{PerWorker: map[string]int{}}
	steps := map[int]worker.SampleRecord{}
	for _, r := range recs {
		sum.PerWorker[r.Worker]++
		if prev, ok := steps[r.Step]; ok {
			if prev.Epoch != r.Epoch || !slices.Equal(prev.Idx, r.Idx) {
				return sum, fmt.Errorf("step %d logged with different batches by %s and %s", r.Step, prev.Worker, r.Worker)
			}
			continue
		}
		steps[r.Step] = r
	}
	sum.Steps = len(steps)
	seen := make([][]int, epochs)
	for e := range seen {
		seen[e] = make([]int, n)
	}
	for _, r := range steps {
		if r.Epoch < 0 || r.Epoch >= epochs {
			return sum, fmt.Errorf("step %d in epoch %d of a %d-epoch job", r.Step, r.Epoch, epochs)
		}
		for _, i := range r.Idx {
			if i < 0 || int(i) >= n {
				return sum, fmt.Errorf("step %d: sample index %d outside [0,%d)", r.Step, i, n)
			}
			seen[r.Epoch][i]++
		}
	}
	for e := range seen {
		for i, c := range seen[e] {
			if c != 1 {
				return sum, fmt.Errorf("epoch %d: sample %d trained %d times", e, i, c)
			}
		}
	}
	return sum, nil
}

// jobView is what `check state` prints.
type jobView struct {
	Phase      string   `json:"phase"`
	Leader     string   `json:"leader"`
	Message    string   `json:"message,omitempty"`
	Generation uint64   `json:"generation"`
	Step       int64    `json:"step"`
	Epoch      int      `json:"epoch"`
	Done       bool     `json:"done"`
	Ring       []string `json:"ring"`
	Members    []string `json:"members"`
}

func runState(args []string) error {
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	job := fs.String("job", "", "job name")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !coordinator.ValidJobName(*job) {
		return fmt.Errorf("invalid job name %q", *job)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcd, ","), DialTimeout: *timeout, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", *etcd, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	v, err := readJob(ctx, cli, *job)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
	return nil
}

func readJob(ctx context.Context, cli *clientv3.Client, job string) (jobView, error) {
	var v jobView
	get := func(key string, into any) error {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, into); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		return nil
	}
	var status coordinator.JobStatus
	var state coordinator.JobState
	var ring coordinator.Ring
	if err := errors.Join(get(coordinator.StatusKey(job), &status), get(coordinator.StateKey(job), &state), get(coordinator.RingKey(job), &ring)); err != nil {
		return v, err
	}
	resp, err := cli.Get(ctx, coordinator.MembersPrefix(job), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return v, fmt.Errorf("list members of %s: %w", job, err)
	}
	v.Members = []string{}
	for _, kv := range resp.Kvs {
		v.Members = append(v.Members, strings.TrimPrefix(string(kv.Key), coordinator.MembersPrefix(job)))
	}
	v.Ring = []string{}
	for _, m := range ring.Members {
		v.Ring = append(v.Ring, m.ID)
	}
	v.Phase, v.Leader, v.Message = string(status.Phase), status.Leader, status.Message
	v.Generation, v.Step, v.Epoch, v.Done = ring.Generation, state.Step, state.Epoch, state.Done
	return v, nil
}

// cond is a condition on a job's view that `check wait` waits for.
type cond struct {
	kind string // "step", "gen", "done", "leader", "in-ring", "member-gone"
	n    int64
	id   string
}

func parseCond(s string) (cond, error) {
	if s == "done" {
		return cond{kind: "done"}, nil
	}
	for _, k := range []string{"step", "gen"} {
		if v, ok := strings.CutPrefix(s, k+">="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return cond{}, fmt.Errorf("condition %q: %s must be a non-negative integer", s, k)
			}
			return cond{kind: k, n: n}, nil
		}
	}
	for _, k := range []string{"leader", "in-ring", "member-gone"} {
		if v, ok := strings.CutPrefix(s, k+"="); ok && v != "" {
			return cond{kind: k, id: v}, nil
		}
	}
	return cond{}, fmt.Errorf("unknown condition %q (step>=N, gen>=N, done, leader=ID, in-ring=ID, member-gone=ID)", s)
}

func (c cond) holds(v jobView) bool {
	switch c.kind {
	case "step":
		return v.Step >= c.n
	case "gen":
		return int64(v.Generation) >= c.n
	case "done":
		return v.Done
	case "leader":
		return v.Leader == c.id
	case "in-ring":
		return slices.Contains(v.Ring, c.id)
	case "member-gone":
		return !slices.Contains(v.Members, c.id)
	}
	return false
}

func runWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	job := fs.String("job", "", "job name")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this")
	total := fs.Int64("steps", 0, "total steps of the job, for the ETA in progress lines")
	stall := fs.Duration("stall", 0, "fail when the step has not moved for this long (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: check wait -etcd URL -job J COND")
	}
	c, err := parseCond(fs.Arg(0))
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcd, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", *etcd, err)
	}
	defer cli.Close()
	start := time.Now()
	lastLine, lastStep, lastAt := start, int64(-1), start
	moved, movedAt := int64(-1), start
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		v, err := readJob(ctx, cli, *job)
		cancel()
		if err == nil && c.holds(v) {
			b, _ := json.Marshal(v)
			fmt.Printf("%.2f %s\n", time.Since(start).Seconds(), b)
			return nil
		}
		now := time.Now()
		if err == nil && v.Step != moved {
			moved, movedAt = v.Step, now
		}
		if *stall > 0 && now.Sub(movedAt) > *stall {
			return fmt.Errorf("waiting for %s: training stalled at step %d for %v (ring generation %d %v, members %v)",
				fs.Arg(0), moved, *stall, v.Generation, v.Ring, v.Members)
		}
		if now.Sub(start) > *timeout {
			return fmt.Errorf("%s did not hold within %v (last view %+v, err %v)", fs.Arg(0), *timeout, v, err)
		}
		if err == nil && now.Sub(lastLine) >= 20*time.Second {
			rate := 0.0
			if lastStep >= 0 {
				rate = float64(v.Step-lastStep) / now.Sub(lastAt).Seconds()
			}
			eta := "?"
			if rate > 0 && *total > 0 {
				eta = (time.Duration(float64(*total-v.Step)/rate) * time.Second).Round(time.Second).String()
			}
			fmt.Fprintf(os.Stderr, "  waiting for %s: step %d/%d, %.1f steps/s, ETA %s, ring %v\n", fs.Arg(0), v.Step, *total, rate, eta, v.Ring)
			lastLine, lastStep, lastAt = now, v.Step, now
		}
		if lastStep < 0 && err == nil {
			lastStep, lastAt = v.Step, now
		}
		time.Sleep(100 * time.Millisecond)
	}
}
