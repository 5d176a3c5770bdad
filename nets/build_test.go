package nets

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/nn"
)

// familyHead is one net per family, for the default (non-slow) test run.
var familyHead = map[string]bool{"lenet": true, "alexnet": true, "alexnet-2012": true, "nin": true,
	"vgg11": true, "vgg11_bn": true, "googlenet": true, "resnet18": true, "resnet50": true, "densenet121": true}

// TestMinInput: every net builds at its Spec.MinInput, and one pixel less
// really does not build (checked on the raw module tree, bypassing Build's
// own guard), while Build reports the minimum clearly.
func TestMinInput(t *testing.T) {
	for _, name := range Names() {
		spec, _ := Lookup(name)
		t.Run(name, func(t *testing.T) {
			cfg := Config{Classes: 10, NoTop: true, InputSize: spec.MinInput} // the classifiers accept any size
			if !familyHead[name] && !slow() {
				t.Skip("RINGTRAIN_SLOW=1 only: the family's first net shares its minimum")
			}
			if _, err := Build(name, cfg); err != nil {
				t.Fatalf("at its minimum %d: %v", spec.MinInput, err)
			}
			if spec.MinInput <= 1 {
				return
			}
			cfg.InputSize = spec.MinInput - 1
			_, err := Build(name, cfg)
			if err == nil || !strings.Contains(err.Error(), "below its minimum") {
				t.Errorf("Build below the minimum: err %v, want a 'below its minimum' error", err)
			}
			cfg.InChannels = spec.DefaultChannels
			root, err := spec.build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = nn.NewModel(root, nn.Shape{cfg.InChannels, cfg.InputSize, cfg.InputSize})
			var le *nn.LayerError
			if err == nil || !errors.As(err, &le) {
				t.Errorf("raw build at %d: err %v, want a layer error (MinInput %d is too large)", cfg.InputSize, err, spec.MinInput)
			}
		})
	}
}

// TestOptions: classes, channels, input size, include_top=false and global
// pooling give the expected output shapes (small nets; VGG's and AlexNet's
// classifiers are checked by TestTorchvisionKeys).
func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		net  string
		cfg  Config
		want nn.Shape
	}{
		{"lenet", Config{Classes: 7, InputSize: 32}, nn.Shape{7}},
		{"vgg16", Config{NoTop: true}, nn.Shape{512, 7, 7}},
		{"vgg11_bn", Config{NoTop: true, InputSize: 32, InChannels: 1, Pooling: "max"}, nn.Shape{512}},
		{"alexnet", Config{NoTop: true}, nn.Shape{256, 6, 6}},
		{"alexnet-2012", Config{NoTop: true}, nn.Shape{256, 6, 6}},
		{"nin", Config{Classes: 10, InChannels: 1}, nn.Shape{10}},
		{"nin", Config{NoTop: true}, nn.Shape{384, 5, 5}},
		{"resnet18", Config{Classes: 10, InputSize: 32, InChannels: 1}, nn.Shape{10}},
		{"resnet18", Config{NoTop: true}, nn.Shape{512, 7, 7}},
		{"resnet50", Config{NoTop: true, Pooling: "avg", InputSize: 64}, nn.Shape{2048}},
		{"resnet50", Config{Classes: 10, InputSize: 28}, nn.Shape{10}},
		{"densenet121", Config{NoTop: true}, nn.Shape{1024, 7, 7}},
		{"densenet121", Config{Classes: 10, InputSize: 32}, nn.Shape{10}},
		{"densenet121", Config{NoTop: true, Pooling: "max", InputSize: 32}, nn.Shape{1024}},
		{"googlenet", Config{NoTop: true}, nn.Shape{1024, 7, 7}},
		{"googlenet", Config{Classes: 10, InputSize: 28, InChannels: 1}, nn.Shape{10}},
	} {
		m, err := Build(tc.net, tc.cfg)
		if err != nil {
			t.Errorf("%s %+v: %v", tc.net, tc.cfg, err)
			continue
		}
		if !m.Out.Equal(tc.want) {
			t.Errorf("%s %+v: output %v, want %v", tc.net, tc.cfg, m.Out, tc.want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		net  string
		cfg  Config
		want string
	}{
		{"resnet7", Config{}, "unknown architecture"},
		{"resnet18", Config{Pooling: "avg"}, "only without the top"},
		{"resnet18", Config{NoTop: true, Pooling: "sum"}, "must be avg or max"},
		{"vgg11", Config{InputSize: 28}, "below its minimum of 32×32"},
		{"googlenet", Config{AuxLogits: true, NoTop: true}, "auxiliary"},
		{"resnet18", Config{Classes: -1}, "classes"},
	} {
		_, err := Build(tc.net, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: err %v, want one containing %q", tc.net, tc.cfg, err, tc.want)
		}
	}
}

// TestPreprocess: every spec names a known preprocessing mode.
func TestPreprocess(t *testing.T) {
	want := map[string]string{"vgg16": "caffe", "resnet50": "torch", "densenet121": "torch", "googlenet": "torch", "alexnet": "torch"}
	for _, name := range Names() {
		s, _ := Lookup(name)
		switch s.Preprocess {
		case "caffe", "torch", "tf", "unit":
		default:
			t.Errorf("%s: preprocess %q", name, s.Preprocess)
		}
		if w, ok := want[name]; ok && s.Preprocess != w {
			t.Errorf("%s: preprocess %q, want %q", name, s.Preprocess, w)
		}
	}
}

// TestInit checks torchvision's initialisation statistics on a few layers.
func TestInit(t *testing.T) {
	stats := func(d []float32) (mean, std float64) {
		for _, v := range d {
			mean += float64(v)
		}
		mean /= float64(len(d))
		for _, v := range d {
			std += (float64(v) - mean) * (float64(v) - mean)
		}
		return mean, math.Sqrt(std / float64(len(d)))
	}
	for _, tc := range []struct {
		net, param string
		cfg        Config
		std        float64 // 0: every value must equal val
		val        float32
	}{
		{"resnet18", "layer1.0.conv1.weight", Config{Classes: 10, InputSize: 32}, math.Sqrt(2.0 / (64 * 9)), 0}, // fan_out
		{"resnet18", "layer2.0.bn1.weight", Config{Classes: 10, InputSize: 32}, 0, 1},
		{"resnet18", "layer2.0.bn1.bias", Config{Classes: 10, InputSize: 32}, 0, 0},
		{"densenet121", "features.denseblock2.denselayer3.conv1.weight", Config{Classes: 10, InputSize: 32}, math.Sqrt(2.0 / 192), 0}, // fan_in
		{"densenet121", "classifier.bias", Config{Classes: 10, InputSize: 32}, 0, 0},
		{"googlenet", "inception4a.branch2.1.conv.weight", Config{Classes: 10, InputSize: 32}, 0.01, 0},
		{"vgg11_bn", "features.4.weight", Config{NoTop: true, InputSize: 32}, math.Sqrt(2.0 / (128 * 9)), 0},
		{"vgg11_bn", "features.4.bias", Config{NoTop: true, InputSize: 32}, 0, 0},
		{"nin", "4.0.weight", Config{NoTop: true, InputSize: 67}, math.Sqrt(2.0 / (256 * 9)), 0}, // He, fan_in
	} {
		m, err := Build(tc.net, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := m.Param(tc.param)
		if !ok {
			t.Fatalf("%s: no %s", tc.net, tc.param)
		}
		mean, std := stats(p.Data)
		if tc.std == 0 {
			for i, v := range p.Data {
				if v != tc.val {
					t.Errorf("%s %s[%d] = %v, want %v", tc.net, tc.param, i, v, tc.val)
					break
				}
			}
			continue
		}
		if math.Abs(std/tc.std-1) > 0.05 || math.Abs(mean) > 3*tc.std/math.Sqrt(float64(len(p.Data))) {
			t.Errorf("%s %s: mean %.4g std %.4g, want 0 and %.4g", tc.net, tc.param, mean, std, tc.std)
		}
	}
}
