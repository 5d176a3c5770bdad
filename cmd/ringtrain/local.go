package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/internal/embedded"
	"github.com/ringtrain/ringtrain/internal/progress"
	"github.com/ringtrain/ringtrain/internal/s3server"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// runLocal runs a whole cluster on this machine: embedded etcd and NATS, a
// coordinator, and N worker processes training one job, with a live view.
func runLocal(args []string) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	netName := fs.String("net", "lenet", "architecture")
	data := fs.String("dataset", "mnist", "built-in dataset: mnist or fashion-mnist")
	workers := fs.Int("workers", 3, "worker processes")
	epochs := fs.Int("epochs", 2, "epochs")
	batch := fs.Int("batch", 96, "global batch size (split across workers)")
	lr := fs.Float64("lr", 0.05, "learning rate")
	momentum := fs.Float64("momentum", 0.9, "SGD momentum")
	schedule := fs.String("schedule", "cosine", "LR schedule: constant, step, cosine, linear")
	seed := fs.Uint64("seed", 1, "seed")
	threads := fs.Int("threads", 0, "compute threads per worker (0 = cores/workers)")
	dir := fs.String("dir", "", "state directory (default: a temporary one, removed at exit)")
	job := fs.String("job", "local", "job name")
	logLevel := fs.String("log-level", "warn", "log level of the in-process servers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *workers < 1 {
		return fmt.Errorf("--workers %d must be ≥ 1", *workers)
	}
	// The built-in datasets hold 60,000 training and 10,000 test images.
	spec := coordinator.JobSpec{
		Name: *job, Net: *netName,
		Dataset: coordinator.DatasetSpec{URI: "builtin:" + *data, Layout: coordinator.LayoutIDX},
		Classes: 10, Input: coordinator.InputSpec{Channels: 1, Height: 28, Width: 28},
		GlobalBatchSize: *batch, Epochs: *epochs, Seed: *seed,
		Optimizer:  coordinator.OptimizerSpec{Name: "sgd", LR: *lr, Momentum: *momentum},
		Schedule:   coordinator.ScheduleSpec{Name: *schedule},
		Eval:       coordinator.EvalSpec{URI: "builtin:" + *data + "/test", Layout: coordinator.LayoutIDX, EveryEpochs: 1},
		World:      coordinator.WorldSpec{Min: 1},
		Checkpoint: coordinator.CheckpointSpec{URI: "s3://ringtrain/checkpoints", EveryEpochs: 1, Keep: 3},
	}
	return localCluster(localOptions{workers: *workers, threads: *threads, dir: *dir, logLevel: *logLevel}, spec)
}

// localOptions says how to run a cluster on this machine.
type localOptions struct {
	workers, threads int
	dir, logLevel    string
}

// localCluster starts embedded etcd, NATS and S3 (bucket "ringtrain"), a
// coordinator and the workers, submits spec and shows the run until it ends.
func localCluster(o localOptions, spec coordinator.JobSpec) error {
	workers, threads, dir, job := &o.workers, &o.threads, &o.dir, &spec.Name
	if *threads == 0 {
		*threads = max(1, runtime.NumCPU() / *workers)
	}
	log := newLogger(o.logLevel)
	ctx, cancel := signalContext()
	defer cancel()

	stateDir := *dir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "ringtrain-local-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		stateDir = d
	}
	etcd, err := embedded.StartEtcd(ctx, filepath.Join(stateDir, "etcd"))
	if err != nil {
		return err
	}
	defer etcd.Close()
	ns, err := embedded.StartNATS()
	if err != nil {
		return err
	}
	defer ns.Close()
	s3, err := s3server.Start(ctx, filepath.Join(stateDir, "s3"))
	if err != nil {
		return err
	}
	defer s3.Close()
	if err := s3.CreateBucket("ringtrain"); err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("connect embedded etcd %s: %w", etcd.ClientURL(), err)
	}
	defer cli.Close()
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("ringtrain-local"))
	if err != nil {
		return fmt.Errorf("connect embedded NATS %s: %w", ns.ClientURL(), err)
	}
	defer nc.Close()

	// Workers register once their model and data are loaded, within a
	// second or two of each other: a longer settle lets the first ring
	// hold them all instead of growing one generation at a time.
	coord, err := coordinator.New(coordinator.Config{ID: "local-coordinator", Client: cli, Publisher: coordinator.NewNATSPublisher(nc),
		Logger: log, Settle: 2 * time.Second})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := coord.NewGRPCServer()
	go gs.Serve(lis)
	defer gs.Stop()
	cctx, stopCoord := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() { defer cwg.Done(); coord.Run(cctx) }()
	defer func() { stopCoord(); cwg.Wait() }()

	specJSON, _ := json.Marshal(spec)

	events := make(chan coordinator.Event, 1024)
	sub, err := nc.Subscribe("ringtrain."+*job+".>", func(m *nats.Msg) {
		var ev coordinator.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			select {
			case events <- ev:
			default:
			}
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to events: %w", err)
	}
	defer sub.Unsubscribe()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "local cluster: etcd %s, NATS %s, S3 %s, coordinator %s, %d workers × %d threads, logs in %s\n",
		etcd.ClientURL(), ns.ClientURL(), s3.Endpoint, lis.Addr(), *workers, *threads, stateDir)
	var procs []*exec.Cmd
	exited := make(chan error, *workers)
	for i := 0; i < *workers; i++ {
		logf, err := os.Create(filepath.Join(stateDir, fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.CommandContext(ctx, exe, "worker", "--job", *job, "--id", fmt.Sprintf("worker-%d", i),
			"--etcd", etcd.ClientURL(), "--nats", ns.ClientURL(), "--threads", fmt.Sprint(*threads), "--lease-ttl", "3s",
			"--s3-endpoint", s3.Endpoint, "--s3-access-key", s3.AccessKey, "--s3-secret-key", s3.SecretKey, "--s3-unsigned-payload")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start worker %d: %w", i, err)
		}
		procs = append(procs, cmd)
		go func(i int, c *exec.Cmd) {
			err := c.Wait()
			if err != nil {
				err = fmt.Errorf("worker-%d: %w (log: %s)", i, err, logf.Name())
			}
			exited <- err
		}(i, cmd)
	}
	defer func() {
		for _, p := range procs {
			if p.ProcessState == nil {
				p.Process.Kill()
			}
		}
	}()
	if _, err := coord.SubmitJob(ctx, specJSON); err != nil {
		return err
	}
	if err := watchLocal(ctx, cli, events, exited, *workers, spec, time.Now()); err != nil {
		return err
	}
	if o.dir != "" {
		fmt.Fprintf(os.Stderr, "checkpoints: %s/%s in the embedded S3, stored under %s\n", spec.Checkpoint.URI, spec.Name, filepath.Join(stateDir, "s3"))
	}
	return nil
}

// watchLocal draws the run: a progress bar over all steps with loss and
// throughput, a line per membership change and evaluation.
func watchLocal(ctx context.Context, cli *clientv3.Client, events <-chan coordinator.Event, exited <-chan error, workers int, spec coordinator.JobSpec, start time.Time) error {
	// The built-in datasets have 60,000 training images; for others the
	// bar counts steps without a total.
	trainN := 0
	if strings.HasPrefix(spec.Dataset.URI, "builtin:") {
		trainN = 60000
	}
	stepsPerEpoch := (trainN + spec.GlobalBatchSize - 1) / spec.GlobalBatchSize
	total := int64(stepsPerEpoch * spec.Epochs)
	bar := progress.New(os.Stderr, "train", total, "step")
	rates := map[string]float64{}
	var done int64
	var lastAcc float64
	var lossText string
	running := workers
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			running--
			if err != nil {
				fmt.Fprintf(os.Stderr, "\n%v\n", err)
			}
			if running == 0 {
				bar.Done(lossText)
				if !jobDone(ctx, cli, spec.Name) {
					return errors.New("all workers exited before training finished")
				}
				el := time.Since(start).Seconds()
				fmt.Printf("result net=%s dataset=%s workers=%d epochs=%d test_accuracy=%.4f seconds=%.1f img_per_s=%.1f\n",
					spec.Net, strings.TrimPrefix(spec.Dataset.URI, "builtin:"), workers, spec.Epochs, lastAcc, el, float64(done)*float64(spec.GlobalBatchSize)/el)
				return nil
			}
		case ev := <-events:
			switch ev.Type {
			case coordinator.EventStepMetrics:
				rates[ev.Source] = ev.Metrics["img_per_s"]
				delta := max(ev.Step-done, 0)
				done = max(done, ev.Step)
				var ids []string
				sum := 0.0
				for id, r := range rates {
					ids = append(ids, id)
					sum += r
				}
				sort.Strings(ids)
				per := make([]string, len(ids))
				for i, id := range ids {
					per[i] = fmt.Sprintf("%s %.0f", strings.TrimPrefix(id, "worker-"), rates[id])
				}
				lossText = fmt.Sprintf("loss %.4f world %.0f img/s %.0f [%s]", ev.Metrics["loss"], ev.Metrics["world"], sum, strings.Join(per, " "))
				bar.Add(delta, lossText)
			case coordinator.EventMembershipChanged:
				rates = map[string]float64{}
				fmt.Fprintf(os.Stderr, "\nring generation %d at step %d: members %v (joined %v, left %v)\n", ev.Generation, ev.Step, ev.Members, ev.Joined, ev.Left)
			case coordinator.EventEvaluation:
				lastAcc = ev.Metrics["accuracy"]
				fmt.Fprintf(os.Stderr, "\nepoch %d: test accuracy %.2f%%\n", ev.Epoch, 100*lastAcc)
			case coordinator.EventFailed:
				fmt.Fprintf(os.Stderr, "\njob failed: %s\n", ev.Message)
			}
		}
	}
}

// jobDone reports whether the job's state in etcd says training finished.
func jobDone(ctx context.Context, cli *clientv3.Client, job string) bool {
	resp, err := cli.Get(ctx, coordinator.StateKey(job))
	if err != nil || len(resp.Kvs) == 0 {
		return false
	}
	var st coordinator.JobState
	return json.Unmarshal(resp.Kvs[0].Value, &st) == nil && st.Done
}
