package nets

import (
	"math"
	"math/rand/v2"

	"github.com/ringtrain/ringtrain/nn"
)

// Initialisation schemes, as torchvision's model constructors apply them
// after PyTorch's per-layer defaults (which nn.Model.Reset has already set).

// fans returns PyTorch's fan_in and fan_out of a weight tensor
// (torch.nn.init._calculate_fan_in_and_fan_out).
func fans(shape []int) (fanIn, fanOut int) {
	if len(shape) < 2 {
		return shape[0], shape[0]
	}
	rf := 1
	for _, d := range shape[2:] {
		rf *= d
	}
	return shape[1] * rf, shape[0] * rf
}

func normal(rng *rand.Rand, d []float32, std float64) {
	for i := range d {
		d[i] = float32(rng.NormFloat64() * std)
	}
}

// truncNormal is trunc_normal_(0, std, a, b) with absolute bounds a, b:
// values outside [a, b] are redrawn.
func truncNormal(rng *rand.Rand, d []float32, std, a, b float64) {
	for i := range d {
		for {
			v := rng.NormFloat64() * std
			if v >= a && v <= b {
				d[i] = float32(v)
				break
			}
		}
	}
}

func xavierUniform(rng *rand.Rand, p *nn.Param) {
	fi, fo := fans(p.Shape)
	bound := math.Sqrt(6 / float64(fi+fo))
	for i := range p.Data {
		p.Data[i] = float32((rng.Float64()*2 - 1) * bound)
	}
}

// kaimingNormal is kaiming_normal_(nonlinearity="relu") on fan_in or fan_out.
func kaimingNormal(rng *rand.Rand, p *nn.Param, fanOut bool) {
	fi, fo := fans(p.Shape)
	fan := fi
	if fanOut {
		fan = fo
	}
	normal(rng, p.Data, math.Sqrt(2/float64(fan)))
}

func zero(p *nn.Param) {
	if p != nil {
		clear(p.Data)
	}
}

// layerInit applies conv and linear rules to every leaf layer in forward
// order; every other layer, and conv/linear without a rule, gets PyTorch's
// default (BN: weight 1, bias 0).
type layerInit struct {
	conv   func(c *nn.Conv2D, rng *rand.Rand)
	linear func(l *nn.Linear, rng *rand.Rand)
}

func (li layerInit) apply(m *nn.Model, rng *rand.Rand) {
	for _, l := range m.Layers {
		switch v := l.Module.(type) {
		case *nn.Conv2D:
			if li.conv != nil {
				li.conv(v, rng)
				continue
			}
		case *nn.Linear:
			if li.linear != nil {
				li.linear(v, rng)
				continue
			}
		}
		if in, ok := l.Module.(nn.Initializer); ok {
			in.ResetParameters(rng)
		}
	}
}

// initVGG: kaiming_normal(fan_out) conv, bias 0; normal(0, 0.01) linear, bias 0.
func initVGG(m *nn.Model, rng *rand.Rand) {
	layerInit{
		conv:   func(c *nn.Conv2D, rng *rand.Rand) { kaimingNormal(rng, c.Weight, true); zero(c.Bias) },
		linear: func(l *nn.Linear, rng *rand.Rand) { normal(rng, l.Weight.Data, 0.01); zero(l.Bias) },
	}.apply(m, rng)
}

// initResNet: kaiming_normal(fan_out) conv; BN 1/0; linear keeps PyTorch's default.
func initResNet(m *nn.Model, rng *rand.Rand) {
	layerInit{conv: func(c *nn.Conv2D, rng *rand.Rand) { kaimingNormal(rng, c.Weight, true) }}.apply(m, rng)
}

// initDenseNet: kaiming_normal(fan_in) conv; BN 1/0; linear bias 0.
func initDenseNet(m *nn.Model, rng *rand.Rand) {
	layerInit{
		conv:   func(c *nn.Conv2D, rng *rand.Rand) { kaimingNormal(rng, c.Weight, false) },
		linear: func(l *nn.Linear, rng *rand.Rand) { l.ResetParameters(rng); zero(l.Bias) },
	}.apply(m, rng)
}

// initGoogLeNet: trunc_normal(0, 0.01, a=-2, b=2) for conv and linear weights.
func initGoogLeNet(m *nn.Model, rng *rand.Rand) {
	layerInit{
		conv: func(c *nn.Conv2D, rng *rand.Rand) { truncNormal(rng, c.Weight.Data, 0.01, -2, 2) },
		linear: func(l *nn.Linear, rng *rand.Rand) {
			l.ResetParameters(rng) // the bias keeps PyTorch's default
			truncNormal(rng, l.Weight.Data, 0.01, -2, 2)
		},
	}.apply(m, rng)
}

// initNiN: kaiming_normal(fan_in) conv, bias 0. d2l's init_cnn
// (xavier_uniform) leaves NiN's ReLU-ended head stuck at chance for most of
// the first epoch; He initialisation trains at once.
func initNiN(m *nn.Model, rng *rand.Rand) {
	layerInit{conv: func(c *nn.Conv2D, rng *rand.Rand) { kaimingNormal(rng, c.Weight, false); zero(c.Bias) }}.apply(m, rng)
}

// initXavier: d2l's init_cnn (xavier_uniform for conv and linear weights).
func initXavier(m *nn.Model, rng *rand.Rand) {
	layerInit{
		conv:   func(c *nn.Conv2D, rng *rand.Rand) { c.ResetParameters(rng); xavierUniform(rng, c.Weight) },
		linear: func(l *nn.Linear, rng *rand.Rand) { l.ResetParameters(rng); xavierUniform(rng, l.Weight) },
	}.apply(m, rng)
}
