#!/usr/bin/python3
"""Write the image fixtures of tests/test_image.c and tests/test_preprocess.c.

Run from the repository root with Debian's python3 (PIL + numpy):

    /usr/bin/python3 tools/make_test_images.py

Everything goes to tests/data/images/, which is emptied first, and is
deterministic (fixed seeds, the system libjpeg-turbo/zlib), so rerunning it
reproduces the committed files (about 300 KB).

For every good image NAME.EXT:
  NAME.txt     "w h" after EXIF orientation
  NAME.rgb     PIL's ImageOps.exif_transpose(Image.open(f)).convert("RGB"),
               raw row-major RGB bytes -- what server/image.c must produce.
               photo.jpg is too large for that: NAME.fnv1a64 holds the 64-bit
               FNV-1a hash of those bytes instead (hex).
  NAME.draftS.txt, NAME.draftS.fnv1a64   for photo.jpg and exif_6.jpg, S = 2, 4, 8:
               the same after PIL's draft() asked libjpeg for 1/S scale (what
               the decoder's min_side gives at those scales).
Preprocessing references (torchvision's Resize(resize) + CenterCrop(input) +
ToTensor + Normalize, reimplemented below step by step on PIL, because
torchvision is not installed here; PIL does the resizing, as it does under
torchvision):
  NAME.pre_CONFIG.f32      float32 [3][H][W], little-endian
  NAME.pre_imagenet.png    for the 224x224 ImageNet config a float file would
                           be 600 KB, so the uint8 image after resize + crop
                           (= ToTensor's input) is stored as a PNG, and
  pre_imagenet.lut.f32     [3][256] float32: the normalized value of every
                           uint8 per channel, computed with the same numpy
                           float32 operations as the tensors.
Corrupt inputs have no side files; tests/test_image.c knows their statuses.
"""
import os
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

# PIL warns that a palette image with tRNS "should be converted to RGBA";
# convert("RGB") dropping the transparency is exactly the reference here.
warnings.filterwarnings("ignore", message="Palette images with Transparency")
# exif_4.jpg stores its orientation as three SHORTs on purpose (PIL takes the first).
warnings.filterwarnings("ignore", message="Metadata Warning, tag 274")

OUT = os.path.join("tests", "data", "images")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Must match the configs in tests/test_preprocess.c.
CONFIGS = {
    "imagenet": dict(resize=256, input=(224, 224), interp="bilinear",
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3),
    "gray": dict(resize=32, input=(32, 32), interp="bilinear",
                 mean=(0.286,) * 3, std=(0.353,) * 3, channels=1),
    "nearest": dict(resize=24, input=(28, 26), interp="nearest",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3),
    # crop larger than the resized image on one side: torchvision zero-pads
    "pad": dict(resize=20, input=(26, 31), interp="bilinear",
                mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), channels=3),
}

RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def path(name):
    return os.path.join(OUT, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


# ---- pictures -------------------------------------------------------------

def base_picture(w=37, h=23):
    """Small, odd-sized (MCU edges), asymmetric in every direction, so each
    EXIF orientation gives a different result."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 30 + 200 * x / (w - 1)
    g = 20 + 210 * y / (h - 1)
    b = 128 + 90 * np.sin(x / 3.0 + y / 5.0)
    img = np.stack([r, g, b], axis=-1)
    img[1:6, 1:9] = (250, 20, 20)      # red block near the top-left corner
    img[h - 4:h - 1, w - 6:w - 2] = (10, 10, 240)  # blue block bottom-right
    img[:, w // 3] = (255, 255, 255)   # white column left of centre
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")


def photo_picture(w=320, h=280, seed=7):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 40 + 180 * (x + y) / (w + h)
    b = 60 + 150 * ((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (h * 0.25) ** 2)
    img = np.stack([r, g, b], axis=-1)
    img[40:90, 30:140] = (240, 200, 30)
    img[150:200, 20:120] += rng.normal(0, 20, (50, 100, 3))  # a textured patch
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")


def tall_picture(w=19, h=171):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(y / 9.0)
    g = 255 * x / (w - 1)
    b = 255 * ((x.astype(int) // 4 + y.astype(int) // 4) % 2)
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8), "RGB")


# ---- hand-written PNGs (what PIL cannot write: 16-bit colour, interlacing) --

def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def pack_row(samples, depth):
    """One row of samples (1-D, channels interleaved) to PNG bytes."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    pad = (-len(samples)) % per
    s = np.concatenate([samples.astype(np.uint8), np.zeros(pad, np.uint8)]).reshape(-1, per)
    out = np.zeros(len(s), np.uint16)
    for i in range(per):
        out = (out << depth) | s[:, i]
    return out.astype(np.uint8).tobytes()


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def make_png(arr, depth, ctype, interlace=False, plte=None, trns=None, ihdr_size=None):
    """arr: [h][w][channels] samples.  Filter type 0 on every row."""
    h, w = arr.shape[:2]
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for xs, ys, dx, dy in passes:
        sub = arr[ys::dy, xs::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue  # empty passes carry no rows at all
        for row in sub:
            raw += b"\0" + pack_row(row.reshape(-1), depth)
    iw, ih = ihdr_size or (w, h)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", iw, ih, depth, ctype, 0, 0, int(interlace)))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += png_chunk(b"tRNS", bytes(trns))
    out += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


def png_chunks(data):
    """[(offset, tag, length)] of a PNG file."""
    pos, res = 8, []
    while pos + 8 <= len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        res.append((pos, tag, n))
        pos += 12 + n
    return res


# ---- EXIF -----------------------------------------------------------------

def exif_tiff(orientation, endian):
    """APP1 payload "Exif\\0\\0" + TIFF in the given byte order ("<" II or
    ">" MM): a Make string first, then the orientation, so entries are
    walked and offsets honoured.  Orientation 4 is stored as three SHORTs
    (6 bytes, so at an offset), of which PIL uses the first."""
    make = b"mobileformer\0"
    entries = 2
    data_off = 8 + 2 + 12 * entries + 4
    e = endian
    t = (b"II" if e == "<" else b"MM") + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", entries)
    t += struct.pack(e + "HHII", 0x010F, 2, len(make), data_off)
    if orientation == 4:
        t += struct.pack(e + "HHII", 0x0112, 3, 3, data_off + len(make))
    else:
        t += struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    t += struct.pack(e + "I", 0) + make
    if orientation == 4:
        t += struct.pack(e + "HHH", 4, 1, 1)
    return b"Exif\0\0" + t


def exif_pil(orientation):
    """What PIL itself writes (big-endian, as of Pillow 9.4)."""
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


# ---- references -----------------------------------------------------------

def pil_rgb(name):
    with Image.open(path(name)) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def torchvision_like(rgb, cfg):
    """Resize(resize) + CenterCrop(input) on a PIL image, as torchvision
    does it; returns the uint8 array [H][W][C] that ToTensor receives."""
    im = rgb.convert("L") if cfg["channels"] == 1 else rgb
    # Resize(int): torchvision.transforms.functional._compute_resized_output_size
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    size = cfg["resize"]
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), RESAMPLE[cfg["interp"]])
    # CenterCrop: pad with zeros where the crop is larger, then crop
    ch, cw = cfg["input"]
    iw, ih = im.size
    if cw > iw or ch > ih:
        border = ((cw - iw) // 2 if cw > iw else 0, (ch - ih) // 2 if ch > ih else 0,
                  (cw - iw + 1) // 2 if cw > iw else 0, (ch - ih + 1) // 2 if ch > ih else 0)
        im = ImageOps.expand(im, border=border, fill=0)
        iw, ih = im.size
    top = int(round((ih - ch) / 2.0))
    left = int(round((iw - cw) / 2.0))
    im = im.crop((left, top, left + cw, top + ch))
    a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def to_tensor_normalize(a, cfg):
    """ToTensor (float32 / 255) + Normalize ((x - mean) / std in float32);
    a single gray plane is repeated on the 3 channels first."""
    x = a.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    mean = np.array(cfg["mean"], dtype=np.float32)[:, None, None]
    std = np.array(cfg["std"], dtype=np.float32)[:, None, None]
    return ((x - mean) / std).astype("<f4")


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in memoryview(data):
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- main -----------------------------------------------------------------

def gif_lzw(indices, min_code_size):
    """GIF image data: the LZW minimum code size and sub-blocks.  Every index
    goes out as a literal code, with a clear code before the table would
    widen the codes, so any index up to 2**min_code_size - 1 can be written
    whatever the colour table's size (PIL's encoder cannot do that)."""
    clear, eoi, width = 1 << min_code_size, (1 << min_code_size) + 1, min_code_size + 1
    out, acc, nbits, count = bytearray(), 0, 0, 0

    def emit(code):
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8
    emit(clear)
    for i in indices:
        emit(i)
        count += 1
        if count >= (1 << width) - clear - 3:
            emit(clear)
            count = 0
    emit(eoi)
    if nbits:
        out.append(acc & 255)
    blocks = bytearray()
    for k in range(0, len(out), 255):
        blocks += bytes([len(out[k:k + 255])]) + out[k:k + 255]
    return bytes([min_code_size]) + bytes(blocks) + b"\0"


def gif_file(w, h, gct, frames, version=b"GIF89a"):
    """A GIF by hand: frames are (x, y, w, h, local table or None, transparent index or None,
    interlaced, indices in file order, LZW code size)."""
    def table_flags(t):
        return ((len(t) // 3).bit_length() - 2) & 7
    b = bytearray(version) + struct.pack("<HH", w, h)
    b += bytes([0x80 | table_flags(gct) if gct else 0, 0, 0]) + (gct or b"")
    for (x, y, fw, fh, lct, trans, inter, idx, mcs) in frames:
        if trans is not None:
            b += bytes([0x21, 0xF9, 4, 1, 10, 0, trans, 0])
        flags = (0x80 | table_flags(lct) if lct else 0) | (0x40 if inter else 0)
        b += b"," + struct.pack("<HHHH", x, y, fw, fh) + bytes([flags]) + (lct or b"") + gif_lzw(idx, mcs)
    return bytes(b + b";")


def interlace_order(rows):
    """Rows of a frame in the order an interlaced GIF stores them."""
    h = len(rows)
    return [rows[r] for start, step in ((0, 8), (4, 8), (2, 4), (1, 2)) for r in range(start, h, step)]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(path(f))
    good = []          # images with .rgb references
    hashed = []        # images with .fnv1a64 references
    pre = {}           # image -> configs with preprocessing references

    base = base_picture()
    base.save(path("base.jpg"), quality=90)
    base.save(path("base_444.jpg"), quality=90, subsampling=0)
    base.save(path("base_422.jpg"), quality=90, subsampling=1)
    base.save(path("base_progressive.jpg"), quality=90, progressive=True)
    base.convert("L").save(path("base_gray.jpg"), quality=90)
    # CMYK with noise on top, so PIL's CMYK->RGB rounding sees many values
    cmyk = np.asarray(base.convert("CMYK")).astype(int)
    cmyk += np.random.default_rng(5).integers(-60, 61, cmyk.shape)
    Image.fromarray(np.clip(cmyk, 0, 255).astype(np.uint8), "CMYK").save(
        path("base_cmyk.jpg"), quality=95)
    good += ["base.jpg", "base_444.jpg", "base_422.jpg", "base_progressive.jpg",
             "base_gray.jpg", "base_cmyk.jpg"]

    # YCCK: the CMYK file with its Adobe APP14 transform byte set to 2, so
    # libjpeg reads the first three components as YCC (odd colours, valid file).
    d = bytearray(open(path("base_cmyk.jpg"), "rb").read())
    a = d.find(b"Adobe")
    assert a > 4 and d[a - 4:a - 2] == b"\xff\xee" and d[a + 11] == 0, \
        "expected an Adobe APP14 marker with transform 0"
    d[a + 11] = 2
    write("base_ycck.jpg", bytes(d))
    good.append("base_ycck.jpg")

    for o in range(1, 9):
        exif = exif_pil(o) if o == 1 else exif_tiff(o, "<" if o % 2 else ">")
        base.save(path("exif_%d.jpg" % o), quality=90, exif=exif)
        good.append("exif_%d.jpg" % o)

    photo = photo_picture()
    photo.save(path("photo.jpg"), quality=85)
    hashed.append("photo.jpg")
    pre["photo.jpg"] = ["imagenet", "gray"]

    # PNG, every colour type
    base.save(path("png_rgb.png"))
    rgba = base.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    rgba.save(path("png_rgba.png"))
    base.convert("L").save(path("png_gray.png"))
    base.convert("LA").save(path("png_la.png"))
    base.convert("1").save(path("png_gray1.png"))
    pal = base.quantize(colors=16)
    pal.save(path("png_palette.png"))
    pal.save(path("png_palette_trns.png"), transparency=3)
    good += ["png_rgb.png", "png_rgba.png", "png_gray.png", "png_la.png", "png_gray1.png",
             "png_palette.png", "png_palette_trns.png"]

    # 16-bit: values under and over 255 matter for gray (PIL clips it)
    rgb8 = np.asarray(base).astype(np.uint16)
    rng = np.random.default_rng(1)
    rgb16 = rgb8 * 257 + rng.integers(0, 256, rgb8.shape, dtype=np.uint16) % 257
    g16 = np.asarray(base.convert("L")).astype(np.uint32)
    gray16 = (g16 * g16 + g16) % 65536  # spans 0..65535, many values < 256
    gray16[0, :] = np.arange(base.size[0]) * 7  # a row of small values
    Image.fromarray(gray16.astype(np.uint16), "I;16").save(path("png_gray16.png"))
    write("png_rgb16.png", make_png(rgb16, 16, 2))
    alpha16 = (np.arange(rgb16.shape[1], dtype=np.uint16) * 1700)[None, :].repeat(rgb16.shape[0], 0)
    write("png_rgba16.png", make_png(np.dstack([rgb16, alpha16]), 16, 6))
    write("png_la16.png", make_png(np.dstack([gray16, alpha16]), 16, 4))
    g2 = (np.asarray(base.convert("L")) >> 6)[:, :, None]
    write("png_gray2.png", make_png(g2, 2, 0))
    good += ["png_gray16.png", "png_rgb16.png", "png_rgba16.png", "png_la16.png", "png_gray2.png"]

    # Adam7 interlacing: 8-bit RGB, 16-bit gray, 4-bit palette with tRNS
    write("png_interlaced.png", make_png(np.asarray(base), 8, 2, interlace=True))
    write("png_interlaced_gray16.png", make_png(gray16[:, :, None], 16, 0, interlace=True))
    p4 = base.quantize(colors=16)
    idx = np.asarray(p4)[:, :, None]
    plte = p4.getpalette()[:48]
    write("png_interlaced_pal4.png",
          make_png(idx, 4, 3, interlace=True, plte=plte, trns=[0, 128, 255]))
    good += ["png_interlaced.png", "png_interlaced_gray16.png", "png_interlaced_pal4.png"]

    # PNG with EXIF orientation 6 in an eXIf chunk (before IDAT)
    base.save(path("png_exif6.png"), exif=exif_tiff(6, "<"))
    good.append("png_exif6.png")

    tall = tall_picture()
    tall.save(path("tall.png"))
    good.append("tall.png")

    # WebP: lossy, lossless, with alpha (lossy and lossless), an EXIF
    # orientation, and the first frame of an animation
    base.save(path("webp_lossy.webp"), quality=80)
    base.save(path("webp_lossless.webp"), lossless=True)
    rgba.save(path("webp_alpha.webp"), quality=80)
    rgba.save(path("webp_alpha_lossless.webp"), lossless=True)
    base.save(path("webp_exif6.webp"), quality=90, exif=exif_tiff(6, "<"))
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(path("webp_anim.webp"), save_all=True, append_images=frames[1:], duration=100,
                   lossless=True)
    good += ["webp_lossy.webp", "webp_lossless.webp", "webp_alpha.webp", "webp_alpha_lossless.webp",
             "webp_exif6.webp", "webp_anim.webp"]

    # GIF: PIL's own (global palette), and by hand: a local table, a frame
    # smaller than the screen with a transparent index, a frame reaching past
    # the screen, interlaced, no colour table, an identity gray local table
    # over a global one, indices past a 2-entry table, an animation's first frame
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path("gif_pil.gif"))
    rng = np.random.default_rng(11)
    gct = bytes(rng.integers(0, 256, 3 * 16, dtype=np.uint8))
    lct = bytes(rng.integers(0, 256, 3 * 32, dtype=np.uint8))
    idx16 = list(rng.integers(0, 16, 23 * 17))
    write("gif_local.gif", gif_file(23, 17, gct, [(0, 0, 23, 17, lct, None, False,
                                                   list(rng.integers(0, 32, 23 * 17)), 5)]))
    write("gif_offset_trns.gif", gif_file(30, 20, gct, [(4, 3, 23, 17, None, 5, False, idx16, 4)]))
    write("gif_past_screen.gif", gif_file(10, 8, gct, [(3, 2, 23, 17, None, None, False, idx16, 4)]))
    rows = [idx16[r * 23:(r + 1) * 23] for r in range(17)]
    write("gif_interlaced.gif", gif_file(23, 17, gct, [(0, 0, 23, 17, None, None, True,
                                                        sum(interlace_order(rows), []), 4)]))
    write("gif_no_table.gif", gif_file(16, 16, None, [(0, 0, 16, 16, None, None, False,
                                                       list(range(0, 256)), 8)], version=b"GIF87a"))
    ramp = bytes(v for i in range(16) for v in (i, i, i))
    write("gif_gray_local.gif", gif_file(23, 17, gct, [(0, 0, 23, 17, ramp, None, False,
                                                        list(rng.integers(0, 16, 23 * 17)), 4)]))
    write("gif_past_table.gif", gif_file(16, 16, gct[:6], [(0, 0, 16, 16, None, None, False,
                                                            list(range(255, -1, -1)), 8)]))
    anim = [base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32),
            base.transpose(Image.Transpose.ROTATE_180).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)]
    anim[0].save(path("gif_anim.gif"), save_all=True, append_images=anim[1:], duration=100, loop=0)
    good += ["gif_pil.gif", "gif_local.gif", "gif_offset_trns.gif", "gif_past_screen.gif",
             "gif_interlaced.gif", "gif_no_table.gif", "gif_gray_local.gif", "gif_past_table.gif",
             "gif_anim.gif"]
    pre["tall.png"] = ["gray", "nearest", "pad"]
    pre["base.jpg"] = ["imagenet", "nearest", "pad"]
    pre["exif_6.jpg"] = ["pad"]

    # ---- corrupt and hostile inputs ----
    jpg = open(path("base.jpg"), "rb").read()
    write("trunc.jpg", jpg[:len(jpg) // 2])
    prog = open(path("base_progressive.jpg"), "rb").read()
    write("trunc_progressive.jpg", prog[:len(prog) // 2])
    pngd = open(path("png_rgb.png"), "rb").read()
    write("trunc.png", pngd[:len(pngd) // 2])
    chunks = png_chunks(pngd)
    idat = [c for c in chunks if c[1] == b"IDAT"][0]
    bad = bytearray(pngd)
    bad[idat[0] + 8 + idat[2]] ^= 0x5a  # first byte of the IDAT CRC
    write("badcrc.png", bytes(bad))
    # an ancillary chunk (skipped unparsed by the decoder) with a bad CRC
    text = png_chunk(b"tEXt", b"Comment\0hello")
    text = text[:-1] + bytes([text[-1] ^ 1])
    write("badcrc_text.png", pngd[:idat[0]] + text + pngd[idat[0]:])
    rng = np.random.default_rng(3)
    rnd = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    write("random.bin", b"RND" + rnd)
    write("random_jpeg.jpg", b"\xff\xd8\xff\xe0" + rnd)
    write("random_png.png", b"\x89PNG\r\n\x1a\n" + rnd)
    webp = open(path("webp_lossy.webp"), "rb").read()
    write("trunc.webp", webp[:len(webp) // 2])
    gifd = open(path("gif_local.gif"), "rb").read()
    write("trunc.gif", gifd[:len(gifd) // 2])
    # a GIF screen of 60000x60000 (the frame is small)
    write("huge.gif", b"GIF89a" + struct.pack("<HH", 60000, 60000) + gifd[10:])
    # other formats, as their first bytes (the decoder must name them, not decode them)
    base.save(path("other.bmp"))
    base.save(path("other.tiff"))
    write("other.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + rnd[:64])
    write("other.avif", b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + rnd[:64])
    # SOF0 claiming 60000x60000 / height 0
    sof = jpg.find(b"\xff\xc0")
    assert sof > 0
    huge = bytearray(jpg)
    huge[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    write("huge.jpg", bytes(huge))
    zero = bytearray(jpg)
    zero[sof + 5:sof + 7] = struct.pack(">H", 0)
    write("zero.jpg", bytes(zero))
    # IHDR claiming 60000x60000 / width 0, with correct CRCs
    ihdr = chunks[0]
    assert ihdr[1] == b"IHDR"
    body = bytearray(pngd[ihdr[0] + 8:ihdr[0] + 8 + 13])
    for name, wh in (("huge.png", (60000, 60000)), ("zero.png", (0, 23))):
        body[0:8] = struct.pack(">II", *wh)
        write(name, pngd[:ihdr[0]] + png_chunk(b"IHDR", bytes(body)) + pngd[ihdr[0] + 25:])

    # ---- references ----
    for name in good + hashed:
        stem = os.path.splitext(name)[0]
        im = pil_rgb(name)
        write(stem + ".txt", ("%d %d\n" % im.size).encode())
        if name in hashed:
            write(stem + ".fnv1a64", ("%016x\n" % fnv1a64(im.tobytes())).encode())
        else:
            write(stem + ".rgb", im.tobytes())
    for name, cfgs in pre.items():
        stem = os.path.splitext(name)[0]
        im = pil_rgb(name)
        for c in cfgs:
            a = torchvision_like(im, CONFIGS[c])
            if c == "imagenet":
                Image.fromarray(a, "RGB").save(path(stem + ".pre_imagenet.png"))
            else:
                write("%s.pre_%s.f32" % (stem, c), to_tensor_normalize(a, CONFIGS[c]).tobytes())
    # libjpeg's scaled decode, as PIL's draft() asks for it: 1/2, 1/4, 1/8
    for name in ("photo.jpg", "exif_6.jpg"):
        stem = os.path.splitext(name)[0]
        for s in (2, 4, 8):
            with Image.open(path(name)) as im:
                im.draft("RGB", (im.size[0] // s, im.size[1] // s))
                im = ImageOps.exif_transpose(im).convert("RGB")
            write("%s.draft%d.txt" % (stem, s), ("%d %d\n" % im.size).encode())
            write("%s.draft%d.fnv1a64" % (stem, s), ("%016x\n" % fnv1a64(im.tobytes())).encode())
    lut = to_tensor_normalize(np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, 2),
                              CONFIGS["imagenet"])
    write("pre_imagenet.lut.f32", lut.tobytes())

    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print("%d files, %d bytes in %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    sys.exit(main())
