package objstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
)

// startVersity runs a real S3 server or skips.
func startVersity(t *testing.T) *s3server.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := s3server.StartVersityGW(ctx, t.TempDir())
	if errors.Is(err, s3server.ErrNoVersityGW) {
		t.Skip("versitygw not installed: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestVersityGW(t *testing.T) {
	srv := startVersity(t)
	ctx := context.Background()
	if _, err := objstore.NewS3(ctx, srv.Config(), "absent"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("missing bucket: %v", err)
	}
	// Streaming signatures (no DisableContentSHA256) against a real server,
	// with a multipart object.
	st, err := objstore.CreateBucket(ctx, srv.Config(), "conf")
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, st, true)
	// Wrong credentials: a clear error, typed for callers.
	bad := srv.Config()
	bad.SecretKey = "wrong-secret"
	_, err = objstore.NewS3(ctx, bad, "conf")
	if !errors.Is(err, objstore.ErrAccessDenied) || !strings.Contains(err.Error(), "s3://conf") {
		t.Errorf("wrong secret: %v", err)
	}
	bad = srv.Config()
	bad.AccessKey = "nobody"
	if _, err := objstore.NewS3(ctx, bad, "conf"); !errors.Is(err, objstore.ErrAccessDenied) {
		t.Errorf("unknown access key: %v", err)
	}
	// Open with an s3:// URI.
	st2, prefix, err := objstore.Open(ctx, "s3://conf/a", srv.Config())
	if err != nil || prefix != "a/" {
		t.Fatalf("Open: %v %q", err, prefix)
	}
	if infos, err := st2.List(ctx, prefix); err != nil || len(infos) != 3 {
		t.Errorf("list via Open: %d, %v", len(infos), err)
	}
}
