/*
 * The codebook, PWLQ (exact mode, grid-aligned mode, bias correction), thread and info
 * entry points of qkern's C ABI, called from C and checked against results this program
 * computes itself with plain loops (integer results exactly; float results bit for bit,
 * each float operation written out in the order qkern documents, compiled with
 * -ffp-contract=off so no FMA changes a rounding).
 * Built and run by tests/c_abi.rs; exit status 0 means every check passed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkern.h"

static int failures = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "FAILED at line %d: %s\n", __LINE__, #cond);              \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#define QK_TRY(call)                                                                   \
    do {                                                                               \
        qk_status st_ = (call);                                                        \
        if (st_ != QK_OK) {                                                            \
            fprintf(stderr, "FAILED at line %d: %s -> %d: %s\n", __LINE__, #call, (int)st_, \
                    qk_last_error());                                                  \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* Bitwise float equality (distinguishes -0 and +0, never true for NaN vs a number). */
static int same_float(float a, float b) {
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

static uint32_t lcg_state = 12345u;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}
/* A value in [-1, 1), roughly bell-shaped. */
static float bell(void) {
    float s = 0.0f;
    for (int i = 0; i < 4; i++) {
        s += (float)(lcg() & 0xFFFF) / 65536.0f - 0.5f;
    }
    return s * 0.5f;
}

enum { M = 3, K = 70, N = 5 };

/* C[m][n] = sum_k (a[m][k] - za) * table[codes[k][n]] + bias[n], in int64. */
static int64_t codebook_acc(const uint8_t *a, int32_t za, const uint8_t *codes, const int8_t *table,
                            int m, int n) {
    int64_t acc = 0;
    for (int k = 0; k < K; k++) {
        acc += ((int64_t)a[m * K + k] - za) * (int64_t)table[codes[k * N + n]];
    }
    return acc;
}

static void test_info_and_threads(void) {
    size_t needed = 0;
    QK_TRY(qk_info(NULL, 0, &needed));
    CHECK(needed > 1);
    char small[4];
    size_t again = 0;
    CHECK(qk_info(small, sizeof small, &again) == QK_ERR_BUFFER_TOO_SMALL && again == needed);
    char *buf = malloc(needed);
    CHECK(buf != NULL);
    if (buf == NULL) {
        return;
    }
    QK_TRY(qk_info(buf, needed, &again));
    CHECK(strlen(buf) + 1 == needed);
    CHECK(strstr(buf, "\nisa: ") != NULL);
    CHECK(strstr(buf, "\ngemm: ") != NULL);
    CHECK(strstr(buf, "\ncodebook4: ") != NULL);
    const char *isa = strstr(buf, "\nisa: ");
    if (isa != NULL) {
        const char *end = strchr(isa + 1, '\n');
        printf("info: %.*s\n", end != NULL ? (int)(end - isa - 1) : 20, isa + 1);
    }
    free(buf);

    size_t threads = 0;
    QK_TRY(qk_set_num_threads(1));
    QK_TRY(qk_get_num_threads(&threads));
    CHECK(threads == 1);
    CHECK(qk_set_num_threads((size_t)QK_MAX_THREADS + 1) == QK_ERR_INVALID_PARAMETER);
    QK_TRY(qk_get_num_threads(&threads));
    CHECK(threads == 1);
}

/* A learned 4-bit table (llama.cpp's IQ4_NL): raw codes in, exact results out. */
static void test_learned_codebook(void) {
    static const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
    uint8_t codes[K * N];
    for (int i = 0; i < K * N; i++) {
        codes[i] = (uint8_t)(lcg() % 16);
    }
    const float scale[N] = {0.5f, 0.25f, 0.125f, 1.0f, 0.0625f};
    uint8_t a[M * K];
    for (int i = 0; i < M * K; i++) {
        a[i] = (uint8_t)(lcg() & 0xFF);
    }
    const int32_t za = 128;
    const int32_t bias[N] = {100, -100, 0, 7, -7};
    const float bias_f[N] = {0.5f, -0.25f, 0.0f, 1.0f, -3.0f};
    const float sa = 0.02f;

    qk_codebook_weights *w = NULL;
    QK_TRY(qk_codebook_weights_create(codes, K * N, K, N, QK_SCHEME_CODEBOOK, 4, levels, 16, scale, N, &w));
    CHECK(w != NULL);
    if (w == NULL) {
        return;
    }
    size_t wk = 0, wn = 0;
    uint32_t wb = 0;
    QK_TRY(qk_codebook_weights_shape(w, &wk, &wn, &wb));
    CHECK(wk == K && wn == N && wb == 4);
    int8_t table[16];
    float gs[N];
    QK_TRY(qk_codebook_weights_table(w, table, 16, gs, N));
    for (int c = 0; c < 16; c++) {
        CHECK(table[c] == (int8_t)levels[c]); /* integer levels: the grid is the table */
    }
    for (int j = 0; j < N; j++) {
        CHECK(same_float(gs[j], scale[j]));
    }

    int32_t c[M * N];
    float cf[M * N];
    QK_TRY(qk_codebook_gemm_i32(w, a, QK_U8, M * K, M, K, za, bias, N, c, M * N, N));
    QK_TRY(qk_codebook_gemm_f32(w, a, QK_U8, M * K, M, K, za, sa, bias_f, N, cf, M * N, N));
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            int64_t acc = codebook_acc(a, za, codes, table, i, j);
            CHECK(c[i * N + j] == (int32_t)(acc + bias[j]));
            float mult = sa * gs[j];
            float y = (float)acc * mult;
            y = y + bias_f[j];
            CHECK(same_float(cf[i * N + j], y));
        }
    }
    printf("codebook (IQ4_NL): C[0][0..2] = %d %d %d\n", c[0], c[1], c[2]);
    QK_TRY(qk_codebook_weights_free(w));

    /* A code past the table, a table beyond int8 (the int16 kernels), and one with no grid. */
    codes[17] = 16;
    w = (qk_codebook_weights *)&codes; /* must be reset to NULL on failure */
    qk_status st = qk_codebook_weights_create(codes, K * N, K, N, QK_SCHEME_CODEBOOK, 4, levels, 16, scale, N, &w);
    CHECK(st == QK_ERR_INVALID_PARAMETER && w == NULL);
    printf("expected error %d: %s\n", (int)st, qk_last_error());
    codes[17] = 3;
    static const float wide[3] = {-201, 0, 200};
    uint8_t small_codes[K * N];
    memset(small_codes, 1, sizeof small_codes);
    QK_TRY(qk_codebook_weights_create(small_codes, K * N, K, N, QK_SCHEME_CODEBOOK, 2, wide, 3, scale, N, &w));
    CHECK(w != NULL);
    if (w != NULL) {
        /* No int8 table; the int16 one, and exact results through it (every code 1: 0). */
        st = qk_codebook_weights_table(w, table, 16, NULL, 0);
        CHECK(st == QK_ERR_UNSUPPORTED);
        printf("expected error %d: %s\n", (int)st, qk_last_error());
        int16_t table16[4];
        QK_TRY(qk_codebook_weights_table_i16(w, table16, 4, NULL, 0));
        CHECK(table16[0] == -201 && table16[1] == 0 && table16[2] == 200 && table16[3] == 0);
        small_codes[0] = 2; /* C[.][0] += (a[.][0] − za)·200 */
        QK_TRY(qk_codebook_weights_free(w));
        QK_TRY(qk_codebook_weights_create(small_codes, K * N, K, N, QK_SCHEME_CODEBOOK, 2, wide, 3, scale, N, &w));
        QK_TRY(qk_codebook_gemm_i32(w, a, QK_U8, M * K, M, K, za, bias, N, c, M * N, N));
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                int32_t want = bias[j] + (j == 0 ? ((int32_t)a[i * K] - za) * 200 : 0);
                CHECK(c[i * N + j] == want);
            }
        }
        QK_TRY(qk_codebook_weights_free(w));
    }
    static const float no_grid[3] = {-32768, 0, 1}; /* −2^15 next to 1: no grid within ±32767 */
    w = (qk_codebook_weights *)&codes;
    st = qk_codebook_weights_create(small_codes, K * N, K, N, QK_SCHEME_CODEBOOK, 2, no_grid, 3, scale, N, &w);
    CHECK(st == QK_ERR_UNSUPPORTED && w == NULL);
    printf("expected error %d: %s\n", (int)st, qk_last_error());
}

/* APoT-4 from float weights: quantize, pack, and check the kernels against the codes. */
static void test_apot_from_floats(void) {
    float wf[K * N];
    for (int i = 0; i < K * N; i++) {
        wf[i] = bell() * (float)(1 + i % N);
    }
    uint8_t codes[K * N];
    float scales[N];
    QK_TRY(qk_codebook_quantize(wf, K * N, K, N, QK_SCHEME_APOT, 4, NULL, 0, QK_PER_CHANNEL, codes, K * N,
                                scales, N));
    qk_codebook_weights *w = NULL;
    QK_TRY(qk_codebook_pack(wf, K * N, K, N, QK_SCHEME_APOT, 4, NULL, 0, QK_PER_CHANNEL, &w));
    CHECK(w != NULL);
    if (w == NULL) {
        return;
    }
    int8_t table[16];
    float gs[N];
    QK_TRY(qk_codebook_weights_table(w, table, 16, gs, N));
    /* APoT-4 weights: sign + magnitude, magnitudes {0,1,2,3,4,6,8,10}. */
    static const int8_t mags[8] = {0, 1, 2, 3, 4, 6, 8, 10};
    for (int c = 0; c < 16; c++) {
        CHECK(table[c] == (c < 8 ? mags[c] : (int8_t)-mags[c - 8]));
    }
    for (int j = 0; j < N; j++) {
        CHECK(same_float(gs[j], scales[j]));
    }
    int8_t a[M * K];
    for (int i = 0; i < M * K; i++) {
        a[i] = (int8_t)(lcg() & 0xFF);
    }
    const int32_t za = -3;
    int32_t c[M * N];
    QK_TRY(qk_codebook_gemm_i32(w, a, QK_I8, M * K, M, K, za, NULL, 0, c, M * N, N));
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            int64_t acc = 0;
            for (int k = 0; k < K; k++) {
                acc += ((int64_t)a[i * K + k] - za) * (int64_t)table[codes[k * N + j]];
            }
            CHECK(c[i * N + j] == (int32_t)acc);
        }
    }
    printf("apot4: C[0][0..2] = %d %d %d\n", c[0], c[1], c[2]);
    QK_TRY(qk_codebook_weights_free(w));
}

/* Bell-shaped weights W[N][K] with every `outlier_every`-th one tripled (the tails),
 * quantized to 4-bit PWLQ per channel (axis 0) with `breakpoint`. */
static void pwlq_weights(int outlier_every, qk_pwlq_breakpoint breakpoint, float *wf, int16_t *codes, float *m,
                         float *p) {
    for (int i = 0; i < N * K; i++) {
        wf[i] = bell() * (i % outlier_every == 0 ? 3.0f : 1.0f);
    }
    QK_TRY(qk_pwlq_quantize(wf, N * K, N, K, 0, 4, breakpoint, codes, N * K, m, N, p, N));
}

/* PWLQ 4-bit: quantize W[N][K] per channel, pack, dequantize, fused GEMM. */
static void test_pwlq(void) {
    float wf[N * K];
    int16_t codes[N * K];
    float m[N], p[N];
    pwlq_weights(11, QK_PWLQ_GAUSSIAN, wf, codes, m, p);
    qk_pwlq_weights *w = NULL;
    QK_TRY(qk_pwlq_pack(codes, N * K, N, K, 0, 4, m, N, p, N, &w));
    CHECK(w != NULL);
    if (w == NULL) {
        return;
    }
    size_t wn = 0, wk = 0;
    uint32_t wb = 0;
    QK_TRY(qk_pwlq_weights_shape(w, &wn, &wk, &wb));
    CHECK(wn == N && wk == K && wb == 4);

    /* The definition: Q = 7, s1 = p/Q, s2 = (m - p)/Q; |j| <= Q: j*s1; else
     * sign(j) * (p + (|j| - Q - 1)*s2). Exact-mode GEMM: c, t, s per weight. */
    const int Q = 7;
    float deq[N * K];
    QK_TRY(qk_pwlq_dequantize(w, deq, N * K));
    int tails = 0;
    for (int n = 0; n < N; n++) {
        float s1 = p[n] / (float)Q, s2 = (m[n] - p[n]) / (float)Q;
        for (int k = 0; k < K; k++) {
            int j = codes[n * K + k];
            int mag = j < 0 ? -j : j;
            float want;
            if (mag <= Q) {
                want = (float)j * s1;
            } else {
                float t = (float)(mag - Q - 1) * s2;
                t = p[n] + t;
                want = j < 0 ? -t : t;
                tails++;
            }
            CHECK(same_float(deq[n * K + k], want));
        }
    }
    CHECK(tails > 0); /* the outliers use the tails */

    uint8_t a[M * K];
    for (int i = 0; i < M * K; i++) {
        a[i] = (uint8_t)(lcg() & 0xFF);
    }
    const int32_t za = 120;
    const float sa = 0.05f;
    const float bias[N] = {0.25f, -1.0f, 2.0f, 0.0f, -0.5f};
    float want[M * N];
    for (int i = 0; i < M; i++) {
        for (int n = 0; n < N; n++) {
            int64_t dc = 0, dt = 0, ds = 0;
            for (int k = 0; k < K; k++) {
                int64_t x = (int64_t)a[i * K + k] - za;
                int j = codes[n * K + k];
                int mag = j < 0 ? -j : j;
                if (mag <= Q) {
                    dc += x * j;
                } else {
                    int sign = j < 0 ? -1 : 1;
                    dt += x * sign * (mag - Q - 1);
                    ds += x * sign;
                }
            }
            float s1 = p[n] / (float)Q, s2 = (m[n] - p[n]) / (float)Q;
            float fc = s1 * (float)dc;
            float ft = s2 * (float)dt;
            float fs = p[n] * (float)ds;
            float y = fc + ft;
            y = y + fs;
            y = y * sa;
            want[i * N + n] = y + bias[n];
        }
    }
    /* One thread (the fused kernel where the CPU has AVX-512 VNNI), then the default. */
    for (int pass = 0; pass < 2; pass++) {
        QK_TRY(qk_set_num_threads(pass == 0 ? 1 : 0));
        float c[M * N];
        memset(c, 0, sizeof c);
        QK_TRY(qk_pwlq_gemm_f32(w, a, QK_U8, M * K, M, K, za, sa, bias, N, c, M * N, N));
        for (int i = 0; i < M * N; i++) {
            CHECK(same_float(c[i], want[i]));
        }
        if (pass == 0) {
            printf("pwlq4: C[0][0..2] = %.6f %.6f %.6f\n", (double)c[0], (double)c[1], (double)c[2]);
        }
    }

    /* Errors: 5-bit PWLQ does not exist (b counts sign + magnitude per region); a code
     * outside +-(2Q + 1). */
    qk_status st = qk_pwlq_quantize(wf, N * K, N, K, 0, 5, QK_PWLQ_GAUSSIAN, codes, N * K, m, N, p, N);
    CHECK(st == QK_ERR_INVALID_PARAMETER);
    printf("expected error %d: %s\n", (int)st, qk_last_error());
    codes[3] = 16;
    qk_pwlq_weights *w2 = NULL;
    st = qk_pwlq_pack(codes, N * K, N, K, 0, 4, m, N, p, N, &w2);
    CHECK(st == QK_ERR_INVALID_PARAMETER && w2 == NULL);
    QK_TRY(qk_pwlq_weights_free(w));
}

/* Grid-aligned PWLQ on the codebook entry points, and bias correction. The integer
 * weights are read back through the GEMM itself (one-hot activation rows), then every
 * other result is recomputed here from them: the reported grid MSE, the i32 and f32
 * GEMMs, and the corrected bias from qk_pwlq_dequantize. */
static void test_pwlq_grid_and_bias(void) {
    float wf[N * K];
    int16_t codes[N * K];
    float m[N], p[N];
    pwlq_weights(13, QK_PWLQ_SEARCH, wf, codes, m, p);
    double mse[2] = {-1.0, -1.0};
    qk_codebook_weights *g = NULL;
    QK_TRY(qk_pwlq_snap_to_grid(wf, N * K, N, K, 0, 4, m, N, p, N, 127, mse, 2, &g));
    CHECK(g != NULL);
    if (g == NULL) {
        return;
    }
    size_t gk = 0, gn = 0;
    uint32_t gb = 0;
    QK_TRY(qk_codebook_weights_shape(g, &gk, &gn, &gb));
    CHECK(gk == K && gn == N && (gb == 4 || gb == 5)); /* B[K][N]: W[N][K] transposed */
    int8_t table[32];
    float gs[N];
    QK_TRY(qk_codebook_weights_table(g, table, 32, gs, N));
    for (uint32_t c = 1; c < (1u << gb); c++) {
        CHECK(table[c] > table[c - 1] || table[c] == 0); /* sorted levels (0 past the set) */
    }

    /* One-hot rows: C[k][n] = the integer level of weight (k, n). */
    static uint8_t onehot[K * K];
    memset(onehot, 0, sizeof onehot);
    for (int k = 0; k < K; k++) {
        onehot[k * K + k] = 1;
    }
    int32_t lv[K * N];
    QK_TRY(qk_codebook_gemm_i32(g, onehot, QK_U8, K * K, K, K, 0, NULL, 0, lv, K * N, N));
    double sse = 0.0;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            int found = 0;
            for (uint32_t c = 0; c < (1u << gb); c++) {
                found |= table[c] == lv[k * N + n];
            }
            CHECK(found);
            float v = (float)lv[k * N + n] * gs[n];
            double d = (double)wf[n * K + k] - (double)v;
            sse += d * d;
        }
    }
    CHECK(mse[0] > 0.0 && mse[1] >= 0.0);
    CHECK(mse[1] == sse / (double)(N * K)); /* the reported MSE is that of these weights */

    uint8_t a[M * K];
    for (int i = 0; i < M * K; i++) {
        a[i] = (uint8_t)(lcg() & 0xFF);
    }
    const int32_t za = 99;
    const float sa = 0.125f;
    const float bias[N] = {1.0f, -0.5f, 0.0f, 2.5f, -3.0f};
    int32_t ci[M * N];
    float cf[M * N];
    QK_TRY(qk_codebook_gemm_i32(g, a, QK_U8, M * K, M, K, za, NULL, 0, ci, M * N, N));
    QK_TRY(qk_codebook_gemm_f32(g, a, QK_U8, M * K, M, K, za, sa, bias, N, cf, M * N, N));
    for (int i = 0; i < M; i++) {
        for (int n = 0; n < N; n++) {
            int64_t acc = 0;
            for (int k = 0; k < K; k++) {
                acc += ((int64_t)a[i * K + k] - za) * lv[k * N + n];
            }
            CHECK(ci[i * N + n] == (int32_t)acc);
            float y = (float)acc * (sa * gs[n]);
            CHECK(same_float(cf[i * N + n], y + bias[n]));
        }
    }
    printf("pwlq grid: %u-bit table, MSE %.4e -> %.4e (%+.2f %%), C[0][0..2] = %.6f %.6f %.6f\n", (unsigned)gb,
           mse[0], mse[1], 100.0 * (mse[1] - mse[0]) / mse[0], (double)cf[0], (double)cf[1], (double)cf[2]);
    QK_TRY(qk_codebook_weights_free(g));

    /* Bias correction: bias + (float)sum_k mu_k*(w - w_hat) in double. */
    qk_pwlq_weights *w = NULL;
    QK_TRY(qk_pwlq_pack(codes, N * K, N, K, 0, 4, m, N, p, N, &w));
    CHECK(w != NULL);
    if (w == NULL) {
        return;
    }
    float deq[N * K], mu[K], out[N];
    QK_TRY(qk_pwlq_dequantize(w, deq, N * K));
    for (int k = 0; k < K; k++) {
        mu[k] = 0.5f + (float)(k % 7) * 0.0625f;
    }
    QK_TRY(qk_pwlq_bias_correction(w, wf, N * K, mu, K, bias, N, out, N));
    for (int n = 0; n < N; n++) {
        double d = 0.0;
        for (int k = 0; k < K; k++) {
            d += (double)mu[k] * ((double)wf[n * K + k] - (double)deq[n * K + k]);
        }
        CHECK(same_float(out[n], bias[n] + (float)d));
    }

    /* Errors: 6-bit PWLQ has too many levels for a codebook; NULL out; a short mean. */
    qk_codebook_weights *g2 = (qk_codebook_weights *)(void *)table; /* non-NULL */
    qk_status st = qk_pwlq_snap_to_grid(wf, N * K, N, K, 0, 6, m, N, p, N, 127, NULL, 0, &g2);
    CHECK(st != QK_OK && g2 == NULL);
    st = qk_pwlq_snap_to_grid(wf, N * K, N, K, 0, 4, m, N, p, N, 127, NULL, 0, NULL);
    CHECK(st == QK_ERR_NULL_POINTER);
    st = qk_pwlq_bias_correction(w, wf, N * K, mu, K - 1, NULL, 0, out, N);
    CHECK(st == QK_ERR_SHAPE);
    printf("expected error %d: %s\n", (int)st, qk_last_error());
    QK_TRY(qk_pwlq_weights_free(w));
}

int main(void) {
    test_info_and_threads();
    test_learned_codebook();
    test_apot_from_floats();
    test_pwlq();
    test_pwlq_grid_and_bias();
    QK_TRY(qk_set_num_threads(0));
    if (failures != 0) {
        fprintf(stderr, "nonuniform: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("nonuniform: all checks passed\n");
    return 0;
}
