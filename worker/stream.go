package worker

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/transfer"
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
	store, ix, err := transfer.OpenSplit(ctx, uri, s3)
	if err != nil {
		return nil, err
	}
	return &StreamSource{Store: store, Index: ix, Transform: tc, Workers: 4, Log: log}, nil
}
