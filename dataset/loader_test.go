package dataset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestLoaderCoverageAndContent(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	makeFolders(t, root, []string{"a", "b", "c"}, 9)
	st := localStore(t, root)
	ix, err := ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := Sampler{N: len(ix.Samples), GlobalBatch: 8, Last: Partial, Shuffle: true}
	tc := TransformConfig{Size: 12, Train: true, Preprocess: Torch}
	ref, _ := NewTransformer(tc)
	want := make([]float32, tc.WithDefaults().SampleLen())
	const world = 3
	loaders := make([]*Loader, world)
	for r := range world {
		l, err := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, Start: SamplerState{Seed: 5}, World: world, Rank: r, Transform: tc, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		loaders[r] = l
	}
	order := s.Order(5, 0, nil)
	for epoch := range 2 {
		seen := make([]int, s.N)
		for step := range s.StepsPerEpoch() {
			for r, l := range loaders {
				b, err := l.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if b.State.Epoch != epoch {
					t.Fatalf("rank %d step %d: epoch %d, want %d", r, step, b.State.Epoch, epoch)
				}
				order = s.Order(5, epoch, order)
				lo, _ := s.Part(b.State, world, r)
				for i := range b.N {
					id := b.IDs[i]
					seen[id]++
					if b.Y[i] != ix.Samples[id].Label {
						t.Fatalf("sample %d: label %d, index says %d", id, b.Y[i], ix.Samples[id].Label)
					}
					// The content is the reference transform of that file.
					data := readAllKey(t, st, ix.Samples[id].Key)
					if err := ref.DecodeApply(data, "", AugmentSeed(5, epoch, lo+i), want); err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(b.X[i*len(want):(i+1)*len(want)], want) {
						t.Fatalf("sample %d: pixels differ from the reference transform", id)
					}
				}
				l.Release(b)
			}
		}
		for id, c := range seen {
			if c != 1 {
				t.Fatalf("epoch %d: sample %d seen %d times", epoch, id, c)
			}
		}
	}
}

func TestLoaderBadSamples(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	makeFolders(t, root, []string{"a", "b"}, 5)
	good := testImage(t, "jpg", 30, 30, 1)
	writeFile(t, root, "train/a/truncated.jpg", good[:len(good)/3])
	writeFile(t, root, "train/b/notes.jpg", []byte("this is a text file"))
	st := localStore(t, root)
	ix, err := ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := Sampler{N: len(ix.Samples), GlobalBatch: len(ix.Samples), Last: Partial}
	tc := TransformConfig{Size: 8}
	// Without SkipBad: an error naming the object.
	l, err := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, World: 1, Transform: tc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Next(ctx)
	l.Close()
	if err == nil || !errors.Is(err, ErrBadSample) || !(strings.Contains(err.Error(), "truncated.jpg") || strings.Contains(err.Error(), "notes.jpg")) {
		t.Fatalf("bad sample error: %v", err)
	}
	var se *StepError
	if !errors.As(err, &se) || se.State != (SamplerState{}) {
		t.Errorf("error does not say which step to retry: %#v", err)
	}
	// With SkipBad: both skipped and counted, the others keep their labels.
	m := NewMetrics(nil)
	l, err = NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, World: 1, Transform: tc, SkipBad: true, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := l.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.N != len(ix.Samples)-2 || b.Skipped != 2 {
		t.Fatalf("N %d skipped %d", b.N, b.Skipped)
	}
	for i := range b.N {
		key := ix.Samples[b.IDs[i]].Key
		if strings.Contains(key, "truncated") || strings.Contains(key, "notes") {
			t.Errorf("bad sample %s in batch", key)
		}
		if b.Y[i] != ix.Samples[b.IDs[i]].Label {
			t.Errorf("%s: wrong label after compaction", key)
		}
	}
	// (prefetching may already have skipped them again in later epochs)
	if got := counterValue(m.Skipped.WithLabelValues("decode")); got < 2 {
		t.Errorf("skipped metric = %v", got)
	}
	l.Release(b)
	// A sample deleted after indexing is a bad sample too.
	os.Remove(filepath.Join(root, ix.Samples[0].Key))
	l2, _ := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, World: 1, Transform: tc})
	defer l2.Close()
	if _, err := l2.Next(ctx); err == nil || !strings.Contains(err.Error(), ix.Samples[0].Key) {
		t.Errorf("missing object: %v", err)
	}
}

// Packed shards (range reads or the local shard cache) give the same
// batches as the class folders they were packed from.
func TestLoaderShardsMatchFolders(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	makeFolders(t, root, []string{"a", "b", "c"}, 6)
	src := localStore(t, root)
	ix, err := ScanFolders(ctx, src, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := localStore(t, t.TempDir())
	if _, err := Pack(ctx, src, ix, dst, "", "train", PackOptions{ShardSize: 5000, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	pix, err := ScanFolders(ctx, dst, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := Sampler{N: len(ix.Samples), GlobalBatch: 5, Last: Pad, Shuffle: true}
	tc := TransformConfig{Size: 10, Train: true}
	collect := func(st interface{}, cfg LoaderConfig) [][]float32 {
		l, err := NewLoader(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var out [][]float32
		for range 2 * s.StepsPerEpoch() {
			b, err := l.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, slices.Clone(b.X[:b.N*tc.WithDefaults().SampleLen()]))
			l.Release(b)
		}
		return out
	}
	m := NewMetrics(nil)
	a := collect(nil, LoaderConfig{Store: src, Index: ix, Sampler: s, World: 1, Transform: tc})
	b := collect(nil, LoaderConfig{Store: dst, Index: pix, Sampler: s, World: 1, Transform: tc})
	c := collect(nil, LoaderConfig{Store: dst, Index: pix, Sampler: s, World: 1, Transform: tc, CacheDir: t.TempDir(), Metrics: m})
	for i := range a {
		if !slices.Equal(a[i], b[i]) || !slices.Equal(a[i], c[i]) {
			t.Fatalf("batch %d differs between folders, shards and cached shards", i)
		}
	}
	if counterValue(m.CacheHits) == 0 {
		t.Error("shard cache not used")
	}
}

func TestLoaderCloseNoLeak(t *testing.T) {
	root := t.TempDir()
	makeFolders(t, root, []string{"a"}, 4)
	st := localStore(t, root)
	ix, _ := ScanFolders(context.Background(), st, "", "train", ScanOptions{})
	for i := range 20 {
		l, err := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: Sampler{N: 4, GlobalBatch: 2}, World: 1, Transform: TransformConfig{Size: 4}, Prefetch: 1 + i%3})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			b, err := l.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			l.Release(b)
		}
		l.Close()
		if _, err := l.Next(context.Background()); err == nil {
			t.Fatal("Next after Close succeeded")
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtimeStack(buf)])
		if !strings.Contains(stacks, "dataset.(*Loader)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loader goroutines left after Close:\n%s", stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = fmt.Sprint()
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// A membership change mid-epoch: the loaders of world 2 stop after two
// steps, loaders of world 3 resume from the saved state, and the epoch
// still covers every sample exactly once.
func TestLoaderWorldChangeMidEpoch(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	makeFolders(t, root, []string{"a", "b"}, 11)
	st := localStore(t, root)
	ix, err := ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := Sampler{N: len(ix.Samples), GlobalBatch: 6, Last: Partial, Shuffle: true}
	tc := TransformConfig{Size: 4}
	seen := make([]int, s.N)
	run := func(world int, start SamplerState, steps int) SamplerState {
		ls := make([]*Loader, world)
		for r := range world {
			l, err := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, Start: start, World: world, Rank: r, Transform: tc, Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ls[r] = l
		}
		next := start
		for range steps {
			for _, l := range ls {
				b, err := l.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range b.IDs[:b.N] {
					seen[id]++
				}
				next = b.Next
				l.Release(b)
			}
		}
		return next
	}
	mid := run(2, SamplerState{Seed: 11}, 2)
	if mid.Done != 12 {
		t.Fatalf("state after 2 steps: %+v", mid)
	}
	end := run(3, mid, s.StepsPerEpoch()-2)
	if end != (SamplerState{Seed: 11, Epoch: 1}) {
		t.Errorf("state at the end of the epoch: %+v", end)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("sample %d seen %d times", id, c)
		}
	}
}
