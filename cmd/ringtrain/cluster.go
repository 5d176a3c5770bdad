package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/internal/embedded"
)

// Cluster subcommands: coordinator (the server), and the client commands
// submit, status, stop and watch. Flags also come from RINGTRAIN_<FLAG>.

// runCoordinator runs a coordinator until SIGINT/SIGTERM.
func runCoordinator(args []string) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	etcdEPs := fs.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	natsURL := fs.String("nats", "", "NATS URL for events and metrics (empty: no events)")
	embed := fs.Bool("embedded", false, "start an in-process etcd and NATS (local mode); overrides -etcd and -nats")
	dataDir := fs.String("data-dir", "ringtrain-etcd", "embedded etcd data directory")
	grpcAddr := fs.String("grpc-addr", ":7070", "gRPC API listen address")
	httpAddr := fs.String("http-addr", ":9090", "/metrics and /healthz listen address (empty: off)")
	id := fs.String("id", "", "coordinator id in elections (default host-pid)")
	ttl := fs.Duration("session-ttl", 5*time.Second, "election lease TTL: a dead leader is replaced after this")
	connectTimeout := fs.Duration("connect-timeout", 60*time.Second, "how long to wait for etcd at startup")
	logLevel := fs.String("log-level", "info", "log level")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := newLogger(*logLevel)
	ctx, cancel := signalContext()
	defer cancel()

	endpoints := splitClusterList(*etcdEPs)
	if *embed {
		e, err := embedded.StartEtcd(ctx, *dataDir)
		if err != nil {
			return err
		}
		defer e.Close()
		n, err := embedded.StartNATS()
		if err != nil {
			return err
		}
		defer n.Close()
		endpoints, *natsURL = e.Endpoints(), n.ClientURL()
		log.Info("embedded servers started", "etcd", e.ClientURL(), "nats", n.ClientURL(), "data_dir", *dataDir)
		fmt.Fprintf(os.Stderr, "etcd: %s\nnats: %s\n", e.ClientURL(), n.ClientURL())
	}
	cli, err := connectEtcdCluster(ctx, endpoints, *connectTimeout, log)
	if err != nil {
		return err
	}
	defer cli.Close()

	var pub coordinator.Publisher = coordinator.NopPublisher{}
	if *natsURL != "" {
		// Events are observation only: start even if NATS is down, and let
		// the client reconnect in the background.
		nc, err := nats.Connect(*natsURL, nats.Name("ringtrain-coordinator"), nats.RetryOnFailedConnect(true),
			nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", *natsURL, err)
		}
		defer nc.Close()
		if !nc.IsConnected() {
			log.Warn("NATS not reachable yet, events are buffered until it is", "nats", *natsURL)
		}
		pub = coordinator.NewNATSPublisher(nc)
	}

	c, err := coordinator.New(coordinator.Config{ID: *id, Client: cli, Publisher: pub, SessionTTL: *ttl, Logger: log})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return fmt.Errorf("listen for gRPC on %s: %w", *grpcAddr, err)
	}
	gs := c.NewGRPCServer()
	go func() {
		if err := gs.Serve(lis); err != nil {
			log.Error("gRPC server stopped", "addr", *grpcAddr, "err", err)
		}
	}()
	defer gs.GracefulStop()
	if *httpAddr != "" {
		hs := &http.Server{Addr: *httpAddr, Handler: c.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		hl, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w", *httpAddr, err)
		}
		go func() {
			if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server stopped", "addr", *httpAddr, "err", err)
			}
		}()
		defer hs.Close()
	}
	log.Info("coordinator running", "id", c.ID(), "grpc", lis.Addr().String(), "http", *httpAddr, "etcd", endpoints, "nats", *natsURL)
	return c.Run(ctx)
}

// connectEtcdCluster dials etcd and waits, with backoff and a line per
// attempt, until an endpoint answers or timeout passes.
func connectEtcdCluster(ctx context.Context, endpoints []string, timeout time.Duration, log *slog.Logger) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("no etcd endpoints given (-etcd)")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 200 * time.Millisecond
	start := time.Now()
	for attempt := 1; ; attempt++ {
		var lastErr error
		for _, ep := range endpoints {
			actx, acancel := context.WithTimeout(ctx, 3*time.Second)
			_, lastErr = cli.Status(actx, ep)
			acancel()
			if lastErr == nil {
				return cli, nil
			}
		}
		log.Warn("waiting for etcd", "etcd", endpoints, "attempt", attempt, "elapsed", time.Since(start).Round(time.Millisecond), "err", lastErr)
		select {
		case <-ctx.Done():
			cli.Close()
			return nil, fmt.Errorf("etcd unreachable at %v after %v: %w", endpoints, time.Since(start).Round(time.Second), lastErr)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// clusterClientFlags are the flags every client subcommand shares.
type clusterClientFlags struct {
	addr    *string
	timeout *time.Duration
	asJSON  *bool
}

func addClusterClientFlags(fs *flag.FlagSet) clusterClientFlags {
	return clusterClientFlags{
		addr:    fs.String("addr", "127.0.0.1:7070", "coordinator gRPC address"),
		timeout: fs.Duration("timeout", 10*time.Second, "request timeout"),
		asJSON:  fs.Bool("json", false, "print the raw JSON response"),
	}
}

func (f clusterClientFlags) dial() (*coordinator.Client, context.Context, context.CancelFunc, error) {
	c, err := coordinator.Dial(*f.addr)
	if err != nil {
		return nil, nil, nil, err
	}
	sctx, scancel := signalContext()
	ctx, cancel := context.WithTimeout(sctx, *f.timeout)
	return c, ctx, func() { cancel(); scancel(); c.Close() }, nil
}

// runSubmit sends a job spec file (YAML or JSON; "-" reads stdin).
func runSubmit(args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	cf := addClusterClientFlags(fs)
	specPath := fs.String("spec", "", "job spec file (YAML or JSON), or - for stdin; may also be the first argument")
	resume := fs.String("resume", "", "latest (newest good checkpoint, the default when checkpoints exist), a checkpoint step, or never")
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") { // spec file before the flags
		args = append(args[1:], args[0])
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *specPath == "" && fs.NArg() > 0 {
		*specPath = fs.Arg(0)
	}
	if *specPath == "" {
		return errors.New("no job spec given: ringtrain submit [flags] spec.yaml")
	}
	var data []byte
	var err error
	if *specPath == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, coordinator.MaxJobSpecBytes+1))
	} else {
		data, err = os.ReadFile(*specPath)
	}
	if err != nil {
		return fmt.Errorf("read job spec %s: %w", *specPath, err)
	}
	// Validate locally first: the same errors, without a round trip.
	spec, err := coordinator.ParseJobSpec(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *specPath, err)
	}
	if *resume != "" {
		spec.Resume = *resume
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("--resume: %w", err)
		}
		if data, err = json.Marshal(spec); err != nil {
			return err
		}
	}
	c, ctx, done, err := cf.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.Submit(ctx, data)
	if err != nil {
		return err
	}
	if *cf.asJSON {
		return printClusterJSON(resp)
	}
	s := resp.Spec
	maxW := "unbounded"
	if s.World.Max > 0 {
		maxW = fmt.Sprint(s.World.Max)
	}
	fmt.Printf("submitted job %s: net=%s classes=%d batch=%d epochs=%d optimizer=%s peak_lr=%g world=%d..%s\n",
		s.Name, s.Net, s.Classes, s.GlobalBatchSize, s.Epochs, s.Optimizer.Name, s.PeakLR(), s.World.Min, maxW)
	return nil
}

// runStatus prints one job in detail, or every job when none is named.
func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	cf := addClusterClientFlags(fs)
	job := fs.String("job", "", "job name (default: list all jobs); may also be the first argument")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *job == "" && fs.NArg() > 0 {
		*job = fs.Arg(0)
	}
	c, ctx, done, err := cf.dial()
	if err != nil {
		return err
	}
	defer done()
	if *job == "" {
		resp, err := c.List(ctx)
		if err != nil {
			return err
		}
		if *cf.asJSON {
			return printClusterJSON(resp)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tPHASE\tGEN\tWORLD\tEPOCH\tSTEP\tLEADER\tMESSAGE")
		for _, s := range resp.Jobs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Job, s.Phase, s.Generation, s.World, s.Epoch, s.Step, s.Leader, s.Message)
		}
		return tw.Flush()
	}
	resp, err := c.Status(ctx, *job)
	if err != nil {
		return err
	}
	if *cf.asJSON {
		return printClusterJSON(resp)
	}
	s := resp.Status
	fmt.Printf("job %s: %s (%s)\nleader: %s\nnet: %s  batch: %d  epochs: %d  world: %d..%d\n",
		s.Job, s.Phase, s.Message, resp.Leader, resp.Spec.Net, resp.Spec.GlobalBatchSize, resp.Spec.Epochs, resp.Spec.World.Min, resp.Spec.World.Max)
	if resp.State != nil {
		fmt.Printf("progress: epoch %d step %d (updated %s)\n", resp.State.Epoch, resp.State.Step, resp.State.Updated.Format(time.RFC3339))
	}
	if len(resp.Ring.Members) == 0 {
		fmt.Printf("no ring in force (last generation %d)\n", resp.Ring.Generation)
	} else {
		fmt.Printf("ring generation %d, formed %s at step %d:\n", resp.Ring.Generation, resp.Ring.Formed.Format(time.RFC3339), resp.Ring.StartStep)
	}
	for rank, m := range resp.Ring.Members {
		fmt.Printf("  rank %d  %s  %s\n", rank, m.ID, m.Addr)
	}
	fmt.Printf("live members: %d\n", len(resp.Members))
	for _, m := range resp.Members {
		if resp.Ring.Rank(m.ID) < 0 {
			fmt.Printf("  pending  %s  %s\n", m.ID, m.Addr)
		}
	}
	return nil
}

// runStop asks the coordinator to stop a job.
func runStop(args []string) error {
	fs := flag.NewFlagSet("stop", flag.ContinueOnError)
	cf := addClusterClientFlags(fs)
	job := fs.String("job", "", "job name; may also be the first argument")
	reason := fs.String("reason", "stopped by user", "reason recorded in the job status")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *job == "" && fs.NArg() > 0 {
		*job = fs.Arg(0)
	}
	if *job == "" {
		return errors.New("no job given: ringtrain stop [flags] JOB")
	}
	c, ctx, done, err := cf.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := c.Stop(ctx, *job, *reason)
	if err != nil {
		return err
	}
	if *cf.asJSON {
		return printClusterJSON(resp)
	}
	fmt.Printf("job %s: %s (%s)\n", resp.Status.Job, resp.Status.Phase, resp.Status.Message)
	return nil
}

// runWatch prints a job's events and metrics from NATS until interrupted.
func runWatch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL")
	job := fs.String("job", "", "job name; may also be the first argument")
	metrics := fs.Bool("metrics", true, "also print step metrics")
	asJSON := fs.Bool("json", false, "print raw JSON events")
	connectTimeout := fs.Duration("connect-timeout", 30*time.Second, "how long to wait for NATS")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *job == "" && fs.NArg() > 0 {
		*job = fs.Arg(0)
	}
	if !coordinator.ValidJobName(*job) {
		return fmt.Errorf("invalid or missing job name %q: ringtrain watch [flags] JOB", *job)
	}
	ctx, cancel := signalContext()
	defer cancel()
	cctx, ccancel := context.WithTimeout(ctx, *connectTimeout)
	nc, err := coordinator.ConnectNATS(cctx, *natsURL, "ringtrain-watch")
	ccancel()
	if err != nil {
		return err
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 256)
	subject := coordinator.EventsSubject(*job)
	if *metrics {
		subject = "ringtrain." + *job + ".*"
	}
	sub, err := nc.ChanSubscribe(subject, msgs)
	if err != nil {
		return fmt.Errorf("subscribe to %s at %s: %w", subject, *natsURL, err)
	}
	defer sub.Unsubscribe()
	fmt.Fprintf(os.Stderr, "watching %s on %s (Ctrl-C to stop)\n", subject, *natsURL)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			if *asJSON {
				fmt.Println(string(m.Data))
				continue
			}
			var ev coordinator.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				fmt.Printf("%s undecodable event: %v\n", m.Subject, err)
				continue
			}
			fmt.Println(formatClusterEvent(ev))
		}
	}
}

func formatClusterEvent(ev coordinator.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-18s", ev.Time.Format("15:04:05.000"), ev.Type)
	if ev.Generation > 0 {
		fmt.Fprintf(&b, " gen=%d", ev.Generation)
	}
	if ev.Epoch > 0 || ev.Step > 0 {
		fmt.Fprintf(&b, " epoch=%d step=%d", ev.Epoch, ev.Step)
	}
	if len(ev.Members) > 0 {
		fmt.Fprintf(&b, " members=%s", strings.Join(ev.Members, ","))
	}
	if len(ev.Joined) > 0 {
		fmt.Fprintf(&b, " joined=%s", strings.Join(ev.Joined, ","))
	}
	if len(ev.Left) > 0 {
		fmt.Fprintf(&b, " left=%s", strings.Join(ev.Left, ","))
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Metrics)) {
		fmt.Fprintf(&b, " %s=%.4g", k, ev.Metrics[k])
	}
	if ev.Message != "" {
		fmt.Fprintf(&b, " %q", ev.Message)
	}
	return b.String()
}

func printClusterJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func splitClusterList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
