package worker

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/coordinator"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/transfer"
)

// ReadPretrained reads the tensors a transfer spec starts from: a weights
// file (.pth, .pt, .safetensors) or a checkpoint run location, optionally
// @STEP (default: the newest good checkpoint).
func ReadPretrained(ctx context.Context, from string, s3 objstore.S3Config) ([]checkpoint.Tensor, error) {
	switch strings.ToLower(path.Ext(from)) {
	case ".pth", ".pt", ".safetensors":
		if !strings.HasPrefix(from, "s3://") {
			ts, _, err := checkpoint.ReadTensorFile(from)
			return ts, err
		}
		return nil, fmt.Errorf("pretrained weights %s: weight files must be local; put checkpoints on S3", from)
	}
	loc, step := from, int64(-1)
	if i := strings.LastIndex(from, "@"); i > 0 {
		n, err := strconv.ParseInt(from[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("pretrained checkpoint %s: step after @ is not a number", from)
		}
		loc, step = from[:i], n
	}
	var objs objstore.Store
	var prefix string
	var err error
	if _, _, isS3, _ := objstore.ParseURI(loc); isS3 {
		objs, prefix, err = objstore.Open(ctx, loc, s3)
	} else {
		// A local location is the run's own folder: the store is its parent.
		run := strings.TrimSuffix(strings.TrimPrefix(loc, "file://"), "/")
		objs, err = objstore.NewLocal(filepath.Dir(run))
		prefix = filepath.Base(run)
	}
	if err != nil {
		return nil, fmt.Errorf("pretrained checkpoint %s: %w", from, err)
	}
	dir, run := path.Split(strings.TrimSuffix(prefix, "/"))
	if run == "" {
		return nil, fmt.Errorf("pretrained checkpoint %s: name the run (…/<prefix>/<run>)", from)
	}
	st, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: strings.TrimSuffix(dir, "/"), Run: run})
	if err != nil {
		return nil, err
	}
	var ck *checkpoint.Checkpoint
	if step >= 0 {
		ck, err = st.Load(ctx, step)
	} else {
		ck, _, err = st.Latest(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("pretrained checkpoint %s: %w", from, err)
	}
	return ck.Weights, nil
}

// BuildModel builds the spec's network: the plain architecture, or a
// fine-tuning model when the spec has a transfer section.
func BuildModel(ctx context.Context, spec coordinator.JobSpec, s3 objstore.S3Config) (*nn.Model, string, error) {
	cfg := nets.Config{Classes: spec.Classes, InChannels: spec.Input.Channels, InputSize: spec.Input.Height, Seed: spec.Seed}
	t := spec.Transfer
	if t == nil {
		m, err := nets.Build(spec.Net, cfg)
		return m, "", err
	}
	from, err := ReadPretrained(ctx, t.From, s3)
	if err != nil {
		return nil, "", err
	}
	m, rep, err := transfer.BuildFinetune(transfer.FinetuneConfig{Net: spec.Net, Base: cfg, From: from, Head: t.Head,
		FreezeFirst: t.Freeze, FreezeUntil: t.FreezeUntil, Seed: spec.Seed})
	if err != nil {
		return nil, "", err
	}
	if len(m.Out) != 1 || m.Out[0] != spec.Classes {
		return nil, "", fmt.Errorf("spec.transfer.head: the model outputs %v, spec.classes is %d", m.Out, spec.Classes)
	}
	return m, fmt.Sprintf("pretrained from %s: %s", t.From, rep), nil
}
