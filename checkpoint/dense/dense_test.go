package dense

import (
	"reflect"
	"testing"

	"github.com/ringtrain/ringtrain/checkpoint"
)

func TestDenseConversion(t *testing.T) {
	in := checkpoint.Tensor{Name: "w", Shape: []int{2, 3}, Data: []float32{-1, 0, 1, 2, 3, 4}}
	d := ToDense(in)
	out, err := FromDense("w", d)
	if err != nil {
		t.Fatal(err)
	}
	in.DType = ""
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %+v, want %+v", out, in)
	}
	out.Data[0] = 42 // FromDense copies
	if in.Data[0] == 42 {
		t.Fatal("FromDense aliases the backing array")
	}
}
