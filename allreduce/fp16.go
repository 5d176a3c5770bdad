package allreduce

import "math"

// F32ToF16 converts to IEEE binary16 bits, rounding to nearest even;
// overflow gives ±Inf, NaN stays NaN (quiet).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	if e := b >> 23 & 0xff; e-113 < 30 { // result is a normal half (or rounds up to Inf)
		m := b & 0x7fffff
		h := (e-112)<<10 | m>>13
		// Round to nearest even without branches: +1 iff the dropped bits
		// exceed half, or equal half and h is odd.
		h += (m&0x1fff + 0xfff + h&1) >> 13
		return uint16(b>>16)&0x8000 | uint16(h)
	}
	return f32ToF16Slow(f)
}

func f32ToF16Slow(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b >> 23) & 0xff)
	man := b & 0x7fffff
	if exp == 0xff { // Inf or NaN
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): value = m * 2^-24 with m = full >> shift.
		if e < -10 {
			return sign
		}
		full := man | 0x800000
		shift := uint32(14 - e) // 14..24
		h := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, up to Inf: still correct
	}
	return sign | uint16(h)
}

// F16ToF32 converts IEEE binary16 bits to float32 exactly.
func F16ToF32(h uint16) float32 {
	if e := h & 0x7c00; e != 0 && e != 0x7c00 { // normal: re-bias the exponent
		return math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + 112<<23))
	}
	return f16ToF32Slow(h)
}

func f16ToF32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalise.
	e := uint32(127 - 15 + 1)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// RoundF16 rounds every element of x to the nearest binary16 value in place.
func RoundF16(x []float32) {
	var tmp [512]byte
	for len(x) > 0 {
		n := min(len(x), len(tmp)/2)
		encodeF16(tmp[:], x[:n])
		decodeF16(x[:n], tmp[:], false)
		x = x[n:]
	}
}
