package dataset

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/internal/s3server"
	"github.com/ringtrain/ringtrain/objstore"
)

// s3Servers yields the embedded gofakes3 server and, when installed, a real
// versitygw; each test runs against both.
func s3Servers(t *testing.T) map[string]*s3server.Server {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := map[string]*s3server.Server{}
	fake, err := s3server.Start(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	out["gofakes3"] = fake
	vgw, err := s3server.StartVersityGW(ctx, t.TempDir())
	switch {
	case errors.Is(err, s3server.ErrNoVersityGW):
		t.Log("versitygw not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0): testing gofakes3 only")
	case err != nil:
		t.Fatal(err)
	default:
		t.Cleanup(func() { vgw.Close() })
		out["versitygw"] = vgw
	}
	return out
}

// Push a folder, list it, read every sample back byte-exact, then train
// from it through the loader, directly and packed.
func TestS3RoundTrip(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := makeFolders(t, root, []string{"cat", "dog", "emu"}, 8)
	writeFile(t, root, "classes.txt", []byte("dog\ncat\nemu\n"))
	src := localStore(t, root)
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			st, err := objstore.CreateBucket(ctx, srv.Config(), "data")
			if err != nil {
				t.Fatal(err)
			}
			stats, err := Copy(ctx, src, "", st, "pets/", CopyOptions{Parallel: 4})
			if err != nil {
				t.Fatal(err)
			}
			if stats.Copied != len(files)+1 {
				t.Errorf("copied %d, want %d", stats.Copied, len(files)+1)
			}
			sums, err := Describe(ctx, st, "pets/")
			if err != nil || len(sums) != 1 || sums[0].Err != nil {
				t.Fatalf("describe: %+v %v", sums, err)
			}
			ix := sums[0].Index
			if strings.Join(ix.Classes, ",") != "dog,cat,emu" || len(ix.Samples) != len(files) {
				t.Fatalf("classes %v, %d samples", ix.Classes, len(ix.Samples))
			}
			for _, s := range ix.Samples {
				b, err := fetchAll(ctx, st, s, nil)
				if err != nil {
					t.Fatal(err)
				}
				orig := files[strings.TrimPrefix(s.Key, "pets/")]
				if !bytes.Equal(b, orig) {
					t.Fatalf("%s not byte-exact", s.Key)
				}
				if !strings.Contains(s.Key, "/"+ix.Classes[s.Label]+"/") {
					t.Fatalf("%s labelled %s", s.Key, ix.Classes[s.Label])
				}
			}
			// Pack into shards on the same server and read them by range.
			if _, err := Pack(ctx, st, ix, st, "packed/", "train", PackOptions{ShardSize: 6000, Shuffle: true, TempDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			pix, err := ScanFolders(ctx, st, "packed/", "train", ScanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tc := TransformConfig{Size: 16, Train: true}
			s := Sampler{N: len(ix.Samples), GlobalBatch: 6, Last: Partial, Shuffle: true}
			for _, idx := range []*Index{ix, pix} {
				l, err := NewLoader(LoaderConfig{Store: st, Index: idx, Sampler: s, World: 1, Transform: tc, CacheDir: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				var ids []int32
				for range s.StepsPerEpoch() {
					b, err := l.Next(ctx)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, b.IDs[:b.N]...)
					l.Release(b)
				}
				l.Close()
				slices.Sort(ids)
				if len(slices.Compact(ids)) != len(idx.Samples) {
					t.Fatalf("epoch covered %d distinct samples of %d", len(ids), len(idx.Samples))
				}
			}
		})
	}
}

func TestS3PushResumes(t *testing.T) {
	root := t.TempDir()
	files := makeFolders(t, root, []string{"a", "b", "c"}, 10)
	src := localStore(t, root)
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, err := objstore.CreateBucket(ctx, srv.Config(), "push")
			if err != nil {
				t.Fatal(err)
			}
			// Interrupt: the 9th upload fails and the copy stops.
			fs := &failingStore{Store: st}
			fs.left.Store(8)
			first, err := Copy(ctx, src, "", fs, "ds/", CopyOptions{Parallel: 4})
			if err == nil {
				t.Fatal("interrupted push reported success")
			}
			// An upload cancelled after the server stored it is present
			// though not counted: the resume must skip it too.
			have, _ := st.List(ctx, "ds/")
			if len(have) < first.Copied || len(have) > 8 || first.Copied == 0 {
				t.Fatalf("after interruption: %d copied, %d present", first.Copied, len(have))
			}
			second, err := Copy(ctx, src, "", st, "ds/", CopyOptions{Parallel: 4})
			if err != nil {
				t.Fatal(err)
			}
			// (a cancelled upload may still land on the server after the List
			// above, so count what the resume saw)
			if second.Skipped < len(have) || second.Skipped > 8 || second.Skipped+second.Copied != len(files) {
				t.Errorf("resume: %+v after %d present, want the rest of %d", second, len(have), len(files))
			}
			for k, v := range files {
				rc, err := st.Get(ctx, "ds/"+k)
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				b.ReadFrom(rc)
				rc.Close()
				if !bytes.Equal(b.Bytes(), v) {
					t.Errorf("%s differs", k)
				}
			}
		})
	}
}
