package jpeg

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// Every entry of huffman.fast is what decodeHuffman (and, for the packed
// coefficient, receiveExtend) gives for that prefix, on random tables of
// both classes: valid ones and over-subscribed or sparse ones.
func TestHuffmanFastTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	checked, packed := 0, 0
	for it := range 300 {
		tc := uint8(it % 2) // DC, AC
		var counts [16]uint8
		total := 0
		for i := range counts {
			max := 1 << (i + 1)
			if it%3 == 0 {
				max = 4 // sparse
			}
			c := rng.IntN(min(max, 12) + 1)
			if it%5 == 0 && i < 4 {
				c = 1 << (i + 1) // over-subscribed short codes
			}
			if total+c > 200 {
				c = 0
			}
			counts[i] = uint8(c)
			total += c
		}
		if total == 0 {
			counts[2], total = 1, 1
		}
		seg := []byte{tc << 4}
		seg = append(seg, counts[:]...)
		for range total {
			v := uint8(rng.IntN(256))
			if rng.IntN(2) == 0 {
				v &= 0x1f // small sizes are the common case
			}
			seg = append(seg, v)
		}
		d := &decoder{r: bytes.NewReader(seg)}
		if err := d.processDHT(len(seg)); err != nil {
			continue
		}
		h := &d.huff[tc][0]
		for p := range uint64(1 << fastBits) {
			e := h.fast[p]
			tail := rng.Uint64() & (1<<22 - 1)
			d.bits = bits{a: p<<22 | tail, n: fastBits + 22}
			v, err := func() (v uint8, err error) {
				defer func() {
					if recover() != nil {
						err = errMissingFF00 // stands for a panic: fast must be 0 there
					}
				}()
				return d.decodeHuffman(h)
			}()
			l := int32(fastBits+22) - d.bits.n
			if e == 0 {
				if err == nil && l <= fastBits {
					t.Fatalf("table %d prefix %010b: no fast entry, decodeHuffman gives %#x in %d bits", it, p, v, l)
				}
				continue
			}
			if err != nil || int32(e&fastLenMask) != l || uint8(e>>fastSymShift) != v {
				t.Fatalf("table %d prefix %010b: fast entry len %d sym %#x, decodeHuffman %#x in %d bits (%v)", it, p, e&fastLenMask, e>>fastSymShift, v, l, err)
			}
			checked++
			if tot := int32(e>>fastTotShift) & fastLenMask; tot != 0 {
				s := v & 0x0f
				if tc == dcTable {
					s = v
				}
				x, err := d.receiveExtend(s)
				if err != nil || x != int32(e)>>fastValShift || int32(fastBits+22)-d.bits.n != tot {
					t.Fatalf("table %d prefix %010b: packed value %d in %d bits, receiveExtend(%d) %d in %d", it, p, int32(e)>>fastValShift, tot, s, x, int32(fastBits+22)-d.bits.n)
				}
				packed++
			}
		}
	}
	t.Logf("%d prefixes checked, %d with a packed coefficient", checked, packed)
	if packed < 1000 {
		t.Errorf("only %d packed entries checked", packed)
	}
}
