//go:build amd64

// AVX2 loops for the elementwise and batch-norm kernels (vec_amd64.go).
// Each handles n elements, n a multiple of 8 (the Go wrappers do the tail),
// and performs exactly the float32 operations of the scalar loops, in the
// same order and without fusing (no FMA where the scalar code rounds
// between a multiply and an add), so results are bitwise equal to them.
// Only the float64 reductions (sums) differ from their scalar loops: they
// keep several partial sums, so the additions happen in another order.

#include "textflag.h"

// HSUMPD adds the four float64 lanes of y into the low lane of x (y's lower
// half), using t (an X register) as scratch.
#define HSUMPD(y, x, t) \
	VEXTRACTF128 $1, y, t \
	VADDPD t, x, x \
	VUNPCKHPD x, x, t \
	VADDSD t, x, x

// func reluVec(y, x *float32, n int)
// y = x with negatives (and −0) cleared, NaNs kept: reluBits on 8 lanes.
TEXT ·reluVec(SB), NOSPLIT, $0-24
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7fffffff, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x7f800000, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	XORQ BX, BX
relu_loop:
	CMPQ BX, CX
	JGE relu_done
	VMOVDQU (SI)(BX*4), Y0
	VPSRAD $31, Y0, Y1   // neg: all ones where the sign bit is set
	VPAND Y14, Y0, Y2    // |x|
	VPSUBD Y2, Y15, Y2   // 0x7f800000 − |x|: negative exactly for NaN
	VPSRAD $31, Y2, Y2   // nan
	VPANDN Y1, Y2, Y1    // neg &^ nan
	VPANDN Y0, Y1, Y0    // x &^ (neg &^ nan)
	VMOVDQU Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP relu_loop
relu_done:
	VZEROUPPER
	RET

// func reluBackwardVec(dx, dy, y *float32, n int)
// dx = dy where 0 < bits(y) ≤ bits(+Inf) as signed integers, else 0.
TEXT ·reluBackwardVec(SB), NOSPLIT, $0-32
	MOVQ dx+0(FP), DI
	MOVQ dy+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX
	VPXOR Y14, Y14, Y14
	MOVL $0x7f800000, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	XORQ BX, BX
relub_loop:
	CMPQ BX, CX
	JGE relub_done
	VMOVDQU (DX)(BX*4), Y0
	VPCMPGTD Y14, Y0, Y1 // y > 0
	VPCMPGTD Y15, Y0, Y2 // y > +Inf: NaN
	VPANDN Y1, Y2, Y1    // keep = pos &^ nan
	VPAND (SI)(BX*4), Y1, Y1
	VMOVDQU Y1, (DI)(BX*4)
	ADDQ $8, BX
	JMP relub_loop
relub_done:
	VZEROUPPER
	RET

// func addVec(dst, a, b *float32, n int)
TEXT ·addVec(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	XORQ BX, BX
add_loop:
	CMPQ BX, CX
	JGE add_done
	VMOVUPS (SI)(BX*4), Y0
	VADDPS (DX)(BX*4), Y0, Y0
	VMOVUPS Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP add_loop
add_done:
	VZEROUPPER
	RET

// func sumVec(x *float32, n int) float64
// Σx in float64, four partial sums of four lanes each.
TEXT ·sumVec(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	XORQ BX, BX
	MOVQ CX, DX
	ANDQ $-16, DX
sum_loop16:
	CMPQ BX, DX
	JGE sum_tail8
	VCVTPS2PD (SI)(BX*4), Y4
	VCVTPS2PD 16(SI)(BX*4), Y5
	VCVTPS2PD 32(SI)(BX*4), Y6
	VCVTPS2PD 48(SI)(BX*4), Y7
	VADDPD Y4, Y0, Y0
	VADDPD Y5, Y1, Y1
	VADDPD Y6, Y2, Y2
	VADDPD Y7, Y3, Y3
	ADDQ $16, BX
	JMP sum_loop16
sum_tail8:
	CMPQ BX, CX
	JGE sum_done
	VCVTPS2PD (SI)(BX*4), Y4
	VCVTPS2PD 16(SI)(BX*4), Y5
	VADDPD Y4, Y0, Y0
	VADDPD Y5, Y1, Y1
sum_done:
	VADDPD Y1, Y0, Y0
	VADDPD Y3, Y2, Y2
	VADDPD Y2, Y0, Y0
	HSUMPD(Y0, X0, X1)
	VMOVSD X0, ret+16(FP)
	VZEROUPPER
	RET

// func sumSqDevVec(x *float32, n int, mean float64) float64
// Σ(float64(x) − mean)², four partial sums of four lanes each.
TEXT ·sumSqDevVec(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mean+16(FP), Y8
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	XORQ BX, BX
	MOVQ CX, DX
	ANDQ $-16, DX
ssd_loop16:
	CMPQ BX, DX
	JGE ssd_tail8
	VCVTPS2PD (SI)(BX*4), Y4
	VCVTPS2PD 16(SI)(BX*4), Y5
	VCVTPS2PD 32(SI)(BX*4), Y6
	VCVTPS2PD 48(SI)(BX*4), Y7
	VSUBPD Y8, Y4, Y4
	VSUBPD Y8, Y5, Y5
	VSUBPD Y8, Y6, Y6
	VSUBPD Y8, Y7, Y7
	VFMADD231PD Y4, Y4, Y0
	VFMADD231PD Y5, Y5, Y1
	VFMADD231PD Y6, Y6, Y2
	VFMADD231PD Y7, Y7, Y3
	ADDQ $16, BX
	JMP ssd_loop16
ssd_tail8:
	CMPQ BX, CX
	JGE ssd_done
	VCVTPS2PD (SI)(BX*4), Y4
	VCVTPS2PD 16(SI)(BX*4), Y5
	VSUBPD Y8, Y4, Y4
	VSUBPD Y8, Y5, Y5
	VFMADD231PD Y4, Y4, Y0
	VFMADD231PD Y5, Y5, Y1
ssd_done:
	VADDPD Y1, Y0, Y0
	VADDPD Y3, Y2, Y2
	VADDPD Y2, Y0, Y0
	HSUMPD(Y0, X0, X1)
	VMOVSD X0, ret+24(FP)
	VZEROUPPER
	RET

// func normalizeVec(y, x *float32, n int, mean, invstd, gamma, beta float32)
// y = ((x − mean)·invstd)·gamma + beta, rounding after each operation.
TEXT ·normalizeVec(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS mean+24(FP), Y12
	VBROADCASTSS invstd+28(FP), Y13
	VBROADCASTSS gamma+32(FP), Y14
	VBROADCASTSS beta+36(FP), Y15
	XORQ BX, BX
norm_loop:
	CMPQ BX, CX
	JGE norm_done
	VMOVUPS (SI)(BX*4), Y0
	VSUBPS Y12, Y0, Y0
	VMULPS Y13, Y0, Y0
	VMULPS Y14, Y0, Y0
	VADDPS Y15, Y0, Y0
	VMOVUPS Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP norm_loop
norm_done:
	VZEROUPPER
	RET

// func bnGradSumsVec(dy, x *float32, n int, mean, invstd float32) (sdy, sdyx float64)
// Σdy and Σdy·x̂ in float64, x̂ = (x − mean)·invstd in float32 (a float32
// product is exact in float64, so the FMA rounds as mul-then-add would).
TEXT ·bnGradSumsVec(SB), NOSPLIT, $0-48
	MOVQ dy+0(FP), SI
	MOVQ x+8(FP), DX
	MOVQ n+16(FP), CX
	VBROADCASTSS mean+24(FP), Y12
	VBROADCASTSS invstd+28(FP), Y13
	VXORPD Y0, Y0, Y0 // Σdy
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2 // Σdy·x̂
	VXORPD Y3, Y3, Y3
	XORQ BX, BX
bngs_loop:
	CMPQ BX, CX
	JGE bngs_done
	VMOVUPS (DX)(BX*4), Y4
	VSUBPS Y12, Y4, Y4
	VMULPS Y13, Y4, Y4 // x̂, 8 lanes
	VCVTPS2PD X4, Y5
	VEXTRACTF128 $1, Y4, X6
	VCVTPS2PD X6, Y6
	VCVTPS2PD (SI)(BX*4), Y7
	VCVTPS2PD 16(SI)(BX*4), Y8
	VADDPD Y7, Y0, Y0
	VADDPD Y8, Y1, Y1
	VFMADD231PD Y5, Y7, Y2
	VFMADD231PD Y6, Y8, Y3
	ADDQ $8, BX
	JMP bngs_loop
bngs_done:
	VADDPD Y1, Y0, Y0
	HSUMPD(Y0, X0, X1)
	VMOVSD X0, sdy+32(FP)
	VADDPD Y3, Y2, Y2
	HSUMPD(Y2, X2, X3)
	VMOVSD X2, sdyx+40(FP)
	VZEROUPPER
	RET

// func bnInputGradVec(dx, dy, x *float32, n int, mean, invstd, k, mdy, mdyx float32)
// dx = k·((dy − mdy) − x̂·mdyx), x̂ = (x − mean)·invstd, rounding after each operation.
TEXT ·bnInputGradVec(SB), NOSPLIT, $0-52
	MOVQ dx+0(FP), DI
	MOVQ dy+8(FP), SI
	MOVQ x+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mean+32(FP), Y11
	VBROADCASTSS invstd+36(FP), Y12
	VBROADCASTSS k+40(FP), Y13
	VBROADCASTSS mdy+44(FP), Y14
	VBROADCASTSS mdyx+48(FP), Y15
	XORQ BX, BX
bnig_loop:
	CMPQ BX, CX
	JGE bnig_done
	VMOVUPS (DX)(BX*4), Y0
	VSUBPS Y11, Y0, Y0
	VMULPS Y12, Y0, Y0 // x̂
	VMULPS Y15, Y0, Y0 // x̂·mdyx
	VMOVUPS (SI)(BX*4), Y1
	VSUBPS Y14, Y1, Y1 // dy − mdy
	VSUBPS Y0, Y1, Y1
	VMULPS Y13, Y1, Y1
	VMOVUPS Y1, (DI)(BX*4)
	ADDQ $8, BX
	JMP bnig_loop
bnig_done:
	VZEROUPPER
	RET

// func sgdMomentumVec(w, grad, b *float32, n int, wd, mu, damp, lr float32, decay bool)
// d = grad (+ wd·w with decay); b = mu·b + damp·d; w = w − lr·b, rounding
// after each operation.
TEXT ·sgdMomentumVec(SB), NOSPLIT, $0-49
	MOVQ w+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS wd+32(FP), Y12
	VBROADCASTSS mu+36(FP), Y13
	VBROADCASTSS damp+40(FP), Y14
	VBROADCASTSS lr+44(FP), Y15
	MOVBLZX decay+48(FP), AX
	XORQ BX, BX
sgd_loop:
	CMPQ BX, CX
	JGE sgd_done
	VMOVUPS (DI)(BX*4), Y0 // w
	VMOVUPS (SI)(BX*4), Y1 // d = g
	TESTQ AX, AX
	JZ sgd_nodecay
	VMULPS Y12, Y0, Y3
	VADDPS Y3, Y1, Y1 // d = g + wd·w
sgd_nodecay:
	VMULPS Y14, Y1, Y1         // damp·d
	VMULPS (DX)(BX*4), Y13, Y2 // mu·b
	VADDPS Y1, Y2, Y2          // b
	VMOVUPS Y2, (DX)(BX*4)
	VMULPS Y15, Y2, Y2
	VSUBPS Y2, Y0, Y0
	VMOVUPS Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP sgd_loop
sgd_done:
	VZEROUPPER
	RET

DATA lanes<>+0(SB)/4, $0
DATA lanes<>+4(SB)/4, $1
DATA lanes<>+8(SB)/4, $2
DATA lanes<>+12(SB)/4, $3
DATA lanes<>+16(SB)/4, $4
DATA lanes<>+20(SB)/4, $5
DATA lanes<>+24(SB)/4, $6
DATA lanes<>+28(SB)/4, $7
GLOBL lanes<>(SB), RODATA|NOPTR, $32

// func maxTapVec(best *float32, arg *int32, src *float32, n int, idx0, step int32) (nan bool)
// One max-pooling tap over n outputs: where src[i] > best[i] (ordered),
// arg[i] = idx0 + i·step; best[i] = the larger (best when equal). Reports
// whether any src[i] is NaN (the caller then redoes those windows by
// PyTorch's rule).
TEXT ·maxTapVec(SB), NOSPLIT, $0-41
	MOVQ best+0(FP), DI
	MOVQ arg+8(FP), DX
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), CX
	MOVL step+36(FP), AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	VPMULLD lanes<>(SB), Y14, Y15 // lane·step
	MOVL idx0+32(FP), AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	VPADDD Y13, Y15, Y15 // idx0 + lane·step
	VPSLLD $3, Y14, Y14  // 8·step per iteration
	VXORPS Y13, Y13, Y13 // NaN lanes seen
	XORQ BX, BX
maxtap_loop:
	CMPQ BX, CX
	JGE maxtap_done
	VMOVUPS (SI)(BX*4), Y0 // v
	VMOVUPS (DI)(BX*4), Y1 // best
	VCMPPS $0x1e, Y1, Y0, Y2 // v > best, ordered
	VCMPPS $3, Y0, Y0, Y3    // v is NaN
	VORPS Y3, Y13, Y13
	VMOVDQU (DX)(BX*4), Y4
	VBLENDVPS Y2, Y15, Y4, Y4 // arg = gt ? idx : arg
	VMOVDQU Y4, (DX)(BX*4)
	VMAXPS Y0, Y1, Y1 // best > v ? best : v
	VMOVUPS Y1, (DI)(BX*4)
	VPADDD Y14, Y15, Y15
	ADDQ $8, BX
	JMP maxtap_loop
maxtap_done:
	VMOVMSKPS Y13, AX
	TESTL AX, AX
	SETNE nan+40(FP)
	VZEROUPPER
	RET

// func stride2CopyAVX2(dst, src *float32, n int)
// dst[i] = src[2i] for i < n, n a multiple of 8; reads src[0:2n].
TEXT ·stride2CopyAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
s2copy2_loop:
	TESTQ CX, CX
	JEQ s2copy2_done
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VSHUFPS $0x88, Y1, Y0, Y2 // s0 s2 s8 s10 | s4 s6 s12 s14
	VPERMPD $0xd8, Y2, Y2     // s0 s2 s4 s6 s8 s10 s12 s14
	VMOVUPS Y2, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	DECQ CX
	JMP s2copy2_loop
s2copy2_done:
	VZEROUPPER
	RET

// func stride2AddAVX2(dst, src *float32, n int)
// dst[2i] += src[i] for i < n, n a multiple of 8. The odd entries of
// dst[0:2n] are blended back from the loaded values, not added to (x + 0
// would turn −0 into +0).
TEXT ·stride2AddAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	VXORPS Y15, Y15, Y15
s2add2_loop:
	TESTQ CX, CX
	JEQ s2add2_done
	VPERMPD $0xd8, (SI), Y0    // s0 s1 s4 s5 | s2 s3 s6 s7
	VUNPCKLPS Y15, Y0, Y1      // s0 0 s1 0 | s2 0 s3 0
	VUNPCKHPS Y15, Y0, Y2      // s4 0 s5 0 | s6 0 s7 0
	VMOVUPS (DI), Y3
	VADDPS Y1, Y3, Y4
	VBLENDPS $0xaa, Y3, Y4, Y4 // odd lanes: dst unchanged
	VMOVUPS Y4, (DI)
	VMOVUPS 32(DI), Y5
	VADDPS Y2, Y5, Y6
	VBLENDPS $0xaa, Y5, Y6, Y6
	VMOVUPS Y6, 32(DI)
	ADDQ $32, SI
	ADDQ $64, DI
	DECQ CX
	JMP s2add2_loop
s2add2_done:
	VZEROUPPER
	RET

// func unfoldGatherIm2col(col *float32, ld int, buf *float32, idx *int32, ohw, taps int)
// UnfoldTable's im2col on AVX2: col[t·ld+p] = buf[idx[t·ohw+p]] for t < taps
// and p < ohw&^7, eight at a time with VGATHERDPS (buf holds the plane and
// a zero at the padding index).
TEXT ·unfoldGatherIm2col(SB), NOSPLIT, $0-48
	MOVQ col+0(FP), DI
	MOVQ ld+8(FP), R8
	SHLQ $2, R8
	MOVQ buf+16(FP), SI
	MOVQ idx+24(FP), DX
	MOVQ ohw+32(FP), R9
	MOVQ taps+40(FP), CX
	MOVQ R9, R10
	ANDQ $-8, R10 // values gathered per row
	SHLQ $2, R9   // bytes per idx row
	VPCMPEQD Y15, Y15, Y15
ugi_tap:
	TESTQ CX, CX
	JEQ ugi_done
	XORQ BX, BX
ugi_chunk:
	CMPQ BX, R10
	JGE ugi_next
	VMOVDQU (DX)(BX*4), Y1
	VMOVDQA Y15, Y2 // the gather clears its mask
	VXORPS Y0, Y0, Y0
	VGATHERDPS Y2, (SI)(Y1*4), Y0
	VMOVUPS Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP ugi_chunk
ugi_next:
	ADDQ R9, DX
	ADDQ R8, DI
	DECQ CX
	JMP ugi_tap
ugi_done:
	VZEROUPPER
	RET

// func unfoldGatherCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int)
// UnfoldTable's col2im on AVX2, eight pixels at a time for chunks·8
// pixels: img[q] += col[t·ld+inv[t·64+q]] tap by tap (the scalar loop's
// order), for the taps whose inv is below 64. Taps without an entry leave
// the sum alone (a blend, not a +0, which would turn −0 into +0).
TEXT ·unfoldGatherCol2im(SB), NOSPLIT, $0-48
	MOVQ col+0(FP), SI
	MOVQ ld+8(FP), R8
	SHLQ $2, R8
	MOVQ img+16(FP), DI
	MOVQ inv+24(FP), DX
	MOVQ taps+32(FP), R11
	MOVQ chunks+40(FP), CX
	MOVL $64, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
ugc_chunk:
	TESTQ CX, CX
	JEQ ugc_done
	VMOVUPS (DI), Y0 // the eight pixels' sums
	MOVQ SI, R12     // col row of tap t
	MOVQ DX, R13     // inv row of tap t, at this chunk
	MOVQ R11, BX
ugc_tap:
	VMOVDQU (R13), Y1
	VPCMPGTD Y1, Y14, Y2 // inv < 64: this tap adds into the pixel
	VMOVDQA Y2, Y3       // the gather clears its mask
	VXORPS Y4, Y4, Y4
	VGATHERDPS Y2, (R12)(Y1*4), Y4
	VADDPS Y4, Y0, Y5
	VBLENDVPS Y3, Y5, Y0, Y0
	ADDQ R8, R12
	ADDQ $256, R13
	DECQ BX
	JNZ ugc_tap
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, DX
	DECQ CX
	JMP ugc_chunk
ugc_done:
	VZEROUPPER
	RET
