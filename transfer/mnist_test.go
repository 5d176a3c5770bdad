package transfer_test

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/objstore"
	"github.com/ringtrain/ringtrain/optim"
	"github.com/ringtrain/ringtrain/transfer"
	"gorgonia.org/tensor"
)

// Transfer on real data: LeNet pretrained on MNIST, saved as a checkpoint,
// its convolutions frozen under a new head fine-tuned on Fashion-MNIST,
// compared with the same architecture trained from scratch for as many
// steps.

const (
	xferBatch = 64
	xferSteps = 300
	preSteps  = 500
	// fineHead replaces LeNet's classifier with a fresh one of the same shape.
	fineHead   = "flatten,dense:120:relu,dense:84:relu,dense:10"
	freezeLast = "features.5" // LeNet's second pool: both convolutions frozen
)

func loadData(t *testing.T, name string) (train, test *dataset.Arrays) {
	t.Helper()
	train, test, err := dataset.LoadMNIST(name)
	if err != nil {
		t.Skipf("%s not installed (%v): apt-get install dataset-%s", name, err, name)
	}
	return train, test
}

// trainSteps runs steps of SGD (momentum 0.9, constant lr) over shuffled
// batches of data normalised with mean/std, and returns the mean loss of
// the last 50 steps.
func trainSteps(t *testing.T, m *nn.Model, pool *kernels.Pool, data *dataset.Arrays, mean, std float32, steps int, lr float64, seed uint64) float64 {
	t.Helper()
	opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	st := &nn.State{Train: true, Pool: pool, RNG: rand.New(rand.NewPCG(seed, 8))}
	loss := &nn.CrossEntropy{}
	sample := data.C * data.H * data.W
	xbuf := make([]float32, xferBatch*sample)
	x := tensor.New(tensor.WithShape(xferBatch, data.C, data.H, data.W), tensor.WithBacking(xbuf))
	labels := make([]int32, xferBatch)
	var tail float64
	for s := 0; s < steps; s++ {
		for b := 0; b < xferBatch; b++ {
			idx := rng.IntN(data.N)
			for j, v := range data.Sample(idx) {
				xbuf[b*sample+j] = (v - mean) / std
			}
			labels[b] = data.Labels[idx]
		}
		m.ZeroGrad()
		logits, err := m.Forward(st, x)
		if err != nil {
			t.Fatal(err)
		}
		l, err := loss.Forward(logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		if math.IsNaN(float64(l)) {
			t.Fatalf("step %d: loss is NaN", s)
		}
		if err := m.Backward(st, loss.Backward()); err != nil {
			t.Fatal(err)
		}
		opt.Step(lr)
		if s >= steps-50 {
			tail += float64(l) / 50
		}
	}
	return tail
}

// accuracy is top-1 on the whole split (eval mode).
func accuracy(t *testing.T, m *nn.Model, pool *kernels.Pool, data *dataset.Arrays, mean, std float32) float64 {
	t.Helper()
	sample := data.C * data.H * data.W
	x := make([]float32, len(data.Images))
	for i, v := range data.Images {
		x[i] = (v - mean) / std
	}
	logits, err := transfer.Run(m, pool, x, 500, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := m.Out[0]
	if len(logits) != data.N*k || len(x) != data.N*sample {
		t.Fatalf("%d logits for %d samples of %d classes", len(logits), data.N, k)
	}
	correct := 0
	for i := 0; i < data.N; i++ {
		if transfer.TopK(logits[i*k:(i+1)*k], 1, nil)[0].Index == int(data.Labels[i]) {
			correct++
		}
	}
	return float64(correct) / float64(data.N)
}

func snapshot(m *nn.Model, prefix string) map[string][]float32 {
	s := map[string][]float32{}
	for _, p := range m.State {
		if strings.HasPrefix(p.Name, prefix) {
			s[p.Name] = append([]float32(nil), p.Data...)
		}
	}
	return s
}

func TestFinetuneMNISTToFashion(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three LeNets on real data (~20 s)")
	}
	ctx := context.Background()
	mnist, mnistTest := loadData(t, "mnist")
	fashion, fashionTest := loadData(t, "fashion-mnist")
	pool := kernels.NewPool(2)
	defer pool.Close()
	cfg := nets.Config{Classes: 10, InChannels: 1, InputSize: 28, Seed: 1}
	const mnistMean, mnistStd, fashMean, fashStd = 0.1307, 0.3081, 0.2860, 0.3530

	// 1. Pretrain on MNIST.
	start := time.Now()
	pre, err := nets.Build("lenet", cfg)
	if err != nil {
		t.Fatal(err)
	}
	preLoss := trainSteps(t, pre, pool, mnist, mnistMean, mnistStd, preSteps, 0.05, 1)
	preAcc := accuracy(t, pre, pool, mnistTest, mnistMean, mnistStd)
	t.Logf("pretrain lenet on MNIST: %d steps × %d, loss %.4f, test accuracy %.2f%% (%.1fs)", preSteps, xferBatch, preLoss, 100*preAcc, time.Since(start).Seconds())
	if preAcc < 0.95 {
		t.Fatalf("MNIST pretraining reached %.2f%%, want ≥ 95%%", 100*preAcc)
	}

	// 2. Save it as a checkpoint and read it back, as a fine-tuning job would.
	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: "checkpoints", Run: "lenet-mnist", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Save(ctx, checkpoint.Manifest{Run: "lenet-mnist", Net: "lenet", Classes: 10, Step: preSteps,
		Metrics: map[string]float64{"val_acc": preAcc}}, modelio.Tensors(pre), nil); err != nil {
		t.Fatal(err)
	}
	ck, _, err := store.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// 3. Fine-tune: pretrained convolutions frozen, a new head.
	start = time.Now()
	ft, rep, err := transfer.BuildFinetune(transfer.FinetuneConfig{Net: "lenet", Base: cfg, From: ck.Weights,
		Head: fineHead, FreezeUntil: freezeLast, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The base's four convolution tensors load; the old classifier is unexpected.
	if len(rep.Loaded) != 4 || len(rep.Unexpected) != 6 {
		t.Fatalf("fine-tune load: %s, want 4 loaded (features.{0,3}.{weight,bias}) and the 6 old classifier tensors unexpected", rep)
	}
	frozen := snapshot(ft, "features.")
	for name, v := range snapshot(pre, "features.") {
		if got := frozen[name]; len(got) != len(v) || got[0] != v[0] || got[len(v)-1] != v[len(v)-1] {
			t.Fatalf("%s: fine-tune model does not hold the pretrained values", name)
		}
	}
	headBefore := snapshot(ft, "head.")
	ftAcc0 := accuracy(t, ft, pool, fashionTest, fashMean, fashStd)
	ftLoss := trainSteps(t, ft, pool, fashion, fashMean, fashStd, xferSteps, 0.02, 3)
	ftAcc := accuracy(t, ft, pool, fashionTest, fashMean, fashStd)
	t.Logf("fine-tune (convs frozen from MNIST) on Fashion-MNIST: %d steps, loss %.4f, test accuracy %.2f%% (before: %.2f%%) (%.1fs)",
		xferSteps, ftLoss, 100*ftAcc, 100*ftAcc0, time.Since(start).Seconds())

	for name, before := range frozen {
		p, _ := ft.Param(name)
		for i := range before {
			if math.Float32bits(p.Data[i]) != math.Float32bits(before[i]) {
				t.Fatalf("frozen %s[%d] changed during fine-tuning: %v -> %v", name, i, before[i], p.Data[i])
			}
		}
	}
	changed := 0
	for name, before := range headBefore {
		p, _ := ft.Param(name)
		for i := range before {
			if p.Data[i] != before[i] {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Fatal("the head did not change during fine-tuning")
	}
	if ftAcc < 0.70 {
		t.Errorf("fine-tuned head reached %.2f%% on Fashion-MNIST, want ≥ 70%% (chance 10%%)", 100*ftAcc)
	}

	// 4. The same architecture from scratch, as many steps, everything trainable.
	start = time.Now()
	scratch, err := nets.Build("lenet", nets.Config{Classes: 10, InChannels: 1, InputSize: 28, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	scLoss := trainSteps(t, scratch, pool, fashion, fashMean, fashStd, xferSteps, 0.02, 3)
	scAcc := accuracy(t, scratch, pool, fashionTest, fashMean, fashStd)
	t.Logf("from scratch on Fashion-MNIST: %d steps, loss %.4f, test accuracy %.2f%% (%.1fs)", xferSteps, scLoss, 100*scAcc, time.Since(start).Seconds())
	t.Logf("Fashion-MNIST after %d steps: fine-tuned (frozen MNIST convs) %.2f%% vs scratch %.2f%%", xferSteps, 100*ftAcc, 100*scAcc)
	if scAcc < 0.70 {
		t.Errorf("from-scratch LeNet reached %.2f%% on Fashion-MNIST, want ≥ 70%%", 100*scAcc)
	}
}
