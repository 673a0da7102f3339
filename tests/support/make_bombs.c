/* make_bombs.c -- writes the decode bombs the tests throw at the service:
 * progressive gray JPEGs with a chosen number of scans, made with libjpeg's
 * own encoder and a scan script of successive-approximation refinements.
 *
 *   build/tests/make_bombs scans W H N OUT.jpg    N scans (7..896), W x H gray
 *
 * Each scan of a progressive file makes the decoder pass over the whole
 * coefficient buffer again, so W x H x N, not the file size, is the work:
 * a 6320 x 6320 file of 256 scans is about 100 KB and took 11 s to decode.
 * The picture is flat gray: the refinement scans carry almost no data (the
 * file stays small) but the decoder still visits every block in each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* A script of exactly n scans for one component: coefficient k (0 = DC,
 * 1..63 AC, each its own spectral band) gets depth[k] + 1 scans, a first
 * one at point transform depth[k] and one refinement per bit. */
static jpeg_scan_info *script(int n, int *count)
{
    int depth[64] = {0};
    int total = 64;
    for (int bit = 1; bit <= 13 && total < n; bit++)
        for (int k = 0; k < 64 && total < n; k++, total++) depth[k] = bit;
    if (total != n) return NULL;
    jpeg_scan_info *s = calloc((size_t)n, sizeof *s);
    int i = 0;
    /* first scans, all coefficients, highest bits first; DC must come first */
    for (int k = 0; k < 64; k++)
        s[i++] = (jpeg_scan_info){1, {0, 0, 0, 0}, k, k, 0, depth[k]};
    for (int bit = 13; bit >= 1; bit--)
        for (int k = 0; k < 64; k++)
            if (depth[k] >= bit) s[i++] = (jpeg_scan_info){1, {0, 0, 0, 0}, k, k, bit, bit - 1};
    *count = i;
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 6 || strcmp(argv[1], "scans") != 0) {
        fprintf(stderr, "usage: make_bombs scans W H N OUT.jpg\n");
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]), n = atoi(argv[4]), count = 0;
    if (w < 1 || h < 1 || w > 65500 || h > 65500 || n < 64 || n > 896) {
        fprintf(stderr, "make_bombs: W, H in 1..65500, N in 64..896\n");
        return 2;
    }
    jpeg_scan_info *scans = script(n, &count);
    FILE *f = fopen(argv[5], "wb");
    if (!scans || !f) {
        fprintf(stderr, "make_bombs: cannot write %s\n", argv[5]);
        return 1;
    }
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 1;
    c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    c.scan_info = scans;
    c.num_scans = count;
    c.optimize_coding = TRUE;
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)w);
    memset(row, 128, (size_t)w);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    free(row);
    free(scans);
    return 0;
}
