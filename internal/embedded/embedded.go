// Package embedded starts in-process etcd and NATS servers on free loopback
// ports, for local mode ("ringtrain coordinator --embedded") and for tests that
// need real servers rather than mocks.
//
// Both servers are quiet by default: their own loggers are discarded, and
// errors come back to the caller instead.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a single-member etcd server running in this process.
type Etcd struct {
	e         *embed.Etcd
	clientURL string
	dir       string
	closeOnce sync.Once // embed.Etcd.Close panics when called twice
}

// StartEtcd starts a single-member etcd cluster whose data lives in dir
// (created if missing) and whose client and peer listeners bind free loopback
// ports. It blocks until the server is ready to serve, ctx is done, or startup
// fails. Close stops it; the caller owns dir.
func StartEtcd(ctx context.Context, dir string) (*Etcd, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: create data dir %q: %w", dir, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "ringtrain-embedded"
	cfg.Dir = dir
	// Port 0: the kernel chooses; the real client address is read back from
	// the listener below. A single member never dials its own peer URL, so the
	// ":0" peer URL it advertises does no harm.
	loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{loop}
	cfg.AdvertiseClientUrls = []url.URL{loop}
	cfg.ListenPeerUrls = []url.URL{loop}
	cfg.AdvertisePeerUrls = []url.URL{loop}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Durability across machine crashes is not what an embedded (test/local)
	// etcd is for; fsync on a shared disk makes every lease grant slow.
	cfg.UnsafeNoFsync = true

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: start in %q: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: serve in %q: %w", dir, err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after 60s in %q", dir)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: wait for ready in %q: %w", dir, ctx.Err())
	}
	if len(e.Clients) == 0 {
		e.Close()
		return nil, errors.New("embedded etcd: no client listener")
	}
	return &Etcd{
		e:         e,
		clientURL: "http://" + e.Clients[0].Addr().String(),
		dir:       dir,
	}, nil
}

// ClientURL is the address a clientv3 connects to, e.g. "http://127.0.0.1:40123".
func (s *Etcd) ClientURL() string { return s.clientURL }

// Endpoints is ClientURL as a clientv3.Config.Endpoints value.
func (s *Etcd) Endpoints() []string { return []string{s.clientURL} }

// Dir is the data directory the server was started with.
func (s *Etcd) Dir() string { return s.dir }

// Close stops the server and waits for its goroutines. Safe to call twice.
func (s *Etcd) Close() {
	if s == nil || s.e == nil {
		return
	}
	s.closeOnce.Do(s.e.Close)
}

// NATS is a NATS server running in this process.
type NATS struct {
	s *natsserver.Server
}

// StartNATS starts a NATS server on a free loopback port and waits until it
// accepts connections. Close stops it.
func StartNATS() (*NATS, error) {
	opts := &natsserver.Options{
		ServerName: "ringtrain-embedded",
		Host:       "127.0.0.1",
		Port:       natsserver.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		// No monitoring port, no JetStream: the events channel is plain
		// publish/subscribe and nothing depends on it for correctness.
		HTTPPort: 0,
	}
	s, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: configure: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready for connections after 30s on 127.0.0.1")
	}
	return &NATS{s: s}, nil
}

// ClientURL is the address a nats.Connect dials, e.g. "nats://127.0.0.1:40124".
func (n *NATS) ClientURL() string { return n.s.ClientURL() }

// Close shuts the server down and waits for it. Safe to call twice.
func (n *NATS) Close() {
	if n == nil || n.s == nil {
		return
	}
	n.s.Shutdown()
	n.s.WaitForShutdown()
}
