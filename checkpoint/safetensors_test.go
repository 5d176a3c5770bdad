package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func sampleTensors() []Tensor {
	return []Tensor{
		{Name: "conv1.weight", Shape: []int{2, 1, 3, 3}, Data: seq(18, 0.25)},
		{Name: "conv1.bias", Shape: []int{2}, Data: []float32{-1.5, 2}},
		{Name: "bn.num_batches_tracked", Shape: []int{}, DType: I64, Data: []float32{7}},
		{Name: "fc.weight", Shape: []int{3, 0}, Data: []float32{}},
		{Name: "half", Shape: []int{4}, DType: F16, Data: []float32{1, -2, 0.5, 65504}},
		{Name: "bhalf", Shape: []int{2, 1}, DType: BF16, Data: []float32{1, -3}},
		{Name: "double", Shape: []int{1}, DType: F64, Data: []float32{math.Pi}},
	}
}

func seq(n int, step float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(i)*step - 1
	}
	return out
}

func writeST(t testing.TB, ts []Tensor, meta map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := WriteSafetensors(&buf, ts, meta)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteSafetensors returned %d, wrote %d", n, buf.Len())
	}
	size, err := SafetensorsSize(ts, meta)
	if err != nil || size != n {
		t.Fatalf("SafetensorsSize = %d, %v; wrote %d", size, err, n)
	}
	return buf.Bytes()
}

func TestSafetensorsRoundTrip(t *testing.T) {
	in := sampleTensors()
	meta := map[string]string{"format": "pt", "net": "tiny"}
	b := writeST(t, in, meta)
	if hl := binary.LittleEndian.Uint64(b); hl%8 != 0 {
		t.Errorf("header length %d not 8-aligned", hl)
	}
	out, gotMeta, err := DecodeSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("metadata = %v, want %v", gotMeta, meta)
	}
	if len(out) != len(in) {
		t.Fatalf("got %d tensors, want %d", len(out), len(in))
	}
	for i := range in {
		want := in[i]
		if want.DType == "" {
			want.DType = F32
		}
		if want.DType == F64 { // float64 of a float32 value round-trips exactly
			want.Data = []float32{float32(math.Pi)}
		}
		if !reflect.DeepEqual(out[i], want) {
			t.Errorf("tensor %d = %+v, want %+v", i, out[i], want)
		}
	}
}

func TestHalfConversions(t *testing.T) {
	tests := []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x0400, 6.103515625e-05}, {0x8000, float32(math.Copysign(0, -1))}, {0x7c00, float32(math.Inf(1))},
		{0x3555, 0.333251953125},
	}
	for _, tc := range tests {
		got := f16ToF32(tc.bits)
		if math.Float32bits(got) != math.Float32bits(tc.want) {
			t.Errorf("f16ToF32(%#04x) = %v, want %v", tc.bits, got, tc.want)
		}
		if back := f32ToF16(tc.want); back != tc.bits {
			t.Errorf("f32ToF16(%v) = %#04x, want %#04x", tc.want, back, tc.bits)
		}
	}
	// Every finite half converts to float32 and back unchanged.
	for h := 0; h < 1<<16; h++ {
		f := f16ToF32(uint16(h))
		if f != f { // NaN
			continue
		}
		if back := f32ToF16(f); back != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, back)
		}
	}
	// Rounding: 1 + 2^-11 is a tie, rounds to even (1.0); a bit more rounds up.
	if got := f32ToF16(1 + 1.0/2048); got != 0x3c00 {
		t.Errorf("tie rounds to %#04x, want 0x3c00", got)
	}
	if got := f32ToF16(1 + 1.0/2048 + 1.0/65536); got != 0x3c01 {
		t.Errorf("above tie rounds to %#04x, want 0x3c01", got)
	}
	if got := f32ToBF16(1 + 1.0/256); got != 0x3f80 { // tie to even
		t.Errorf("bf16 tie = %#04x, want 0x3f80", got)
	}
	if got := bf16ToF32(0x4049); got != 3.140625 {
		t.Errorf("bf16ToF32(0x4049) = %v", got)
	}
}

// rawST builds a safetensors file from a literal header and data.
func rawST(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestSafetensorsMalformed(t *testing.T) {
	eight := make([]byte, 8)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "no header length"},
		{"huge header", []byte{0, 0, 0, 0, 1, 0, 0, 0}, "exceeds"},
		{"header past end", append([]byte{0xff, 0, 0, 0, 0, 0, 0, 0}, "{}"...), "exceeds"},
		{"not object", rawST(`[1]`, nil), "not a JSON object"},
		{"bad dtype", rawST(`{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}`, eight), "unsupported dtype"},
		{"offsets past data", rawST(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, eight), "outside data"},
		{"size mismatch", rawST(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "needs 12 bytes"},
		{"negative dim", rawST(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), "negative"},
		{"overlap", rawST(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "overlap"},
		{"duplicate", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "duplicate"},
		{"three offsets", rawST(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, eight), "data_offsets has 3"},
		{"trailing", rawST(`{} x`, nil), "trailing"},
		{"bad metadata", rawST(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"overflow shape", rawST(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight), "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeSafetensors(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("err %v does not wrap ErrFormat", err)
			}
		})
	}
}

func TestSafetensorsWriteRejects(t *testing.T) {
	tests := []struct {
		name string
		ts   []Tensor
	}{
		{"data/shape mismatch", []Tensor{{Name: "a", Shape: []int{3}, Data: []float32{1}}}},
		{"duplicate", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}},
		{"empty name", []Tensor{{Shape: []int{1}, Data: []float32{1}}}},
		{"bad dtype", []Tensor{{Name: "a", Shape: []int{1}, DType: "Q4", Data: []float32{1}}}},
	}
	for _, tc := range tests {
		if _, err := WriteSafetensors(&bytes.Buffer{}, tc.ts, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func FuzzSafetensors(f *testing.F) {
	var buf bytes.Buffer
	WriteSafetensors(&buf, sampleTensors(), map[string]string{"k": "v"})
	f.Add(buf.Bytes())
	f.Add(rawST(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawST(`{}`, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, meta, err := DecodeSafetensors(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same tensors
		// (NaN payloads aside, which F16/BF16 may canonicalise).
		var out bytes.Buffer
		if _, err := WriteSafetensors(&out, ts, meta); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ts2, _, err := DecodeSafetensors(out.Bytes())
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if len(ts2) != len(ts) {
			t.Fatalf("%d tensors, then %d", len(ts), len(ts2))
		}
		for i := range ts {
			if ts[i].Name != ts2[i].Name || !reflect.DeepEqual(ts[i].Shape, ts2[i].Shape) || len(ts[i].Data) != len(ts2[i].Data) {
				t.Fatalf("tensor %d changed: %+v vs %+v", i, ts[i], ts2[i])
			}
		}
	})
}

func BenchmarkSafetensorsDecode(b *testing.B) {
	ts := []Tensor{{Name: "w", Shape: []int{1 << 20}, Data: seq(1<<20, 0.001)}}
	var buf bytes.Buffer
	WriteSafetensors(&buf, ts, nil)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeSafetensors(buf.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
}
