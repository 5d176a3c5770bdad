package transfer

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/objstore"
	"gorgonia.org/tensor"
)

// OpenSplit indexes the dataset split a URI names: s3://bucket/root/split
// or a local root/split folder (class folders or tar shards).
func OpenSplit(ctx context.Context, uri string, s3 objstore.S3Config) (objstore.Store, *dataset.Index, error) {
	loc := uri
	if !strings.HasPrefix(uri, "s3://") {
		loc = filepath.Dir(strings.TrimSuffix(strings.TrimPrefix(uri, "file://"), "/"))
	}
	store, prefix, err := objstore.Open(ctx, loc, s3)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset %s: %w", uri, err)
	}
	if loc != uri {
		prefix = filepath.Base(strings.TrimSuffix(uri, "/"))
	}
	root, split := path.Split(strings.TrimSuffix(prefix, "/"))
	if split == "" {
		return nil, nil, fmt.Errorf("dataset %s: name the split folder (…/train, …/val)", uri)
	}
	ix, err := dataset.ScanFolders(ctx, store, root, split, dataset.ScanOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("dataset %s: %w", uri, err)
	}
	return store, ix, nil
}

// DatasetFeatures runs m (inference mode) over every sample of a split in
// index order and returns the outputs (one row of m.Out per sample) and the
// labels. each, when set, sees the number of samples done.
func DatasetFeatures(ctx context.Context, m *nn.Model, pool *kernels.Pool, store objstore.Store, ix *dataset.Index,
	tc dataset.TransformConfig, batch int, each func(done int)) ([]float32, []int32, error) {
	tc.Train = false
	s := dataset.Sampler{N: len(ix.Samples), GlobalBatch: batch, Last: dataset.Partial}
	l, err := dataset.NewLoader(dataset.LoaderConfig{Store: store, Index: ix, Sampler: s, World: 1, Rank: 0, Transform: tc})
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	st := &nn.State{Inference: true, Pool: pool}
	sz := m.In.Size()
	out := make([]float32, 0, len(ix.Samples)*m.Out.Size())
	labels := make([]int32, 0, len(ix.Samples))
	done := 0
	for step := 0; step < s.StepsPerEpoch(); step++ {
		b, err := l.Next(ctx)
		if err != nil {
			return nil, nil, err
		}
		xt := tensor.New(tensor.WithShape(append([]int{b.N}, m.In...)...), tensor.WithBacking(b.X[:b.N*sz]))
		y, err := m.Forward(st, xt)
		if err != nil {
			l.Release(b)
			return nil, nil, err
		}
		out = append(out, y.Float32s()...)
		labels = append(labels, b.Y[:b.N]...)
		done += b.N
		l.Release(b)
		if each != nil {
			each(done)
		}
	}
	return out, labels, nil
}
