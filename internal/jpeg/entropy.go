// Copyright 2012 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package jpeg

// decodeAC is the AC loop of image/jpeg's processSOS (section F.2.2.2) for
// one block, coefficients zig..zigEnd (zigEnd >= zig), unchanged in what it
// computes; it keeps the bit accumulator in locals while at least 16 bits
// are buffered (fillBits tops it up) and uses the byte-wise methods only
// near a 0xff byte or the end of the buffer. Most codes and their
// coefficients take one look-up in h.fast.
//
// Each coefficient stored is (value << al) * q[zig]: q is the quantization
// table (zig-zag order) to dequantize as the coefficients are decoded, or
// ones to store them as they are. nz is the OR of the stored values (zero
// when no coefficient was, or all came out zero).
func (d *decoder) decodeAC(b *block, h *huffman, zig, zigEnd int32, al uint32, q *block) (nz int32, err error) {
	if h.nCodes == 0 {
		return 0, FormatError("uninitialized Huffman table")
	}
	a, n := d.bits.a, d.bits.n
	for zig <= zigEnd {
		if n < 32 {
			d.bits.a, d.bits.n = a, n
			d.fillBits()
			a, n = d.bits.a, d.bits.n
		}
		var value uint8
		if n >= maxCodeLength {
			e := h.fast[(a>>uint32(n-fastBits))&(1<<fastBits-1)]
			if t := int32(e>>fastTotShift) & fastLenMask; t != 0 {
				// Code and coefficient in one look-up (buildFast).
				zig += int32(e >> (fastSymShift + 4) & 0x0f)
				if zig > zigEnd {
					n -= int32(e & fastLenMask) // the code only, as below
					break
				}
				n -= t
				v := (int32(e) >> fastValShift << al) * q[zig&63]
				b[unzig[zig&63]&63] = v
				nz |= v
				zig++
				continue
			}
			if e != 0 {
				n -= int32(e & fastLenMask)
				value = uint8(e >> fastSymShift)
			} else if v := h.lut[(a>>uint32(n-lutSize))&0xff]; v != 0 {
				n -= int32(v&0xff) - 1
				value = uint8(v >> 8)
			} else {
				// decodeHuffman's slow path; all 16 bits are here.
				code, i := int32(0), 0
				for ; i < maxCodeLength; i++ {
					code |= int32(a>>uint32(n-1)) & 1
					n--
					if code <= h.maxCodes[i] {
						value = h.vals[h.valsIndices[i]+code-h.minCodes[i]]
						break
					}
					code <<= 1
				}
				if i == maxCodeLength {
					d.bits.a, d.bits.n = a, n
					return 0, FormatError("bad Huffman code")
				}
			}
		} else {
			d.bits.a, d.bits.n = a, n
			v, err := d.decodeHuffman(h)
			if err != nil {
				return 0, err
			}
			a, n = d.bits.a, d.bits.n
			value = v
		}
		val0 := value >> 4
		val1 := value & 0x0f
		if val1 != 0 {
			zig += int32(val0)
			if zig > zigEnd {
				break
			}
			var ac int32
			if t := int32(val1); n >= t {
				// receiveExtend, without a branch on the data
				n -= t
				s := int32(1) << t
				ac = int32(a>>uint32(n)) & (s - 1)
				ac += (ac - s>>1) >> 31 & (1 - s)
			} else {
				d.bits.a, d.bits.n = a, n
				x, err := d.receiveExtend(val1)
				if err != nil {
					return 0, err
				}
				a, n = d.bits.a, d.bits.n
				ac = x
			}
			v := (ac << al) * q[zig&63] // zig <= zigEnd < 64
			b[unzig[zig&63]&63] = v
			nz |= v
		} else {
			if val0 != 0x0f {
				eob := uint16(1 << val0)
				if val0 != 0 {
					if t := int32(val0); n >= t {
						// decodeBits
						n -= t
						eob |= uint16(uint32(a>>uint32(n)) & (1<<uint32(t) - 1))
					} else {
						d.bits.a, d.bits.n = a, n
						bits, err := d.decodeBits(t)
						if err != nil {
							return 0, err
						}
						a, n = d.bits.a, d.bits.n
						eob |= uint16(bits)
					}
				}
				d.eobRun = eob - 1
				break
			}
			zig += 0x0f
		}
		zig++
	}
	d.bits.a, d.bits.n = a, n
	return nz, nil
}

// decodeDC decodes a DC difference with table h (section F.2.2.1): what
// processSOS did with decodeHuffman and receiveExtend, in one h.fast
// look-up when the code and its bits are buffered and short enough.
func (d *decoder) decodeDC(h *huffman) (int32, error) {
	if d.bits.n < maxCodeLength {
		d.fillBits()
	}
	if d.bits.n >= maxCodeLength {
		e := h.fast[(d.bits.a>>uint32(d.bits.n-fastBits))&(1<<fastBits-1)]
		if t := int32(e>>fastTotShift) & fastLenMask; t != 0 {
			d.bits.n -= t
			return int32(e) >> fastValShift, nil
		}
	}
	value, err := d.decodeHuffman(h)
	if err != nil {
		return 0, err
	}
	if value > 16 {
		return 0, UnsupportedError("excessive DC component")
	}
	return d.receiveExtend(value)
}
