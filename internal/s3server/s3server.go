// Package s3server runs an S3-compatible server in-process (gofakes3) for
// local mode and tests, so that no external server is needed.
//
// gofakes3 does not check credentials: AccessKey/SecretKey are returned so
// that clients are configured as for a real server. Clients must send
// UNSIGNED-PAYLOAD (objstore.S3Config.DisableContentSHA256): with minio-go's
// streaming signatures gofakes3 stores multipart uploads corrupted.
package s3server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/spf13/afero"

	"github.com/ringtrain/ringtrain/objstore"
)

// Server is a running embedded S3 server.
type Server struct {
	// Endpoint is "http://127.0.0.1:PORT".
	Endpoint  string
	AccessKey string
	SecretKey string

	// DisableContentSHA256 is what clients must set (gofakes3 needs it).
	DisableContentSHA256 bool

	backend gofakes3.Backend
	srv     *http.Server
	done    chan error
	stop    func() error // external servers
}

// Start serves S3 on a free loopback port. With dir == "" objects live in
// memory; otherwise each bucket is a folder dir/<bucket> holding the objects
// as files (metadata in dir/.meta), so data survives restarts.
// The server stops when Close is called or ctx ends.
func Start(ctx context.Context, dir string) (*Server, error) {
	var be gofakes3.Backend
	if dir == "" {
		be = s3mem.New()
	} else {
		fs, err := s3afero.NewBasePathFs(afero.NewOsFs(), dir, s3afero.FsPathCreateAll)
		if err != nil {
			return nil, fmt.Errorf("s3server: data folder %s: %w", dir, err)
		}
		mb, err := s3afero.MultiBucket(fs)
		if err != nil {
			return nil, fmt.Errorf("s3server: data folder %s: %w", dir, err)
		}
		be = mb
	}
	fake := gofakes3.New(be, gofakes3.WithLogger(gofakes3.DiscardLog()), gofakes3.WithTimeSkewLimit(0))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3server: listen: %w", err)
	}
	s := &Server{
		Endpoint:  "http://" + ln.Addr().String(),
		AccessKey: "ringtrain",
		SecretKey: randomHex(16),
		backend:   be,
		srv:       &http.Server{Handler: fake.Server(), ReadHeaderTimeout: 10 * time.Second},
		done:      make(chan error, 1),

		DisableContentSHA256: true,
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
			s.done <- nil
		}
	}()
	slog.Debug("embedded s3 server started", "endpoint", s.Endpoint, "dir", dir)
	return s, nil
}

// Config returns the client settings for this server.
func (s *Server) Config() objstore.S3Config {
	return objstore.S3Config{
		Endpoint:             s.Endpoint,
		AccessKey:            s.AccessKey,
		SecretKey:            s.SecretKey,
		Region:               "us-east-1",
		PathStyle:            true,
		DisableContentSHA256: s.DisableContentSHA256,
	}
}

// CreateBucket makes a bucket (no error if it exists).
func (s *Server) CreateBucket(name string) error {
	if s.backend == nil {
		_, err := objstore.CreateBucket(context.Background(), s.Config(), name)
		return err
	}
	ok, err := s.backend.BucketExists(name)
	if err != nil {
		return fmt.Errorf("s3server: bucket %s: %w", name, err)
	}
	if ok {
		return nil
	}
	if err := s.backend.CreateBucket(name); err != nil {
		return fmt.Errorf("s3server: create bucket %s: %w", name, err)
	}
	return nil
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	if s.stop != nil {
		return s.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
