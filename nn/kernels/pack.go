package kernels

// packA copies op(A)[i0:i0+mc, p0:p0+kc] into mr-row micro-panels: panel q
// holds kc steps of mr values at dst[q·mr·kc:]; rows past mc are zero.
func packA(dst []float32, transA bool, a []float32, lda, i0, mc, p0, kc, mr int) {
	for ir := 0; ir < mc; ir += mr {
		mrr := min(mr, mc-ir)
		d := dst[ir*kc : ir*kc+mr*kc]
		if transA { // A is k×m: each k step's mr values are contiguous
			copyPanel(d, mr, a, lda, (p0)*lda+i0+ir, kc, mrr)
			continue
		}
		interleavePanel(d, mr, a, lda, (i0+ir)*lda+p0, mrr, kc)
	}
}

// packB copies op(B)[p0:p0+kc, j0:j0+nc] into nr-column micro-panels: panel
// q holds kc steps of nr values at dst[q·nr·kc:]; columns past nc are zero.
// transFull, if set, packs a full panel of a transposed B for a multiple of
// 16 steps (an in-register transpose); the rest goes through Go.
func packB(dst []float32, transB bool, b []float32, ldb, p0, kc, j0, nc, nr int, transFull func(dst, src *float32, ld, kc int)) {
	for jr := 0; jr < nc; jr += nr {
		nrr := min(nr, nc-jr)
		d := dst[jr*kc : jr*kc+nr*kc]
		if !transB { // B is k×n: each k step's nr values are contiguous
			copyPanel(d, nr, b, ldb, p0*ldb+j0+jr, kc, nrr)
			continue
		}
		off := (j0+jr)*ldb + p0
		if transFull != nil && nrr == nr && kc >= 16 {
			k16 := kc &^ 15
			transFull(&d[0], &b[off], ldb, k16)
			if k16 < kc {
				interleavePanel(d[k16*nr:], nr, b, ldb, off+k16, nrr, kc-k16)
			}
			continue
		}
		interleavePanel(d, nr, b, ldb, off, nrr, kc)
	}
}

// copyPanel fills d (steps×w) from steps rows of width cnt at src[off:],
// stride ld, zeroing columns cnt..w.
func copyPanel(d []float32, w int, src []float32, ld, off, steps, cnt int) {
	for l := 0; l < steps; l++ {
		dl := d[l*w : l*w+w]
		copy(dl, src[off+l*ld:][:cnt])
		clear(dl[cnt:])
	}
}

// interleavePanel fills d (steps×w, d[l·w+r] = row r's element l) from cnt
// rows of length steps at src[off:], stride ld; columns cnt..w are zero.
// Rows go eight or four at a time so reads stay sequential per row and
// writes contiguous.
func interleavePanel(d []float32, w int, src []float32, ld, off, cnt, steps int) {
	r := 0
	for ; r+8 <= cnt; r += 8 {
		o := off + r*ld
		interleave8(d[r:], w, steps, src[o:][:steps], src[o+ld:][:steps], src[o+2*ld:][:steps], src[o+3*ld:][:steps],
			src[o+4*ld:][:steps], src[o+5*ld:][:steps], src[o+6*ld:][:steps], src[o+7*ld:][:steps])
	}
	for ; r+4 <= cnt; r += 4 {
		o := off + r*ld
		interleave4(d[r:], w, steps, src[o:][:steps], src[o+ld:][:steps], src[o+2*ld:][:steps], src[o+3*ld:][:steps])
	}
	for ; r < cnt; r++ {
		row := src[off+r*ld:][:steps]
		for l, v := range row {
			d[l*w+r] = v
		}
	}
	if cnt < w {
		for l := 0; l < steps; l++ {
			clear(d[l*w+cnt : l*w+w])
		}
	}
}

func interleave8(d []float32, w, steps int, r0, r1, r2, r3, r4, r5, r6, r7 []float32) {
	if steps == 0 {
		return
	}
	r0, r1, r2, r3 = r0[:steps], r1[:steps], r2[:steps], r3[:steps]
	r4, r5, r6, r7 = r4[:steps], r5[:steps], r6[:steps], r7[:steps]
	_ = d[(steps-1)*w+7]
	for l := 0; l < steps; l++ {
		dl := d[l*w : l*w+8 : l*w+8]
		dl[0], dl[1], dl[2], dl[3] = r0[l], r1[l], r2[l], r3[l]
		dl[4], dl[5], dl[6], dl[7] = r4[l], r5[l], r6[l], r7[l]
	}
}

func interleave4(d []float32, w, steps int, r0, r1, r2, r3 []float32) {
	if steps == 0 {
		return
	}
	r0, r1, r2, r3 = r0[:steps], r1[:steps], r2[:steps], r3[:steps]
	_ = d[(steps-1)*w+3]
	for l := 0; l < steps; l++ {
		dl := d[l*w : l*w+4 : l*w+4]
		dl[0], dl[1], dl[2], dl[3] = r0[l], r1[l], r2[l], r3[l]
	}
}
