//go:build amd64

// AVX-512 loops for UnfoldTable (kernels.go): the table im2col and col2im
// of planes of at most 64 pixels. A whole plane (or a whole col row) sits
// in four registers, and each 16 table entries become two two-register
// permutes and a blend, with no memory gather: on Zen 5 a 16-lane
// VGATHERDPS was no faster than the scalar loop.

#include "textflag.h"

// PERM64 sets out to the lanes of the 64-float table Z4:Z5:Z6:Z7 that the
// low 6 bits of idx select (idx's bit 6 is checked by the callers). Z28
// holds 32 in every lane; clobbers Z3 and K3.
#define PERM64(idx, out) \
	VMOVAPS Z4, out \
	VPERMT2PS Z5, idx, out \
	VMOVAPS Z6, Z3 \
	VPERMT2PS Z7, idx, Z3 \
	VPTESTMD Z28, idx, K3 \
	VBLENDMPS Z3, out, K3, out

// LOAD64 loads up to 64 floats from base into z0..z3, zeroing the lanes
// whose bit in the 64-bit mask m (a GPR, consumed) is clear; STORE64
// stores the lanes whose bit is set. Both use K5.
#define LOAD64(base, m, z0, z1, z2, z3) \
	KMOVW m, K5 \
	VMOVUPS.Z (base), K5, z0 \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS.Z 64(base), K5, z1 \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS.Z 128(base), K5, z2 \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS.Z 192(base), K5, z3

#define STORE64(base, m, z0, z1, z2, z3) \
	KMOVW m, K5 \
	VMOVUPS z0, K5, (base) \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS z1, K5, 64(base) \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS z2, K5, 128(base) \
	SHRQ $16, m \
	KMOVW m, K5 \
	VMOVUPS z3, K5, 192(base)

// BROADCASTS sets Z28 to 32 and Z29 to 64 in every lane.
#define BROADCASTS \
	MOVL $32, AX \
	VPBROADCASTD AX, Z28 \
	MOVL $64, AX \
	VPBROADCASTD AX, Z29

// func unfoldPermIm2col(col *float32, ld int, img *float32, idx *int32, ohw, taps int, planeMask, tail uint64, planes, plane int)
// For each of planes consecutive image planes (plane floats apart, their
// taps rows following each other in col): for t < taps, p < ohw,
// col[t·ld+p] = img[idx[t·ohw+p]]. Padding entries hold the index plane:
// +0 from the zeroed lanes past the plane, or, for a full 64-pixel plane,
// from the bit-6 test. planeMask has a bit per pixel of a plane; tail is
// the mask of the last ohw%16 entries of a row.
TEXT ·unfoldPermIm2col(SB), NOSPLIT, $0-80
	MOVQ col+0(FP), DI
	MOVQ ld+8(FP), R8
	SHLQ $2, R8
	MOVQ img+16(FP), SI
	MOVQ ohw+32(FP), CX
	MOVQ tail+56(FP), AX
	KMOVW AX, K2
	MOVQ planes+64(FP), R13
	BROADCASTS
	MOVQ CX, R10
	SHRQ $4, R10       // full vectors per row
	ANDQ $15, CX
	SHLQ $2, CX        // tail bytes
im2col_plane:
	TESTQ R13, R13
	JEQ im2col_done
	MOVQ planeMask+48(FP), BX
	LOAD64(SI, BX, Z4, Z5, Z6, Z7)
	MOVQ idx+24(FP), DX
	MOVQ taps+40(FP), R9
im2col_tap:
	TESTQ R9, R9
	JEQ im2col_nextplane
	MOVQ DI, R11
	MOVQ R10, R12
im2col_full:
	TESTQ R12, R12
	JEQ im2col_tail
	VMOVDQU32 (DX), Z1
	PERM64(Z1, Z0)
	VPTESTNMD Z29, Z1, K4
	VMOVAPS.Z Z0, K4, Z0
	VMOVUPS Z0, (R11)
	ADDQ $64, DX
	ADDQ $64, R11
	DECQ R12
	JMP im2col_full
im2col_tail:
	TESTQ CX, CX
	JEQ im2col_next
	VMOVDQU32.Z (DX), K2, Z1
	PERM64(Z1, Z0)
	VPTESTNMD Z29, Z1, K4
	VMOVAPS.Z Z0, K4, Z0
	VMOVUPS Z0, K2, (R11)
	ADDQ CX, DX
im2col_next:
	ADDQ R8, DI
	DECQ R9
	JMP im2col_tap
im2col_nextplane:
	MOVQ plane+72(FP), AX
	LEAQ (SI)(AX*4), SI
	DECQ R13
	JMP im2col_plane
im2col_done:
	VZEROUPPER
	RET

// ACCUM adds to acc the lanes of the col row (Z4..Z7) that the 16 inverse
// entries at off(DX) select, where an entry is below 64 (masked add: the
// other lanes keep their value exactly).
#define ACCUM(off, acc) \
	VMOVDQU32 off(DX), Z1 \
	PERM64(Z1, Z0) \
	VPTESTNMD Z29, Z1, K4 \
	VADDPS Z0, acc, K4, acc

// func unfoldPermCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int, planeMask, rowMask uint64, planes, plane int)
// For each of planes consecutive image planes (plane floats apart, their
// taps rows following each other in col): for t < taps in order,
// q < 16·chunks, img[q] += col[t·ld+inv[t·64+q]] where that entry is below
// 64. inv has 64 entries per tap; planeMask has a bit per pixel of a plane
// (at most 16·chunks), rowMask a bit per entry of a col row.
TEXT ·unfoldPermCol2im(SB), NOSPLIT, $0-80
	MOVQ col+0(FP), DI
	MOVQ ld+8(FP), R8
	SHLQ $2, R8
	MOVQ img+16(FP), SI
	MOVQ chunks+40(FP), R10
	MOVQ rowMask+56(FP), R13
	BROADCASTS
col2im_plane:
	MOVQ planes+64(FP), AX
	TESTQ AX, AX
	JEQ col2im_done
	DECQ AX
	MOVQ AX, planes+64(FP)
	MOVQ inv+24(FP), DX
	MOVQ taps+32(FP), R9
	MOVQ planeMask+48(FP), AX
	LOAD64(SI, AX, Z16, Z17, Z18, Z19) // the plane's accumulators
col2im_tap:
	TESTQ R9, R9
	JEQ col2im_store
	MOVQ R13, R12
	LOAD64(DI, R12, Z4, Z5, Z6, Z7)
	ACCUM(0, Z16)
	CMPQ R10, $1
	JEQ col2im_next
	ACCUM(64, Z17)
	CMPQ R10, $2
	JEQ col2im_next
	ACCUM(128, Z18)
	CMPQ R10, $3
	JEQ col2im_next
	ACCUM(192, Z19)
col2im_next:
	ADDQ $256, DX
	ADDQ R8, DI
	DECQ R9
	JMP col2im_tap
col2im_store:
	MOVQ planeMask+48(FP), BX
	STORE64(SI, BX, Z16, Z17, Z18, Z19)
	MOVQ plane+72(FP), AX
	LEAQ (SI)(AX*4), SI
	JMP col2im_plane
col2im_done:
	VZEROUPPER
	RET

// Lane indices for the stride-2 loops: even positions of a two-register
// table, and each of 16 values twice (low and high half).
DATA ·even2<>+0(SB)/4, $0
DATA ·even2<>+4(SB)/4, $2
DATA ·even2<>+8(SB)/4, $4
DATA ·even2<>+12(SB)/4, $6
DATA ·even2<>+16(SB)/4, $8
DATA ·even2<>+20(SB)/4, $10
DATA ·even2<>+24(SB)/4, $12
DATA ·even2<>+28(SB)/4, $14
DATA ·even2<>+32(SB)/4, $16
DATA ·even2<>+36(SB)/4, $18
DATA ·even2<>+40(SB)/4, $20
DATA ·even2<>+44(SB)/4, $22
DATA ·even2<>+48(SB)/4, $24
DATA ·even2<>+52(SB)/4, $26
DATA ·even2<>+56(SB)/4, $28
DATA ·even2<>+60(SB)/4, $30
GLOBL ·even2<>(SB), RODATA|NOPTR, $64

DATA ·twice<>+0(SB)/4, $0
DATA ·twice<>+4(SB)/4, $0
DATA ·twice<>+8(SB)/4, $1
DATA ·twice<>+12(SB)/4, $1
DATA ·twice<>+16(SB)/4, $2
DATA ·twice<>+20(SB)/4, $2
DATA ·twice<>+24(SB)/4, $3
DATA ·twice<>+28(SB)/4, $3
DATA ·twice<>+32(SB)/4, $4
DATA ·twice<>+36(SB)/4, $4
DATA ·twice<>+40(SB)/4, $5
DATA ·twice<>+44(SB)/4, $5
DATA ·twice<>+48(SB)/4, $6
DATA ·twice<>+52(SB)/4, $6
DATA ·twice<>+56(SB)/4, $7
DATA ·twice<>+60(SB)/4, $7
GLOBL ·twice<>(SB), RODATA|NOPTR, $64

// func stride2CopyAVX512(dst, src *float32, n int)
// dst[i] = src[2i] for i < n, n a multiple of 16; reads src[0:2n].
TEXT ·stride2CopyAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	VMOVDQU32 ·even2<>(SB), Z20
s2copy_loop:
	TESTQ CX, CX
	JEQ s2copy_done
	VMOVUPS (SI), Z0
	VPERMT2PS 64(SI), Z20, Z0
	VMOVUPS Z0, (DI)
	ADDQ $128, SI
	ADDQ $64, DI
	DECQ CX
	JMP s2copy_loop
s2copy_done:
	VZEROUPPER
	RET

// func stride2AddAVX512(dst, src *float32, n int)
// dst[2i] += src[i] for i < n, n a multiple of 16; the odd entries of
// dst[0:2n] are loaded and stored back unchanged (a masked add).
TEXT ·stride2AddAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	VMOVDQU32 ·twice<>(SB), Z20
	MOVL $8, AX
	VPBROADCASTD AX, Z21
	VPADDD Z21, Z20, Z21 // 8,8,9,9,…,15,15
	MOVL $0x5555, AX
	KMOVW AX, K1
s2add_loop:
	TESTQ CX, CX
	JEQ s2add_done
	VMOVUPS (SI), Z0
	VPERMPS Z0, Z20, Z1
	VPERMPS Z0, Z21, Z2
	VMOVUPS (DI), Z3
	VADDPS Z1, Z3, K1, Z3
	VMOVUPS Z3, (DI)
	VMOVUPS 64(DI), Z4
	VADDPS Z2, Z4, K1, Z4
	VMOVUPS Z4, 64(DI)
	ADDQ $64, SI
	ADDQ $128, DI
	DECQ CX
	JMP s2add_loop
s2add_done:
	VZEROUPPER
	RET
