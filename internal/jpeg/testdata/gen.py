#!/usr/bin/python3
"""Test images and Pillow golden decodes for internal/jpeg.

Run from internal/jpeg with Debian's python (python3-pil, python3-skimage):
    /usr/bin/python3 testdata/gen.py            # writes testdata/*.jpg, *.png
    /usr/bin/python3 testdata/gen.py draft DIR FILE...   # goldens for FILEs into DIR

JPEGs: skimage's chelsea.png (451x300) as a progressive JPEG, and a
203x141 crop of it (partial MCUs on both axes) as baseline 4:4:4, 4:2:2,
4:2:0 and grayscale, and progressive 4:2:0 and grayscale.

Goldens: NAME.dD.png is Pillow's draft-mode decode at 1/D (D = 2, 4, 8):
Image.draft(mode, size) then convert(mode), mode RGB (L for grayscale),
which makes libjpeg-turbo decode with scale_denom D and its reduced IDCTs;
for color images NAME.dD.L.png is the same with mode L: libjpeg's luma
plane alone, before any chroma upsampling or color conversion.
"""
import os
import sys

from PIL import Image

CHELSEA = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png"


def draft(path, outdir):
    base = os.path.basename(path).rsplit(".", 1)[0]
    color = Image.open(path).mode != "L"
    for d in (2, 4, 8):
        for mode, suffix in (("RGB", ""), ("L", ".L")) if color else (("L", ""),):
            im = Image.open(path)
            w, h = im.size
            # Pillow picks the largest 1/D with size // D at least the
            # request, so ask for w//D: that gives exactly D (w//(w//D) is
            # in [D, 2D)).
            im.draft(mode, (max(w // d, 1), max(h // d, 1)))
            im = im.convert(mode)
            want = ((w + d - 1) // d, (h + d - 1) // d)
            if im.size != want:
                sys.exit(f"{path}: draft 1/{d} gave {im.size}, want {want}")
            im.save(os.path.join(outdir, f"{base}.d{d}{suffix}.png"), optimize=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "draft":
        for p in sys.argv[3:]:
            draft(p, sys.argv[2])
        return
    here = os.path.dirname(os.path.abspath(__file__))
    src = Image.open(CHELSEA).convert("RGB")
    out = []

    def save(im, name, **kw):
        p = os.path.join(here, name)
        im.save(p, "JPEG", quality=90, **kw)
        out.append(p)

    save(src, "chelsea.progressive.jpg", progressive=True)
    crop = src.crop((100, 60, 303, 201))
    for sub, tag in ((0, "444"), (1, "422"), (2, "420")):
        save(crop, f"crop.{tag}.jpg", subsampling=sub)
    save(crop.convert("L"), "crop.gray.jpg")
    save(crop, "crop.420.progressive.jpg", subsampling=2, progressive=True)
    save(crop.convert("L"), "crop.gray.progressive.jpg", progressive=True)
    for p in out:
        draft(p, here)
        print(p, os.path.getsize(p))


if __name__ == "__main__":
    main()
