package ddpbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ringtrain/ringtrain/allreduce"
)

// Main runs "bench ddp": one process per rank on loopback, started as
// rankCmd (e.g. [exe, "bench", "ddp-rank"]) plus the rank's flags, and
// prints rank 0's Line on stdout. Ranks' progress goes to stderr.
func Main(ctx context.Context, args []string, rankCmd []string, stdout, stderr io.Writer) error {
	fs, cfg := NewFlagSet("bench ddp")
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
	res, err := RunProcesses(ctx, *cfg, rankCmd, stderr)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, res.Line())
	return err
}

// RunProcesses starts one process per rank. Each child listens on a free
// loopback port and prints "ADDR host:port"; the parent sends back the
// ring ("ADDRS a,b,c") on stdin; rank 0 prints "RESULT <json>".
func RunProcesses(ctx context.Context, cfg Config, rankCmd []string, progress io.Writer) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if len(rankCmd) == 0 {
		return Result{}, errors.New("bench ddp: no command to start ranks")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	// Every rank's stderr goes to progress: one writer at a time.
	if progress == nil {
		progress = io.Discard
	}
	progress = &lockedWriter{w: progress}
	kids := make([]*child, cfg.World)
	defer func() {
		for _, k := range kids {
			if k != nil {
				k.cmd.Process.Kill()
				k.cmd.Wait()
			}
		}
	}()
	for r := range kids {
		args := append(append([]string(nil), rankCmd[1:]...), append(cfg.args(), "-rank", strconv.Itoa(r))...)
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
			return Result{}, fmt.Errorf("bench ddp: starting rank %d (%s): %w", r, rankCmd[0], err)
		}
		k := &child{cmd: cmd, stdin: in, lines: make(chan string, 4)}
		kids[r] = k
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
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
				return "", fmt.Errorf("bench ddp: rank %d exited: %v", r, kids[r].cmd.Wait())
			}
			return l, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	addrs := make([]string, cfg.World)
	for r := range kids {
		l, err := next(r)
		if err != nil {
			return Result{}, err
		}
		a, ok := strings.CutPrefix(l, "ADDR ")
		if !ok {
			return Result{}, fmt.Errorf("bench ddp: rank %d said %q, want ADDR", r, l)
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
	js, ok := strings.CutPrefix(l, "RESULT ")
	if !ok {
		return Result{}, fmt.Errorf("bench ddp: rank 0 said %q, want RESULT", l)
	}
	var res Result
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		return Result{}, fmt.Errorf("bench ddp: rank 0 result: %w", err)
	}
	for r, k := range kids {
		if err := k.cmd.Wait(); err != nil {
			return Result{}, fmt.Errorf("bench ddp: rank %d: %w", r, err)
		}
		kids[r] = nil
	}
	return res, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// RankMain is one rank process of RunProcesses: it talks to its parent on
// stdin/stdout and prints progress (rank 0) on stderr.
func RankMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, cfg := NewFlagSet("bench ddp-rank")
	fs.SetOutput(stderr)
	rank := fs.Int("rank", 0, "this rank")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("rank %d: listening on loopback: %w", *rank, err)
	}
	fmt.Fprintf(stdout, "ADDR %s\n", lis.Addr())
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil {
		lis.Close()
		return fmt.Errorf("rank %d: reading the ring from stdin: %w", *rank, err)
	}
	addrs := strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "ADDRS ")), ",")
	if len(addrs) != cfg.World {
		lis.Close()
		return fmt.Errorf("rank %d: ring of %d addresses, world %d", *rank, len(addrs), cfg.World)
	}
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	c, err := allreduce.DialRing(dctx, allreduce.RingConfig{Rank: *rank, Addrs: addrs, Generation: 1, Listener: lis,
		Options: allreduce.Options{Timeout: cfg.Timeout}})
	cancel()
	if err != nil {
		return fmt.Errorf("rank %d: dialing the ring %v: %w", *rank, addrs, err)
	}
	defer c.Close()
	var progress io.Writer
	if *rank == 0 {
		progress = stderr
	}
	res, err := runRank(ctx, *cfg, c, progress)
	if err != nil {
		return fmt.Errorf("rank %d: %w", *rank, err)
	}
	if *rank == 0 {
		js, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "RESULT %s\n", js)
	}
	return nil
}
