//go:build cgo && libjpeg

package dataset

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

struct rt_err {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	int truncated;
	char msg[JMSG_LENGTH_MAX];
};

static void rt_error_exit(j_common_ptr c) {
	struct rt_err *e = (struct rt_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jb, 1);
}

static void rt_emit(j_common_ptr c, int level) {
	struct rt_err *e = (struct rt_err *)c->err;
	if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

static void rt_output(j_common_ptr c) {}

// rt_decode reads the header (out == NULL) or decodes at 1/denom scale into
// out (cap bytes). Returns 0 ok, -1 error (msg set), 1 out too small.
static int rt_decode(const unsigned char *data, unsigned long n, int denom, int gray,
		unsigned char *out, unsigned long cap, int *w, int *h, int *comps, char *msg) {
	struct jpeg_decompress_struct cinfo;
	struct rt_err jerr;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = rt_error_exit;
	jerr.pub.emit_message = rt_emit;
	jerr.pub.output_message = rt_output;
	jerr.truncated = 0;
	if (setjmp(jerr.jb)) {
		strncpy(msg, jerr.msg, 199);
		msg[199] = 0;
		jpeg_destroy_decompress(&cinfo);
		return -1;
	}
	jpeg_create_decompress(&cinfo);
	jpeg_mem_src(&cinfo, data, n);
	jpeg_read_header(&cinfo, TRUE);
	if (out == NULL) {
		*w = cinfo.image_width; *h = cinfo.image_height; *comps = cinfo.num_components;
		jpeg_destroy_decompress(&cinfo);
		return 0;
	}
	cinfo.scale_num = 1;
	cinfo.scale_denom = denom;
	if (gray || cinfo.jpeg_color_space == JCS_GRAYSCALE) cinfo.out_color_space = JCS_GRAYSCALE;
	else cinfo.out_color_space = JCS_RGB;
	jpeg_start_decompress(&cinfo);
	*w = cinfo.output_width; *h = cinfo.output_height; *comps = cinfo.output_components;
	unsigned long rowb = (unsigned long)cinfo.output_width * cinfo.output_components;
	if (rowb * cinfo.output_height > cap) {
		jpeg_destroy_decompress(&cinfo);
		return 1;
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = out + (unsigned long)cinfo.output_scanline * rowb;
		jpeg_read_scanlines(&cinfo, &row, 1);
		if (jerr.truncated) break;
	}
	if (jerr.truncated) {
		strcpy(msg, "premature end of JPEG data (truncated)");
		jpeg_destroy_decompress(&cinfo);
		return -1;
	}
	jpeg_finish_decompress(&cinfo);
	jpeg_destroy_decompress(&cinfo);
	return 0;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// haveLibjpeg: JPEGs are decoded by the system's libjpeg-turbo (build tag
// libjpeg), which also decodes at 1/2, 1/4, 1/8 scale in the DCT domain.
const haveLibjpeg = true

func libjpegInfo(data []byte) (w, h, comps int, err error) {
	var cw, ch, cc C.int
	var msg [200]C.char
	if C.rt_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), 1, 0, nil, 0, &cw, &ch, &cc, &msg[0]) != 0 {
		return 0, 0, 0, errors.New(C.GoString(&msg[0]))
	}
	return int(cw), int(ch), int(cc), nil
}

// libjpegDecode decodes at 1/denom scale into buf (grown as needed).
func libjpegDecode(data []byte, denom int, gray bool, buf []uint8) (pix []uint8, w, h, cs int, err error) {
	g := C.int(0)
	if gray {
		g = 1
	}
	for range 2 {
		if cap(buf) == 0 {
			buf = make([]uint8, 1)
		}
		buf = buf[:cap(buf)]
		var cw, ch, cc C.int
		var msg [200]C.char
		rc := C.rt_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), C.int(denom), g,
			(*C.uchar)(unsafe.Pointer(&buf[0])), C.ulong(len(buf)), &cw, &ch, &cc, &msg[0])
		switch rc {
		case 0:
			return buf, int(cw), int(ch), int(cc), nil
		case 1:
			buf = make([]uint8, int(cw)*int(ch)*int(cc))
			continue
		default:
			return buf, 0, 0, 0, errors.New(C.GoString(&msg[0]))
		}
	}
	return buf, 0, 0, 0, errors.New("libjpeg: output size changed between tries")
}
