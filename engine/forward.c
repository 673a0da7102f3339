/* forward.c -- the network's forward pass and the per-worker workspace.
 *
 * A batch is split into contiguous runs of images, one run per thread of the
 * workspace (the caller's thread is thread 0).  Each thread takes its run
 * through the network block by block: all of the run's images pass block i
 * before any enters block i+1.  The token side (bridges' linears, Former,
 * hyper functions, classifier head) then works on the tokens of all the
 * run's images at once, so each weight matrix is read once per run rather
 * than once per image; the convolutions and the attention products go image
 * by image through shared scratch maps.  Feature maps are CHW per image;
 * tokens are T x D per image, the run's tokens contiguous ([n*T][D]).
 *
 * All scratch memory is sized by plan() for the largest (batch, h, w) seen
 * and reused: no allocation happens while inferring within that size. */
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int conv_out(int n, int s) { return (n - 1) / s + 1; } /* 3x3, pad 1 */

/* Per-thread scratch for a run of up to nimg images, from one allocation. */
typedef struct scratch {
    int nimg;         /* images the scratch holds                     */
    size_t feat;      /* floats per feature map                        */
    float *X, *Y;     /* block in / out maps of every image [nimg][feat] */
    float *U1, *U2;   /* hidden maps of the image being convolved [hid] */
    float *col;       /* stem im2col, classifier shuffle           [col] */
    float *attn;      /* attention weights                     [T * hw] */
    float *z;         /* tokens of every image               [nimg][T*D] */
    float *tok;       /* token-side temporaries            [nimg * work] */
    float *dy;        /* slopes of both hypers     [nimg][4 * maxhid] */
    float *gath;      /* hyper inputs / hidden, pw gathers               */
    float *feat_out;  /* pooled features                   [nimg][fin] */
    float *fc;        /* fc activations                      [nimg][W] */
} scratch;

typedef struct plan_sizes {
    size_t feat, hid, col, hw, work, maxhid, fin;
} plan_sizes;

typedef struct job {
    const float *input;
    float *logits;
    int b, h, w;
} job;

struct mf_workspace {
    const mf_model *m;
    int threads;
    int cap_b, cap_h, cap_w; /* largest batch/size planned for */
    size_t bytes;
    scratch *sc;             /* [threads] */
    void *mem;               /* one allocation for all scratch */
    mf_trace_fn trace;
    void *trace_user;
    /* helper threads: wait for a new generation, run their share, report */
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    unsigned generation;
    int pending;
    int quit;
    job cur;
};

/* ---- planning --------------------------------------------------------- */

/* Token work area per image: the largest of M->F (q, alpha, o: 3*T*C, proj
 * out: T*D), Former (q, o, t: 3*T*D, FFN hidden: 2*T*D) and F->M (k, v). */
static void tok_layout(const mf_model *m, size_t *work, size_t *maxhid)
{
    const mf_arch *a = &m->arch;
    size_t T = (size_t)a->tokens, D = (size_t)a->token_dim, maxc = 0, hid = 1;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        if ((size_t)b->cin > maxc) maxc = (size_t)b->cin;
        if ((size_t)b->cout > maxc) maxc = (size_t)b->cout;
        if ((size_t)b->hid1 > hid) hid = (size_t)b->hid1;
        if ((size_t)b->hid2 > hid) hid = (size_t)b->hid2;
    }
    size_t m2f = 3 * T * maxc + T * D, fo = 5 * T * D, f2m = 2 * T * maxc;
    *work = m2f > fo ? m2f : fo;
    if (f2m > *work) *work = f2m;
    *maxhid = hid;
}

static plan_sizes plan(const mf_model *m, int h, int w)
{
    const mf_arch *a = &m->arch;
    plan_sizes s = {0};
    h = conv_out(h, 2);
    w = conv_out(w, 2);
    size_t hw = (size_t)h * w;
    s.feat = (size_t)a->stem * hw;
    s.col = 27 * hw;
    s.hw = hw;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
        size_t ohw = (size_t)oh * ow;
        size_t f = (size_t)b->cout * ohw, hid = (size_t)b->hid1 * ohw;
        if (b->type == MF_BLOCK_B) hid = (size_t)b->hid1 * hw;
        if (b->type == MF_BLOCK_B3 && (size_t)b->hid2 * ohw > hid) hid = (size_t)b->hid2 * ohw;
        if (f > s.feat) s.feat = f;
        if (hid > s.hid) s.hid = hid;
        h = oh;
        w = ow;
        hw = ohw;
    }
    const mf_pw *cls = &m->cls_pw;
    if ((size_t)cls->cout * hw > s.hid) s.hid = (size_t)cls->cout * hw;
    if ((size_t)cls->cin * hw > s.col) s.col = (size_t)cls->cin * hw;
    tok_layout(m, &s.work, &s.maxhid);
    s.fin = (size_t)cls->cout + (size_t)a->token_dim;
    return s;
}

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Carve one thread's scratch for n images out of p (or just count, p NULL). */
static size_t carve(const mf_model *m, const plan_sizes *s, int n, float *p, scratch *sc)
{
    const size_t T = (size_t)m->arch.tokens, D = (size_t)m->arch.token_dim, N = (size_t)n;
    size_t sizes[12] = {
        N * pad16(s->feat), N * pad16(s->feat), pad16(s->hid), pad16(s->hid), pad16(s->col),
        pad16(T * s->hw), pad16(N * T * D), pad16(N * s->work), pad16(N * 4 * s->maxhid),
        pad16(N * D + N * D / 4 + 2 * s->maxhid), pad16(N * s->fin), pad16(N * (size_t)m->arch.classifier_width),
    };
    float **dst[12];
    scratch tmp;
    if (!sc) sc = &tmp;
    float **fields[12] = {&sc->X, &sc->Y, &sc->U1, &sc->U2, &sc->col, &sc->attn, &sc->z, &sc->tok,
                          &sc->dy, &sc->gath, &sc->feat_out, &sc->fc};
    memcpy(dst, fields, sizeof dst);
    size_t total = 0;
    for (int i = 0; i < 12; i++) {
        if (p) *dst[i] = p + total;
        total += sizes[i];
    }
    sc->nimg = n;
    sc->feat = pad16(s->feat);
    return total;
}

mf_status mf_workspace_reserve(mf_workspace *ws, int b, int h, int w)
{
    if (b < 1 || h < 32 || w < 32 || h > 16384 || w > 16384 || b > 4096) return MF_ERR_ARG;
    if (ws->mem && b <= ws->cap_b && h <= ws->cap_h && w <= ws->cap_w) return MF_OK;
    /* Grow to cover both the old and the new bounds. */
    if (ws->mem) {
        if (ws->cap_b > b) b = ws->cap_b;
        if (ws->cap_h > h) h = ws->cap_h;
        if (ws->cap_w > w) w = ws->cap_w;
    }
    plan_sizes s = plan(ws->m, h, w);
    int per_thread_b = (b + ws->threads - 1) / ws->threads;
    size_t per = carve(ws->m, &s, per_thread_b, NULL, NULL);
    float *mem = mf_alloc(per * (size_t)ws->threads * sizeof(float));
    if (!mem) return MF_ERR_NOMEM;
    mf_free(ws->mem);
    ws->mem = mem;
    ws->bytes = per * (size_t)ws->threads * sizeof(float);
    for (int t = 0; t < ws->threads; t++) carve(ws->m, &s, per_thread_b, mem + per * (size_t)t, &ws->sc[t]);
    ws->cap_b = b;
    ws->cap_h = h;
    ws->cap_w = w;
    return MF_OK;
}

size_t mf_workspace_bytes(const mf_workspace *ws) { return ws->bytes; }

void mf_workspace_set_trace(mf_workspace *ws, mf_trace_fn fn, void *user)
{
    ws->trace = fn;
    ws->trace_user = user;
}

/* ---- layers ----------------------------------------------------------- */

/* A grouped 1x1 conv over a CHW map: y[cout][n] from x[cin][n]. dya/dyb
 * are indexed by output channel after any shuffle; res like y. */
static void pw_conv(const mf_model *m, const mf_pw *p, const float *x, int n, float *y, mf_act act,
                    const float *dya, const float *dyb, const float *res, float *gather)
{
    const int G = p->groups, M = p->cout / G, K = p->cin / G;
    for (int g = 0; g < G; g++) {
        mf_epi e = {.act = act, .bias = p->bias + (size_t)g * M};
        float *yg;
        size_t ldy;
        if (p->shuffle_out) {
            yg = y + (size_t)g * n;
            ldy = (size_t)G * n;
            if (act == MF_ACT_DYRELU) {
                for (int j = 0; j < M; j++) {
                    gather[j] = dya[(size_t)j * G + g];
                    gather[M + j] = dyb[(size_t)j * G + g];
                }
                e.dya = gather;
                e.dyb = gather + M;
            }
        } else {
            yg = y + (size_t)g * M * n;
            ldy = (size_t)n;
            if (act == MF_ACT_DYRELU) {
                e.dya = dya + (size_t)g * M;
                e.dyb = dyb + (size_t)g * M;
            }
        }
        if (res) {
            e.res = res + (yg - y);
            e.ldr = ldy;
        }
        m->k->pw(p, g, x + (size_t)g * K * n, (size_t)n, n, yg, ldy, &e);
    }
}

/* Dynamic-ReLU slopes of n images from their token 0: image j's a[C] at
 * out + ld*j, its b[C] bofs floats further; a = 2 hsig(h) - 1 + 1,
 * b = 2 hsig(h') - 1.  tmp: [n][D] + [n][D/4] + [2C]. */
static void hyper(const mf_model *m, const mf_hyper *hy, const float *z, int n, float *tmp, float *out,
                  size_t ld, size_t bofs)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, c = hy->l2.out / 2, q = hy->l1.out;
    float *t0 = tmp, *hid = tmp + (size_t)n * D, *row = hid + (size_t)n * q;
    for (int j = 0; j < n; j++) memcpy(t0 + (size_t)j * D, z + (size_t)j * T * D, (size_t)D * sizeof(float));
    m->k->linear(&hy->l1, t0, n, hid);
    for (int i = 0; i < n * q; i++) hid[i] = hid[i] > 0.f ? hid[i] : 0.f;
    for (int j = 0; j < n; j++) {
        float *o = out + ld * j;
        m->k->linear(&hy->l2, hid + (size_t)j * q, 1, row);
        for (int i = 0; i < c; i++) {
            o[i] = (mf_hsig(row[i]) - 0.5f) * 2.0f + 1.0f;
            o[bofs + i] = (mf_hsig(row[c + i]) - 0.5f) * 2.0f;
        }
    }
}

/* z = LayerNorm(z + proj(alpha * attention(q(z), x))) for the run's images:
 * tokens read their own image's map (maps at x, stride fs floats). */
static void mobile_to_former(const mf_model *m, const mf_m2f *b, const float *x, size_t fs, int n, int C, int hw,
                             float *z, scratch *sc)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, ch = C / 2, R = n * T;
    float *q = sc->tok, *al = q + (size_t)R * C, *o = al + (size_t)R * C, *t = o + (size_t)R * C;
    m->k->linear(&b->q, z, R, q);
    m->k->linear(&b->alpha, z, R, al);
    const float scale = 1.0f / sqrtf((float)ch);
    for (int j = 0; j < n; j++)
        for (int hd = 0; hd < 2; hd++)
            m->k->m2f_attn(x + fs * j + (size_t)hd * ch * hw, ch, hw, q + (size_t)j * T * C + hd * ch, C, T, scale,
                           o + (size_t)j * T * C + hd * ch, C, sc->attn);
    for (size_t i = 0; i < (size_t)R * C; i++) o[i] *= 2.0f * mf_hsig(al[i]);
    m->k->linear(&b->proj, o, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &b->ln);
}

static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* Token self-attention (4 heads, keys = values = each image's tokens) and FFN. */
static void former(const mf_model *m, const mf_former *f, float *z, int n, scratch *sc)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, dh = D / 4, R = n * T;
    float *q = sc->tok, *o = q + (size_t)R * D, *t = o + (size_t)R * D, *hbuf = t + (size_t)R * D;
    float s[64];
    m->k->linear(&f->q, z, R, q);
    const float scale = 1.0f / sqrtf((float)dh);
    for (int img = 0; img < n; img++) {
        const float *zi = z + (size_t)img * T * D, *qi = q + (size_t)img * T * D;
        float *oi = o + (size_t)img * T * D;
        for (int hd = 0; hd < 4; hd++)
            for (int i = 0; i < T; i++) {
                float mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    float acc = 0.f;
                    for (int c = 0; c < dh; c++) acc += qi[(size_t)i * D + hd * dh + c] * zi[(size_t)j * D + hd * dh + c];
                    s[j] = acc * scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                float sum = 0.f;
                for (int j = 0; j < T; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
                for (int c = 0; c < dh; c++) {
                    float acc = 0.f;
                    for (int j = 0; j < T; j++) acc += s[j] * zi[(size_t)j * D + hd * dh + c];
                    oi[(size_t)i * D + hd * dh + c] = acc / sum;
                }
            }
    }
    m->k->linear(&f->mlp, o, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &f->ln);
    m->k->linear(&f->ffn1, z, R, hbuf);
    for (size_t i = 0; i < (size_t)R * 2 * D; i++) hbuf[i] = gelu(hbuf[i]);
    m->k->linear(&f->ffn2, hbuf, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &f->ffn_ln);
}

/* Token-side half of Former -> Mobile for the run: keys and values of
 * every image's tokens, [R][C] each at sc->tok. */
static void f2m_keys(const mf_model *m, const mf_f2m *f, const float *z, int n, scratch *sc)
{
    const int R = n * m->arch.tokens;
    m->k->linear(&f->k, z, R, sc->tok);
    m->k->linear(&f->v, z, R, sc->tok + (size_t)R * f->k.out);
}

/* y += attention of every pixel of image j over its tokens (keys/values
 * from f2m_keys). */
static void former_to_mobile(const mf_model *m, float *y, int C, int hw, int j, int n, const scratch *sc)
{
    const int T = m->arch.tokens, ch = C / 2;
    const float *k = sc->tok + (size_t)j * T * C, *v = sc->tok + (size_t)n * T * C + (size_t)j * T * C;
    const float scale = 1.0f / sqrtf((float)ch);
    for (int hd = 0; hd < 2; hd++)
        m->k->f2m_attn(y + (size_t)hd * ch * hw, ch, hw, k + hd * ch, v + hd * ch, C, T, scale);
}

static void trace_map(mf_workspace *ws, const char *name, int img, const float *d, int c, int h, int w)
{
    int shape[3] = {c, h, w};
    ws->trace(ws->trace_user, name, img, d, shape, 3);
}

/* The stem of one image: im2col [27][oh*ow], then a 1x1 conv with relu6. */
static void stem(const mf_model *m, scratch *sc, const float *in, int H, int W, float *out)
{
    const mf_arch *a = &m->arch;
    int h = conv_out(H, 2), w = conv_out(W, 2);
    for (int c = 0; c < 3; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *row = sc->col + (size_t)(c * 9 + ky * 3 + kx) * h * w;
                const float *src = in + (size_t)c * H * W;
                for (int oy = 0; oy < h; oy++) {
                    int iy = oy * 2 + ky - 1;
                    float *r = row + (size_t)oy * w;
                    if (iy < 0 || iy >= H) {
                        memset(r, 0, (size_t)w * sizeof(float));
                        continue;
                    }
                    const float *s = src + (size_t)iy * W;
                    for (int ox = 0; ox < w; ox++) {
                        int ix = ox * 2 + kx - 1;
                        r[ox] = (ix >= 0 && ix < W) ? s[ix] : 0.f;
                    }
                }
            }
    mf_pw st = {.cout = a->stem, .cin = 27, .groups = 1, .w = m->stem_w, .wp = m->stem_wp,
                .wp_group = mf_pw_packed_floats(a->stem, 27), .bias = m->stem_b};
    pw_conv(m, &st, sc->col, h * w, out, MF_ACT_RELU6, NULL, NULL, NULL, NULL);
}

/* The convolutions of block b for one image: x -> y (u1/u2 scratch), with
 * this image's slopes dy (hyper 1 a, b, then hyper 2 a, b; maxhid each). */
static void block_convs(const mf_model *m, const mf_block *b, const float *x, int h, int w, float *y, int oh,
                        int ow, const float *dy, size_t maxhid, scratch *sc)
{
    const int hw = h * w, ohw = oh * ow;
    const float *a1 = dy, *b1 = dy + maxhid, *a2 = dy + 2 * maxhid, *b2 = dy + 3 * maxhid;
    float *gath = sc->gath + (size_t)sc->nimg * m->arch.token_dim * 5 / 4;
    if (b->type == MF_BLOCK_A) {
        mf_epi e = {.act = MF_ACT_RELU6, .bias = b->dw1.bias};
        m->k->dw(&b->dw1, 0, b->dw1.cout, x, h, w, sc->U1, oh, ow, &e);
        pw_conv(m, &b->pw1, sc->U1, ohw, y, MF_ACT_NONE, NULL, NULL, b->identity ? x : NULL, gath);
    } else if (b->type == MF_BLOCK_B3) {
        mf_epi e1 = {.act = MF_ACT_DYRELU, .bias = b->dw1.bias, .dya = a1, .dyb = b1};
        m->k->dw(&b->dw1, 0, b->dw1.cout, x, h, w, sc->U1, oh, ow, &e1);
        pw_conv(m, &b->pw1, sc->U1, ohw, y, MF_ACT_NONE, NULL, NULL, NULL, gath);
        mf_epi e2 = {.act = MF_ACT_DYRELU, .bias = b->dw2.bias, .dya = a2, .dyb = b2};
        m->k->dw(&b->dw2, 0, b->dw2.cout, y, oh, ow, sc->U2, oh, ow, &e2);
        pw_conv(m, &b->pw2, sc->U2, ohw, y, MF_ACT_NONE, NULL, NULL, y, gath);
    } else {
        pw_conv(m, &b->pw1, x, hw, sc->U1, MF_ACT_DYRELU, a1, b1, NULL, gath);
        mf_epi e2 = {.act = MF_ACT_DYRELU, .bias = b->dw1.bias, .dya = a2, .dyb = b2};
        m->k->dw(&b->dw1, 0, b->dw1.cout, sc->U1, h, w, sc->U2, oh, ow, &e2);
        pw_conv(m, &b->pw2, sc->U2, ohw, y, MF_ACT_NONE, NULL, NULL, b->identity ? x : NULL, gath);
    }
}

/* Classifier conv of one image: [shuffle(G)] -> 1x1 + BN + relu6 -> mean ->
 * hswish, then token 0 appended: feat[fin]. */
static void classifier_features(const mf_model *m, scratch *sc, const float *x, int hw, const float *z, float *feat)
{
    const mf_arch *a = &m->arch;
    const int C = a->blocks[a->n_blocks - 1].c, G = a->groups;
    const float *cin = x;
    if (G > 1) {
        const int cg = C / G;
        for (int j = 0; j < cg; j++)
            for (int gi = 0; gi < G; gi++)
                memcpy(sc->col + (size_t)(j * G + gi) * hw, x + (size_t)(gi * cg + j) * hw, (size_t)hw * sizeof(float));
        cin = sc->col;
    }
    const mf_pw *cp = &m->cls_pw;
    pw_conv(m, cp, cin, hw, sc->U1, MF_ACT_RELU6, NULL, NULL, NULL, sc->gath);
    for (int c = 0; c < cp->cout; c++) {
        const float *r = sc->U1 + (size_t)c * hw;
        float s = 0.f;
        for (int p = 0; p < hw; p++) s += r[p];
        float v = s / (float)hw;
        feat[c] = v * mf_hsig(v);
    }
    memcpy(feat + cp->cout, z, (size_t)a->token_dim * sizeof(float));
}

/* fc (BN folded) + hswish, then the class layer, for n images at once. */
static void head(const mf_model *m, const float *feat, int n, float *fcbuf, float *logits)
{
    m->k->linear(&m->fc, feat, n, fcbuf);
    for (size_t i = 0; i < (size_t)n * m->fc.out; i++) fcbuf[i] = fcbuf[i] * mf_hsig(fcbuf[i]);
    m->k->linear(&m->head, fcbuf, n, logits);
}

/* Images [b0, b1) of the job, block by block, on thread t's scratch. */
static void run_images(mf_workspace *ws, scratch *sc, int b0, int b1)
{
    const job *jb = &ws->cur;
    const mf_model *m = ws->m;
    const mf_arch *a = &m->arch;
    const int n = b1 - b0, T = a->tokens, D = a->token_dim, H = jb->h, W = jb->w;
    const size_t fs = sc->feat, img = (size_t)3 * H * W, TD = (size_t)T * D;
    size_t work, maxhid;
    tok_layout(m, &work, &maxhid);
    char name[32];
    int h = conv_out(H, 2), w = conv_out(W, 2);
    for (int j = 0; j < n; j++) {
        stem(m, sc, jb->input + img * (b0 + j), H, W, sc->X + fs * j);
        memcpy(sc->z + TD * j, m->tokens, TD * sizeof(float));
        if (ws->trace) trace_map(ws, "stem", b0 + j, sc->X + fs * j, a->stem, h, w);
    }
    float *X = sc->X, *Y = sc->Y;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
        const size_t dyld = 4 * maxhid;
        if (b->type != MF_BLOCK_A) {
            mobile_to_former(m, &b->m2f, X, fs, n, b->cin, h * w, sc->z, sc);
            former(m, &b->former, sc->z, n, sc);
            hyper(m, &b->hy1, sc->z, n, sc->gath, sc->dy, dyld, maxhid);
            hyper(m, &b->hy2, sc->z, n, sc->gath, sc->dy + 2 * maxhid, dyld, maxhid);
        }
        for (int j = 0; j < n; j++)
            block_convs(m, b, X + fs * j, h, w, Y + fs * j, oh, ow, sc->dy + dyld * j, maxhid, sc);
        if (b->type != MF_BLOCK_A) {
            f2m_keys(m, &b->f2m, sc->z, n, sc);
            for (int j = 0; j < n; j++) {
                float *y = Y + fs * j;
                former_to_mobile(m, y, b->cout, oh * ow, j, n, sc);
                if (b->type == MF_BLOCK_B3 && b->identity) {
                    const float *x = X + fs * j;
                    for (size_t p = 0; p < (size_t)b->cout * oh * ow; p++) y[p] += x[p];
                }
            }
        }
        float *t = X; X = Y; Y = t;
        h = oh;
        w = ow;
        if (ws->trace)
            for (int j = 0; j < n; j++) {
                snprintf(name, sizeof name, "block%02d.features", i);
                trace_map(ws, name, b0 + j, X + fs * j, b->cout, h, w);
                snprintf(name, sizeof name, "block%02d.tokens", i);
                int shape[2] = {T, D};
                ws->trace(ws->trace_user, name, b0 + j, sc->z + TD * j, shape, 2);
            }
    }
    const int C = a->blocks[a->n_blocks - 1].c;
    mobile_to_former(m, &m->final_m2f, X, fs, n, C, h * w, sc->z, sc);
    const size_t fin = (size_t)m->cls_pw.cout + D;
    for (int j = 0; j < n; j++) {
        if (ws->trace) {
            int shape[2] = {T, D};
            ws->trace(ws->trace_user, "final_tokens", b0 + j, sc->z + TD * j, shape, 2);
        }
        classifier_features(m, sc, X + fs * j, h * w, sc->z + TD * j, sc->feat_out + fin * j);
    }
    head(m, sc->feat_out, n, sc->fc, jb->logits + (size_t)m->num_classes * b0);
}

static void run_share(mf_workspace *ws, int t)
{
    const job *j = &ws->cur;
    int per = (j->b + ws->threads - 1) / ws->threads;
    int b0 = t * per, b1 = b0 + per < j->b ? b0 + per : j->b;
    if (b0 < b1) run_images(ws, &ws->sc[t], b0, b1);
}

static void *helper_main(void *arg)
{
    mf_workspace *ws = ((void **)arg)[0];
    int t = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    unsigned seen = 0;
    pthread_mutex_lock(&ws->mu);
    for (;;) {
        while (ws->generation == seen && !ws->quit) pthread_cond_wait(&ws->cv_start, &ws->mu);
        if (ws->quit) break;
        seen = ws->generation;
        pthread_mutex_unlock(&ws->mu);
        run_share(ws, t);
        pthread_mutex_lock(&ws->mu);
        if (--ws->pending == 0) pthread_cond_signal(&ws->cv_done);
    }
    pthread_mutex_unlock(&ws->mu);
    return NULL;
}

mf_status mf_workspace_new(const mf_model *m, int threads, mf_workspace **out)
{
    *out = NULL;
    if (threads < 1 || threads > 256) return MF_ERR_ARG;
    mf_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return MF_ERR_NOMEM;
    ws->m = m;
    ws->threads = threads;
    ws->sc = calloc((size_t)threads, sizeof *ws->sc);
    ws->tids = calloc((size_t)threads, sizeof *ws->tids);
    if (!ws->sc || !ws->tids) { free(ws->sc); free(ws->tids); free(ws); return MF_ERR_NOMEM; }
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv_start, NULL);
    pthread_cond_init(&ws->cv_done, NULL);
    for (int t = 1; t < threads; t++) {
        void **arg = malloc(2 * sizeof *arg);
        if (!arg) { ws->threads = t; mf_workspace_free(ws); return MF_ERR_NOMEM; }
        arg[0] = ws;
        arg[1] = (void *)(intptr_t)t;
        if (pthread_create(&ws->tids[t], NULL, helper_main, arg) != 0) {
            free(arg);
            ws->threads = t;
            mf_workspace_free(ws);
            return MF_ERR_THREAD;
        }
    }
    *out = ws;
    return MF_OK;
}

void mf_workspace_free(mf_workspace *ws)
{
    if (!ws) return;
    pthread_mutex_lock(&ws->mu);
    ws->quit = 1;
    pthread_cond_broadcast(&ws->cv_start);
    pthread_mutex_unlock(&ws->mu);
    for (int t = 1; t < ws->threads; t++) pthread_join(ws->tids[t], NULL);
    pthread_mutex_destroy(&ws->mu);
    pthread_cond_destroy(&ws->cv_start);
    pthread_cond_destroy(&ws->cv_done);
    mf_free(ws->mem);
    free(ws->sc);
    free(ws->tids);
    free(ws);
}

mf_status mf_forward(const mf_model *m, mf_workspace *ws, const float *input, int b, int h, int w, float *logits)
{
    if (!m || !ws || ws->m != m || !input || !logits) return MF_ERR_ARG;
    mf_status st = mf_workspace_reserve(ws, b, h, w);
    if (st != MF_OK) return st;
    ws->cur = (job){input, logits, b, h, w};
    int active = ws->threads < b ? ws->threads : b;
    if (active > 1) {
        pthread_mutex_lock(&ws->mu);
        ws->pending = ws->threads - 1;
        ws->generation++;
        pthread_cond_broadcast(&ws->cv_start);
        pthread_mutex_unlock(&ws->mu);
        run_share(ws, 0);
        pthread_mutex_lock(&ws->mu);
        while (ws->pending > 0) pthread_cond_wait(&ws->cv_done, &ws->mu);
        pthread_mutex_unlock(&ws->mu);
    } else {
        /* one image per thread at most: the caller's thread does it all */
        int saved = ws->threads;
        ws->threads = 1;
        run_share(ws, 0);
        ws->threads = saved;
    }
    return MF_OK;
}
