package worker

import (
	"context"
	"math"
	"sync"
	"testing"

	"github.com/ringtrain/ringtrain/allreduce"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/optim"
)

func mnistSource(t *testing.T) *ArraysSource {
	t.Helper()
	train, _, err := dataset.LoadMNIST("mnist")
	if err != nil {
		t.Fatal(err)
	}
	return NewArraysSource(train, "mnist")
}

// newReplicas builds world identical LeNet replicas (same seed).
func newReplicas(t *testing.T, world int, src Source, s dataset.Sampler) []*Replica {
	t.Helper()
	reps := make([]*Replica, world)
	for i := range reps {
		m, err := nets.Build("lenet", nets.Config{Classes: 10, InChannels: 1, InputSize: 28, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		opt, err := optim.NewSGD(m, optim.SGDConfig{Momentum: 0.9})
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReplica(m, opt, optim.Constant(0.05), s, src, dataset.SamplerState{Seed: 3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = r
	}
	return reps
}

// runSteps runs steps synchronous steps on every replica over comms.
func runSteps(t *testing.T, reps []*Replica, comms []allreduce.Communicator, steps int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(reps))
	for i := range reps {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < steps; k++ {
				if _, err := reps[i].TrainStep(context.Background(), comms[i]); err != nil {
					errs[i] = err
					return
				}
			}
			errs[i] = reps[i].VerifyReplicas(context.Background(), comms[i])
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
}

// Same seed and global batch: world 1 and world 4 end with the same
// weights after 20 steps (up to the order of float additions).
func TestWorld1EqualsWorld4(t *testing.T) {
	src := mnistSource(t)
	s := dataset.Sampler{N: src.Len(), GlobalBatch: 64, Shuffle: true}
	one := newReplicas(t, 1, src, s)
	runSteps(t, one, allreduce.NewMemGroup(1, allreduce.Options{}), 20)
	four := newReplicas(t, 4, src, s)
	runSteps(t, four, allreduce.NewMemGroup(4, allreduce.Options{}), 20)

	a, b := one[0].Model.Data, four[0].Model.Data
	var maxDiff, maxAbs float64
	for i := range a {
		maxDiff = math.Max(maxDiff, math.Abs(float64(a[i]-b[i])))
		maxAbs = math.Max(maxAbs, math.Abs(float64(a[i])))
	}
	if maxDiff > 1e-4*maxAbs {
		t.Fatalf("world 1 vs world 4 after 20 steps: max |Δw| = %g (max |w| = %g)", maxDiff, maxAbs)
	}
	moved := 0.0
	fresh := newReplicas(t, 1, src, s)[0].Model.Data
	for i := range a {
		moved = math.Max(moved, math.Abs(float64(a[i]-fresh[i])))
	}
	if moved < 1e-3 {
		t.Fatalf("weights barely moved (%g): the test would not notice a broken step", moved)
	}
	t.Logf("max |Δw| world1 vs world4: %g (max |w| %g, moved %g)", maxDiff, maxAbs, moved)
}

// Changing the world size mid-epoch keeps exact-once coverage, and Sync
// brings a lagging replica to the most advanced state.
func TestElasticCoverageAndSync(t *testing.T) {
	src := mnistSource(t)
	s := dataset.Sampler{N: 1000, GlobalBatch: 48, Shuffle: true, Last: dataset.Partial}
	reps := newReplicas(t, 3, src, s)
	var mu sync.Mutex
	seen := map[int32]int{}
	for _, r := range reps {
		r.OnSamples = func(epoch int, idx []int32) {
			mu.Lock()
			defer mu.Unlock()
			if epoch == 0 {
				for _, i := range idx {
					seen[i]++
				}
			}
		}
	}
	runSteps(t, reps, allreduce.NewMemGroup(3, allreduce.Options{}), 5)
	// Rank 2 "dies": ranks 0 and 1 form a new ring. Rank 1 pretends it
	// missed the last update; Sync must hand it rank 0's state.
	lag := reps[1]
	lag.Step--
	lag.Pos.Done -= 48
	lag.Model.Data[0] += 1
	comms := allreduce.NewMemGroup(2, allreduce.Options{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if root, err := reps[i].Sync(context.Background(), comms[i], false); err != nil || root != 0 {
				t.Errorf("rank %d sync: root %d, err %v", i, root, err)
			}
		}(i)
	}
	wg.Wait()
	if reps[0].Checksum() != reps[1].Checksum() {
		t.Fatal("replicas differ after Sync")
	}
	steps := (1000 - 5*48 + 47) / 48
	runSteps(t, reps[:2], comms, steps)
	for i := int32(0); i < 1000; i++ {
		if seen[i] != 1 {
			t.Fatalf("sample %d seen %d times in epoch 0", i, seen[i])
		}
	}
	if reps[0].Pos.Epoch != 1 || reps[0].Pos.Done != 0 {
		t.Fatalf("position after the epoch: %+v", reps[0].Pos)
	}
}

// Bucketed all-reduce overlapping backward trains like reducing after
// backward: replicas stay identical and end where the plain path ends.
func TestOverlappedBucketsMatchPlainReduce(t *testing.T) {
	src := mnistSource(t)
	s := dataset.Sampler{N: src.Len(), GlobalBatch: 60, Shuffle: true}
	plain := newReplicas(t, 3, src, s)
	runSteps(t, plain, allreduce.NewMemGroup(3, allreduce.Options{}), 10)

	over := newReplicas(t, 3, src, s)
	comms := allreduce.NewMemGroup(3, allreduce.Options{})
	for i, r := range over {
		// 16 KiB buckets split LeNet into several buckets.
		if err := r.Overlap(comms[i], 16<<10, nil); err != nil {
			t.Fatal(err)
		}
		defer r.CloseOverlap()
	}
	if n := len(over[0].reducer.Buckets()); n < 3 {
		t.Fatalf("only %d buckets: the test would not exercise overlap", n)
	}
	runSteps(t, over, comms, 10)
	a, b := plain[0].Model.Data, over[0].Model.Data
	var maxDiff float64
	for i := range a {
		maxDiff = math.Max(maxDiff, math.Abs(float64(a[i]-b[i])))
	}
	if maxDiff > 1e-5 {
		t.Fatalf("overlapped vs plain after 10 steps: max |Δw| = %g", maxDiff)
	}
	t.Logf("%d buckets; max |Δw| overlapped vs plain: %g", len(over[0].reducer.Buckets()), maxDiff)
}
