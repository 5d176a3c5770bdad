package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
)

// conformance checks the Store contract; every implementation runs it.
func conformance(t *testing.T, st objstore.Store, big bool) {
	ctx := context.Background()
	put := func(key string, data []byte) {
		t.Helper()
		if err := st.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	get := func(key string) []byte {
		t.Helper()
		rc, err := st.Get(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		return b
	}
	put("a/x/1.bin", []byte("one"))
	put("a/x/2.bin", []byte("two!"))
	put("a/y/3.bin", []byte{})
	put("b.bin", []byte("bee"))
	if g := get("a/x/2.bin"); string(g) != "two!" {
		t.Errorf("get = %q", g)
	}
	put("a/x/2.bin", []byte("TWO"))
	if g := get("a/x/2.bin"); string(g) != "TWO" {
		t.Errorf("get after overwrite = %q", g)
	}
	if g := get("a/y/3.bin"); len(g) != 0 {
		t.Errorf("empty object = %q", g)
	}
	infos, err := st.List(ctx, "a/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, oi := range infos {
		keys = append(keys, oi.Key)
	}
	if strings.Join(keys, ",") != "a/x/1.bin,a/x/2.bin,a/y/3.bin" {
		t.Errorf("list a/ = %v", keys)
	}
	infos, err = st.List(ctx, "a/x/1")
	if err != nil || len(infos) != 1 || infos[0].Size != 3 {
		t.Errorf("list a/x/1 = %v, %v", infos, err)
	}
	if infos, err := st.List(ctx, "nothing/here/"); err != nil || len(infos) != 0 {
		t.Errorf("list of absent prefix = %v, %v", infos, err)
	}
	oi, err := st.Stat(ctx, "b.bin")
	if err != nil || oi.Size != 3 {
		t.Errorf("stat = %+v, %v", oi, err)
	}
	if _, err := st.Stat(ctx, "nope"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("stat absent: %v, want ErrNotExist", err)
	}
	if _, err := st.Get(ctx, "nope"); !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("get absent: %v, want ErrNotExist naming the key", err)
	}
	rg := st.(objstore.RangeGetter)
	rc, err := rg.GetRange(ctx, "a/x/2.bin", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "WO" {
		t.Errorf("range = %q", b)
	}
	if err := st.Delete(ctx, "b.bin"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "b.bin"); err != nil {
		t.Errorf("delete absent: %v", err)
	}
	if _, err := st.Stat(ctx, "b.bin"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("stat deleted: %v", err)
	}
	if big {
		// ≥ 16 MiB goes multipart in minio-go: must come back byte-exact.
		data := make([]byte, 17<<20+12345)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		put("big/blob", data)
		if g := get("big/blob"); !bytes.Equal(g, data) {
			t.Fatalf("17 MiB object not byte-exact (len %d vs %d)", len(g), len(data))
		}
	}
}

func TestLocal(t *testing.T) {
	st, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, st, true)
	if err := st.Put(context.Background(), "../escape", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(st.Dir(), "escape")); err != nil {
		t.Errorf("key with .. must stay inside the folder: %v", err)
	}
}

func TestEmbeddedS3(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		name := "memory"
		if dir != "" {
			name = "files"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := s3server.Start(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if _, err := objstore.NewS3(ctx, srv.Config(), "missing"); !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
				t.Errorf("missing bucket: %v", err)
			}
			st, err := objstore.CreateBucket(ctx, srv.Config(), "data")
			if err != nil {
				t.Fatal(err)
			}
			conformance(t, st, !testing.Short())
			st2, prefix, err := objstore.Open(ctx, "s3://data/a/x", srv.Config())
			if err != nil || prefix != "a/x/" || st2.String() != "s3://data" {
				t.Errorf("Open = %v %q %v", st2, prefix, err)
			}
		})
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, prefix string
		s3, err            bool
	}{
		{"s3://b", "b", "", true, false},
		{"s3://b/", "b", "", true, false},
		{"s3://b/p/q", "b", "p/q/", true, false},
		{"s3://b/p/q/", "b", "p/q/", true, false},
		{"s3:///x", "", "", true, true},
		{"/data/x", "", "", false, false},
	} {
		b, p, s3, err := objstore.ParseURI(tc.in)
		if b != tc.bucket || p != tc.prefix || s3 != tc.s3 || (err != nil) != tc.err {
			t.Errorf("ParseURI(%q) = %q %q %v %v", tc.in, b, p, s3, err)
		}
	}
}

func TestWithEnv(t *testing.T) {
	dir := t.TempDir()
	cred := filepath.Join(dir, "credentials")
	os.WriteFile(cred, []byte("[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n[other]\naws_access_key_id=AK2\naws_secret_access_key=SK2\n"), 0o600)
	for _, tc := range []struct {
		name   string
		env    map[string]string
		cfg    objstore.S3Config
		ak, sk string
		err    bool
	}{
		{"ringtrain vars win", map[string]string{"RINGTRAIN_S3_ACCESS_KEY": "R", "RINGTRAIN_S3_SECRET_KEY": "RS", "AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "AS"}, objstore.S3Config{}, "R", "RS", false},
		{"aws vars", map[string]string{"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "AS"}, objstore.S3Config{}, "A", "AS", false},
		{"flags win", map[string]string{"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "AS"}, objstore.S3Config{AccessKey: "F", SecretKey: "FS"}, "F", "FS", false},
		{"file default", map[string]string{"RINGTRAIN_S3_CREDENTIALS_FILE": cred}, objstore.S3Config{}, "AK1", "SK1", false},
		{"file profile", map[string]string{"AWS_SHARED_CREDENTIALS_FILE": cred, "AWS_PROFILE": "other"}, objstore.S3Config{}, "AK2", "SK2", false},
		{"file missing profile", map[string]string{"AWS_SHARED_CREDENTIALS_FILE": cred, "AWS_PROFILE": "zzz"}, objstore.S3Config{}, "", "", true},
		{"explicit file absent", map[string]string{"RINGTRAIN_S3_CREDENTIALS_FILE": filepath.Join(dir, "none")}, objstore.S3Config{}, "", "", true},
		{"home file absent is fine", map[string]string{"HOME": dir}, objstore.S3Config{}, "", "", false},
	} {
		got, err := tc.cfg.WithEnv(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.err || got.AccessKey != tc.ak || got.SecretKey != tc.sk {
			t.Errorf("%s: got %q/%q err %v", tc.name, got.AccessKey, got.SecretKey, err)
		}
	}
}
