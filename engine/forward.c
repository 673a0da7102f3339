/* forward.c -- the network's forward pass and the per-worker workspace.
 *
 * A batch is split into contiguous runs of images, one run per thread of the
 * workspace (the caller's thread is thread 0).  Each thread carries its images
 * one at a time through stem, blocks and the classifier's convolution into a
 * pooled feature vector, then runs the two fully connected layers once for
 * its whole run (a GEMM, so the large fc weights are read once per run, not
 * once per image).  Feature maps are CHW per image; tokens are T x D.
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

/* Per-thread scratch, carved out of one allocation. */
typedef struct scratch {
    float *X, *Y;     /* features in / out of a block           [maxfeat] */
    float *U1, *U2;   /* hidden maps                             [maxhid] */
    float *col;       /* stem im2col, classifier shuffle         [maxcol] */
    float *attn;      /* attention weights                       [T * maxhw] */
    float *tok;       /* token-side temporaries                  [maxtok] */
    float *feat;      /* pooled features of the run's images     [b][fin] */
    float *fc;        /* fc activations of the run's images      [b][W] */
} scratch;

typedef struct plan_sizes {
    size_t feat, hid, col, hw, tok, fin;
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

/* Token scratch: z [T*D] | work area [work] | dya, dyb [maxhid each] |
 * gather [D/4 + 2*maxhid] (hyper's hidden layer, pw's shuffled slopes). */
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
    size_t m2f = 3 * T * maxc + T * D, fo = 5 * T * D + T, f2m = 2 * T * maxc;
    *work = m2f > fo ? m2f : fo;
    if (f2m > *work) *work = f2m;
    *maxhid = hid;
}

static size_t tok_floats(const mf_model *m)
{
    size_t work, hid;
    tok_layout(m, &work, &hid);
    return (size_t)m->arch.tokens * m->arch.token_dim + work + 4 * hid + (size_t)m->arch.token_dim / 4 + 16;
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
    s.tok = tok_floats(m);
    s.fin = (size_t)cls->cout + (size_t)a->token_dim;
    return s;
}

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

static size_t scratch_floats(const mf_model *m, const plan_sizes *s, int b)
{
    return 2 * pad16(s->feat) + 2 * pad16(s->hid) + pad16(s->col) +
           pad16((size_t)m->arch.tokens * s->hw) + pad16(s->tok) + pad16((size_t)b * s->fin) +
           pad16((size_t)b * m->arch.classifier_width);
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
    size_t per = scratch_floats(ws->m, &s, per_thread_b);
    float *mem = mf_alloc(per * (size_t)ws->threads * sizeof(float));
    if (!mem) return MF_ERR_NOMEM;
    mf_free(ws->mem);
    ws->mem = mem;
    ws->bytes = per * (size_t)ws->threads * sizeof(float);
    for (int t = 0; t < ws->threads; t++) {
        float *p = mem + per * (size_t)t;
        scratch *sc = &ws->sc[t];
        sc->X = p; p += pad16(s.feat);
        sc->Y = p; p += pad16(s.feat);
        sc->U1 = p; p += pad16(s.hid);
        sc->U2 = p; p += pad16(s.hid);
        sc->col = p; p += pad16(s.col);
        sc->attn = p; p += pad16((size_t)ws->m->arch.tokens * s.hw);
        sc->tok = p; p += pad16(s.tok);
        sc->feat = p; p += pad16((size_t)per_thread_b * s.fin);
        sc->fc = p;
    }
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

/* Dynamic-ReLU slopes for c channels from token 0: a = 2h - 1 + 1, b = 2h' - 1 */
static void hyper(const mf_model *m, const mf_hyper *hy, const float *z, float *tmp, float *dya, float *dyb)
{
    int c = hy->l2.out / 2;
    m->k->linear(&hy->l1, z, 1, tmp);
    for (int i = 0; i < hy->l1.out; i++) tmp[i] = tmp[i] > 0.f ? tmp[i] : 0.f;
    float *h = tmp + hy->l1.out;
    m->k->linear(&hy->l2, tmp, 1, h);
    for (int i = 0; i < c; i++) {
        dya[i] = (mf_hsig(h[i]) - 0.5f) * 2.0f + 1.0f;
        dyb[i] = (mf_hsig(h[c + i]) - 0.5f) * 2.0f;
    }
}

/* z = LayerNorm(z + proj(alpha * attention(q(z), x))): tokens read the map. */
static void mobile_to_former(const mf_model *m, const mf_m2f *b, const float *x, int C, int hw, float *z,
                             scratch *sc)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, ch = C / 2;
    float *q = sc->tok + (size_t)T * D, *al = q + (size_t)T * C, *o = al + (size_t)T * C;
    float *t = o + (size_t)T * C;
    m->k->linear(&b->q, z, T, q);
    m->k->linear(&b->alpha, z, T, al);
    const float scale = 1.0f / sqrtf((float)ch);
    for (int hd = 0; hd < 2; hd++)
        m->k->m2f_attn(x + (size_t)hd * ch * hw, ch, hw, q + hd * ch, C, T, scale, o + hd * ch, C, sc->attn);
    for (int i = 0; i < T * C; i++) o[i] *= 2.0f * mf_hsig(al[i]);
    m->k->linear(&b->proj, o, T, t);
    for (int i = 0; i < T * D; i++) z[i] += t[i];
    mf_layernorm(z, T, D, &b->ln);
}

static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* Token self-attention (4 heads, keys = values = tokens) and FFN. */
static void former(const mf_model *m, const mf_former *f, float *z, scratch *sc)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, dh = D / 4;
    float *q = sc->tok + (size_t)T * D, *o = q + (size_t)T * D, *t = o + (size_t)T * D;
    float *hbuf = t + (size_t)T * D, *s = hbuf + (size_t)T * 2 * D;
    m->k->linear(&f->q, z, T, q);
    const float scale = 1.0f / sqrtf((float)dh);
    for (int hd = 0; hd < 4; hd++) {
        for (int i = 0; i < T; i++) {
            float mx = -INFINITY;
            for (int j = 0; j < T; j++) {
                float acc = 0.f;
                for (int c = 0; c < dh; c++) acc += q[(size_t)i * D + hd * dh + c] * z[(size_t)j * D + hd * dh + c];
                s[j] = acc * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float sum = 0.f;
            for (int j = 0; j < T; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            for (int c = 0; c < dh; c++) {
                float acc = 0.f;
                for (int j = 0; j < T; j++) acc += s[j] * z[(size_t)j * D + hd * dh + c];
                o[(size_t)i * D + hd * dh + c] = acc / sum;
            }
        }
    }
    m->k->linear(&f->mlp, o, T, t);
    for (int i = 0; i < T * D; i++) z[i] += t[i];
    mf_layernorm(z, T, D, &f->ln);
    m->k->linear(&f->ffn1, z, T, hbuf);
    for (int i = 0; i < T * 2 * D; i++) hbuf[i] = gelu(hbuf[i]);
    m->k->linear(&f->ffn2, hbuf, T, t);
    for (int i = 0; i < T * D; i++) z[i] += t[i];
    mf_layernorm(z, T, D, &f->ffn_ln);
}

/* y += attention of every pixel over the tokens (keys k(z), values v(z)). */
static void former_to_mobile(const mf_model *m, const mf_f2m *f, float *y, int C, int hw, const float *z,
                             scratch *sc)
{
    const int T = m->arch.tokens, D = m->arch.token_dim, ch = C / 2;
    float *k = sc->tok + (size_t)T * D, *v = k + (size_t)T * C;
    m->k->linear(&f->k, z, T, k);
    m->k->linear(&f->v, z, T, v);
    const float scale = 1.0f / sqrtf((float)ch);
    for (int hd = 0; hd < 2; hd++)
        m->k->f2m_attn(y + (size_t)hd * ch * hw, ch, hw, k + hd * ch, v + hd * ch, C, T, scale);
}

static void trace_map(mf_workspace *ws, const char *name, int img, const float *d, int c, int h, int w)
{
    int shape[3] = {c, h, w};
    ws->trace(ws->trace_user, name, img, d, shape, 3);
}

/* Stem, blocks, final bridge and classifier conv for one image; writes the
 * pooled features (fin floats) to feat. z lives at sc->tok[0 .. T*D). */
static void image_features(mf_workspace *ws, scratch *sc, const float *in, int img, int H, int W, float *feat)
{
    const mf_model *m = ws->m;
    const mf_arch *a = &m->arch;
    const int T = a->tokens, D = a->token_dim;
    char name[32];
    /* stem: im2col [27][oh*ow], then a 1x1 conv with relu6 */
    int h = conv_out(H, 2), w = conv_out(W, 2);
    for (int c = 0; c < 3; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *row = sc->col + (size_t)(c * 9 + ky * 3 + kx) * h * w;
                const float *src = in + (size_t)c * H * W;
                for (int oy = 0; oy < h; oy++) {
                    int iy = oy * 2 + ky - 1;
                    for (int ox = 0; ox < w; ox++) {
                        int ix = ox * 2 + kx - 1;
                        row[(size_t)oy * w + ox] =
                            (iy >= 0 && iy < H && ix >= 0 && ix < W) ? src[(size_t)iy * W + ix] : 0.f;
                    }
                }
            }
    mf_pw stem = {.cout = a->stem, .cin = 27, .groups = 1, .w = m->stem_w, .wp = m->stem_wp,
                  .wp_group = mf_pw_packed_floats(a->stem, 27), .bias = m->stem_b};
    pw_conv(m, &stem, sc->col, h * w, sc->X, MF_ACT_RELU6, NULL, NULL, NULL, NULL);
    if (ws->trace) trace_map(ws, "stem", img, sc->X, a->stem, h, w);

    float *z = sc->tok;
    memcpy(z, m->tokens, (size_t)T * D * sizeof(float));
    size_t work, maxhid;
    tok_layout(m, &work, &maxhid);
    float *dya = z + (size_t)T * D + work, *dyb = dya + maxhid, *gath = dyb + maxhid;

    float *X = sc->X, *Y = sc->Y;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
        int hw = h * w, ohw = oh * ow;
        if (b->type == MF_BLOCK_A) {
            mf_epi e = {.act = MF_ACT_RELU6, .bias = b->dw1.bias};
            m->k->dw(&b->dw1, 0, b->dw1.cout, X, h, w, sc->U1, oh, ow, &e);
            pw_conv(m, &b->pw1, sc->U1, ohw, Y, MF_ACT_NONE, NULL, NULL, b->identity ? X : NULL, gath);
        } else {
            mobile_to_former(m, &b->m2f, X, b->cin, hw, z, sc);
            former(m, &b->former, z, sc);
            if (b->type == MF_BLOCK_B3) {
                /* scratch for hyper's hidden layer: the gather area */
                hyper(m, &b->hy1, z, gath, dya, dyb);
                mf_epi e1 = {.act = MF_ACT_DYRELU, .bias = b->dw1.bias, .dya = dya, .dyb = dyb};
                m->k->dw(&b->dw1, 0, b->dw1.cout, X, h, w, sc->U1, oh, ow, &e1);
                pw_conv(m, &b->pw1, sc->U1, ohw, Y, MF_ACT_NONE, NULL, NULL, NULL, gath);
                hyper(m, &b->hy2, z, gath, dya, dyb);
                mf_epi e2 = {.act = MF_ACT_DYRELU, .bias = b->dw2.bias, .dya = dya, .dyb = dyb};
                m->k->dw(&b->dw2, 0, b->dw2.cout, Y, oh, ow, sc->U2, oh, ow, &e2);
                pw_conv(m, &b->pw2, sc->U2, ohw, Y, MF_ACT_NONE, NULL, NULL, Y, gath);
                former_to_mobile(m, &b->f2m, Y, b->cout, ohw, z, sc);
                if (b->identity)
                    for (size_t p = 0; p < (size_t)b->cout * ohw; p++) Y[p] += X[p];
            } else {
                hyper(m, &b->hy1, z, gath, dya, dyb);
                pw_conv(m, &b->pw1, X, hw, sc->U1, MF_ACT_DYRELU, dya, dyb, NULL, gath);
                hyper(m, &b->hy2, z, gath, dya, dyb);
                mf_epi e2 = {.act = MF_ACT_DYRELU, .bias = b->dw1.bias, .dya = dya, .dyb = dyb};
                m->k->dw(&b->dw1, 0, b->dw1.cout, sc->U1, h, w, sc->U2, oh, ow, &e2);
                pw_conv(m, &b->pw2, sc->U2, ohw, Y, MF_ACT_NONE, NULL, NULL, b->identity ? X : NULL, gath);
                former_to_mobile(m, &b->f2m, Y, b->cout, ohw, z, sc);
            }
        }
        float *t = X; X = Y; Y = t;
        h = oh;
        w = ow;
        if (ws->trace) {
            snprintf(name, sizeof name, "block%02d.features", i);
            trace_map(ws, name, img, X, b->cout, h, w);
            snprintf(name, sizeof name, "block%02d.tokens", i);
            int shape[2] = {T, D};
            ws->trace(ws->trace_user, name, img, z, shape, 2);
        }
    }
    const int C = a->blocks[a->n_blocks - 1].c, hw = h * w;
    mobile_to_former(m, &m->final_m2f, X, C, hw, z, sc);
    if (ws->trace) {
        int shape[2] = {T, D};
        ws->trace(ws->trace_user, "final_tokens", img, z, shape, 2);
    }
    /* classifier: [shuffle(G)] -> 1x1 conv + BN + relu6 -> mean -> hswish */
    const float *cin = X;
    const int G = a->groups;
    if (G > 1) {
        const int cg = C / G;
        for (int j = 0; j < cg; j++)
            for (int gi = 0; gi < G; gi++)
                memcpy(sc->col + (size_t)(j * G + gi) * hw, X + (size_t)(gi * cg + j) * hw, (size_t)hw * sizeof(float));
        cin = sc->col;
    }
    const mf_pw *cp = &m->cls_pw;
    pw_conv(m, cp, cin, hw, sc->U1, MF_ACT_RELU6, NULL, NULL, NULL, gath);
    for (int c = 0; c < cp->cout; c++) {
        const float *r = sc->U1 + (size_t)c * hw;
        float s = 0.f;
        for (int p = 0; p < hw; p++) s += r[p];
        float v = s / (float)hw;
        feat[c] = v * mf_hsig(v);
    }
    memcpy(feat + cp->cout, z, (size_t)D * sizeof(float));
}

/* fc (BN folded) + hswish, then the class layer, for n images at once (the
 * large head weights are read once per 8 images, or by a GEMM). */
static void head(const mf_model *m, const float *feat, int n, float *fcbuf, float *logits)
{
    m->k->linear(&m->fc, feat, n, fcbuf);
    for (size_t i = 0; i < (size_t)n * m->fc.out; i++) fcbuf[i] = fcbuf[i] * mf_hsig(fcbuf[i]);
    m->k->linear(&m->head, fcbuf, n, logits);
}

static void run_share(mf_workspace *ws, int t)
{
    const job *j = &ws->cur;
    int per = (j->b + ws->threads - 1) / ws->threads;
    int b0 = t * per, b1 = b0 + per < j->b ? b0 + per : j->b;
    if (b0 >= b1) return;
    scratch *sc = &ws->sc[t];
    const mf_model *m = ws->m;
    size_t fin = (size_t)m->cls_pw.cout + m->arch.token_dim;
    size_t img = (size_t)3 * j->h * j->w;
    for (int i = b0; i < b1; i++)
        image_features(ws, sc, j->input + img * i, i, j->h, j->w, sc->feat + fin * (i - b0));
    head(m, sc->feat, b1 - b0, sc->fc, j->logits + (size_t)m->num_classes * b0);
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
