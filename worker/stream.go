package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"strings"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/objstore"
)

// Feed streams one rank's batches in sampler order (dataset.Loader).
type Feed interface {
	Next(ctx context.Context) (*dataset.Batch, error)
	Release(b *dataset.Batch)
	Close() error
}

var _ Feed = (*dataset.Loader)(nil)

// StreamSource is a dataset in an object store (class folders or tar
// shards), read through prefetching loaders rather than by random access.
type StreamSource struct {
	Store     objstore.Store
	Index     *dataset.Index
	Transform dataset.TransformConfig
	Workers   int // fetch/decode goroutines per loader
	CacheDir  string
	Metrics   *dataset.Metrics
	Log       *slog.Logger
}

var _ Source = (*StreamSource)(nil)

func (s *StreamSource) Len() int { return len(s.Index.Samples) }
func (s *StreamSource) Shape() nn.Shape {
	return nn.Shape{s.Transform.Channels, s.Transform.Size, s.Transform.Size}
}
func (s *StreamSource) Classes() []string {
	if len(s.Index.ClassNames) == len(s.Index.Classes) {
		return s.Index.ClassNames
	}
	return s.Index.Classes
}

// errStreamed is returned by Load: streamed data is read through a Feed.
var errStreamed = errors.New("streamed dataset: read it through a feed")

func (s *StreamSource) Load(context.Context, []int32, []float32, []int32) error { return errStreamed }

// Open starts a loader for rank of world from start.
func (s *StreamSource) Open(sampler dataset.Sampler, start dataset.SamplerState, world, rank int, train bool) (Feed, error) {
	tc := s.Transform
	tc.Train = train
	return dataset.NewLoader(dataset.LoaderConfig{Store: s.Store, Index: s.Index, Sampler: sampler, Start: start,
		World: world, Rank: rank, Transform: tc, Workers: s.Workers, CacheDir: s.CacheDir, SkipBad: true,
		Metrics: s.Metrics, Logger: s.Log})
}

// openStream opens the split a URI names: scheme://bucket/root/split (or a
// local path root/split), where root may hold classes.txt.
func openStream(ctx context.Context, uri string, s3 objstore.S3Config, tc dataset.TransformConfig, log *slog.Logger) (*StreamSource, error) {
	loc := uri
	if !strings.HasPrefix(uri, "s3://") {
		// A local store is rooted at the dataset root, the folder above the split.
		loc = filepath.Dir(strings.TrimSuffix(strings.TrimPrefix(uri, "file://"), "/"))
	}
	store, prefix, err := objstore.Open(ctx, loc, s3)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", uri, err)
	}
	if loc != uri {
		prefix = filepath.Base(strings.TrimSuffix(uri, "/"))
	}
	prefix = strings.TrimSuffix(prefix, "/")
	root, split := path.Split(prefix)
	if split == "" {
		return nil, fmt.Errorf("dataset %s: name the split folder (…/train, …/val)", uri)
	}
	ix, err := dataset.ScanFolders(ctx, store, root, split, dataset.ScanOptions{})
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", uri, err)
	}
	return &StreamSource{Store: store, Index: ix, Transform: tc, Workers: 4, Log: log}, nil
}
