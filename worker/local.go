// Package worker is the training loop wired together: data -> forward ->
// backward -> (all-reduce) -> optimizer step. LocalConfig/TrainLocal is the
// single-process loop over an in-memory dataset.
package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/internal/progress"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/optim"
	"gorgonia.org/tensor"
)

// LocalConfig configures a single-process training run.
type LocalConfig struct {
	Net            string
	Dataset        string // mnist | fashion-mnist
	Epochs         int
	Batch          int
	Optimizer      string // sgd | adam | adamw
	LR             float64
	Momentum       float64
	WeightDecay    float64
	Nesterov       bool
	LabelSmoothing float64
	Schedule       optim.ScheduleConfig
	Threads        int
	Seed           uint64
	// MaxSteps stops each epoch early when > 0 (smoke tests).
	MaxSteps int
	Log      *slog.Logger
	Progress io.Writer // nil: no progress display
}

// Validate names the first bad field.
func (c LocalConfig) Validate() error {
	switch {
	case c.Net == "":
		return fmt.Errorf("net: required")
	case c.Epochs < 1:
		return fmt.Errorf("epochs: %d must be ≥ 1", c.Epochs)
	case c.Batch < 1:
		return fmt.Errorf("batch: %d must be ≥ 1", c.Batch)
	case c.LR <= 0:
		return fmt.Errorf("lr: %v must be > 0", c.LR)
	case c.Threads < 0:
		return fmt.Errorf("threads: %d must be ≥ 0 (0 = all cores)", c.Threads)
	case c.LabelSmoothing < 0 || c.LabelSmoothing >= 1:
		return fmt.Errorf("label-smoothing: %v outside [0, 1)", c.LabelSmoothing)
	}
	switch c.Optimizer {
	case "sgd", "adam", "adamw":
	default:
		return fmt.Errorf("optimizer: %q is not sgd, adam or adamw", c.Optimizer)
	}
	return nil
}

// Result summarises a finished run.
type Result struct {
	TestAccuracy float64
	TrainLoss    float64 // mean over the last epoch
	Seconds      float64
	ImagesPerSec float64 // training images per second
	Steps        int
}

// normalization returns the per-dataset mean/std used for grey images.
func normalization(name string) (mean, std float32) {
	switch name {
	case "fashion-mnist":
		return 0.2860, 0.3530
	default:
		return 0.1307, 0.3081
	}
}

// NewOptimizer builds the optimizer named in cfg over m.
func NewOptimizer(m *nn.Model, kind string, momentum, weightDecay float64, nesterov bool) (optim.Optimizer, error) {
	switch kind {
	case "sgd":
		return optim.NewSGD(m, optim.SGDConfig{Momentum: momentum, WeightDecay: weightDecay, Nesterov: nesterov})
	case "adam", "adamw":
		c := optim.DefaultAdam()
		c.WeightDecay, c.Decoupled = weightDecay, kind == "adamw"
		return optim.NewAdam(m, c)
	}
	return nil, fmt.Errorf("optimizer: unknown %q", kind)
}

// TrainLocal trains cfg.Net on cfg.Dataset in this process and evaluates
// on the test split after every epoch.
func TrainLocal(ctx context.Context, cfg LocalConfig) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, fmt.Errorf("train config: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	train, test, err := dataset.LoadMNIST(cfg.Dataset)
	if err != nil {
		return Result{}, err
	}
	model, err := nets.Build(cfg.Net, nets.Config{Classes: len(train.Classes), InChannels: train.C, InputSize: train.H, Seed: cfg.Seed})
	if err != nil {
		return Result{}, err
	}
	threads := cfg.Threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	pool := kernels.NewPool(threads)
	defer pool.Close()
	opt, err := NewOptimizer(model, cfg.Optimizer, cfg.Momentum, cfg.WeightDecay, cfg.Nesterov)
	if err != nil {
		return Result{}, err
	}
	optim.UsePool(opt, pool)
	stepsPerEpoch := train.N / cfg.Batch // drop_last
	if cfg.MaxSteps > 0 {
		stepsPerEpoch = min(stepsPerEpoch, cfg.MaxSteps)
	}
	sched, err := cfg.Schedule.Build(cfg.LR, stepsPerEpoch*cfg.Epochs)
	if err != nil {
		return Result{}, err
	}
	total, _ := model.NumParams()
	log.Info("training", "net", cfg.Net, "dataset", cfg.Dataset, "params", total, "train", train.N, "test", test.N,
		"batch", cfg.Batch, "epochs", cfg.Epochs, "threads", threads)

	mean, std := normalization(cfg.Dataset)
	st := &nn.State{Train: true, Pool: pool, RNG: rand.New(rand.NewPCG(cfg.Seed, 1))}
	loss := &nn.CrossEntropy{LabelSmoothing: float32(cfg.LabelSmoothing)}
	sample := train.C * train.H * train.W
	xbuf := make([]float32, cfg.Batch*sample)
	x := tensor.New(tensor.WithShape(cfg.Batch, train.C, train.H, train.W), tensor.WithBacking(xbuf))
	labels := make([]int32, cfg.Batch)
	perm := make([]int, train.N)

	var res Result
	start := time.Now()
	step := 0
	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(epoch)))
		for i := range perm {
			perm[i] = i
		}
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var bar *progress.Bar
		if cfg.Progress != nil {
			bar = progress.New(cfg.Progress, fmt.Sprintf("epoch %d/%d", epoch+1, cfg.Epochs), int64(stepsPerEpoch*cfg.Batch), "img")
		}
		var sumLoss float64
		var correct, seen int
		for s := 0; s < stepsPerEpoch; s++ {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			for b := 0; b < cfg.Batch; b++ {
				idx := perm[s*cfg.Batch+b]
				dst := xbuf[b*sample : (b+1)*sample]
				for j, v := range train.Sample(idx) {
					dst[j] = (v - mean) / std
				}
				labels[b] = train.Labels[idx]
			}
			model.ZeroGrad()
			logits, err := model.Forward(st, x)
			if err != nil {
				return res, err
			}
			l, err := loss.Forward(logits, labels)
			if err != nil {
				return res, err
			}
			correct += nn.Correct(logits, labels)
			seen += cfg.Batch
			if err := model.Backward(st, loss.Backward()); err != nil {
				return res, err
			}
			opt.Step(sched.LR(step))
			step++
			sumLoss += float64(l)
			if bar != nil {
				bar.Add(int64(cfg.Batch), fmt.Sprintf("loss %.4f acc %.2f%%", sumLoss/float64(s+1), 100*float64(correct)/float64(seen)))
			}
		}
		res.TrainLoss = sumLoss / float64(max(stepsPerEpoch, 1))
		acc, err := Evaluate(model, pool, test, mean, std, 500)
		if err != nil {
			return res, err
		}
		res.TestAccuracy = acc
		if bar != nil {
			bar.Done(fmt.Sprintf("loss %.4f train-acc %.2f%% test-acc %.2f%%", res.TrainLoss, 100*float64(correct)/float64(max(seen, 1)), 100*acc))
		}
		log.Info("epoch", "epoch", epoch+1, "loss", res.TrainLoss, "test_accuracy", acc)
	}
	res.Steps = step
	res.Seconds = time.Since(start).Seconds()
	res.ImagesPerSec = float64(step*cfg.Batch) / res.Seconds
	return res, nil
}

// Evaluate returns top-1 accuracy of model on a whole in-memory split.
func Evaluate(model *nn.Model, pool *kernels.Pool, data *dataset.Arrays, mean, std float32, batch int) (float64, error) {
	st := &nn.State{Inference: true, Pool: pool}
	sample := data.C * data.H * data.W
	xbuf := make([]float32, batch*sample)
	correct := 0
	for lo := 0; lo < data.N; lo += batch {
		n := min(batch, data.N-lo)
		for j, v := range data.Images[lo*sample : (lo+n)*sample] {
			xbuf[j] = (v - mean) / std
		}
		x := tensor.New(tensor.WithShape(n, data.C, data.H, data.W), tensor.WithBacking(xbuf[:n*sample]))
		logits, err := model.Forward(st, x)
		if err != nil {
			return 0, err
		}
		correct += nn.Correct(logits, data.Labels[lo:lo+n])
	}
	return float64(correct) / float64(data.N), nil
}
