package transfer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
)

func TestImageNetClasses(t *testing.T) {
	c := ImageNetClasses()
	if len(c) != 1000 || c[0] != "tench" || c[281] != "tabby" || c[999] != "toilet tissue" {
		t.Fatalf("classes: %d, [0]=%q [281]=%q [999]=%q", len(c), c[0], c[281], c[len(c)-1])
	}
}

func TestTopK(t *testing.T) {
	p := []float32{0.1, 0.5, 0.05, 0.3, 0.05}
	got := TopK(p, 3, []string{"a", "b", "c", "d", "e"})
	want := []string{"b", "d", "a"}
	for i, g := range got {
		if g.Name != want[i] || g.Prob != p[g.Index] {
			t.Fatalf("top-3 = %+v, want names %v", got, want)
		}
	}
	if tie := TopK(p, 5, nil); tie[3].Index != 2 || tie[4].Index != 4 || tie[3].Name != "2" {
		t.Fatalf("ties must keep index order: %+v", tie)
	}
}

func TestParseHeadErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                 "empty",
		"dense:10":         "flat input",
		"gap,dense:x":      "units",
		"gap,dense:4:tanh": "activation",
		"gap,dropout:1.5":  "probability",
		"gap,conv:3":       "unknown layer",
		"flatten,gap":      "global pooling",
	} {
		_, _, err := ParseHead(spec, nn.Shape{16, 5, 5})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseHead(%q) error %v, want it to mention %q", spec, err, want)
		}
	}
}

// A head on a featureless LeNet keeps the base's names and values.
func TestAttachHeadKeepsNames(t *testing.T) {
	base, err := nets.Build("lenet", nets.Config{Classes: 10, InChannels: 1, InputSize: 28, NoTop: true})
	if err != nil {
		t.Fatal(err)
	}
	w0 := append([]float32(nil), base.State[0].Data...)
	name0 := base.State[0].Name
	head, out, err := ParseHead("gap,dense:32:relu,dropout:0.5,dense:3", base.Out)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Equal(nn.Shape{3}) {
		t.Fatalf("head output %v", out)
	}
	m, err := AttachHead(base, head, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := m.Param(name0)
	if !ok || p.Data[0] != w0[0] || p.Data[len(w0)-1] != w0[len(w0)-1] {
		t.Fatalf("base parameter %s lost or changed", name0)
	}
	w, ok := m.Param("head.2.weight") // head.0 pool, head.1 flatten
	if !ok {
		t.Fatalf("no head.2.weight in %v", names(m))
	}
	nonzero := 0
	for _, v := range w.Data {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero < len(w.Data)/2 {
		t.Fatalf("head not initialised: %d of %d weights non-zero", nonzero, len(w.Data))
	}
}

func names(m *nn.Model) []string {
	var s []string
	for _, p := range m.State {
		s = append(s, p.Name)
	}
	return s
}
