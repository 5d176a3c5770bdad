package s3server_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
)

// With a folder, objects survive a restart of the server.
func TestFileBackedSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := s3server.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateBucket("bkt"); err != nil {
		t.Fatal(err)
	}
	st, err := objstore.NewS3(ctx, srv.Config(), "bkt")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "k/v.txt", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	srv.Close()

	srv2, err := s3server.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	st2, err := objstore.NewS3(ctx, srv2.Config(), "bkt")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := st2.Get(ctx, "k/v.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "hello" {
		t.Errorf("after restart: %q", b)
	}
}

// Close ends the server; a cancelled ctx does too.
func TestStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := s3server.Start(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := srv.Config()
	if _, err := objstore.CreateBucket(context.Background(), cfg, "xyz"); err != nil {
		t.Fatalf("before cancel: %v", err)
	}
	cancel()
	for range 100 {
		if _, err := objstore.CreateBucket(context.Background(), cfg, "xyz"); err != nil {
			return // refused: stopped
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("server still answering after its context ended")
}
