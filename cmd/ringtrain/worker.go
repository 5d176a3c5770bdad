package main

import (
	"flag"
	"os"
	"time"

	"github.com/ringtrain/ringtrain/worker"
)

// runWorker joins a cluster job as one data-parallel worker.
func runWorker(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var c worker.ClusterConfig
	fs.StringVar(&c.Job, "job", "", "job name to work on")
	fs.StringVar(&c.ID, "id", "", "member id (default host-pid)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "all-reduce listen address (port 0 picks one)")
	fs.StringVar(&c.Advertise, "advertise", "", "address peers dial (default: the listen address)")
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	fs.StringVar(&c.NATS, "nats", "", "NATS URL for events and metrics (empty: none)")
	fs.IntVar(&c.Threads, "threads", 0, "compute threads (0 = all cores)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 5*time.Second, "membership lease TTL: a dead worker is dropped after this")
	fs.DurationVar(&c.CollectiveTimeout, "collective-timeout", 10*time.Second, "all-reduce timeout: a stalled peer fails the step after this")
	fs.IntVar(&c.CheckEvery, "check-every", 50, "compare replica checksums every K steps")
	fs.StringVar(&c.Transport, "transport", "grpc", "all-reduce transport: grpc or tcp (plain TCP frames, less CPU per byte)")
	fs.StringVar(&c.SampleLog, "sample-log", "", "append every completed global batch as JSON lines to this file")
	var s3 dataS3Flags
	s3.register(fs)
	logLevel := fs.String("log-level", "info", "log level")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c.Etcd = splitClusterList(*etcd)
	c.Log = newLogger(*logLevel)
	cfg, err := s3.cfg.WithEnv(os.Getenv)
	if err != nil {
		return err
	}
	cfg.DisableContentSHA256 = s3.unsigned
	c.S3 = cfg
	ctx, cancel := signalContext()
	defer cancel()
	return worker.RunCluster(ctx, c)
}
