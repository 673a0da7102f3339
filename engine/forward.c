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
#include "recipe.h"
#include "team.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int conv_out(int n, int s) { return (n - 1) / s + 1; } /* 3x3, pad 1 */
static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ---- a block's convolutions as a chain, run in bands of rows -------------
 * A block's convolutions (its recipe's DW and PW rows) are a chain: x ->
 * layer 0 -> ... -> layer n-1 -> y, each reading the map the one before
 * wrote.  They run a band of output rows at a time: each layer computes the
 * rows of its output that the band needs and earlier bands have not, into a
 * window of rows (the intermediate maps never exist whole), so a band's
 * hidden maps stay in L2 between the layers rather than going out to L3
 * and coming back.  A depthwise reads one row beyond its band on each
 * side: its input window keeps those rows from the band before (moved to
 * the window's start).  With a team (more threads than images) each thread
 * takes a contiguous range of output rows with its own windows; the rows at
 * the seams are computed by both. */
#define MF_CHAIN_MAX 4 /* DW and PW rows of a block (B3: 4) */

/* Bytes of band windows that stay in L2 (of 2 MiB: room is left for the
 * weights, the band's input and output rows), and what a band costs beyond
 * its weights (calls, edge rows), in bytes moved (chain_make). */
#define MF_BAND_L2 ((size_t)1 << 20)
#define MF_BAND_FIXED ((size_t)16 << 10)

typedef struct chain_layer {
    const mf_layer_recipe *r;
    const void *layer;      /* its mf_dw or mf_pw */
    int dw;                 /* 1: depthwise */
    int ch;                 /* output channels */
    int ih, iw, oh, ow;     /* input and output size */
    const mf_pw *packed_to; /* dw: the 1x1 that reads its output packed (bf16), or NULL */
} chain_layer;

typedef struct chain {
    int n;                          /* layers */
    chain_layer l[MF_CHAIN_MAX];
    int band;                       /* output rows (of layer n-1) per band */
    int cap[MF_CHAIN_MAX - 1];      /* rows of window i (layer i's output), i < n-1 */
    size_t win[MF_CHAIN_MAX - 1];   /* floats of window i */
} chain;

/* Per-thread scratch for a run of up to nimg images, from one allocation. */
typedef struct scratch {
    int nimg;         /* images the scratch holds                     */
    size_t feat;      /* floats per feature map                        */
    float *X, *Y;     /* block in / out maps of every image [nimg][feat] */
    float *U1;        /* the classifier conv's output                 [hid] */
    float *win[MF_CHAIN_MAX - 1]; /* a band's intermediate maps (chain.win) */
    float *col;       /* stem im2col, classifier shuffle           [col] */
    float *attn;      /* attention weights                     [T * hw] */
    float *z;         /* tokens of every image               [nimg][T*D] */
    float *tok;       /* token-side temporaries            [nimg * work] */
    float *dy;        /* slopes of both hypers     [nimg][4 * maxhid] */
    float *gath;      /* hyper inputs / hidden, pw gathers               */
    float *feat_out;  /* pooled features                   [nimg][fin] */
    float *fc;        /* fc activations                      [nimg][W] */
    void *kscr;       /* the GEMM kernels' own scratch (bf16 operands)   */
} scratch;

typedef struct plan_sizes {
    size_t feat, hid, col, hw, work, maxhid, fin, kscr;
    size_t win[MF_CHAIN_MAX - 1]; /* floats of each band window, the largest block's */
} plan_sizes;

typedef struct job {
    const float *input;
    float *logits;
    int b, h, w;
} job;

struct mf_workspace {
    const mf_model *m;       /* the model it runs (read-only, shared) */
    int threads;             /* threads per forward pass, the caller included */
    int cap_b, cap_h, cap_w; /* largest batch/size planned for */
    size_t bytes;            /* scratch bytes */
    scratch *sc;             /* [threads] */
    void *mem;               /* all scratch, in one piece of mem_arena */
    mf_arena *mem_arena;     /* its own mapping, 4 KiB pages: freed, it is back with the system at once */
    mf_trace_fn trace;       /* intermediate outputs, or NULL */
    void *trace_user;        /* its argument */
    job cur;                 /* the batch of the pass running */
    mf_team team;            /* helper threads (team.h) */
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

/* In a bf16 model whose sets can (mf_kernels.dw_packed), the 1x1 that
 * reads depthwise row i's output directly in its packed bf16 layout; NULL
 * when that row's output stays fp32. */
static const mf_pw *packed_consumer(const mf_model *m, const mf_block *b, int i)
{
    const mf_block_recipe *br = &mf_block_recipes[b->type];
    if (!m->k->dw_packed || m->k32 != &mf_kernels_avx512) return NULL;
    for (int j = i + 1; j < br->n_layers; j++) {
        const mf_layer_recipe *r = &br->layers[j];
        if (r->kind == MF_LAYER_DW) return NULL;
        if (r->kind == MF_LAYER_PW) {
            const mf_pw *p = mf_recipe_target_const(m, b, r);
            return r->src == br->layers[i].dst && p->k == m->k ? p : NULL;
        }
    }
    return NULL;
}

/* Rows [*lo, *hi) of layer l's input that its output rows [lo, hi) read. */
static void chain_in_rows(const chain_layer *l, int lo, int hi, int *ilo, int *ihi)
{
    if (!l->dw) {
        *ilo = lo;
        *ihi = hi;
        return;
    }
    const int s = ((const mf_dw *)l->layer)->stride;
    *ilo = lo * s - 1 < 0 ? 0 : lo * s - 1;
    *ihi = (hi - 1) * s + 2 > l->ih ? l->ih : (hi - 1) * s + 2;
}

/* Floats of window i holding `rows` rows of layer i's output. */
static size_t chain_win_floats(const chain_layer *l, int rows)
{
    const int n = rows * l->ow;
    if (l->packed_to) {
        const mf_pw *p = l->packed_to;
        return (p->k->packed_map_bytes(p->groups, p->cin / p->groups, n) + 3) / 4;
    }
    return (size_t)l->ch * n;
}

/* Rows (cap) and floats (win) of each window for bands of `band` rows;
 * returns the floats of all. */
static size_t chain_windows(const chain *ch, int band, int *cap, size_t *win)
{
    size_t total = 0;
    int rows = band;
    for (int i = ch->n - 1; i >= 1; i--) {
        int lo, hi;
        /* a band in the middle of the map needs the most input rows */
        const int mid = ch->l[i].oh > rows ? (ch->l[i].oh - rows) / 2 : 0;
        chain_in_rows(&ch->l[i], mid, mid + rows, &lo, &hi);
        rows = hi - lo;
        cap[i - 1] = rows;
        win[i - 1] = chain_win_floats(&ch->l[i - 1], rows);
        total += win[i - 1];
    }
    return total;
}

/* Block b's chain at input size h x w (output oh x ow), and its band. */
static void chain_make(const mf_model *m, const mf_block *b, int h, int w, int oh, int ow, chain *ch)
{
    const mf_block_recipe *br = &mf_block_recipes[b->type];
    const mf_widths wd = {{[MF_DIM_IN] = b->cin, [MF_DIM_OUT] = b->cout, [MF_DIM_H1] = b->hid1,
                           [MF_DIM_H2] = b->hid2}};
    memset(ch, 0, sizeof *ch);
    int ih = h, iw = w;
    for (int i = 0; i < br->n_layers; i++) {
        const mf_layer_recipe *r = &br->layers[i];
        if (r->kind != MF_LAYER_DW && r->kind != MF_LAYER_PW) continue;
        /* a chain: each row reads what the one before wrote */
        assert(ch->n < MF_CHAIN_MAX && r->src == (ch->n ? ch->l[ch->n - 1].r->dst : MF_MAP_X));
        chain_layer *l = &ch->l[ch->n++];
        l->r = r;
        l->layer = mf_recipe_target_const(m, b, r);
        l->dw = r->kind == MF_LAYER_DW;
        l->ch = mf_dim_eval(r->out, &wd);
        l->ih = ih;
        l->iw = iw;
        l->oh = l->dw && r->strided ? oh : ih;
        l->ow = l->dw && r->strided ? ow : iw;
        l->packed_to = l->dw ? packed_consumer(m, b, i) : NULL;
        ih = l->oh;
        iw = l->ow;
    }
    /* The band: fewer rows keep the windows in L2, but every band reads
     * the 1x1s' weights again.  Estimated bytes moved beyond L2 per image:
     * weights once per band, plus twice (out and back) what the windows
     * hold beyond MF_BAND_L2, plus a little per band; the least wins. */
    size_t wbytes = 0;
    for (int i = 0; i < ch->n; i++)
        if (!ch->l[i].dw) {
            const mf_pw *p = ch->l[i].layer;
            wbytes += (size_t)p->cout * (p->cin / p->groups) * (p->k->precision == MF_PRECISION_BF16 ? 2 : 4);
        }
    const int OH = ch->l[ch->n - 1].oh;
    double best = 0;
    int cap[MF_CHAIN_MAX - 1] = {0};
    size_t win[MF_CHAIN_MAX - 1] = {0};
    for (int band = OH; band >= 1; band--) {
        const size_t total = chain_windows(ch, band, cap, win) * sizeof(float);
        const int nb = (OH + band - 1) / band;
        const double cost = (double)nb * (wbytes + MF_BAND_FIXED) + 2.0 * (total > MF_BAND_L2 ? total - MF_BAND_L2 : 0);
        if (band == OH || cost < best) {
            best = cost;
            ch->band = band;
            memcpy(ch->cap, cap, sizeof cap);
            memcpy(ch->win, win, sizeof win);
        }
    }
}

static size_t pw_scr(const mf_pw *p)
{
    return p->k && p->k->pw_scratch_bytes ? p->k->pw_scratch_bytes(p->cin / p->groups) : 0;
}

static size_t lin_scr(const mf_lin *l)
{
    return l->k && l->k->lin_scratch_bytes ? l->k->lin_scratch_bytes(l->in) : 0;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t m2f_scr(const mf_m2f *b) { return max_sz(max_sz(lin_scr(&b->q), lin_scr(&b->alpha)), lin_scr(&b->proj)); }

/* Bytes of kernel scratch the largest layer asks for (layers a block kind
 * lacks have no kernel set and ask for none). */
static size_t kernel_scratch(const mf_model *m)
{
    size_t s = max_sz(max_sz(pw_scr(&m->cls_pw), lin_scr(&m->fc)), max_sz(lin_scr(&m->head), m2f_scr(&m->final_m2f)));
    for (int i = 0; i < m->arch.n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        const mf_lin *l[] = {&b->hy1.l1, &b->hy1.l2, &b->hy2.l1, &b->hy2.l2, &b->former.q, &b->former.mlp,
                             &b->former.ffn1, &b->former.ffn2, &b->f2m.k, &b->f2m.v};
        s = max_sz(s, max_sz(max_sz(pw_scr(&b->pw1), pw_scr(&b->pw2)), m2f_scr(&b->m2f)));
        for (size_t j = 0; j < sizeof l / sizeof l[0]; j++) s = max_sz(s, lin_scr(l[j]));
    }
    return s;
}

static plan_sizes plan(const mf_model *m, int h, int w)
{
    const mf_arch *a = &m->arch;
    plan_sizes s = {0};
    h = conv_out(h, 2);
    w = conv_out(w, 2);
    size_t hw = (size_t)h * w;
    s.feat = (size_t)a->stem * hw;
    s.col = m->k32->stem ? 0 : 27 * hw; /* im2col only without a direct stem kernel */
    s.hw = hw;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
        size_t ohw = (size_t)oh * ow;
        size_t f = (size_t)b->cout * ohw;
        if (f > s.feat) s.feat = f;
        chain ch;
        chain_make(m, b, h, w, oh, ow, &ch);
        for (int j = 0; j < ch.n - 1; j++) {
            if (ch.win[j] > s.win[j]) s.win[j] = ch.win[j];
            /* dw_packed: its output planes of a band */
            const size_t dwp = mf_dw_packed_scratch((size_t)ch.cap[j] * ch.l[j].ow);
            if (ch.l[j].packed_to && dwp > s.kscr) s.kscr = dwp;
        }
        h = oh;
        w = ow;
        hw = ohw;
    }
    const mf_pw *cls = &m->cls_pw;
    if ((size_t)cls->cout * hw > s.hid) s.hid = (size_t)cls->cout * hw;
    if ((size_t)cls->cin * hw > s.col) s.col = (size_t)cls->cin * hw;
    tok_layout(m, &s.work, &s.maxhid);
    s.fin = (size_t)cls->cout + (size_t)a->token_dim;
    const size_t ks = (kernel_scratch(m) + sizeof(float) - 1) / sizeof(float);
    if (ks > s.kscr) s.kscr = ks;
    return s;
}


/* Carve one thread's scratch for n images out of p (or just count, p NULL). */
static size_t carve(const mf_model *m, const plan_sizes *s, int n, float *p, scratch *sc)
{
    const size_t T = (size_t)m->arch.tokens, D = (size_t)m->arch.token_dim, N = (size_t)n;
    enum { NF = 12 + MF_CHAIN_MAX - 1 };
    /* gath: hyper inputs and hidden, then the shuffled slopes of two 1x1s */
    size_t sizes[NF] = {
        N * pad16(s->feat), N * pad16(s->feat), pad16(s->hid), pad16(s->col),
        pad16(T * s->hw), pad16(N * T * D), pad16(N * s->work), pad16(N * 4 * s->maxhid),
        pad16(N * D + N * D / 4 + 4 * s->maxhid), pad16(N * s->fin), pad16(N * (size_t)m->arch.classifier_width),
        pad16(s->kscr), pad16(s->win[0]), pad16(s->win[1]), pad16(s->win[2]),
    };
    _Static_assert(MF_CHAIN_MAX - 1 == 3, "one size per band window");
    float *kscr;
    float **dst[NF];
    scratch tmp;
    if (!sc) sc = &tmp;
    float **fields[NF] = {&sc->X, &sc->Y, &sc->U1, &sc->col, &sc->attn, &sc->z, &sc->tok,
                          &sc->dy, &sc->gath, &sc->feat_out, &sc->fc, &kscr, &sc->win[0], &sc->win[1], &sc->win[2]};
    memcpy(dst, fields, sizeof dst);
    size_t total = 0;
    for (int i = 0; i < NF; i++) {
        if (p) *dst[i] = p + total;
        total += sizes[i];
    }
    if (p) sc->kscr = s->kscr ? kscr : NULL;
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
    /* a thread's run, or every image for a team (batches below the thread count) */
    int per_thread_b = (b + ws->threads - 1) / ws->threads;
    if (per_thread_b < b && per_thread_b < ws->threads - 1) per_thread_b = b < ws->threads - 1 ? b : ws->threads - 1;
    size_t per = carve(ws->m, &s, per_thread_b, NULL, NULL);
    /* not malloc: glibc would put a workspace freed by a worker (a model
     * unloaded) back on its own arena's free list, resident until a trim */
    mf_arena *arena = mf_arena_new(0);
    float *mem = arena ? mf_arena_alloc(arena, per * (size_t)ws->threads * sizeof(float)) : NULL;
    if (!mem) {
        mf_arena_free(arena);
        return MF_ERR_NOMEM;
    }
    mf_arena_free(ws->mem_arena);
    ws->mem_arena = arena;
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

static void par(mf_workspace *ws, mf_team_task fn, void *arg) { mf_team_par(&ws->team, fn, arg); }

#define split mf_split

/* What a layer needs: the model, the workspace (team, per-thread scratch)
 * and the calling run's scratch. */
typedef struct fctx {
    const mf_model *m;
    mf_workspace *ws;
    scratch *sc;
} fctx;

/* ---- layers ----------------------------------------------------------- */

/* Thread t's kernel scratch in a team pass (thread 0: the run's own). */
static void *kscratch(const fctx *c, int t) { return t == 0 ? c->sc->kscr : c->ws->sc[t].kscr; }

/* The epilogues of a 1x1's groups (no residual): e[g]'s slopes are indexed
 * by the group's local row; dya/dyb by output channel after any shuffle,
 * gathered for a shuffled output into gather (2 * cout floats). */
static void pw_epis(const mf_pw *p, mf_act act, const float *dya, const float *dyb, float *gather, mf_epi *e)
{
    const int G = p->groups, M = p->cout / G;
    for (int g = 0; g < G; g++) {
        e[g] = (mf_epi){.act = act, .bias = p->bias + (size_t)g * M};
        if (act != MF_ACT_DYRELU) continue;
        if (p->shuffle_out) {
            float *ga = gather + (size_t)2 * M * g;
            for (int j = 0; j < M; j++) {
                ga[j] = dya[(size_t)j * G + g];
                ga[M + j] = dyb[(size_t)j * G + g];
            }
            e[g].dya = ga;
            e[g].dyb = ga + M;
        } else {
            e[g].dya = dya + (size_t)g * M;
            e[g].dyb = dyb + (size_t)g * M;
        }
    }
}

/* The 1x1 p on n columns: x[cin] planes ldx floats apart (or xp, packed by
 * dw_packed for exactly these columns) into y[cout] planes ldy apart, with
 * the groups' epilogues e and a residual res[cout] (planes ldr apart) or
 * NULL.  Output channel j*G+g of a shuffled output is group g's row j. */
static void pw_cols(const mf_pw *p, const mf_epi *e, const float *x, size_t ldx, const uint16_t *xp, int n, float *y,
                    size_t ldy, const float *res, size_t ldr, void *kscr)
{
    const int G = p->groups, M = p->cout / G, K = p->cin / G;
    const size_t cs = p->shuffle_out ? (size_t)G : 1; /* output rows between a group's channels */
    for (int g = 0; g < G; g++) {
        const size_t j0 = p->shuffle_out ? (size_t)g : (size_t)g * M; /* the group's first output channel */
        mf_epi eg = e[g];
        if (res) {
            eg.res = res + j0 * ldr;
            eg.ldr = cs * ldr;
        }
        if (xp)
            p->k->pw_packed(p, g, xp + p->k->packed_map_bytes(1, K, n) / 2 * g, n, 0, n, y + j0 * ldy, cs * ldy, &eg,
                            kscr);
        else
            p->k->pw(p, g, x + (size_t)g * K * ldx, ldx, n, y + j0 * ldy, cs * ldy, &eg, kscr);
    }
}

typedef struct pw_task {
    const fctx *c;
    const mf_pw *p;
    const float *x;
    int n;
    float *y;
    mf_epi e[64]; /* per group */
} pw_task;

static void pw_run(void *arg, int t, int nt)
{
    pw_task *k = arg;
    int c0, c1;
    split(k->n, 16, t, nt, &c0, &c1);
    if (c0 < c1)
        pw_cols(k->p, k->e, k->x + c0, (size_t)k->n, NULL, c1 - c0, k->y + c0, (size_t)k->n, NULL, 0, kscratch(k->c, t));
}

/* A grouped 1x1 conv over a whole CHW map, y[cout][n] from x[cin][n], no
 * residual, columns split over the team (the stem's im2col and the
 * classifier; the blocks' run in bands, block_convs). */
static void pw_conv(const fctx *c, const mf_pw *p, const float *x, int n, float *y, mf_act act, const float *dya,
                    const float *dyb, float *gather)
{
    pw_task k = {.c = c, .p = p, .x = x, .n = n, .y = y};
    pw_epis(p, act, dya, dyb, gather, k.e);
    par(c->ws, pw_run, &k);
}

typedef struct lin_task {
    const fctx *c;
    const mf_lin *l;
    const float *x;
    int rows;
    float *y;
} lin_task;

static void lin_run(void *arg, int t, int nt)
{
    lin_task *k = arg;
    int o0, o1;
    split(k->l->out, 48, t, nt, &o0, &o1);
    if (o0 < o1) k->l->k->linear(k->l, k->x, k->rows, k->y, o0, o1, kscratch(k->c, t));
}

/* y[rows][out] = x W^T + b; output columns split over the team when large. */
static void linear(const fctx *c, const mf_lin *l, const float *x, int rows, float *y)
{
    lin_task k = {c, l, x, rows, y};
    if ((size_t)l->in * l->out * rows < 32768 || l->out < 96) lin_run(&k, 0, 1);
    else par(c->ws, lin_run, &k);
}

/* Dynamic-ReLU slopes of n images from their token 0: image j's a[C] at
 * out + ld*j, its b[C] bofs floats further; a = 2 hsig(h) - 1 + 1,
 * b = 2 hsig(h') - 1.  tmp: [n][D] + [n][D/4] + [2C]. */
static void hyper(const fctx *c, const mf_hyper *hy, const float *z, int n, float *tmp, float *out, size_t ld,
                  size_t bofs)
{
    const int T = c->m->arch.tokens, D = c->m->arch.token_dim, ch = hy->l2.out / 2, q = hy->l1.out;
    float *t0 = tmp, *hid = tmp + (size_t)n * D, *row = hid + (size_t)n * q;
    for (int j = 0; j < n; j++) memcpy(t0 + (size_t)j * D, z + (size_t)j * T * D, (size_t)D * sizeof(float));
    linear(c, &hy->l1, t0, n, hid);
    for (int i = 0; i < n * q; i++) hid[i] = hid[i] > 0.f ? hid[i] : 0.f;
    for (int j = 0; j < n; j++) {
        float *o = out + ld * j;
        linear(c, &hy->l2, hid + (size_t)j * q, 1, row);
        for (int i = 0; i < ch; i++) {
            o[i] = (mf_hsig(row[i]) - 0.5f) * 2.0f + 1.0f;
            o[bofs + i] = (mf_hsig(row[ch + i]) - 0.5f) * 2.0f;
        }
    }
}

/* Attention of (image, head) items, split over the team; each thread uses
 * its own attention scratch. */
typedef struct attn_task {
    const fctx *c;
    const float *x;   /* maps, image stride fs */
    float *y;         /* F->M: maps updated in place */
    size_t fs;
    int n, C, hw;
    const float *q;   /* M->F queries / F->M keys [n*T][C] */
    const float *v;   /* F->M values [n*T][C] */
    float *o;         /* M->F output [n*T][C] */
} attn_task;

/* Both bridges' attention: one (image, head) item at a time; M->F writes
 * o, F->M updates the maps y in place. */
static void attn_run(const attn_task *k, int t, int nt, int m2f)
{
    const int T = k->c->m->arch.tokens, ch = k->C / 2;
    const float scale = 1.0f / sqrtf((float)ch);
    int i0, i1;
    split(2 * k->n, 1, t, nt, &i0, &i1);
    for (int it = i0; it < i1; it++) {
        const int j = it / 2, hd = it % 2;
        const size_t tok = (size_t)j * T * k->C + hd * ch, map = k->fs * j + (size_t)hd * ch * k->hw;
        if (m2f)
            k->c->m->k32->m2f_attn(k->x + map, ch, k->hw, k->q + tok, k->C, T, scale, k->o + tok, k->C,
                                 t == 0 ? k->c->sc->attn : k->c->ws->sc[t].attn);
        else
            k->c->m->k32->f2m_attn(k->y + map, ch, k->hw, k->q + tok, k->v + tok, k->C, T, scale);
    }
}

static void m2f_run(void *arg, int t, int nt) { attn_run(arg, t, nt, 1); }
static void f2m_run(void *arg, int t, int nt) { attn_run(arg, t, nt, 0); }

/* z = LayerNorm(z + proj(alpha * attention(q(z), x))) for the run's images:
 * tokens read their own image's map (maps at x, stride fs floats). */
static void mobile_to_former(const fctx *c, const mf_m2f *b, const float *x, size_t fs, int n, int C, int hw,
                             float *z)
{
    const int T = c->m->arch.tokens, D = c->m->arch.token_dim, R = n * T;
    float *q = c->sc->tok, *al = q + (size_t)R * C, *o = al + (size_t)R * C, *t = o + (size_t)R * C;
    linear(c, &b->q, z, R, q);
    linear(c, &b->alpha, z, R, al);
    attn_task k = {.c = c, .x = x, .fs = fs, .n = n, .C = C, .hw = hw, .q = q, .o = o};
    par(c->ws, m2f_run, &k);
    for (size_t i = 0; i < (size_t)R * C; i++) o[i] *= 2.0f * mf_hsig(al[i]);
    linear(c, &b->proj, o, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &b->ln);
}

/* out[j] = sum over e = 0 .. n-1, in order, of q[e] * z[j * ldz + e], for j
 * < T: four dot products at a time, each its own chain (one chain after the
 * other would wait on the adds' latency); the same sums, bit for bit. */
static void dots_in_order(const float *q, const float *z, size_t ldz, int T, int n, float *out)
{
    int j = 0;
    for (; j + 4 <= T; j += 4) {
        const float *z0 = z + (size_t)j * ldz, *z1 = z0 + ldz, *z2 = z1 + ldz, *z3 = z2 + ldz;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (int e = 0; e < n; e++) {
            a0 += q[e] * z0[e];
            a1 += q[e] * z1[e];
            a2 += q[e] * z2[e];
            a3 += q[e] * z3[e];
        }
        out[j] = a0;
        out[j + 1] = a1;
        out[j + 2] = a2;
        out[j + 3] = a3;
    }
    for (; j < T; j++) {
        const float *zj = z + (size_t)j * ldz;
        float a = 0.f;
        for (int e = 0; e < n; e++) a += q[e] * zj[e];
        out[j] = a;
    }
}

/* Token self-attention (4 heads, keys = values = each image's tokens) and FFN. */
static void former(const fctx *c, const mf_former *f, float *z, int n)
{
    const int T = c->m->arch.tokens, D = c->m->arch.token_dim, dh = D / 4, R = n * T;
    float *q = c->sc->tok, *o = q + (size_t)R * D, *t = o + (size_t)R * D, *hbuf = t + (size_t)R * D;
    float s[64];
    linear(c, &f->q, z, R, q);
    const float scale = 1.0f / sqrtf((float)dh);
    for (int img = 0; img < n; img++) {
        const float *zi = z + (size_t)img * T * D, *qi = q + (size_t)img * T * D;
        float *oi = o + (size_t)img * T * D;
        for (int hd = 0; hd < 4; hd++)
            for (int i = 0; i < T; i++) {
                const float *qh = qi + (size_t)i * D + hd * dh, *zh = zi + hd * dh;
                float *oh = oi + (size_t)i * D + hd * dh;
                dots_in_order(qh, zh, D, T, dh, s);
                for (int j = 0; j < T; j++) s[j] *= scale;
                mf_softmax(s, T, s);
                /* oh[e] = sum over j in order of s[j] * z[j][e]: j outer, so
                 * the e are independent sums, not one chain */
                for (int e = 0; e < dh; e++) oh[e] = 0.f;
                for (int j = 0; j < T; j++)
                    for (int e = 0; e < dh; e++) oh[e] += s[j] * zh[(size_t)j * D + e];
            }
    }
    linear(c, &f->mlp, o, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &f->ln);
    linear(c, &f->ffn1, z, R, hbuf);
    c->m->k32->gelu(hbuf, (size_t)R * 2 * D);
    linear(c, &f->ffn2, hbuf, R, t);
    for (size_t i = 0; i < (size_t)R * D; i++) z[i] += t[i];
    mf_layernorm(z, R, D, &f->ffn_ln);
}

/* Former -> Mobile for the run: keys and values of every image's tokens,
 * then every pixel of image j attends to image j's tokens (y += ...). */
static void former_to_mobile(const fctx *c, const mf_f2m *f, const float *z, float *y, size_t fs, int n, int C,
                             int hw)
{
    const int R = n * c->m->arch.tokens;
    float *k = c->sc->tok, *v = k + (size_t)R * C;
    linear(c, &f->k, z, R, k);
    linear(c, &f->v, z, R, v);
    attn_task t = {.c = c, .y = y, .fs = fs, .n = n, .C = C, .hw = hw, .q = k, .v = v};
    par(c->ws, f2m_run, &t);
}

static void trace_map(mf_workspace *ws, const char *name, int img, const float *d, int c, int h, int w)
{
    int shape[3] = {c, h, w};
    ws->trace(ws->trace_user, name, img, d, shape, 3);
}

typedef struct stem_task {
    const mf_model *m;
    const float *in;
    int H, W, h, w;
    float *out;
} stem_task;

static void stem_run(void *arg, int t, int nt)
{
    const stem_task *k = arg;
    int y0, y1;
    split(k->h, 1, t, nt, &y0, &y1);
    if (y0 < y1)
        k->m->k32->stem(k->in, k->H, k->W, k->m->stem_w, k->m->stem_b, k->m->arch.stem, k->out, k->h, k->w, y0, y1);
}

/* The stem of one image: a direct kernel where there is one, else im2col
 * [27][oh*ow] and a 1x1 conv with relu6. */
static void stem(const fctx *c, const float *in, int H, int W, float *out)
{
    const mf_model *m = c->m;
    const int h = conv_out(H, 2), w = conv_out(W, 2);
    if (m->k32->stem) {
        stem_task k = {m, in, H, W, h, w, out};
        par(c->ws, stem_run, &k);
        return;
    }
    for (int ch = 0; ch < 3; ch++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *row = c->sc->col + (size_t)(ch * 9 + ky * 3 + kx) * h * w;
                const float *src = in + (size_t)ch * H * W;
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
    mf_pw st = {.k = m->k32, .cout = m->arch.stem, .cin = 27, .groups = 1, .w = m->stem_w, .bias = m->stem_b};
    pw_conv(c, &st, c->sc->col, h * w, out, MF_ACT_RELU6, NULL, NULL, NULL);
}

/* Block b's convolutions for one image (chain, above). */
typedef struct band_task {
    const fctx *c;
    const chain *ch;
    const float *x;                /* block input [cin][h*w] */
    float *y;                      /* block output [cout][oh*ow] */
    mf_epi e[MF_CHAIN_MAX][64];    /* per layer: the depthwise's epilogue, or the 1x1's per group */
    int res_from[MF_CHAIN_MAX];    /* 1x1 residual: -1 none, MF_CHAIN_MAX the input x, else that layer's window */
} band_task;

typedef struct band_win {
    float *p;      /* row lo of channel 0 (or the packed columns) */
    size_t ld;     /* floats between channels */
    int lo, hi;    /* rows held */
} band_win;

/* Thread t's share of the output rows, band by band. */
static void band_run(void *arg, int t, int nt)
{
    const band_task *k = arg;
    const chain *ch = k->ch;
    const int n = ch->n, OH = ch->l[n - 1].oh;
    scratch *sc = t == 0 ? k->c->sc : &k->c->ws->sc[t];
    int r0, r1;
    split(OH, 1, t, nt, &r0, &r1);
    band_win win[MF_CHAIN_MAX]; /* [i]: layer i's output; [n-1] is y itself */
    for (int i = 0; i < n - 1; i++) win[i] = (band_win){sc->win[i], (size_t)ch->cap[i] * ch->l[i].ow, 0, 0};
    win[n - 1] = (band_win){k->y, (size_t)ch->l[n - 1].oh * ch->l[n - 1].ow, 0, OH};
    const band_win xin = {(float *)k->x, (size_t)ch->l[0].ih * ch->l[0].iw, 0, ch->l[0].ih};
    for (int o0 = r0; o0 < r1; o0 += ch->band) {
        /* rows each layer computes: what the next needs, less what it holds */
        int from[MF_CHAIN_MAX], to[MF_CHAIN_MAX], lo[MF_CHAIN_MAX];
        lo[n - 1] = from[n - 1] = o0;
        to[n - 1] = o0 + ch->band < r1 ? o0 + ch->band : r1;
        for (int i = n - 2; i >= 0; i--) {
            chain_in_rows(&ch->l[i + 1], from[i + 1], to[i + 1], &lo[i], &to[i]);
            from[i] = win[i].hi > lo[i] ? win[i].hi : lo[i];
        }
        for (int i = 0; i < n; i++) {
            const chain_layer *l = &ch->l[i];
            band_win *o = &win[i];
            const band_win *in = i ? &win[i - 1] : &xin;
            if (i < n - 1) { /* keep rows [lo, hi) of the band before at the window's start */
                if (o->hi <= lo[i]) o->lo = o->hi = lo[i];
                else if (o->lo < lo[i]) {
                    const size_t sh = (size_t)(lo[i] - o->lo) * l->ow, keep = (size_t)(o->hi - lo[i]) * l->ow;
                    for (int q = 0; q < l->ch; q++) memmove(o->p + q * o->ld, o->p + q * o->ld + sh, keep * sizeof(float));
                    o->lo = lo[i];
                }
            }
            if (from[i] < to[i]) {
                const int cols = (to[i] - from[i]) * l->ow;
                if (l->dw) {
                    const mf_dw_rows g = {.x = in->p, .ldx = in->ld, .xr0 = in->lo, .h = l->ih, .w = l->iw,
                                          .oh = l->oh, .ow = l->ow, .oy0 = from[i], .oy1 = to[i]};
                    if (l->packed_to) {
                        const int kg = l->packed_to->cin / l->packed_to->groups;
                        k->c->m->k->dw_packed(l->layer, 0, l->packed_to->groups * ((kg + 1) / 2), &g,
                                              (uint16_t *)(void *)o->p, kg, &k->e[i][0], sc->kscr);
                    } else {
                        k->c->m->k32->dw(l->layer, 0, l->ch, &g, o->p + (size_t)(from[i] - o->lo) * l->ow, o->ld,
                                         &k->e[i][0]);
                    }
                } else {
                    const float *res = NULL;
                    size_t ldr = 0;
                    if (k->res_from[i] >= 0) {
                        const band_win *rw = k->res_from[i] == MF_CHAIN_MAX ? &xin : &win[k->res_from[i]];
                        res = rw->p + (size_t)(from[i] - rw->lo) * l->ow;
                        ldr = rw->ld;
                    }
                    const int packed = i > 0 && ch->l[i - 1].packed_to;
                    pw_cols(l->layer, k->e[i], packed ? NULL : in->p + (size_t)(from[i] - in->lo) * l->iw, in->ld,
                            packed ? (const uint16_t *)(const void *)in->p : NULL, cols,
                            o->p + (size_t)(from[i] - o->lo) * l->ow, o->ld, res, ldr, sc->kscr);
                }
            }
            if (i < n - 1) o->hi = to[i];
        }
    }
}

/* The convolutions of block b for one image, as its recipe chains them
 * (recipe.h), in bands: x -> y with this image's slopes dy (hyper 1 a, b,
 * then hyper 2 a, b; maxhid each). */
static void block_convs(const fctx *c, const mf_block *b, const float *x, int h, int w, float *y, int oh, int ow,
                        const float *dy, size_t maxhid)
{
    chain ch;
    chain_make(c->m, b, h, w, oh, ow, &ch);
    band_task k = {.c = c, .ch = &ch, .x = x, .y = y};
    float *gath = c->sc->gath + (size_t)c->sc->nimg * c->m->arch.token_dim * 5 / 4;
    for (int i = 0; i < ch.n; i++) {
        const mf_layer_recipe *r = ch.l[i].r;
        const float *da = r->dy ? dy + (size_t)(2 * (r->dy - 1)) * maxhid : NULL, *db = da ? da + maxhid : NULL;
        k.res_from[i] = -1;
        if (ch.l[i].dw) {
            k.e[i][0] = (mf_epi){.act = r->act, .bias = ((const mf_dw *)ch.l[i].layer)->bias, .dya = da, .dyb = db};
            continue;
        }
        pw_epis(ch.l[i].layer, r->act, da, db, gath, k.e[i]);
        gath += 2 * maxhid;
        if (r->res == MF_RES_X_IF_IDENTITY && b->identity) k.res_from[i] = MF_CHAIN_MAX;
        if (r->res == MF_RES_DST) /* what the destination map holds: the last layer before that wrote it */
            for (int j = i - 1; j >= 0 && k.res_from[i] < 0; j--)
                if (ch.l[j].r->dst == r->dst) k.res_from[i] = j;
    }
    par(c->ws, band_run, &k);
}

/* Classifier conv of one image: [shuffle(G)] -> 1x1 + BN + relu6 -> mean ->
 * hswish, then token 0 appended: feat[fin]. */
static void classifier_features(const fctx *c, const float *x, int hw, const float *z, float *feat)
{
    const mf_arch *a = &c->m->arch;
    scratch *sc = c->sc;
    const int C = a->blocks[a->n_blocks - 1].c, G = a->groups;
    const float *cin = x;
    if (G > 1) {
        const int cg = C / G;
        for (int j = 0; j < cg; j++)
            for (int gi = 0; gi < G; gi++)
                memcpy(sc->col + (size_t)(j * G + gi) * hw, x + (size_t)(gi * cg + j) * hw, (size_t)hw * sizeof(float));
        cin = sc->col;
    }
    const mf_pw *cp = &c->m->cls_pw;
    pw_conv(c, cp, cin, hw, sc->U1, MF_ACT_RELU6, NULL, NULL, sc->gath);
    /* the average pool: each channel's sum in order, four channels at a
     * time (four chains in flight) */
    int ch = 0;
    for (; ch + 4 <= cp->cout; ch += 4) {
        const float *r0 = sc->U1 + (size_t)ch * hw, *r1 = r0 + hw, *r2 = r1 + hw, *r3 = r2 + hw;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        for (int p = 0; p < hw; p++) {
            s0 += r0[p];
            s1 += r1[p];
            s2 += r2[p];
            s3 += r3[p];
        }
        const float sv[4] = {s0, s1, s2, s3};
        for (int i = 0; i < 4; i++) {
            const float v = sv[i] / (float)hw;
            feat[ch + i] = v * mf_hsig(v);
        }
    }
    for (; ch < cp->cout; ch++) {
        const float *r = sc->U1 + (size_t)ch * hw;
        float s = 0.f;
        for (int p = 0; p < hw; p++) s += r[p];
        const float v = s / (float)hw;
        feat[ch] = v * mf_hsig(v);
    }
    memcpy(feat + cp->cout, z, (size_t)a->token_dim * sizeof(float));
}

/* fc (BN folded) + hswish, then the class layer, for n images at once. */
static void head(const fctx *c, const float *feat, int n, float *fcbuf, float *logits)
{
    const mf_model *m = c->m;
    linear(c, &m->fc, feat, n, fcbuf);
    for (size_t i = 0; i < (size_t)n * m->fc.out; i++) fcbuf[i] = fcbuf[i] * mf_hsig(fcbuf[i]);
    linear(c, &m->head, fcbuf, n, logits);
}

/* Images [b0, b1) of the job, block by block, on scratch sc (with the team
 * when the pass is a team pass). */
static void run_images(mf_workspace *ws, scratch *sc, int b0, int b1)
{
    const job *jb = &ws->cur;
    const mf_model *m = ws->m;
    const mf_arch *a = &m->arch;
    const fctx cx = {m, ws, sc}, *c = &cx;
    const int n = b1 - b0, T = a->tokens, D = a->token_dim, H = jb->h, W = jb->w;
    const size_t fs = sc->feat, img = (size_t)3 * H * W, TD = (size_t)T * D;
    size_t work, maxhid;
    tok_layout(m, &work, &maxhid);
    char name[32];
    int h = conv_out(H, 2), w = conv_out(W, 2);
    for (int j = 0; j < n; j++) {
        stem(c, jb->input + img * (b0 + j), H, W, sc->X + fs * j);
        memcpy(sc->z + TD * j, m->tokens, TD * sizeof(float));
        if (ws->trace) trace_map(ws, "stem", b0 + j, sc->X + fs * j, a->stem, h, w);
    }
    float *X = sc->X, *Y = sc->Y;
    for (int i = 0; i < a->n_blocks; i++) {
        const mf_block *b = &m->blocks[i];
        int oh = conv_out(h, b->stride), ow = conv_out(w, b->stride);
        const size_t dyld = 4 * maxhid;
        const mf_block_recipe *br = &mf_block_recipes[b->type];
        if (br->bridges) {
            mobile_to_former(c, &b->m2f, X, fs, n, b->cin, h * w, sc->z);
            former(c, &b->former, sc->z, n);
            hyper(c, &b->hy1, sc->z, n, sc->gath, sc->dy, dyld, maxhid);
            hyper(c, &b->hy2, sc->z, n, sc->gath, sc->dy + 2 * maxhid, dyld, maxhid);
        }
        for (int j = 0; j < n; j++)
            block_convs(c, b, X + fs * j, h, w, Y + fs * j, oh, ow, sc->dy + dyld * j, maxhid);
        if (br->bridges) {
            former_to_mobile(c, &b->f2m, sc->z, Y, fs, n, b->cout, oh * ow);
            if (br->post_residual && b->identity)
                for (int j = 0; j < n; j++) {
                    float *y = Y + fs * j;
                    const float *x = X + fs * j;
                    for (size_t p = 0; p < (size_t)b->cout * oh * ow; p++) y[p] += x[p];
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
    mobile_to_former(c, &m->final_m2f, X, fs, n, C, h * w, sc->z);
    const size_t fin = (size_t)m->cls_pw.cout + D;
    for (int j = 0; j < n; j++) {
        if (ws->trace) {
            int shape[2] = {T, D};
            ws->trace(ws->trace_user, "final_tokens", b0 + j, sc->z + TD * j, shape, 2);
        }
        classifier_features(c, X + fs * j, h * w, sc->z + TD * j, sc->feat_out + fin * j);
    }
    head(c, sc->feat_out, n, sc->fc, jb->logits + (size_t)m->num_classes * b0);
}

static void run_share(mf_workspace *ws, int t)
{
    const job *j = &ws->cur;
    int per = (j->b + ws->threads - 1) / ws->threads;
    int b0 = t * per, b1 = b0 + per < j->b ? b0 + per : j->b;
    if (b0 < b1) run_images(ws, &ws->sc[t], b0, b1);
}

static void share_cb(void *ctx, int t) { run_share(ctx, t); }

mf_status mf_workspace_new(const mf_model *m, int threads, mf_workspace **out)
{
    *out = NULL;
    if (threads < 1 || threads > 256) return MF_ERR_ARG;
    mf_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return MF_ERR_NOMEM;
    ws->m = m;
    ws->threads = threads;
    ws->sc = calloc((size_t)threads, sizeof *ws->sc);
    if (!ws->sc) { free(ws); return MF_ERR_NOMEM; }
    mf_status st = mf_team_init(&ws->team, threads, share_cb, ws);
    if (st != MF_OK) {
        free(ws->sc);
        free(ws);
        return st;
    }
    *out = ws;
    return MF_OK;
}

void mf_workspace_free(mf_workspace *ws)
{
    if (!ws) return;
    mf_team_destroy(&ws->team);
    mf_arena_free(ws->mem_arena);
    free(ws->sc);
    free(ws);
}

mf_status mf_forward(const mf_model *m, mf_workspace *ws, const float *input, int b, int h, int w, float *logits)
{
    if (!m || !ws || ws->m != m || !input || !logits) return MF_ERR_ARG;
    mf_status st = mf_workspace_reserve(ws, b, h, w);
    if (st != MF_OK) return st;
    ws->cur = (job){input, logits, b, h, w};
    if (ws->threads == 1) {
        run_share(ws, 0);
        return MF_OK;
    }
    /* As many images as threads or more: each thread takes a run of images.
     * Fewer: all threads work on every layer together (a team). */
    const int together = b < ws->threads;
    mf_team_begin(&ws->team, together);
    if (together) run_images(ws, &ws->sc[0], 0, b);
    else run_share(ws, 0);
    mf_team_end(&ws->team);
    return MF_OK;
}
