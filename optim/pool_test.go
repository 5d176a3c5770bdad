package optim

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
)

// An optimizer spread over a pool updates every element with the same
// expression, so its results are bitwise those of the serial loop; the
// weights are large enough (3·10⁵) that the pool really splits them.
func TestPoolGivesBitwiseSameUpdates(t *testing.T) {
	pool := kernels.NewPool(2)
	defer pool.Close()
	build := func() *nn.Model {
		m, err := nn.NewModel(nn.NewSequential(nn.NewLinear(600, 500, true)), nn.Shape{600})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	mk := map[string]func(m *nn.Model) (Optimizer, error){
		"sgd-nesterov-wd": func(m *nn.Model) (Optimizer, error) {
			return NewSGD(m, SGDConfig{Momentum: 0.9, Nesterov: true, WeightDecay: 1e-4})
		},
		"adamw": func(m *nn.Model) (Optimizer, error) {
			c := DefaultAdam()
			c.WeightDecay, c.Decoupled = 0.01, true
			return NewAdam(m, c)
		},
	}
	for name, newOpt := range mk {
		t.Run(name, func(t *testing.T) {
			serial, parallel := build(), build()
			os, err := newOpt(serial)
			if err != nil {
				t.Fatal(err)
			}
			op, _ := newOpt(parallel)
			UsePool(op, pool)
			rng := rand.New(rand.NewPCG(3, 4))
			for step := 0; step < 3; step++ {
				for i := range serial.Grad {
					g := float32(rng.NormFloat64())
					serial.Grad[i], parallel.Grad[i] = g, g
				}
				os.Step(0.01)
				op.Step(0.01)
			}
			for i := range serial.Data {
				if math.Float32bits(serial.Data[i]) != math.Float32bits(parallel.Data[i]) {
					t.Fatalf("weight %d: serial %v, pooled %v", i, serial.Data[i], parallel.Data[i])
				}
			}
		})
	}
}
