package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/objstore"
	"go.uber.org/zap"
)

// builtinPrefix names the datasets that ship with ringtrain:
// builtin:mnist, builtin:fashion-mnist (IDX files, held in memory).
const builtinPrefix = "builtin:"

// OpenSources opens the spec's training and evaluation data.
func OpenSources(ctx context.Context, spec coordinator.JobSpec, s3 objstore.S3Config) (train, eval Source, err error) {
	uri := spec.Dataset.URI
	if name, ok := strings.CutPrefix(uri, builtinPrefix); ok {
		tr, te, err := dataset.LoadMNIST(name)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.dataset.uri %q: %w", uri, err)
		}
		train = NewArraysSource(tr, name)
		if spec.Eval.URI == uri+"/test" || spec.Eval.URI == uri {
			eval = NewArraysSource(te, name)
		}
		if err := checkShape(spec, train); err != nil {
			return nil, nil, err
		}
		return train, eval, nil
	}
	tc := dataset.TransformConfig{Size: spec.Input.Height, Channels: spec.Input.Channels, Preprocess: dataset.Unit}
	if p, err := dataset.ParsePreprocess(spec.Dataset.Preprocess); err == nil && spec.Dataset.Preprocess != "" {
		tc.Preprocess = p
	} else if err != nil {
		return nil, nil, fmt.Errorf("spec.dataset.preprocess: %w", err)
	}
	tr, err := openStream(ctx, uri, s3, tc, slog.Default())
	if err != nil {
		return nil, nil, err
	}
	if err := checkShape(spec, tr); err != nil {
		return nil, nil, err
	}
	var ev Source
	if spec.Eval.URI != "" {
		e, err := openStream(ctx, spec.Eval.URI, s3, tc, slog.Default())
		if err != nil {
			return nil, nil, err
		}
		ev = e
	}
	return tr, ev, nil
}

func checkShape(spec coordinator.JobSpec, s Source) error {
	sh := s.Shape()
	if sh[0] != spec.Input.Channels || sh[1] != spec.Input.Height || sh[2] != spec.Input.Width {
		return fmt.Errorf("spec.input: %dx%dx%d, but the dataset's samples are %v", spec.Input.Channels, spec.Input.Height, spec.Input.Width, sh)
	}
	if n := len(s.Classes()); n != spec.Classes {
		return fmt.Errorf("spec.classes: %d, but the dataset has %d classes", spec.Classes, n)
	}
	return nil
}

// quietZap keeps the etcd client's internal logging to errors.
func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
