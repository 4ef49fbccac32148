/* Fused selective scan (Mamba S6) for CPUs: forward pass and checkpointed reverse pass.
 *
 * Plain C ABI on contiguous buffers (loaded with ctypes by cscan.py; no PyTorch headers, so the
 * build does not depend on the torch version). Compiled at first use with the system C compiler
 * (cc -O3 -march=native) into a per-user cache; the Numba kernels (kernels.py) are the fallback
 * and the specification of the same loops. Layouts and names as kernels.py ("k" = kernel batch):
 *
 *     u, delta  (Bk, Dc, L)   x_t and the raw step size δ_t
 *     A         (Ba, Dc, N)   batch b reads A[b / (Bk / Ba)]
 *     Dskip     (Bd, Dc)      skip weight (or NULL), batch b reads Dskip[b / (Bk / Bd)]
 *     bias      (Bb, Dc)      Δ bias (or NULL), batch b reads bias[b / (Bk / Bb)]
 *     Bt, Ct    (Bk, G, L, N) time-major, channel d reads group d / (Dc / G)
 *     h0        (Bk, Dc, N)   or NULL (zeros)
 *     ckpt      (Bk, ceil(L/K), N, Dc)  state before step j*K
 *
 *     Δ_t = softplus(δ_t + bias) (softplus = 1) or δ_t + bias (softplus = 0),
 *     h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t + Dskip x_t.
 *
 * softplus(v) = v for v > 20, else log1p(exp(v)), and its derivative 1 for v > 20, else
 * e^v / (e^v + 1): PyTorch's F.softplus (beta 1, threshold 20). Bias and softplus are applied
 * to each (u, Δ) tile in the kernel, so Δ never goes through memory.
 *
 * Vectorisation: one SIMD vector (GCC/Clang vector extension, 32 bytes: 8 floats or 4 doubles)
 * holds VL channels of one group; the N states of those channels live in N vectors, so the
 * output y accumulates lane-wise and B_t[n], C_t[n] are broadcast scalars. u, Δ, dy, y are
 * (B, D, L) in memory: each work item copies a tile of TT steps x VL channels into a local
 * (TT, VL) buffer (and back; 8 x 8 in-register transposes with AVX), so the time loop reads
 * vectors. The states are walked in groups of 4 kept in registers across the steps of a tile
 * (fwd_group / rec_group / rev_group). Missing channels of a partial chunk are padded with
 * zeros (x = 0, A = 0, dy = 0, h0 = 0: their state and adjoint stay 0 and are never stored).
 * float32 computes exp(Δ A) as 2^(Δ · A log2 e) with a degree-6 polynomial (relative error
 * ~1e-7, in-vector; 2^y is 0 for y <= -126.5 and inf for y >= 127.5); float64 calls libm's
 * exp lane by lane (exact, for the tests).
 *
 * Backward (g_t = dLoss/dh_t, ā_t = exp(Δ_t A)), as kernels.py:
 *     g_t = ā_{t+1} ⊙ g_{t+1} + dy_t C_t,   dC_t += dy_t h_t,   dB_t += g_t Δ_t x_t,
 *     du_t = Δ_t (g_t · B_t) + Dskip dy_t,  dΔ_t = x_t (g_t · B_t) + Σ_n g_t[n] h_{t-1}[n] ā_t[n] A[n],
 *     dδ_t = dΔ_t softplus'(δ_t + bias),    dbias += Σ_t dδ_t,
 *     dA += Σ_t g_t ⊙ h_{t-1} ⊙ ā_t Δ_t,   dDskip += Σ_t dy_t x_t,   dh0 = ā_0 ⊙ g_0.
 * A work item is (batch, group, part): it walks the blocks of K steps from the end and, inside
 * each block, every channel chunk of its part: the block's decays ā_t and ā_t ⊙ h_{t-1} are
 * recomputed from its checkpoint into (K, N) vector buffers (one exp per element), then the
 * reverse steps run. dB_t, dC_t are sums over the channels of a group: they accumulate
 * lane-wise over the chunks into (K, N) vector buffers, summed across lanes once per block into
 * dB_p / dC_p (Bk, G, P, L, N). The walk goes backwards in time, so the next block's rows of
 * u, δ, dy are prefetched in software.
 *
 * Threads: the caller passes nthreads; work items are handed out by an atomic counter. Built
 * with -fopenmp (the default, see cscan.py) they run on the OpenMP team of the libgomp PyTorch
 * already loaded; without OpenMP, on nthreads - 1 pthreads started per call plus the caller.
 */
#ifndef SSM_SCAN_BODY
#define SSM_SCAN_BODY

#include <math.h>
#include <pthread.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SSM_ABI_VERSION 2
#define TT 32 /* steps per (u, Δ, y) tile in the forward */

int ssm_abi_version(void) { return SSM_ABI_VERSION; }

typedef struct {
    void (*fn)(const void *args, long item, char *scratch);
    const void *args;
    long nitems;
    size_t scratch_bytes;
    long next; /* atomic */
    int failed; /* atomic: a scratch allocation failed */
} ssm_pool;

static void *ssm_worker(void *p_) {
    ssm_pool *p = (ssm_pool *)p_;
    size_t bytes = (p->scratch_bytes + 63) / 64 * 64;
    char *scratch = (char *)aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (!scratch) {
        __atomic_store_n(&p->failed, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    for (;;) {
        long it = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (it >= p->nitems) break;
        p->fn(p->args, it, scratch);
    }
    free(scratch);
    return NULL;
}

/* Run fn(args, item, scratch) for item in [0, nitems) on nthreads threads. 0 on success. */
#if defined(_OPENMP)
#include <omp.h>
/* Built with -fopenmp, the library links libgomp.so.1; inside a PyTorch process that is the
 * libgomp PyTorch already loaded (same soname), so the kernel runs on PyTorch's own OpenMP
 * team: no second thread pool whose threads would compete with PyTorch's spinning ones. */
static int ssm_parallel(void (*fn)(const void *, long, char *), const void *args, long nitems,
                        size_t scratch_bytes, int nthreads) {
    ssm_pool pool = {fn, args, nitems, scratch_bytes, 0, 0};
    if (nthreads > nitems) nthreads = (int)nitems;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads)
    ssm_worker(&pool);
    return __atomic_load_n(&pool.failed, __ATOMIC_SEQ_CST) ? -1 : 0;
}
#else
static int ssm_parallel(void (*fn)(const void *, long, char *), const void *args, long nitems,
                        size_t scratch_bytes, int nthreads) {
    ssm_pool pool = {fn, args, nitems, scratch_bytes, 0, 0};
    if (nthreads > nitems) nthreads = (int)nitems;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 256) nthreads = 256;
    pthread_t tid[256];
    int started = 0;
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&tid[started], NULL, ssm_worker, &pool) == 0) started++;
    }
    ssm_worker(&pool); /* the calling thread works too; it alone suffices if creation failed */
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    return __atomic_load_n(&pool.failed, __ATOMIC_SEQ_CST) ? -1 : 0;
}
#endif

#define SSM_CAT_(a, b) a##b
#define SSM_CAT(a, b) SSM_CAT_(a, b)

/* ------------------------------------------------------------------ float32 instantiation */
#define REAL float
#define IREAL int32_t
#define VL 8
#define SUF f32
#define EXP_ARG_SCALE 1.4426950408889634f /* log2(e): the float path computes 2^(Δ A log2 e) */
#include __FILE__
#undef REAL
#undef IREAL
#undef VL
#undef SUF
#undef EXP_ARG_SCALE

/* ------------------------------------------------------------------ float64 instantiation */
#define REAL double
#define IREAL int64_t
#define VL 4
#define SUF f64
#define EXP_ARG_SCALE 1.0 /* the double path calls exp() */
#include __FILE__

#else /* ============================================================= typed body (REAL, VL) */

#define V SSM_CAT(vec_, SUF)
#define IV SSM_CAT(ivec_, SUF)
#define FN(name) SSM_CAT(name, SSM_CAT(_, SUF))

typedef REAL V __attribute__((vector_size(VL * sizeof(REAL)), aligned(VL * sizeof(REAL))));
typedef IREAL IV __attribute__((vector_size(VL * sizeof(REAL)), aligned(VL * sizeof(REAL))));

static inline V FN(splat)(REAL x) {
    V v = {0};
    return v + x;
}

/* lanes of m (all ones / all zeros) pick a, else b */
static inline V FN(select)(IV m, V a, V b) { return (V)((m & (IV)a) | (~m & (IV)b)); }

#if VL == 8
/* 2^y for float32 vectors; y = Δ A log2(e). y is clamped to [-127, 128]: k = round(y) = -127
 * builds the scale 0 (so y <= -126.5 gives exactly 0, where 2^y is at most a denormal) and
 * k = 128 builds +inf (so y >= 127.5 gives inf; exact exp overflows at y = 128). NaN propagates:
 * maxps / minps return their second operand when either is NaN. */
static inline V FN(vexp)(V y) {
    const V magic = FN(splat)(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
#if defined(__AVX__)
    V yc = (V)_mm256_max_ps(_mm256_set1_ps(-127.0f), (__m256)y);
    yc = (V)_mm256_min_ps(_mm256_set1_ps(128.0f), (__m256)yc);
#else
    const V lo = FN(splat)(-127.0f), hi = FN(splat)(128.0f);
    V yc = FN(select)(y < lo, lo, y);
    yc = FN(select)(yc > hi, hi, yc);
#endif
    V t = yc + magic;
    V k = t - magic;
    V f = yc - k; /* in [-0.5, 0.5] */
    V p = FN(splat)(1.5469732170458883e-4f);
    p = p * f + 1.3400432653725147e-3f;
    p = p * f + 9.6180252730846405e-3f;
    p = p * f + 5.5503271520137787e-2f;
    p = p * f + 2.4022650718688965e-1f;
    p = p * f + 6.9314718246459961e-1f;
    p = p * f + 1.0f;
    /* the low mantissa bits of t hold k: bits(t) - bits(magic) = k; (k + 127) << 23 = 2^k */
    V scale = (V)(((IV)t - (0x4B400000 - 127)) << 23);
    return p * scale;
}
#else
static inline V FN(vexp)(V x) {
    V r;
    for (int i = 0; i < VL; i++) r[i] = exp(x[i]);
    return r;
}
#endif

#if VL == 8
/* exp(x) for x <= 0 to float accuracy: x log2(e) split in two parts (the rounding of the product
 * would otherwise cost |x| ulps), then 2^(k + f) as in vexp. */
static inline V FN(vexp_neg)(V x) {
    const V magic = FN(splat)(12582912.0f);
    V y = x * 1.4426950408889634f;
#if defined(__FMA__)
    V ylo = (V)_mm256_fmadd_ps((__m256)x, _mm256_set1_ps(1.4426950408889634f), -(__m256)y);
    ylo += x * 1.925963033500011e-8f; /* log2(e) - (float)log2(e) */
#else
    V ylo = FN(splat)(0.0f);
#endif
    const V lo = FN(splat)(-127.0f);
    V yc = FN(select)(y < lo, lo, y);
    V t = yc + magic;
    V k = t - magic;
    V f = (yc - k) + ylo;
    V p = FN(splat)(1.5469732170458883e-4f);
    p = p * f + 1.3400432653725147e-3f;
    p = p * f + 9.6180252730846405e-3f;
    p = p * f + 5.5503271520137787e-2f;
    p = p * f + 2.4022650718688965e-1f;
    p = p * f + 6.9314718246459961e-1f;
    p = p * f + 1.0f;
    V scale = (V)(((IV)t - (0x4B400000 - 127)) << 23);
    return FN(select)(x != x, x, p * scale);
}

/* softplus(v) (PyTorch's, threshold 20) and, if sig != NULL, its derivative, for float32. */
static inline V FN(softplus)(V v, V *sig) {
    const V zero = FN(splat)(0.0f), one = FN(splat)(1.0f);
    V av = (V)((IV)v & 0x7fffffff);
    V w = FN(vexp_neg)(-av); /* e^{-|v|} in (0, 1] */
    /* log1p(w) = base + 2 atanh(u): u = w / (2 + w) (log of 1 + w), or for w > sqrt(2) - 1
     * u = (w - 1) / (w + 3) (log of (1 + w) / 2, base ln 2); |u| <= 0.1716 */
    IV big = w > 0.41421356237309503f;
    V num = FN(select)(big, w - 1.0f, w);
    V den = FN(select)(big, w + 3.0f, w + 2.0f);
    V base = FN(select)(big, FN(splat)(0.69314718055994531f), zero);
    V u = num / den;
    V z = u * u;
    V q = FN(splat)(1.0f / 11.0f);
    q = q * z + 1.0f / 9.0f;
    q = q * z + 1.0f / 7.0f;
    q = q * z + 1.0f / 5.0f;
    q = q * z + 1.0f / 3.0f;
    q = q * z + 1.0f;
    V l = base + (u + u) * q;
    IV over = v > 20.0f;
    V sp = FN(select)(v > zero, v, zero) + l;
    sp = FN(select)(v != v, v, sp);
    if (sig) {
        V r = one / (one + w);
        V s_ = FN(select)(v >= zero, r, w * r);
        *sig = FN(select)(over, one, s_);
    }
    return FN(select)(over, v, sp);
}
#else
static inline V FN(softplus)(V v, V *sig) {
    V sp;
    for (int i = 0; i < VL; i++) {
        const REAL e = exp(v[i]);
        sp[i] = v[i] > 20.0 ? v[i] : log1p(e);
        if (sig) (*sig)[i] = v[i] > 20.0 ? 1.0 : e / (e + 1.0);
    }
    return sp;
}
#endif

#if VL == 8 && defined(__AVX__)
/* in-register 8 x 8 transpose: r[i][j] <- r[j][i] */
static inline void FN(tr8)(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

/* tile[k][w] = src[w * stride + k] for k < T, w < W (rows of (B, D, L) arrays -> vectors over
 * channels); lanes w >= W are zero */
static inline void FN(load_tile)(V *tile, const REAL *src, long stride, long T, long W) {
    long k0 = 0;
#if VL == 8 && defined(__AVX__)
    if (W == VL) {
        for (; k0 + 8 <= T; k0 += 8) {
            __m256 r[8];
            for (int w = 0; w < 8; w++) r[w] = _mm256_loadu_ps(src + w * stride + k0);
            FN(tr8)(r);
            for (int i = 0; i < 8; i++) tile[k0 + i] = (V)r[i];
        }
    }
#endif
    if (k0 < T) memset(tile + k0, 0, sizeof(V) * (T - k0));
    for (long w = 0; w < W; w++)
        for (long k = k0; k < T; k++) tile[k][w] = src[w * stride + k];
}

/* dst[w * stride + k] = tile[k][w] for k < T, w < W */
static inline void FN(store_tile)(REAL *dst, long stride, const V *tile, long T, long W) {
    long k0 = 0;
#if VL == 8 && defined(__AVX__)
    if (W == VL) {
        for (; k0 + 8 <= T; k0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = (__m256)tile[k0 + i];
            FN(tr8)(r);
            for (int w = 0; w < 8; w++) _mm256_storeu_ps(dst + w * stride + k0, r[w]);
        }
    }
#endif
    for (long w = 0; w < W; w++)
        for (long k = k0; k < T; k++) dst[w * stride + k] = tile[k][w];
}

static inline REAL FN(hsum)(V v) {
    REAL s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

/* The hot loops walk the N states in groups of NG = 4 (then 1 for the remainder) with the
 * group's states (and adjoints) in registers across the time steps of a tile, instead of
 * reloading and storing each state every step. NG is a literal at every call, so the
 * always-inline helpers compile to fully unrolled register code. */
#define NGMAX 4
#define INLINE static inline __attribute__((always_inline))

/* forward over a tile: h[n0 .. n0+NG) advance T steps; ty[k] += Σ_group C_t[n] h_t[n] */
INLINE void FN(fwd_group)(const int NG, long n0, long T, long N, const V *tdt, const V *tdtx,
                          const REAL *Bblk, const REAL *Cblk, const V *a2_, V *h_, V *ty) {
    V h[NGMAX], a2[NGMAX];
    for (int j = 0; j < NG; j++) {
        h[j] = h_[n0 + j];
        a2[j] = a2_[n0 + j];
    }
    for (long k = 0; k < T; k++) {
        const V dt = tdt[k], dtx = tdtx[k];
        const REAL *Br = Bblk + k * N + n0, *Cr = Cblk + k * N + n0;
        V yv = ty[k];
        for (int j = 0; j < NG; j++) {
            h[j] = FN(vexp)(dt * a2[j]) * h[j] + dtx * Br[j];
            yv += h[j] * Cr[j];
        }
        ty[k] = yv;
    }
    for (int j = 0; j < NG; j++) h_[n0 + j] = h[j];
}

/* backward, recompute from the block's start state h0b: ebuf[k] = decays ā of step k,
 * qbuf[k] = ā ⊙ h_{k-1} (what dA and dΔ need), and dCv[k] += dy_k h_k (lane partials of dC) */
INLINE void FN(rec_group)(const int NG, long n0, long T, long N, const V *tdt, const V *tdtx,
                          const V *tdy, const REAL *Bblk, const V *a2_, const V *h0b, V *ebuf,
                          V *qbuf, V *dCv) {
    V h[NGMAX], a2[NGMAX];
    for (int j = 0; j < NG; j++) {
        h[j] = h0b[n0 + j];
        a2[j] = a2_[n0 + j];
    }
    for (long k = 0; k < T; k++) {
        const V dt = tdt[k], dtx = tdtx[k], dyv = tdy[k];
        const REAL *Br = Bblk + k * N + n0;
        V *en = ebuf + k * N + n0, *qn = qbuf + k * N + n0, *dCk = dCv + k * N + n0;
        for (int j = 0; j < NG; j++) {
            const V e = FN(vexp)(dt * a2[j]);
            const V q = e * h[j];
            en[j] = e;
            qn[j] = q;
            h[j] = q + dtx * Br[j];
            dCk[j] += dyv * h[j];
        }
    }
}

/* backward, reverse steps T-1 .. 0 for the group: adjoints g and dA in registers; the sums over
 * states of the group go to tsgb[k] (Σ g B) and tsda[k] (Σ g ā h_{t-1} A) */
INLINE void FN(rev_group)(const int NG, long n0, long T, long N, const V *tdt, const V *tdtx,
                          const V *tdy, const REAL *Bblk, const REAL *Cblk, const V *ebuf,
                          const V *qbuf, const V *A_, V *g_, V *dA_, V *dBv, V *tsgb, V *tsda) {
    V g[NGMAX], dA[NGMAX], av[NGMAX];
    for (int j = 0; j < NG; j++) {
        g[j] = g_[n0 + j];
        dA[j] = dA_[n0 + j];
        av[j] = A_[n0 + j];
    }
    for (long k = T - 1; k >= 0; k--) {
        const V dt = tdt[k], dtx = tdtx[k], dyv = tdy[k];
        const REAL *Br = Bblk + k * N + n0, *Cr = Cblk + k * N + n0;
        const V *en = ebuf + k * N + n0, *qn = qbuf + k * N + n0;
        V *dBk = dBv + k * N + n0;
        V sgb = tsgb[k], sda = tsda[k];
        for (int j = 0; j < NG; j++) {
            const V gn = g[j] + dyv * Cr[j];
            dBk[j] += gn * dtx;
            sgb += gn * Br[j];
            const V da = gn * qn[j]; /* dLoss / d(Δ_t A[n]) */
            sda += da * av[j];
            dA[j] += da * dt;
            g[j] = gn * en[j];
        }
        tsgb[k] = sgb;
        tsda[k] = sda;
    }
    for (int j = 0; j < NG; j++) {
        g_[n0 + j] = g[j];
        dA_[n0 + j] = dA[j];
    }
}

typedef struct {
    const REAL *u, *delta, *A, *Dskip, *bias, *Bt, *Ct, *h0;
    REAL *y, *h_last, *ckpt;
    long Bk, Dc, L, N, G, Ba, Bd, Bb, K, nblk, nch;
    int softplus;
} FN(fwd_args);

/* (Bx, Dc) parameter -> the lanes of channels d0 .. d0 + W - 1 for kernel batch b (0 if NULL) */
static inline V FN(param_lanes)(const REAL *x, long Bx, long Bk, long b, long Dc, long d0, long W) {
    V v = FN(splat)(0);
    if (x) {
        const long xb = b / (Bk / Bx);
        for (long w = 0; w < W; w++) v[w] = x[xb * Dc + d0 + w];
    }
    return v;
}

static void FN(fwd_item)(const void *args_, long it, char *scratch) {
    const FN(fwd_args) *a = (const FN(fwd_args) *)args_;
    const long Dc = a->Dc, L = a->L, N = a->N, G = a->G, K = a->K, nch = a->nch;
    const long per_group = Dc / G;
    const long b = it / (G * nch);
    const long g = (it / nch) % G;
    const long c = it % nch;
    const long ab = b / (a->Bk / a->Ba);
    const long d0 = g * per_group + c * VL;
    const long W = per_group - c * VL < VL ? per_group - c * VL : VL;
    V *h = (V *)scratch;   /* (N,) state */
    V *a2 = h + N;         /* (N,) A · EXP_ARG_SCALE */
    V *tdt = a2 + N;       /* (TT,) Δ tile */
    V *tx = tdt + TT;      /* (TT,) x tile */
    V *ty = tx + TT;       /* (TT,) y tile */
    V *tdtx = ty + TT;     /* (TT,) Δ x tile */
    const V Dv = FN(param_lanes)(a->Dskip, a->Bd, a->Bk, b, Dc, d0, W);
    const V biasv = FN(param_lanes)(a->bias, a->Bb, a->Bk, b, Dc, d0, W);

    for (long n = 0; n < N; n++) {
        V av = FN(splat)(0), hv = FN(splat)(0);
        for (long w = 0; w < W; w++) {
            av[w] = a->A[(ab * Dc + d0 + w) * N + n];
            if (a->h0) hv[w] = a->h0[(b * Dc + d0 + w) * N + n];
        }
        a2[n] = av * (REAL)EXP_ARG_SCALE;
        h[n] = hv;
    }
    const REAL *Bg = a->Bt + (b * G + g) * L * N;
    const REAL *Cg = a->Ct + (b * G + g) * L * N;
    long T;
    for (long t0 = 0; t0 < L; t0 += T) {
        /* tiles never straddle a checkpoint: the state is saved before a tile starts */
        const long to_ckpt = K - t0 % K;
        T = L - t0 < TT ? L - t0 : TT;
        T = T < to_ckpt ? T : to_ckpt;
        if (t0 % K == 0) {
            REAL *ck = a->ckpt + ((b * a->nblk + t0 / K) * N) * Dc + d0;
            for (long n = 0; n < N; n++)
                for (long w = 0; w < W; w++) ck[n * Dc + w] = h[n][w];
        }
        const long row = (b * Dc + d0) * L + t0;
        FN(load_tile)(tdt, a->delta + row, L, T, W);
        FN(load_tile)(tx, a->u + row, L, T, W);
        for (long k = 0; k < T; k++) {
            tdt[k] += biasv;
            if (a->softplus) tdt[k] = FN(softplus)(tdt[k], NULL);
            tdtx[k] = tdt[k] * tx[k];
            ty[k] = Dv * tx[k];
        }
        const REAL *Bblk = Bg + t0 * N, *Cblk = Cg + t0 * N;
        long n0 = 0;
        for (; n0 + 4 <= N; n0 += 4) FN(fwd_group)(4, n0, T, N, tdt, tdtx, Bblk, Cblk, a2, h, ty);
        for (; n0 < N; n0++) FN(fwd_group)(1, n0, T, N, tdt, tdtx, Bblk, Cblk, a2, h, ty);
        FN(store_tile)(a->y + row, L, ty, T, W);
    }
    for (long n = 0; n < N; n++)
        for (long w = 0; w < W; w++) a->h_last[(b * Dc + d0 + w) * N + n] = h[n][w];
}

int FN(ssm_scan_forward)(const REAL *u, const REAL *delta, const REAL *A, const REAL *Dskip,
                         const REAL *bias, const REAL *Bt, const REAL *Ct, const REAL *h0,
                         long Bk, long Dc, long L, long N, long G, long Ba, long Bd, long Bb,
                         long K, int softplus, REAL *y, REAL *h_last, REAL *ckpt, int nthreads) {
    FN(fwd_args) a = {u, delta, A, Dskip, bias, Bt, Ct, h0, y, h_last, ckpt,
                      Bk, Dc, L, N, G, Ba, Bd, Bb, K, (L + K - 1) / K, (Dc / G + VL - 1) / VL,
                      softplus};
    size_t scratch = sizeof(V) * (2 * N + 4 * TT);
    return ssm_parallel(FN(fwd_item), &a, Bk * G * a.nch, scratch, nthreads);
}

typedef struct {
    const REAL *dy, *dh_last, *u, *delta, *A, *Dskip, *bias, *Bt, *Ct, *ckpt;
    REAL *du, *ddelta, *dA_k, *dD_k, *dbias_k, *dh0, *dB_p, *dC_p;
    long Bk, Dc, L, N, G, Ba, Bd, Bb, K, nblk, nch, P;
    int softplus;
} FN(bwd_args);

static void FN(bwd_item)(const void *args_, long it, char *scratch) {
    const FN(bwd_args) *a = (const FN(bwd_args) *)args_;
    const long Dc = a->Dc, L = a->L, N = a->N, G = a->G, K = a->K, nch = a->nch, P = a->P;
    const long per_group = Dc / G;
    const long b = it / (G * P);
    const long g = (it / P) % G;
    const long p = it % P;
    const long ab = b / (a->Bk / a->Ba);
    const long c_lo = (p * nch) / P, c_hi = ((p + 1) * nch) / P, nc = c_hi - c_lo;
    const long maxc = (nch + P - 1) / P;
    V *gh = (V *)scratch;        /* (maxc, N) adjoint ā_{t+1} g_{t+1} per chunk */
    V *dA = gh + maxc * N;       /* (maxc, N) */
    V *av = dA + maxc * N;       /* (maxc, N) A */
    V *a2 = av + maxc * N;       /* (maxc, N) A · EXP_ARG_SCALE */
    V *Dv = a2 + maxc * N;       /* (maxc,) Dskip lanes */
    V *biasv = Dv + maxc;        /* (maxc,) bias lanes */
    V *dD = biasv + maxc;        /* (maxc,) Σ_t dy x */
    V *dbias = dD + maxc;        /* (maxc,) Σ_t dδ */
    V *hbuf = dbias + maxc;      /* (N,): state at the block's start (its checkpoint) */
    V *qbuf = hbuf + N;          /* (K, N): exp(Δ A) ⊙ h before step t0 + k */
    V *ebuf = qbuf + K * N;      /* (K, N): exp(Δ A) at step t0 + k */
    V *dBv = ebuf + K * N;       /* (K, N) lane partials of dB_t */
    V *dCv = dBv + K * N;        /* (K, N) lane partials of dC_t */
    V *tdt = dCv + K * N;        /* (K,) tiles */
    V *tx = tdt + K;
    V *tdy = tx + K;
    V *tdu = tdy + K;
    V *tdd = tdu + K;
    V *tsg = tdd + K;            /* softplus'(δ + bias) */
    V *tdtx = tsg + K;           /* Δ x */
    V *tsgb = tdtx + K;          /* Σ_n g B */
    V *tsda = tsgb + K;          /* Σ_n g h_{t-1} ā A */

    for (long ci = 0; ci < nc; ci++) {
        const long c = c_lo + ci;
        const long d0 = g * per_group + c * VL;
        const long W = per_group - c * VL < VL ? per_group - c * VL : VL;
        for (long n = 0; n < N; n++) {
            V A_ = FN(splat)(0), g_ = FN(splat)(0);
            for (long w = 0; w < W; w++) {
                A_[w] = a->A[(ab * Dc + d0 + w) * N + n];
                if (a->dh_last) g_[w] = a->dh_last[(b * Dc + d0 + w) * N + n];
            }
            av[ci * N + n] = A_;
            a2[ci * N + n] = A_ * (REAL)EXP_ARG_SCALE;
            gh[ci * N + n] = g_;
            dA[ci * N + n] = FN(splat)(0);
        }
        Dv[ci] = FN(param_lanes)(a->Dskip, a->Bd, a->Bk, b, Dc, d0, W);
        biasv[ci] = FN(param_lanes)(a->bias, a->Bb, a->Bk, b, Dc, d0, W);
        dD[ci] = FN(splat)(0);
        dbias[ci] = FN(splat)(0);
    }
    const REAL *Bg = a->Bt + (b * G + g) * L * N;
    const REAL *Cg = a->Ct + (b * G + g) * L * N;
    REAL *dBg = a->dB_p + ((b * G + g) * P + p) * L * N;
    REAL *dCg = a->dC_p + ((b * G + g) * P + p) * L * N;

    for (long j = a->nblk - 1; j >= 0; j--) {
        const long t0 = j * K;
        const long T = L - t0 < K ? L - t0 : K;
        memset(dBv, 0, sizeof(V) * T * N);
        memset(dCv, 0, sizeof(V) * T * N);
        for (long ci = 0; ci < nc; ci++) {
            const long c = c_lo + ci;
            const long d0 = g * per_group + c * VL;
            const long W = per_group - c * VL < VL ? per_group - c * VL : VL;
            V *g_ = gh + ci * N, *dA_ = dA + ci * N, *A_ = av + ci * N, *A2_ = a2 + ci * N;
            if (j > 0) {
                /* the walk goes backwards in time, which hardware prefetchers do not follow:
                 * fetch this chunk's rows of the previous block while this one computes */
                for (long w = 0; w < W; w++) {
                    const long row = (b * Dc + d0 + w) * L + t0 - K;
                    for (long k = 0; k < K; k += 64 / (long)sizeof(REAL)) {
                        __builtin_prefetch(a->delta + row + k, 0, 3);
                        __builtin_prefetch(a->u + row + k, 0, 3);
                        __builtin_prefetch(a->dy + row + k, 0, 3);
                        __builtin_prefetch(a->du + row + k, 1, 3);
                        __builtin_prefetch(a->ddelta + row + k, 1, 3);
                    }
                }
            }
            const long row = (b * Dc + d0) * L + t0;
            FN(load_tile)(tdt, a->delta + row, L, T, W);
            FN(load_tile)(tx, a->u + row, L, T, W);
            FN(load_tile)(tdy, a->dy + row, L, T, W);
            for (long k = 0; k < T; k++) {
                tdt[k] += biasv[ci];
                if (a->softplus) tdt[k] = FN(softplus)(tdt[k], &tsg[k]);
                tdtx[k] = tdt[k] * tx[k];
                tsgb[k] = FN(splat)(0);
                tsda[k] = FN(splat)(0);
            }
            /* recompute the block's states and decays from its checkpoint */
            const REAL *ck = a->ckpt + ((b * a->nblk + j) * N) * Dc + d0;
            for (long n = 0; n < N; n++) {
                V h_ = FN(splat)(0);
                for (long w = 0; w < W; w++) h_[w] = ck[n * Dc + w];
                hbuf[n] = h_;
            }
            const REAL *Bblk = Bg + t0 * N, *Cblk = Cg + t0 * N;
            long n0 = 0;
            for (; n0 + 4 <= N; n0 += 4)
                FN(rec_group)(4, n0, T, N, tdt, tdtx, tdy, Bblk, A2_, hbuf, ebuf, qbuf, dCv);
            for (; n0 < N; n0++)
                FN(rec_group)(1, n0, T, N, tdt, tdtx, tdy, Bblk, A2_, hbuf, ebuf, qbuf, dCv);
            /* reverse through the block */
            for (n0 = 0; n0 + 4 <= N; n0 += 4)
                FN(rev_group)(4, n0, T, N, tdt, tdtx, tdy, Bblk, Cblk, ebuf, qbuf, A_, g_, dA_, dBv,
                              tsgb, tsda);
            for (; n0 < N; n0++)
                FN(rev_group)(1, n0, T, N, tdt, tdtx, tdy, Bblk, Cblk, ebuf, qbuf, A_, g_, dA_, dBv,
                              tsgb, tsda);
            V dDacc = dD[ci], dbacc = dbias[ci];
            for (long k = 0; k < T; k++) {
                const V dyv = tdy[k];
                tdu[k] = tsgb[k] * tdt[k] + Dv[ci] * dyv;
                V dd = tsgb[k] * tx[k] + tsda[k];
                if (a->softplus) dd *= tsg[k];
                tdd[k] = dd;
                dbacc += dd;
                dDacc += dyv * tx[k];
            }
            dD[ci] = dDacc;
            dbias[ci] = dbacc;
            FN(store_tile)(a->du + row, L, tdu, T, W);
            FN(store_tile)(a->ddelta + row, L, tdd, T, W);
        }
        for (long k = 0; k < T; k++) {
            REAL *dBr = dBg + (t0 + k) * N, *dCr = dCg + (t0 + k) * N;
            for (long n = 0; n < N; n++) {
                dBr[n] = FN(hsum)(dBv[k * N + n]);
                dCr[n] = FN(hsum)(dCv[k * N + n]);
            }
        }
    }
    for (long ci = 0; ci < nc; ci++) {
        const long c = c_lo + ci;
        const long d0 = g * per_group + c * VL;
        const long W = per_group - c * VL < VL ? per_group - c * VL : VL;
        for (long n = 0; n < N; n++)
            for (long w = 0; w < W; w++) {
                a->dA_k[(b * Dc + d0 + w) * N + n] = dA[ci * N + n][w];
                a->dh0[(b * Dc + d0 + w) * N + n] = gh[ci * N + n][w];
            }
        for (long w = 0; w < W; w++) {
            a->dD_k[b * Dc + d0 + w] = dD[ci][w];
            a->dbias_k[b * Dc + d0 + w] = dbias[ci][w];
        }
    }
}

int FN(ssm_scan_backward)(const REAL *dy, const REAL *dh_last, const REAL *u, const REAL *delta,
                          const REAL *A, const REAL *Dskip, const REAL *bias, const REAL *Bt,
                          const REAL *Ct, const REAL *ckpt, long Bk, long Dc, long L, long N,
                          long G, long Ba, long Bd, long Bb, long K, long P, int softplus,
                          REAL *du, REAL *ddelta, REAL *dA_k, REAL *dD_k, REAL *dbias_k,
                          REAL *dh0, REAL *dB_p, REAL *dC_p, int nthreads) {
    const long nch = (Dc / G + VL - 1) / VL;
    if (P < 1 || P > nch) return -2;
    FN(bwd_args) a = {dy, dh_last, u, delta, A, Dskip, bias, Bt, Ct, ckpt,
                      du, ddelta, dA_k, dD_k, dbias_k, dh0, dB_p, dC_p,
                      Bk, Dc, L, N, G, Ba, Bd, Bb, K, (L + K - 1) / K, nch, P, softplus};
    const long maxc = (nch + P - 1) / P;
    size_t scratch = sizeof(V) * (4 * maxc * N + 4 * maxc + N + 4 * K * N + 9 * K);
    return ssm_parallel(FN(bwd_item), &a, Bk * G * P, scratch, nthreads);
}

#undef V
#undef IV
#undef FN
#endif
