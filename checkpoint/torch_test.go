package checkpoint

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// loadRef reads NAME.ref.json/.ref.bin written by scripts/gen_pth.py.
func loadRef(t *testing.T, prefix string) []Tensor {
	t.Helper()
	var index []struct {
		Name   string `json:"name"`
		Shape  []int  `json:"shape"`
		DType  DType  `json:"dtype"`
		Offset int    `json:"offset"`
		Numel  int    `json:"numel"`
	}
	jb, err := os.ReadFile(prefix + ".ref.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(jb, &index); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(prefix + ".ref.bin")
	if err != nil {
		t.Fatal(err)
	}
	var out []Tensor
	for _, e := range index {
		data := make([]float32, e.Numel)
		for i := range data {
			data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(e.Offset+i):]))
		}
		out = append(out, Tensor{Name: e.Name, Shape: e.Shape, DType: e.DType, Data: data})
	}
	return out
}

// sameBits compares tensors exactly, bit for bit.
func sameBits(t *testing.T, got, want []Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || !reflect.DeepEqual(g.Shape, w.Shape) || g.DType != w.DType {
			t.Fatalf("tensor %d: got %s %v %s, want %s %v %s", i, g.Name, g.Shape, g.DType, w.Name, w.Shape, w.DType)
		}
		for j := range w.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
				t.Fatalf("%s[%d] = %v, PyTorch wrote %v", w.Name, j, g.Data[j], w.Data[j])
			}
		}
	}
}

func TestReadPyTorchFixtures(t *testing.T) {
	tests := []struct{ file, ref string }{
		{"tiny.pth", "tiny"},
		{"tiny_legacy.pth", "tiny"},
		{"tiny.safetensors", "tiny"},
		{"tiny_f16.safetensors", "tiny_f16"},
		{"tiny_bf16.safetensors", "tiny_bf16"},
		{"tiny_f64.safetensors", "tiny_f64"},
		{"views.pth", "views"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, _, err := ReadTensorFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			sameBits(t, got, loadRef(t, filepath.Join("testdata", tc.ref)))
		})
	}
}

func TestReadPTHErrors(t *testing.T) {
	good, err := os.ReadFile("testdata/tiny.pth")
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := os.ReadFile("testdata/tiny_legacy.pth")
	if err != nil {
		t.Fatal(err)
	}
	// A zip whose data.pkl names a storage record that is absent.
	var noData bytes.Buffer
	zw := zip.NewWriter(&noData)
	zr, _ := zip.NewReader(bytes.NewReader(good), int64(len(good)))
	for _, f := range zr.File {
		if strings.Contains(f.Name, "/data/") {
			continue
		}
		w, _ := zw.Create(f.Name)
		rc, _ := f.Open()
		io.Copy(w, rc)
		rc.Close()
	}
	zw.Close()
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "file of 0 bytes"},
		{"text", []byte("hello world"), "neither a zip"},
		{"truncated zip", good[:len(good)/2], "open zip"},
		{"missing storage", noData.Bytes(), "no record"},
		{"truncated legacy", legacy[:len(legacy)-10], "legacy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadPTH(bytes.NewReader(tc.b), int64(len(tc.b)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("%v does not wrap ErrFormat", err)
			}
		})
	}
}

func TestMaterializeBounds(t *testing.T) {
	st := &torchStorage{dtype: F32, key: "0", numel: 4, data: make([]byte, 16)}
	tests := []struct {
		name          string
		off           int64
		shape, stride []int
		want          string
	}{
		{"past end", 1, []int{4}, []int{1}, "reaches element 4"},
		{"stride past end", 0, []int{2, 2}, []int{3, 1}, "reaches element 4"},
		{"expansion bomb", 0, []int{1 << 21}, []int{0}, "expands"},
		{"negative stride", 0, []int{2}, []int{-1}, "negative stride"},
	}
	for _, tc := range tests {
		_, err := (&torchTensor{st: st, offset: tc.off, shape: tc.shape, stride: tc.stride}).materialize(tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	// A modest expanded view is fine: [3, 2] over two values, stride (0, 1).
	binary.LittleEndian.PutUint32(st.data[4:], math.Float32bits(2.5))
	got, err := (&torchTensor{st: st, offset: 0, shape: []int{3, 2}, stride: []int{0, 1}}).materialize("expand")
	if err != nil || !reflect.DeepEqual(got.Data, []float32{0, 2.5, 0, 2.5, 0, 2.5}) {
		t.Fatalf("expanded view = %v, %v", got.Data, err)
	}
}

func TestPickleCycles(t *testing.T) {
	// d = {}; d["a"] = d; d["b"] = d (via the memo), then STOP.
	pkl := []byte("\x80\x02}q\x00(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bh\x00u.")
	done := make(chan error, 1)
	go func() {
		_, err := decodeTorchPickle(pkl, func(*torchStorage) error { return nil })
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no tensors") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("self-referencing dict: walk does not terminate")
	}
}

func TestLoadSlots(t *testing.T) {
	src := []Tensor{
		{Name: "module.a", Shape: []int{2}, Data: []float32{1, 2}},
		{Name: "module.b", Shape: []int{2, 2}, Data: []float32{3, 4, 5, 6}},
		{Name: "module.bn.num_batches_tracked", Shape: []int{}, DType: I64, Data: []float32{9}},
		{Name: "module.extra", Shape: []int{1}, Data: []float32{7}},
	}
	slots := func() []NamedSlot {
		return []NamedSlot{
			{Name: "a", Shape: []int{2}, Data: make([]float32, 2)},
			{Name: "b", Shape: []int{4}, Data: make([]float32, 4)},
			{Name: "c", Shape: []int{1}, Data: make([]float32, 1)},
		}
	}
	tests := []struct {
		name    string
		opts    LoadOptions
		wantErr bool
		want    Report
		a       []float32
	}{
		{"non-strict loads what matches", LoadOptions{StripPrefix: "module.", Ignore: IgnoreNumBatchesTracked}, false, Report{
			Loaded: []string{"a"}, Missing: []string{"c"}, Unexpected: []string{"extra"},
			Mismatched: []ShapeMismatch{{"b", []int{4}, []int{2, 2}}}, Ignored: []string{"bn.num_batches_tracked"},
		}, []float32{1, 2}},
		{"strict writes nothing", LoadOptions{Strict: true, StripPrefix: "module."}, true, Report{
			Missing: []string{"c"}, Unexpected: []string{"bn.num_batches_tracked", "extra"},
			Mismatched: []ShapeMismatch{{"b", []int{4}, []int{2, 2}}},
		}, []float32{0, 0}},
		{"no prefix strip: nothing matches", LoadOptions{}, false, Report{
			Missing: []string{"a", "b", "c"}, Unexpected: []string{"module.a", "module.b", "module.bn.num_batches_tracked", "module.extra"},
		}, []float32{0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := slots()
			rep, err := Load(s, src, tc.opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(rep, tc.want) {
				t.Fatalf("report = %+v\nwant     %+v", rep, tc.want)
			}
			if !reflect.DeepEqual(s[0].Data, tc.a) {
				t.Fatalf("a = %v, want %v", s[0].Data, tc.a)
			}
			if err != nil && !strings.Contains(err.Error(), "b: model [4], file [2 2]") {
				t.Errorf("strict error does not name the mismatch: %v", err)
			}
		})
	}
	// Strict and complete.
	s := slots()[:1]
	if rep, err := Load(s, src[:1], LoadOptions{Strict: true, StripPrefix: "module."}); err != nil || !rep.OK() || s[0].Data[1] != 2 {
		t.Fatalf("strict complete load: %+v %v", rep, err)
	}
}

func TestTorchCompat(t *testing.T) {
	in := []Tensor{
		{Name: "bn1.running_mean", Shape: []int{1}, Data: []float32{0}},
		{Name: "bn1.running_var", Shape: []int{1}, Data: []float32{1}},
		{Name: "bn2.running_var", Shape: []int{1}, Data: []float32{1}},
		{Name: "bn2.num_batches_tracked", Shape: []int{}, Data: []float32{5}},
	}
	out := TorchCompat(in)
	var names []string
	for _, o := range out {
		names = append(names, o.Name+":"+string(o.DType))
	}
	want := []string{"bn1.running_mean:", "bn1.running_var:", "bn1.num_batches_tracked:I64", "bn2.running_var:", "bn2.num_batches_tracked:I64"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
	if in[3].DType != "" {
		t.Fatal("input modified")
	}
}

const pythonBin = "/usr/bin/python3"

// runPy runs scripts/gen_pth.py; it skips the test when Python or PyTorch is
// absent (the first call doubles as the probe: importing torch is slow here).
func runPy(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := os.Stat(pythonBin); err != nil {
		t.Skipf("no %s", pythonBin)
	}
	cmd := exec.Command(pythonBin, append([]string{"../scripts/gen_pth.py"}, args...)...)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named 'torch") {
			t.Skipf("no PyTorch: %s", bytes.TrimSpace(out))
		}
		t.Fatalf("gen_pth.py %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestExportToPyTorch (tiny by default, + resnet18 with RINGTRAIN_SLOW=1): Go reads what PyTorch saved, writes safetensors, and
// PyTorch loads that with load_state_dict(strict=True) to the same values.
func TestExportToPyTorch(t *testing.T) {
	models := []string{"tiny"}
	if os.Getenv("RINGTRAIN_SLOW") != "" { // torchvision resnet18: ~45 MB per file, ~1 min here
		models = append(models, "resnet18")
	}
	dir := t.TempDir()
	runPy(t, append([]string{"gen", dir}, models...)...)
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			ref := loadRef(t, filepath.Join(dir, m))
			var fromPTH []Tensor
			for _, f := range []string{m + ".pth", m + "_legacy.pth", m + ".safetensors"} {
				start := time.Now()
				got, _, err := ReadTensorFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
					el := time.Since(start)
					t.Logf("read %s: %.1f MB in %v (%.0f MB/s)", f, float64(fi.Size())/1e6, el.Round(time.Millisecond), float64(fi.Size())/1e6/el.Seconds())
				}
				sameBits(t, got, ref)
				if fromPTH == nil {
					fromPTH = got
				}
			}
			out := filepath.Join(dir, m+"_export.safetensors")
			if err := WriteSafetensorsFile(out, fromPTH, map[string]string{"format": "pt"}); err != nil {
				t.Fatal(err)
			}
			msg := runPy(t, "check", m, out, filepath.Join(dir, m+".pth"))
			if !strings.Contains(msg, "OK") {
				t.Fatalf("python check: %s", msg)
			}
			t.Logf("%s: %s", m, strings.TrimSpace(msg))
		})
	}
}

func FuzzPickle(f *testing.F) {
	for _, name := range []string{"testdata/tiny.pth", "testdata/views.pth"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatal(err)
		}
		for _, zf := range zr.File {
			if strings.HasSuffix(zf.Name, "/data.pkl") {
				pkl, _ := readZipFile(zf, 1<<20)
				f.Add(pkl)
			}
		}
	}
	legacy, err := os.ReadFile("testdata/tiny_legacy.pth")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(legacy)
	f.Fuzz(func(t *testing.T, b []byte) {
		// A hang is a bug too: fail loudly rather than stall the fuzzer.
		guard := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("decoding took over 10s: %q", b)) })
		defer guard.Stop()
		load := func(st *torchStorage) error {
			if st.numel > 1<<16 {
				return errors.New("too big for the fuzzer")
			}
			st.data = make([]byte, st.numel*int64(st.dtype.Size()))
			return nil
		}
		if ts, err := decodeTorchPickle(b, load); err == nil {
			for _, x := range ts {
				if err := x.check(); err != nil {
					t.Fatalf("decoded an inconsistent tensor: %v", err)
				}
			}
		}
		if ts, err := readTorchLegacy(b); err == nil {
			for _, x := range ts {
				if err := x.check(); err != nil {
					t.Fatalf("decoded an inconsistent legacy tensor: %v", err)
				}
			}
		}
	})
}

func TestImportFile(t *testing.T) {
	ref := loadRef(t, "testdata/tiny")
	var slots []NamedSlot
	for _, r := range ref {
		if IgnoreNumBatchesTracked(r.Name) {
			continue // an engine without step counters
		}
		slots = append(slots, NamedSlot{Name: r.Name, Shape: r.Shape, Data: make([]float32, r.Numel())})
	}
	slots[len(slots)-1].Shape = []int{5, 2} // fc.bias: a head of another size
	slots[len(slots)-1].Data = make([]float32, 10)
	for _, file := range []string{"testdata/tiny.pth", "testdata/tiny_legacy.pth", "testdata/tiny.safetensors"} {
		if _, err := ImportFile(file, slots, LoadOptions{Strict: true, Ignore: IgnoreNumBatchesTracked}); err == nil || !strings.Contains(err.Error(), "fc.bias: model [5 2], file [10]") {
			t.Fatalf("%s strict: %v", file, err)
		}
		rep, err := ImportFile(file, slots, LoadOptions{Ignore: IgnoreNumBatchesTracked})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Loaded) != len(slots)-1 || len(rep.Ignored) != 2 || len(rep.Mismatched) != 1 || len(rep.Missing)+len(rep.Unexpected) != 0 {
			t.Fatalf("%s: report %v", file, rep)
		}
		if !reflect.DeepEqual(slots[0].Data, ref[0].Data) {
			t.Fatalf("%s: %s not loaded", file, slots[0].Name)
		}
	}
}
